"""The dataset layer: real KGs, synthetic profiles, OGB loading through ogb itself."""

from __future__ import annotations

import importlib.util
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pigeon.data import Dataset, load
from pigeon.data.datasets import Source, dataset_names, source_of
from pigeon.data.ogb import ogb_evaluator
from pigeon.data.profiles import PROFILES, Structure, generate, structure_stats

# ---- real knowledge graphs ------------------------------------------------------------
# (entities, relations) over all splits, as published for the PyKEEN copies.
KG_COUNTS = {"kinships": (104, 25), "umls": (135, 46), "nations": (14, 55)}


def _pykeen_split_lines(name: str) -> dict[str, list[list[str]]]:
    spec = importlib.util.find_spec("pykeen")
    assert spec is not None, "pykeen (installed with --no-deps) is part of the test environment"
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / name
    return {
        split: [line.rstrip("\n").split("\t") for line in open(folder / f"{split}.txt") if line.strip()]
        for split in ("train", "valid", "test")
    }


@pytest.mark.parametrize("name", sorted(KG_COUNTS))
def test_kg_counts_and_splits_match_the_files(name):
    ds = load(name)
    entities, relations = KG_COUNTS[name]
    assert isinstance(ds, Dataset) and ds.name == name and not ds.synthetic
    assert len(ds.entity_names) == entities and len(ds.relation_names) == relations
    assert list(ds.entity_names) == sorted(ds.entity_names)
    assert list(ds.relation_names) == sorted(ds.relation_names)
    assert ds.graph.num_nodes == entities and ds.graph.num_etypes == relations
    assert ds.graph.etype_names == ds.relation_names

    lines = _pykeen_split_lines(name)
    for split in ("train", "valid", "test"):
        triples = getattr(ds, split)
        assert triples.dtype == torch.int64 and triples.shape == (len(lines[split]), 3)
        # Spot-check random rows decode back to the file's names.
        rows = torch.randint(0, len(lines[split]), (20,), generator=torch.Generator().manual_seed(7))
        for i in rows.tolist():
            h, r, t = triples[i].tolist()
            assert [ds.entity_names[h], ds.relation_names[r], ds.entity_names[t]] == lines[split][i]
    assert torch.equal(ds.graph.src, ds.train[:, 0])
    assert torch.equal(ds.graph.etype, ds.train[:, 1])
    assert torch.equal(ds.graph.dst, ds.train[:, 2])
    assert "pykeen" not in sys.modules, "the KG loader must read PyKEEN's files, not import it"


def _write_tsv(folder: Path, splits: dict[str, list[tuple[str, str, str]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (folder / f"{split}.txt").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))


def test_kg_from_root_fixture_ids_follow_sorted_names(tmp_path):
    rng = np.random.default_rng(11)
    ents = [f"e{k}" for k in rng.permutation(9)]
    rels = ["zeta", "alpha", "mu"]
    splits = {
        s: [(ents[rng.integers(9)], rels[rng.integers(3)], ents[rng.integers(9)]) for _ in range(n)]
        for s, n in (("train", 30), ("valid", 4), ("test", 5))
    }
    _write_tsv(tmp_path, splits)
    ds = load("umls", root=tmp_path)
    assert ds.relation_names == tuple(sorted({r for rows in splits.values() for _, r, _ in rows}))
    assert ds.entity_names == tuple(sorted({e for rows in splits.values() for h, _, t in rows for e in (h, t)}))
    assert ds.train.shape == (30, 3) and ds.valid.shape == (4, 3) and ds.test.shape == (5, 3)
    h, r, t = ds.test[2].tolist()
    assert (ds.entity_names[h], ds.relation_names[r], ds.entity_names[t]) == splits["test"][2]

    rev = load("umls", root=tmp_path, reverse=True)
    g, num_rel = rev.graph, len(rev.relation_names)
    assert g.num_edges == 60 and g.num_etypes == 2 * num_rel
    assert torch.equal(g.src[30:], ds.graph.dst) and torch.equal(g.dst[30:], ds.graph.src)
    assert torch.equal(g.etype[30:], ds.graph.etype + num_rel)
    assert g.etype_names[num_rel] == f"rev_{rev.relation_names[0]}"
    assert torch.equal(rev.train, ds.train)


def test_kg_errors_name_the_problem(tmp_path, monkeypatch):
    _write_tsv(tmp_path / "bad", {"train": [("a", "r", "b")], "valid": [], "test": []})
    with open(tmp_path / "bad" / "valid.txt", "a") as handle:
        handle.write("a\tr\n")
    with pytest.raises(ValueError, match=r"3 tab-separated fields.*valid.txt:1"):
        load("nations", root=tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match=r"train.txt, valid.txt and test.txt.*missing"):
        load("nations", root=tmp_path / "empty")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pykeen" else real_find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"--no-deps pykeen.*make setup"):
        load("kinships")


# ---- synthetic profiles ---------------------------------------------------------------
def _rounded(count: int, scale: float) -> int:
    return math.floor(count * scale + 0.5)


def _expected_edges(name: str, scale: float) -> int:
    p = PROFILES[name]
    if p.reverse_pairs:  # forward half rounded, then doubled
        return 2 * _rounded(p.num_edges // 2, scale)
    return _rounded(p.num_edges, scale)


@pytest.mark.parametrize("name", ["aifb", "mutag", "bgs", "fb15k", "biokg"])
def test_profile_counts_exact_at_scale_one(name):
    p = PROFILES[name]
    ds = load(name, seed=5)
    g = ds.graph
    assert ds.synthetic and "NOT the real data" in ds.description and f"{p.num_edges:,}" in ds.description
    assert (g.num_nodes, g.num_edges, g.num_etypes) == (p.num_nodes, p.num_edges, p.num_etypes)
    assert int(g.etype_counts().min()) >= 1, "every edge type is present at scale 1"
    assert torch.bincount(g.ntype, minlength=g.num_ntypes).tolist() == list(p.ntype_sizes)
    # Real triple stores hold each (src, dst, etype) once.
    key = (g.etype * g.num_nodes + g.src) * g.num_nodes + g.dst
    assert torch.unique(key).numel() == g.num_edges


@pytest.mark.slow
@pytest.mark.parametrize("name", ["am", "mag", "wikikg2"])
def test_big_profiles_exact_at_scale_one(name):
    p = PROFILES[name]
    g = load(name).graph
    assert (g.num_nodes, g.num_edges, g.num_etypes) == (p.num_nodes, p.num_edges, p.num_etypes)
    assert torch.bincount(g.ntype, minlength=g.num_ntypes).tolist() == list(p.ntype_sizes)
    counts = g.etype_counts()
    assert int(counts.min()) >= 1
    if name == "mag":
        assert counts.tolist() == [r.num_edges for r in p.relations]


@pytest.mark.parametrize(
    "name,scale",
    [("aifb", 0.05), ("mutag", 0.01), ("bgs", 0.003), ("am", 0.001), ("mag", 0.001),
     ("wikikg2", 0.001), ("fb15k", 0.01), ("biokg", 0.003)],
)
def test_profile_counts_proportional_at_small_scale(name, scale):
    p = PROFILES[name]
    g = load(name, scale=scale, seed=1).graph
    assert g.num_nodes == _rounded(p.num_nodes, scale)
    assert g.num_edges == _expected_edges(name, scale)
    assert g.num_etypes == p.num_etypes and g.num_ntypes == len(p.ntype_names)
    # Each node type keeps its share, to within rounding.
    for size, got in zip(p.ntype_sizes, torch.bincount(g.ntype, minlength=g.num_ntypes).tolist()):
        assert abs(got - size * scale) <= 1.0 + 1e-9


@pytest.mark.parametrize("name,scale", [("mag", 0.002), ("biokg", 0.002), ("aifb", 0.05), ("bgs", 0.01)])
def test_profile_node_types_respect_each_edge_type(name, scale):
    g = load(name, scale=scale, seed=3).graph
    assert torch.all(g.ntype[1:] >= g.ntype[:-1]), "node types own contiguous id blocks"
    type_id = {n: i for i, n in enumerate(g.ntype_names)}
    for t, (src_type, _, dst_type) in enumerate(g.etype_names):
        mask = g.etype == t
        assert torch.all(g.ntype[g.src[mask]] == type_id[src_type])
        assert torch.all(g.ntype[g.dst[mask]] == type_id[dst_type])


def test_mag_relation_sizes_and_reverse_option():
    scale = 0.002
    p = PROFILES["mag"]
    g = load("mag", scale=scale, seed=2).graph
    published = [r.num_edges for r in p.relations]
    for size, got in zip(published, g.etype_counts().tolist()):
        assert abs(got - size * scale) <= 1.0 + 1e-9
    ds = load("mag", scale=scale, seed=2, reverse=True)
    rev = ds.graph
    assert rev.num_edges == 2 * g.num_edges and rev.num_etypes == 8
    assert rev.etype_names[4] == ("institution", "rev_affiliated_with", "author")
    assert torch.equal(rev.src[g.num_edges :], g.dst) and torch.equal(rev.etype[: g.num_edges], g.etype)
    assert "reverse=True" in ds.description


@pytest.mark.parametrize("name,scale", [("fb15k", 0.05), ("biokg", 0.002), ("wikikg2", 0.0005)])
def test_profiles_are_deterministic_per_seed(name, scale):
    a = load(name, scale=scale, seed=4).graph
    b = load(name, scale=scale, seed=4).graph
    c = load(name, scale=scale, seed=5).graph
    for field in ("src", "dst", "etype", "ntype"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not (torch.equal(a.src, c.src) and torch.equal(a.dst, c.dst))


@pytest.mark.parametrize("name,scale", [("aifb", 1.0), ("fb15k", 1.0), ("wikikg2", 0.01), ("biokg", 0.05)])
def test_profiles_are_skewed_like_real_graphs(name, scale):
    g = load(name, scale=scale, seed=8).graph
    sizes = g.etype_counts().double()
    assert sizes.max() >= 10 * sizes.median(), "relation sizes are Zipf-skewed"
    stats = g.stats()
    assert stats.compaction_ratio > 2.0, "(src, etype) pairs repeat as in real graphs"
    degree = (g.in_degree() + g.out_degree()).double()
    assert degree.max() >= 20 * degree.mean(), "node degrees are heavy-tailed"


# The DGL heterographs' node types (Graphiler's and Hector's dataset tables) and canonical
# edge types, reverse relations included.
@pytest.mark.parametrize("name,ntypes,etypes,labelled", [("aifb", 7, 104, "Personen"), ("mutag", 5, 50, "d"),
                                                          ("bgs", 27, 122, "NamedRockUnit"), ("am", 7, 108, "proxy")])
def test_rdf_profiles_have_typed_nodes_and_relations_between_fixed_type_pairs(name, ntypes, etypes, labelled):
    p = PROFILES[name]
    assert len(p.ntype_names) == ntypes and p.num_etypes == etypes and p.ntype_names[0] == labelled
    assert len(p.relations) == etypes // 2 and p.reverse_pairs
    # Zipf shares of the published total, the labelled type the largest.
    assert sum(p.ntype_sizes) == p.num_nodes and list(p.ntype_sizes) == sorted(p.ntype_sizes, reverse=True)
    assert p.ntype_sizes[0] / p.ntype_sizes[-1] == pytest.approx(ntypes, rel=0.01)
    # Every node type is the source of a relation, so (with the reverses) a destination too.
    assert {r.src_type for r in p.relations} == set(range(ntypes))
    assert "canonical edge types" in p.source and "Graphiler" in p.source


# ---- set structure (the benchmark's structure sweep) ---------------------------------------
def _forward_source_counts(g, relation: int) -> np.ndarray:
    """Edges per distinct source of one relation, most first."""
    src = g.src[g.etype == relation].numpy()
    return np.sort(np.unique(src, return_counts=True)[1])[::-1]


@pytest.mark.parametrize("repeats", [1, 2, 4, 8])
@pytest.mark.parametrize("skew", [0.0, 1.0])
def test_structure_sets_the_mean_repeats_per_pair_and_keeps_the_profile(repeats, skew):
    p = PROFILES["aifb"]
    g = generate("aifb", scale=0.5, seed=2, structure=Structure(repeats, skew))
    stats = structure_stats(g)
    # Measured on the graph itself, not taken from the generator.
    pairs = torch.unique(g.src * g.num_etypes + g.etype).numel()
    assert stats["repeats"] == pytest.approx(g.num_edges / pairs)
    assert stats["repeats"] == pytest.approx(repeats, rel=0.15) and stats["dst_repeats"] == pytest.approx(repeats, rel=0.15)
    assert stats["duplicates"] == 0, "no (src, dst, etype) twice"
    assert (g.num_nodes, g.num_edges, g.num_etypes, g.num_ntypes) == (
        _rounded(p.num_nodes, 0.5), _expected_edges("aifb", 0.5), p.num_etypes, len(p.ntype_names))
    type_id = {n: i for i, n in enumerate(g.ntype_names)}
    for t, (src_type, _, dst_type) in enumerate(g.etype_names):
        mask = g.etype == t
        assert torch.all(g.ntype[g.src[mask]] == type_id[src_type])
        assert torch.all(g.ntype[g.dst[mask]] == type_id[dst_type])


@pytest.mark.parametrize("skew", [0.0, 0.7, 1.2])
def test_structure_skews_the_source_degrees_by_the_zipf_law(skew):
    g = generate("aifb", seed=1, structure=Structure(2, skew))
    stats = structure_stats(g)
    # Over the largest forward relation: extra edges of the source of rank i fall as
    # (i + 1) ** -skew. Fit the exponent on the ranks that hold at least 10 extra edges.
    largest = int(g.etype_counts()[: g.num_etypes // 2].argmax())
    extra = _forward_source_counts(g, largest) - 1
    if skew == 0.0:
        assert extra.max() - extra.min() <= 1, "every pair gets `repeats` edges, to rounding"
        assert stats["top_decile_share"] == pytest.approx(0.1, rel=0.15)
        return
    ranks = np.flatnonzero(extra >= 10)
    slope = np.polyfit(np.log(ranks + 1), np.log(extra[ranks]), 1)[0]
    assert -slope == pytest.approx(skew, rel=0.15)
    # The reverse relation's destinations are those sources: the same degrees.
    reverse_dst = g.dst[g.etype == largest + g.num_etypes // 2].numpy()
    assert np.array_equal(np.sort(np.unique(reverse_dst, return_counts=True)[1])[::-1], extra + 1)
    assert stats["top_decile_share"] > 0.15, "the busiest tenth of the pairs holds more than a tenth"


def test_structure_is_deterministic_and_checked():
    a = generate("mutag", scale=0.05, seed=4, structure=Structure(3, 1.0))
    b = generate("mutag", scale=0.05, seed=4, structure=Structure(3, 1.0))
    assert torch.equal(a.src, b.src) and torch.equal(a.dst, b.dst) and torch.equal(a.etype, b.etype)
    with pytest.raises(ValueError, match=r"`repeats` to be a finite number of at least 1 \(got 0.5\)"):
        Structure(0.5, 0.0)
    with pytest.raises(ValueError, match=r"`skew`"):
        Structure(2, -1.0)
    with pytest.raises(ValueError, match=r"`structure`"):
        generate("aifb", scale=0.05, structure=(2, 1.0))
    # BGS's relations cannot all be one edge per (source, relation) pair: its small types
    # hold fewer nodes than its large relations have edges.
    with pytest.raises(ValueError, match=r"'bgs' to fit repeats 1, skew 0.*larger repeats"):
        generate("bgs", structure=Structure(1, 0.0))


def test_profile_scale_must_leave_a_node_per_type():
    with pytest.raises(ValueError, match=r"`scale`.*at least one node per node type"):
        load("biokg", scale=1e-6)


# ---- arguments ------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0, -0.5, 1.5, float("nan"), "0.5", True])
def test_bad_scale_is_named(scale):
    with pytest.raises(ValueError, match=r"`scale`"):
        load("aifb", scale=scale)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"`name`.*'aifb'.*'ogbl-wikikg2'"):
        load("cora")
    with pytest.raises(ValueError, match=r"`scale` to be 1.0 for the real dataset 'umls'"):
        load("umls", scale=0.5)
    with pytest.raises(ValueError, match=r"`seed`"):
        load("aifb", seed=-1)
    with pytest.raises(ValueError, match=r"no `root`"):
        load("aifb", root="/tmp")
    with pytest.raises(ValueError, match=r"`reverse=False` for 'fb15k'"):
        load("fb15k", reverse=True)
    assert load("AIFB", scale=0.01).name == "aifb"
    assert set(dataset_names()) >= {"kinships", "mag", "ogbn-mag"}
    assert source_of("biokg") is Source.PROFILE and source_of("ogbl-biokg") is Source.OGB


# ---- OGB, through ogb's own loaders ---------------------------------------------------
def _csv(path: Path, rows, header=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows) if header is None else pd.DataFrame(rows, columns=header)
    frame.to_csv(path, index=False, header=header is not None, compression="gzip")


def _write_relation(raw: Path, triplet, edges: np.ndarray, reltype: int) -> None:
    folder = raw / "relations" / "___".join(triplet)
    _csv(folder / "edge.csv.gz", edges)
    _csv(folder / "num-edge-list.csv.gz", [[len(edges)]])
    _csv(folder / "edge_reltype.csv.gz", np.full((len(edges), 1), reltype))


def _random_edges(rng, n, num_src, num_dst):
    return np.stack([rng.integers(0, num_src, n), rng.integers(0, num_dst, n)], axis=1)


def _write_biokg(root: Path, rng) -> dict:
    """A tiny ogbl-biokg in OGB's raw layout (what LinkPropPredDataset reads)."""
    folder = root / "ogbl_biokg"
    (folder).mkdir(parents=True)
    (folder / "RELEASE_v1.txt").write_text("fixture\n")
    sizes = {"disease": 5, "drug": 7, "protein": 11}
    raw = folder / "raw"
    _csv(raw / "num-node-dict.csv.gz", [list(sizes.values())], header=list(sizes))
    triplets = [
        ("drug", "drug-disease", "disease"),
        ("drug", "drug-drug_a", "drug"),
        ("protein", "protein-protein_b", "protein"),
    ]
    _csv(raw / "triplet-type-list.csv.gz", triplets)
    counts = [int(rng.integers(5, 15)) for _ in triplets]
    for rel, (triplet, n) in enumerate(zip(triplets, counts)):
        _write_relation(raw, triplet, _random_edges(rng, n, sizes[triplet[0]], sizes[triplet[2]]), rel)
    split_dir = folder / "split" / "random"
    split_dir.mkdir(parents=True)
    for split, n in (("train", 6), ("valid", 3), ("test", 4)):
        rel = rng.integers(0, 3, n)
        head_type = [triplets[r][0] for r in rel]
        tail_type = [triplets[r][2] for r in rel]
        entry = {
            "head_type": head_type,
            "head": torch.tensor([rng.integers(sizes[t]) for t in head_type]),
            "relation": torch.tensor(rel),
            "tail_type": tail_type,
            "tail": torch.tensor([rng.integers(sizes[t]) for t in tail_type]),
        }
        if split != "train":
            entry["head_neg"] = torch.stack([torch.randint(0, sizes[t], (4,)) for t in head_type])
            entry["tail_neg"] = torch.stack([torch.randint(0, sizes[t], (4,)) for t in tail_type])
        torch.save(entry, split_dir / f"{split}.pt")
    return {"sizes": sizes, "triplets": triplets, "counts": counts}


def test_ogbl_biokg_fixture_loads_through_ogb(tmp_path, capsys):
    rng = np.random.default_rng(21)
    spec = _write_biokg(tmp_path, rng)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    ds = load("ogbl-biokg", root=tmp_path)
    g = ds.graph
    assert not ds.synthetic and "ogb package" in ds.description
    assert "Loading necessary files" in capsys.readouterr().out, "ogb's raw reader parsed the files"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "the data folder is only read"
    assert g.num_nodes == 23 and g.num_ntypes == 3 and g.ntype_names == ("disease", "drug", "protein")
    assert g.num_edges == sum(spec["counts"]) and g.num_etypes == 3
    assert g.etype_counts().tolist() == spec["counts"]
    assert list(g.etype_names) == spec["triplets"]
    type_id = {n: i for i, n in enumerate(g.ntype_names)}
    for t, (src_type, _, dst_type) in enumerate(g.etype_names):
        mask = g.etype == t
        assert torch.all(g.ntype[g.src[mask]] == type_id[src_type])
        assert torch.all(g.ntype[g.dst[mask]] == type_id[dst_type])
    raw = pd.read_csv(tmp_path / "ogbl_biokg/raw/relations/drug___drug-drug_a___drug/edge.csv.gz", header=None)
    assert torch.equal(g.src[g.etype == 1], torch.tensor(raw[0].to_numpy()) + 5)  # drug block starts at 5
    test = torch.load(tmp_path / "ogbl_biokg/split/random/test.pt")
    offset = {"disease": 0, "drug": 5, "protein": 12}
    heads = torch.tensor([offset[t] for t in test["head_type"]]) + test["head"]
    assert torch.equal(ds.test[:, 0], heads) and torch.equal(ds.test[:, 1], test["relation"])
    tails = torch.tensor([offset[t] for t in test["tail_type"]])
    assert torch.equal(ds.negatives["test"]["tail_neg"], test["tail_neg"] + tails[:, None])

    again = load("ogbl-biokg", root=tmp_path)
    assert torch.equal(again.graph.src, g.src) and torch.equal(again.graph.etype, g.etype)


def test_ogbl_wikikg2_fixture_loads_through_ogb(tmp_path):
    rng = np.random.default_rng(22)
    folder = tmp_path / "ogbl_wikikg2"
    folder.mkdir()
    (folder / "RELEASE_v1.txt").write_text("fixture\n")
    num_nodes, num_edges = 40, 90
    edges = _random_edges(rng, num_edges, num_nodes, num_nodes)
    reltype = rng.integers(0, 6, num_edges)
    _csv(folder / "raw" / "edge.csv.gz", edges)
    _csv(folder / "raw" / "num-node-list.csv.gz", [[num_nodes]])
    _csv(folder / "raw" / "num-edge-list.csv.gz", [[num_edges]])
    _csv(folder / "raw" / "edge_reltype.csv.gz", reltype[:, None])
    split_dir = folder / "split" / "time"
    split_dir.mkdir(parents=True)
    train = {"head": torch.tensor(edges[:, 0]), "relation": torch.tensor(reltype), "tail": torch.tensor(edges[:, 1])}
    torch.save(train, split_dir / "train.pt")
    for split in ("valid", "test"):
        torch.save(
            {"head": torch.tensor([1, 2]), "relation": torch.tensor([7, 0]), "tail": torch.tensor([3, 4]),
             "head_neg": torch.randint(0, num_nodes, (2, 5)), "tail_neg": torch.randint(0, num_nodes, (2, 5))},
            split_dir / f"{split}.pt",
        )
    ds = load("ogbl-wikikg2", root=tmp_path)
    g = ds.graph
    assert (g.num_nodes, g.num_edges, g.num_ntypes) == (num_nodes, num_edges, 1)
    assert g.num_etypes == 8, "a relation seen only in valid/test still gets an edge type"
    assert torch.equal(g.src, torch.tensor(edges[:, 0])) and torch.equal(g.etype, torch.tensor(reltype))
    assert torch.equal(ds.train, torch.stack([g.src, g.etype, g.dst], dim=1))
    assert ds.valid.tolist() == [[1, 7, 3], [2, 0, 4]] and ds.negatives["valid"]["head_neg"].shape == (2, 5)


def write_ogbn_mag_fixture(root: Path, seed: int = 23):
    """A tiny ogbn-mag in OGB's raw layout; returns what the checks need."""
    rng = np.random.default_rng(seed)
    folder = root / "ogbn_mag"
    folder.mkdir()
    (folder / "RELEASE_v2.txt").write_text("fixture\n")
    raw = folder / "raw"
    sizes = {"author": 9, "field_of_study": 4, "institution": 3, "paper": 12}
    _csv(raw / "num-node-dict.csv.gz", [list(sizes.values())], header=list(sizes))
    triplets = [("author", "affiliated_with", "institution"), ("author", "writes", "paper"),
                ("paper", "cites", "paper"), ("paper", "has_topic", "field_of_study")]
    _csv(raw / "triplet-type-list.csv.gz", triplets)
    counts = [int(rng.integers(4, 20)) for _ in triplets]
    for rel, (triplet, n) in enumerate(zip(triplets, counts)):
        _write_relation(raw, triplet, _random_edges(rng, n, sizes[triplet[0]], sizes[triplet[2]]), rel)
    _csv(raw / "node-feat" / "paper" / "node-feat.csv.gz", rng.standard_normal((12, 4)))
    _csv(raw / "node-feat" / "paper" / "node_year.csv.gz", rng.integers(2010, 2020, (12, 1)))
    has = [[t == "paper" for t in sizes]]
    _csv(raw / "nodetype-has-label.csv.gz", has, header=list(sizes))
    labels = rng.integers(0, 5, (12, 1))
    _csv(raw / "node-label" / "paper" / "node-label.csv.gz", labels)
    split_dir = folder / "split" / "time"
    _csv(split_dir / "nodetype-has-split.csv.gz", has, header=list(sizes))
    perm = rng.permutation(12)
    for split, ids in (("train", perm[:8]), ("valid", perm[8:10]), ("test", perm[10:])):
        _csv(split_dir / "paper" / f"{split}.csv.gz", ids[:, None])
    return sizes, counts, labels, perm


def test_ogbn_mag_fixture_loads_through_ogb(tmp_path):
    sizes, counts, labels, perm = write_ogbn_mag_fixture(tmp_path)
    ds = load("ogbn-mag", root=tmp_path, reverse=True)
    g = ds.graph
    assert g.num_nodes == 28 and g.ntype_names == tuple(sizes)
    assert g.num_etypes == 8 and g.num_edges == 2 * sum(counts)
    assert g.etype_counts()[:4].tolist() == counts
    assert g.etype_names[1] == ("author", "writes", "paper")
    assert g.etype_names[5] == ("paper", "rev_writes", "author")
    paper0 = 16  # author 9 + field_of_study 4 + institution 3
    assert torch.equal(ds.node_labels[paper0:], torch.tensor(labels[:, 0]))
    assert torch.all(ds.node_labels[:paper0] == -1)
    assert torch.equal(ds.node_split["test"], torch.tensor(perm[10:]) + paper0)
    assert ds.target_ntype == 3 and ds.num_classes == int(labels.max()) + 1
    assert [f is None for f in ds.node_features] == [True, True, True, False]
    assert ds.node_features[3].dtype == torch.float32 and ds.node_features[3].shape == (12, 4)


def test_missing_ogb_data_is_a_clear_error_and_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"never downloaded: pass `root=`"):
        load("ogbn-mag")
    with pytest.raises(FileNotFoundError, match=r"ogbl_biokg.*no download is attempted"):
        load("ogbl-biokg", root=tmp_path)
    # A folder without OGB's RELEASE file would make ogb prompt on stdin: refused first.
    (tmp_path / "ogbl_wikikg2" / "raw").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"RELEASE_v1.txt"):
        load("ogbl-wikikg2", root=tmp_path)
    assert not any(tmp_path.glob("*.zip"))


def test_ogb_evaluator_scores_mrr():
    evaluator = ogb_evaluator("biokg")
    assert evaluator.name == "ogbl-biokg" and evaluator.eval_metric == "mrr"
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(16, generator=gen), torch.rand(16, 50, generator=gen)
    mrr = evaluator.eval({"y_pred_pos": pos, "y_pred_neg": neg})["mrr_list"]
    expected = 1.0 / (1 + (neg > pos[:, None]).sum(dim=1)).float()
    torch.testing.assert_close(mrr, expected)
    with pytest.raises(ValueError, match=r"`name`.*ogbl-wikikg2"):
        ogb_evaluator("aifb")


# ---- planted node labels -----------------------------------------------------------------
@pytest.mark.parametrize("name,scale", [("aifb", 0.1), ("mag", 0.001)])
def test_planted_node_task_is_the_documented_teacher(name, scale):
    ds = load(name, scale=scale, seed=3, node_task=True)
    again = load(name, scale=scale, seed=3, node_task=True)
    g, profile = ds.graph, PROFILES[name]
    assert ds.num_classes == profile.num_classes and ds.target_ntype == profile.target_ntype
    assert "Planted node task (not the real labels)" in ds.description
    targets = g.nodes_of_type(ds.target_ntype)
    assert torch.equal(torch.sort(torch.cat(list(ds.node_split.values()))).values, targets)
    assert bool((ds.node_labels[targets] >= 0).all()) and int((ds.node_labels >= 0).sum()) == targets.numel()
    assert torch.equal(ds.node_labels, again.node_labels), "same seed, same task"
    for t, width in enumerate(profile.feature_dims):
        if width is None:
            assert ds.node_features[t] is None
        else:
            assert ds.node_features[t].shape == (int((g.ntype == t).sum()), width)
    # Recompute the teacher from the module docstring with the same draws, densely.
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
        [3, zlib.crc32(name.encode()), zlib.crc32(b"planted")]).generate_state(1)[0]))
    h = torch.zeros(g.num_nodes, ds.num_classes)
    for t, width in enumerate(profile.feature_dims):
        if width is not None:
            x = torch.randn(int((g.ntype == t).sum()), width, generator=gen)
            assert torch.equal(x, ds.node_features[t])
            h[g.nodes_of_type(t)] = x @ (torch.randn(width, ds.num_classes, generator=gen) / math.sqrt(width))
    mixing = torch.randn(g.num_etypes, ds.num_classes, ds.num_classes, generator=gen) / math.sqrt(ds.num_classes)
    summed = torch.zeros_like(h)
    for r in range(g.num_etypes):
        mask = g.etype == r
        summed.index_add_(0, g.dst[mask], h[g.src[mask]] @ mixing[r])
    scores = h + summed / g.in_degree().clamp(min=1).unsqueeze(1)
    agree = (scores[targets].argmax(1) == ds.node_labels[targets]).double().mean()
    assert agree > 0.999, "float32 sums in another order may flip an exact tie only"
    # Several classes occur: a model at chance gets the commonest class's share.
    counts = torch.bincount(ds.node_labels[targets], minlength=ds.num_classes)
    assert int((counts > 0).sum()) >= min(ds.num_classes, 4)


def test_planted_node_task_only_where_a_profile_has_one():
    with pytest.raises(ValueError, match=r"`node_task=True` only for a profile.*got 'fb15k'"):
        load("fb15k", scale=0.01, node_task=True)
    with pytest.raises(ValueError, match=r"ogbn-mag has its real labels"):
        load("ogbn-mag", node_task=True)
