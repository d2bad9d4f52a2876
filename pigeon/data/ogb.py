"""The real ogbn-mag, ogbl-biokg and ogbl-wikikg2, read through the ``ogb`` package.

We call OGB's own loaders (:class:`ogb.nodeproppred.NodePropPredDataset` and
:class:`ogb.linkproppred.LinkPropPredDataset`) so that the files are parsed exactly
as everyone else parses them, and convert the result to a :class:`HeteroGraph`.

Those loaders download the data when it is missing and ask on stdin before
replacing an outdated copy. Neither may happen here, so :func:`check_files` first
checks for every file the loader would read, with the same rules the loader
applies, and raises :class:`FileNotFoundError` naming them otherwise. Nothing is
ever downloaded.

Expected layout under ``root`` (as OGB's own download unpacks it), for
``ogbl-biokg``::

    root/ogbl_biokg/RELEASE_v1.txt
    root/ogbl_biokg/raw/triplet-type-list.csv.gz, num-node-dict.csv.gz, relations/...
    root/ogbl_biokg/split/random/{train,valid,test}.pt

OGB's loaders cache the parsed graph in ``<folder>/processed/data_processed`` and
read that cache on later loads; but they write it as a protocol-4 pickle of NumPy
arrays, which ``torch.load`` refuses since PyTorch 2.6 made ``weights_only=True``
the default (an open OGB bug). So we never let OGB near that cache: the loader
runs on a scratch mirror of the dataset folder (symbolic links to ``raw/``,
``split/`` and the rest, an empty ``processed/``), always parses ``raw/``, and the
scratch copy, cache included, is deleted afterwards. The dataset folder is only
read, never written.

Importing ``ogb`` starts OGB's own PyPI version check in a background thread
(through the ``outdated`` package, when installed); offline it fails quietly.
That check is OGB's and fetches no data.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pigeon.data.graph import HeteroGraph

__all__ = ["OGB_NAMES", "OgbData", "check_files", "load_ogb", "ogb_evaluator"]

OGB_NAMES = ("ogbn-mag", "ogbl-biokg", "ogbl-wikikg2")
# Our synthetic profiles of OGB graphs, for ogb_evaluator.
_EVALUATOR_ALIASES = {"biokg": "ogbl-biokg", "wikikg2": "ogbl-wikikg2"}
_SPLITS = ("train", "valid", "test")


class OgbData(NamedTuple):
    """An OGB dataset converted to global node ids.

    Node types own contiguous id blocks in OGB's (sorted) order. For the link
    datasets, ``graph`` holds the training edges with ``etype`` = OGB's relation id,
    ``train``/``valid``/``test`` are int64 ``[n, 3]`` rows ``(head, relation, tail)``
    and ``negatives[split]`` holds OGB's ``head_neg``/``tail_neg`` candidates. For
    ogbn-mag, ``node_labels`` has one label per node (-1 for nodes without one),
    ``node_split[split]`` lists global node ids, ``node_features[t]`` holds OGB's
    features of node type ``t`` (float32, in the type's id order; None for types
    without), ``target_ntype`` is the labelled type and ``num_classes`` its class count.
    """

    graph: HeteroGraph
    folder: Path
    train: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    test: torch.Tensor | None = None
    negatives: dict[str, dict[str, torch.Tensor]] | None = None
    node_labels: torch.Tensor | None = None
    node_split: dict[str, torch.Tensor] | None = None
    node_features: tuple | None = None
    target_ntype: int | None = None
    num_classes: int | None = None


def _ogb_dir() -> Path:
    spec = importlib.util.find_spec("ogb")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The OGB loaders need the `ogb` package (`pip install ogb`, part of the `test` extra)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _meta(name: str) -> dict[str, str]:
    """OGB's own metadata row for ``name`` (from master.csv inside the package)."""
    import pandas as pd

    task = "nodeproppred" if name.startswith("ogbn-") else "linkproppred"
    master = pd.read_csv(_ogb_dir() / task / "master.csv", index_col=0, keep_default_na=False)
    if name not in master:
        raise ValueError(f"Expected `name` to be an OGB {task} dataset in {list(master.columns)} (got {name!r})")
    return {key: str(value) for key, value in master[name].items()}


def _folder(name: str, root: str | Path) -> Path:
    return Path(root) / name.replace("-", "_")


def check_files(name: str, root: str | Path | None) -> Path:
    """The dataset folder, after checking it holds everything OGB's loader reads.

    Raises:
        FileNotFoundError: naming the expected files, when any is missing (OGB's
            loader would download or prompt instead).
    """
    if name not in OGB_NAMES:
        raise ValueError(f"Expected `name` to be one of {list(OGB_NAMES)} (got {name!r})")
    if root is None:
        raise FileNotFoundError(
            f"{name} is read from disk and never downloaded: pass `root=` the folder that holds "
            f"{name.replace('-', '_')}/ as unpacked from OGB's archive ({_meta(name)['url']})"
        )
    meta = _meta(name)
    folder = _folder(name, root)
    hetero = meta["is hetero"] == "True"
    if meta["binary"] == "True":
        raw = "edge_index_dict.npz" if hetero else "data.npz"
    else:
        raw = "triplet-type-list.csv.gz" if hetero else "edge.csv.gz"
    split_dir = folder / "split" / meta["split"]
    if name.startswith("ogbn-"):
        split_files = [split_dir / "nodetype-has-split.csv.gz"] if hetero else [split_dir / "train.csv.gz"]
    else:
        split_files = [split_dir / f"{s}.pt" for s in _SPLITS]
    if (split_dir / "split_dict.pt").is_file():
        split_files = []
    required = [folder / f"RELEASE_v{meta['version']}.txt", folder / "raw" / raw, *split_files]
    missing = [p for p in required if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name} is not under root={str(root)!r}: missing {[str(p) for p in missing]}. "
            f"Expected OGB's unpacked archive ({meta['url']}) at {folder}; no download is attempted."
        )
    return folder


def load_ogb(name: str, root: str | Path | None) -> OgbData:
    """Load ``name`` (one of :data:`OGB_NAMES`) from ``root`` with OGB's loader.

    Args:
        name (str): ``"ogbn-mag"``, ``"ogbl-biokg"`` or ``"ogbl-wikikg2"``.
        root (str or Path): the folder holding ``<name with _>/`` (OGB's ``root``).
    """
    folder = check_files(name, root)
    with tempfile.TemporaryDirectory(prefix="pigeon-ogb-") as scratch:
        mirror = Path(scratch) / folder.name
        mirror.mkdir()
        for entry in folder.iterdir():
            if entry.name != "processed":
                (mirror / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        (mirror / "processed").mkdir()
        if name.startswith("ogbn-"):
            from ogb.nodeproppred import NodePropPredDataset

            dataset = NodePropPredDataset(name=name, root=scratch)
            graph, labels = dataset[0]
            return _node_data(graph, labels, dataset.get_idx_split(), folder)
        from ogb.linkproppred import LinkPropPredDataset

        dataset = LinkPropPredDataset(name=name, root=scratch)
        return _link_data(name, dataset[0], dataset.get_edge_split(), folder)


def _int64(values) -> torch.Tensor:
    """An int64 tensor owning a copy of ``values`` (OGB hands out read-only arrays)."""
    if isinstance(values, torch.Tensor):
        return values.to(torch.int64, copy=True)
    return torch.from_numpy(np.array(values, dtype=np.int64))


def _type_offsets(num_nodes_dict: dict[str, int]) -> tuple[list[str], dict[str, int], torch.Tensor]:
    types = sorted(num_nodes_dict)
    sizes = torch.tensor([int(num_nodes_dict[t]) for t in types], dtype=torch.int64)
    starts = torch.cumsum(sizes, 0) - sizes
    ntype = torch.repeat_interleave(torch.arange(len(types)), sizes)
    return types, dict(zip(types, starts.tolist())), ntype


def _node_data(graph: dict, labels: dict, split: dict, folder: Path) -> OgbData:
    types, offset, ntype = _type_offsets(graph["num_nodes_dict"])
    triplets = sorted(graph["edge_index_dict"])
    src, dst, etype = [], [], []
    for rel, triplet in enumerate(triplets):
        edges = _int64(graph["edge_index_dict"][triplet])
        src.append(edges[0] + offset[triplet[0]])
        dst.append(edges[1] + offset[triplet[2]])
        etype.append(torch.full((edges.shape[1],), rel, dtype=torch.int64))
    hetero = HeteroGraph(
        torch.cat(src),
        torch.cat(dst),
        torch.cat(etype),
        num_nodes=ntype.numel(),
        ntype=ntype,
        num_etypes=len(triplets),
        num_ntypes=len(types),
        etype_names=triplets,
        ntype_names=types,
    )
    node_labels = torch.full((ntype.numel(),), -1, dtype=torch.int64)
    for t, values in labels.items():
        values = _int64(values).reshape(-1)
        node_labels[offset[t] : offset[t] + values.numel()] = values
    if len(labels) != 1:
        raise ValueError(f"ogbn node data: expected labels on one node type (got {sorted(labels)})")
    target = types.index(next(iter(labels)))
    feature_dict = graph.get("node_feat_dict") or {}
    node_features = tuple(
        torch.from_numpy(np.array(feature_dict[t], dtype=np.float32)) if feature_dict.get(t) is not None else None
        for t in types
    )
    node_split = {
        s: torch.cat(
            [_int64(ids) + offset[t] for t, ids in sorted(split[s].items())]
        )
        for s in _SPLITS
    }
    labelled = node_labels[node_labels >= 0]
    return OgbData(hetero, folder, node_labels=node_labels, node_split=node_split, node_features=node_features,
                   target_ntype=target, num_classes=int(labelled.max()) + 1 if labelled.numel() else 0)


def _link_data(name: str, graph: dict, split: dict, folder: Path) -> OgbData:
    if "edge_index_dict" in graph:
        types, offset, ntype = _type_offsets(graph["num_nodes_dict"])
        triplets = sorted(graph["edge_index_dict"])
        src, dst, etype, names = [], [], [], {}
        for triplet in triplets:
            edges = _int64(graph["edge_index_dict"][triplet])
            rel = _int64(graph["edge_reltype"][triplet]).reshape(-1)
            for r in torch.unique(rel).tolist():
                if names.setdefault(r, triplet) != triplet:
                    raise ValueError(
                        f"{name}: relation {r} appears under two node-type triplets "
                        f"({names[r]} and {triplet}); expected one each"
                    )
            src.append(edges[0] + offset[triplet[0]])
            dst.append(edges[1] + offset[triplet[2]])
            etype.append(rel)
        src, dst, etype = torch.cat(src), torch.cat(dst), torch.cat(etype)
        num_ntypes, ntype_names = len(types), types
    else:
        offset = None
        edges = _int64(graph["edge_index"])
        src, dst = edges[0], edges[1]
        etype = _int64(graph["edge_reltype"]).reshape(-1)
        ntype = torch.zeros(int(graph["num_nodes"]), dtype=torch.int64)
        names, num_ntypes, ntype_names = {}, 1, None

    triples = {s: _split_triples(split[s], offset) for s in _SPLITS}
    # Relations seen only in valid/test still get an edge type.
    relation_ids = [etype, *(t[:, 1] for t in triples.values())]
    num_etypes = 1 + max((int(r.max()) for r in relation_ids if r.numel()), default=0)
    etype_names = [names[r] for r in range(num_etypes)] if len(names) == num_etypes else None
    hetero = HeteroGraph(
        src,
        dst,
        etype,
        num_nodes=ntype.numel(),
        ntype=ntype,
        num_etypes=num_etypes,
        num_ntypes=num_ntypes,
        etype_names=etype_names,
        ntype_names=ntype_names,
    )
    negatives = {}
    for s in _SPLITS:
        found = {}
        for key, side in (("head_neg", "head"), ("tail_neg", "tail")):
            if key in split[s]:
                found[key] = _global_ids(split[s][key], split[s].get(f"{side}_type"), offset)
        if found:
            negatives[s] = found
    return OgbData(hetero, folder, triples["train"], triples["valid"], triples["test"], negatives or None)


def _global_ids(local, types, offset: dict[str, int] | None) -> torch.Tensor:
    """OGB's per-type ids (``types[i]`` the type of row ``i``) as global ids."""
    ids = _int64(local)
    if offset is None:
        return ids
    import pandas as pd

    shift = pd.Series(np.asarray(types)).map(offset)
    if shift.isna().any():
        raise ValueError(f"Unknown node type in split: {sorted(set(types) - set(offset))}")
    shift = _int64(shift.to_numpy())
    return ids + (shift if ids.dim() == 1 else shift[:, None])


def _split_triples(split: dict, offset: dict[str, int] | None) -> torch.Tensor:
    head = _global_ids(split["head"], split.get("head_type"), offset)
    tail = _global_ids(split["tail"], split.get("tail_type"), offset)
    relation = _int64(split["relation"])
    return torch.stack([head, relation, tail], dim=1)


def ogb_evaluator(name: str):
    """OGB's link-prediction ``Evaluator`` for ``name`` (reads OGB's bundled metadata only).

    ``name`` is an OGB link dataset (``"ogbl-biokg"``) or the name of our synthetic
    profile of one (``"biokg"``, ``"wikikg2"``).
    """
    import pandas as pd

    ogb_name = _EVALUATOR_ALIASES.get(name, name)
    master = pd.read_csv(_ogb_dir() / "linkproppred" / "master.csv", index_col=0, keep_default_na=False)
    if ogb_name not in master:
        valid = sorted([*master.columns, *_EVALUATOR_ALIASES])
        raise ValueError(f"Expected `name` to be an OGB link-prediction dataset, one of {valid} (got {name!r})")
    from ogb.linkproppred import Evaluator

    return Evaluator(name=ogb_name)
