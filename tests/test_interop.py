"""Round trips between HeteroGraph and DGL / PyG graphs, feature maps, and errors.

Expected heterograph relabellings are computed here in plain Python (sort nodes
by (type, id), edges by (type, id)), not with the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from torch_geometric.data import HeteroData

from pigeon import HeteroGraph
from pigeon.interop import (
    from_dgl,
    from_pyg,
    from_pyg_hetero,
    global_to_hetero_features,
    hetero_features_to_global,
    hetero_names,
    to_dgl,
    to_pyg,
    to_pyg_hetero,
)
from pigeon.interop.dgl import import_dgl

dgl = import_dgl()

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = torch.int64

SINGLE_NODE_SELF_LOOP = HeteroGraph(torch.tensor([0]), torch.tensor([0]), num_nodes=1)
SINGLE_NODE_NO_EDGE = HeteroGraph(
    torch.zeros(0, dtype=LONG), torch.zeros(0, dtype=LONG), num_nodes=1, num_etypes=2, num_ntypes=3
)


# ---- strategies -------------------------------------------------------------------
type_names = st.lists(st.text(alphabet="abxyz", min_size=1, max_size=3), unique=True)


@st.composite
def graphs(draw, *, heterograph: bool):
    """Random graphs: several node types, empty relations, isolated nodes, self-loops,
    repeated edges. With ``heterograph``, each edge type joins one node-type pair and
    the names (none, strings or triples) are drawn too."""
    num_ntypes = draw(st.integers(1, 4))
    num_etypes = draw(st.integers(1, 5))
    num_nodes = draw(st.integers(1, 12))
    ntype = draw(st.lists(st.integers(0, num_ntypes - 1), min_size=num_nodes, max_size=num_nodes))
    ends = draw(
        st.lists(
            st.tuples(st.integers(0, num_ntypes - 1), st.integers(0, num_ntypes - 1)),
            min_size=num_etypes,
            max_size=num_etypes,
        )
    )
    pick = st.tuples(st.integers(0, num_etypes - 1), st.integers(0, 99), st.integers(0, 99))
    picks = draw(st.lists(pick, max_size=25))
    members = [[v for v in range(num_nodes) if ntype[v] == t] for t in range(num_ntypes)]
    src, dst, etype = [], [], []
    for t, i, j in picks:
        if heterograph:
            s_nodes, d_nodes = members[ends[t][0]], members[ends[t][1]]
        else:
            s_nodes = d_nodes = list(range(num_nodes))
        if s_nodes and d_nodes:
            src.append(s_nodes[i % len(s_nodes)])
            dst.append(d_nodes[j % len(d_nodes)])
            etype.append(t)
    ntype_names = etype_names = None
    naming = draw(st.sampled_from(["none", "strings", "triples"])) if heterograph else "none"
    if naming != "none":
        ntype_names = draw(type_names.filter(lambda n: len(n) == num_ntypes))
        relations = draw(type_names.filter(lambda n: len(n) == num_etypes))
        if naming == "strings":
            etype_names = relations
        else:
            etype_names = [(ntype_names[s], rel, ntype_names[d]) for (s, d), rel in zip(ends, relations)]
    return HeteroGraph(
        torch.tensor(src, dtype=LONG),
        torch.tensor(dst, dtype=LONG),
        torch.tensor(etype, dtype=LONG),
        num_nodes=num_nodes,
        ntype=torch.tensor(ntype, dtype=LONG),
        num_etypes=num_etypes,
        num_ntypes=num_ntypes,
        etype_names=etype_names,
        ntype_names=ntype_names,
    )


@st.composite
def schemas(draw):
    """A heterograph as DGL or PyG users build one: named types, local edge lists."""
    ntypes = draw(type_names.filter(lambda n: 1 <= len(n) <= 4))
    counts = draw(st.lists(st.integers(0, 5), min_size=len(ntypes), max_size=len(ntypes)))
    triples = st.tuples(st.sampled_from(ntypes), st.sampled_from(["r", "s", "t"]), st.sampled_from(ntypes))
    relations = {}
    for canonical in draw(st.lists(triples, min_size=1, max_size=5, unique=True)):
        n_src, n_dst = counts[ntypes.index(canonical[0])], counts[ntypes.index(canonical[2])]
        if n_src and n_dst:
            pair = st.tuples(st.integers(0, n_src - 1), st.integers(0, n_dst - 1))
            pairs = draw(st.lists(pair, max_size=8))
        else:
            pairs = []
        relations[canonical] = (
            torch.tensor([p[0] for p in pairs], dtype=LONG),
            torch.tensor([p[1] for p in pairs], dtype=LONG),
        )
    return dict(zip(ntypes, counts)), relations


# ---- helpers ----------------------------------------------------------------------
def assert_same_graph(got: HeteroGraph, expected: HeteroGraph):
    assert got.num_nodes == expected.num_nodes
    assert got.num_ntypes == expected.num_ntypes
    assert got.num_etypes == expected.num_etypes
    for field in ("src", "dst", "etype", "ntype"):
        assert getattr(got, field).dtype == LONG
        assert getattr(got, field).tolist() == getattr(expected, field).tolist(), field


def grouped_by_type(graph: HeteroGraph):
    """The documented heterograph relabelling, and the node and edge orders it applies."""
    ntype, etype = graph.ntype.tolist(), graph.etype.tolist()
    node_order = sorted(range(graph.num_nodes), key=lambda v: (ntype[v], v))
    edge_order = sorted(range(graph.num_edges), key=lambda e: (etype[e], e))
    new_id = {old: new for new, old in enumerate(node_order)}
    src, dst = graph.src.tolist(), graph.dst.tolist()
    grouped = HeteroGraph(
        torch.tensor([new_id[src[e]] for e in edge_order], dtype=LONG),
        torch.tensor([new_id[dst[e]] for e in edge_order], dtype=LONG),
        torch.tensor([etype[e] for e in edge_order], dtype=LONG),
        num_nodes=graph.num_nodes,
        ntype=torch.tensor([ntype[v] for v in node_order], dtype=LONG),
        num_etypes=graph.num_etypes,
        num_ntypes=graph.num_ntypes,
        etype_names=graph.etype_names,
        ntype_names=graph.ntype_names,
    )
    return grouped, torch.tensor(node_order, dtype=LONG), torch.tensor(edge_order, dtype=LONG)


def dgl_type_dict(g, view_data: dict | torch.Tensor, types: list) -> dict:
    """DGL returns a bare tensor instead of a dict when there is one type."""
    return view_data if isinstance(view_data, dict) else {types[0]: view_data}


def random_features(rows: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 3, generator=gen) + 1.0


# ---- DGL ----------------------------------------------------------------------------
@SETTINGS
@given(graph=graphs(heterograph=False))
@example(graph=SINGLE_NODE_SELF_LOOP)
@example(graph=SINGLE_NODE_NO_EDGE)
def test_dgl_homogeneous_round_trip(graph):
    g = to_dgl(graph)
    assert g.num_nodes() == graph.num_nodes and g.num_edges() == graph.num_edges
    assert g.edata[dgl.ETYPE].tolist() == graph.etype.tolist()
    assert g.ndata[dgl.NTYPE].tolist() == graph.ntype.tolist()
    assert g.in_degrees().tolist() == graph.in_degree().tolist()
    assert g.out_degrees().tolist() == graph.out_degree().tolist()
    back = from_dgl(g, num_etypes=graph.num_etypes, num_ntypes=graph.num_ntypes)
    assert_same_graph(back, graph)


@SETTINGS
@given(graph=graphs(heterograph=True))
@example(graph=SINGLE_NODE_SELF_LOOP)
@example(graph=SINGLE_NODE_NO_EDGE)
def test_dgl_hetero_round_trip(graph):
    names = hetero_names(graph)
    g = to_dgl(graph, hetero=True)
    assert sorted(g.ntypes) == sorted(names.ntypes)
    assert sorted(g.canonical_etypes) == sorted(names.canonical_etypes)
    node_counts = torch.bincount(graph.ntype, minlength=graph.num_ntypes).tolist()
    edge_counts = graph.etype_counts().tolist()
    assert [g.num_nodes(n) for n in names.ntypes] == node_counts
    assert [g.num_edges(c) for c in names.canonical_etypes] == edge_counts

    grouped, _, _ = grouped_by_type(graph)
    back = from_dgl(g, ntype_names=names.ntypes, etype_names=names.canonical_etypes)
    assert_same_graph(back, grouped)
    assert back.ntype_names == names.ntypes and back.etype_names == names.canonical_etypes
    # Already grouped: ids come back identical, under the graph's own names.
    again = to_dgl(grouped, hetero=True)
    assert_same_graph(from_dgl(again, ntype_names=names.ntypes, etype_names=names.canonical_etypes), grouped)
    if graph.etype_names is not None:
        own = from_dgl(again, ntype_names=names.ntypes, etype_names=graph.etype_names)
        assert own.etype_names == graph.etype_names

    # DGL itself agrees: flattening with dgl.to_homogeneous gives the same graph as
    # reading the heterograph in DGL's type order. (dgl 2.1.0's to_homogeneous
    # fails on a graph without edges.)
    if graph.num_edges:
        flat = from_dgl(dgl.to_homogeneous(g), num_ntypes=graph.num_ntypes, num_etypes=graph.num_etypes)
        assert_same_graph(flat, from_dgl(g))
    # In-degrees per node type, summed over the relations into it.
    for t, ntype in enumerate(names.ntypes):
        in_deg = torch.zeros(node_counts[t], dtype=LONG)
        for canonical in g.canonical_etypes:
            if canonical[2] == ntype:
                in_deg += g.in_degrees(etype=canonical)
        assert in_deg.tolist() == graph.in_degree()[graph.nodes_of_type(t)].tolist()


@SETTINGS
@given(schema=schemas())
def test_dgl_heterograph_to_pigeon_and_back(schema):
    num_nodes, relations = schema
    g = dgl.heterograph(relations, num_nodes_dict=num_nodes, idtype=LONG)
    graph = from_dgl(g)
    assert graph.ntype_names == tuple(g.ntypes)
    assert graph.etype_names == tuple(g.canonical_etypes)
    assert graph.ntype.tolist() == sorted(graph.ntype.tolist())

    back = to_dgl(graph, hetero=True)
    assert back.ntypes == g.ntypes and back.canonical_etypes == g.canonical_etypes
    for ntype in g.ntypes:
        assert back.num_nodes(ntype) == g.num_nodes(ntype)
    for canonical in g.canonical_etypes:
        got, want = back.edges(etype=canonical, order="eid"), g.edges(etype=canonical, order="eid")
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    if graph.num_edges:  # dgl.to_homogeneous fails on a graph without edges
        flat = from_dgl(dgl.to_homogeneous(g), num_ntypes=graph.num_ntypes, num_etypes=graph.num_etypes)
        assert_same_graph(flat, graph)


@SETTINGS
@given(graph=graphs(heterograph=False))
def test_dgl_homogeneous_to_pigeon_and_back(graph):
    g = dgl.graph((graph.src, graph.dst), num_nodes=graph.num_nodes, idtype=torch.int32)
    g.edata["rel"] = graph.etype.to(torch.int32)
    g.ndata["kind"] = graph.ntype
    read = from_dgl(
        g, etype_field="rel", ntype_field="kind", num_etypes=graph.num_etypes, num_ntypes=graph.num_ntypes
    )
    assert_same_graph(read, graph)
    back = to_dgl(read)
    assert back.edges(order="eid")[0].tolist() == graph.src.tolist()
    assert back.edges(order="eid")[1].tolist() == graph.dst.tolist()
    assert back.edata[dgl.ETYPE].tolist() == g.edata["rel"].tolist()
    assert back.ndata[dgl.NTYPE].tolist() == g.ndata["kind"].tolist()


def test_dgl_single_type_graph_keeps_its_names():
    g = dgl.heterograph({("user", "follows", "user"): ([0, 2, 2], [1, 1, 0])}, num_nodes_dict={"user": 4})
    graph = from_dgl(g)
    assert graph.ntype_names == ("user",) and graph.etype_names == (("user", "follows", "user"),)
    assert graph.src.tolist() == [0, 2, 2] and graph.dst.tolist() == [1, 1, 0] and graph.num_nodes == 4
    back = to_dgl(graph, hetero=True)
    assert back.canonical_etypes == [("user", "follows", "user")] and back.num_nodes() == 4


def test_dgl_keeps_type_ids_of_unnamed_graphs():
    # Generated names are zero-padded ("n00".."n11"), so DGL's sorting keeps them in
    # id order; edge type t joins node type t to itself, so relations keep it too.
    num_types = 12
    ntype = torch.arange(num_types).repeat_interleave(2)
    src = torch.arange(0, 2 * num_types, 2)
    graph = HeteroGraph(src, src + 1, torch.arange(num_types), ntype=ntype)
    g = to_dgl(graph, hetero=True)
    assert g.ntypes[:3] == ["n00", "n01", "n02"] and g.ntypes[-1] == "n11"
    assert_same_graph(from_dgl(g), graph)


def test_dgl_empty_relation_ends_follow_triple_names():
    graph = HeteroGraph(
        torch.tensor([0]),
        torch.tensor([1]),
        torch.tensor([0]),
        ntype=torch.tensor([0, 1]),
        etype_names=[("user", "buys", "item"), ("item", "bought-by", "user")],
        ntype_names=["user", "item"],
    )
    g = to_dgl(graph, hetero=True)
    assert g.num_edges(("item", "bought-by", "user")) == 0
    assert g.num_edges(("user", "buys", "item")) == 1
    # Without triple names an empty relation joins node type 0 to itself.
    unnamed = HeteroGraph(torch.tensor([0]), torch.tensor([1]), torch.tensor([1]), ntype=torch.tensor([0, 1]))
    assert hetero_names(unnamed).canonical_etypes == (("n0", "e0", "n0"), ("n0", "e1", "n1"))


# ---- PyG ----------------------------------------------------------------------------
@SETTINGS
@given(graph=graphs(heterograph=False))
@example(graph=SINGLE_NODE_SELF_LOOP)
@example(graph=SINGLE_NODE_NO_EDGE)
def test_pyg_round_trip(graph):
    edge_index, edge_type = to_pyg(graph)
    assert edge_index.dtype == LONG and edge_type.dtype == LONG
    assert list(edge_index.shape) == [2, graph.num_edges] and list(edge_type.shape) == [graph.num_edges]
    back = from_pyg(
        edge_index,
        edge_type,
        graph.num_nodes,
        graph.ntype,
        num_etypes=graph.num_etypes,
        num_ntypes=graph.num_ntypes,
    )
    assert_same_graph(back, graph)
    # PyG-side objects -> HeteroGraph -> PyG.
    again = to_pyg(back)
    assert torch.equal(again[0], edge_index) and torch.equal(again[1], edge_type)


@SETTINGS
@given(graph=graphs(heterograph=True))
@example(graph=SINGLE_NODE_SELF_LOOP)
@example(graph=SINGLE_NODE_NO_EDGE)
def test_pyg_hetero_round_trip(graph):
    names = hetero_names(graph)
    data = to_pyg_hetero(graph)
    assert data.validate()
    assert tuple(data.node_types) == names.ntypes and tuple(data.edge_types) == names.canonical_etypes
    node_counts = torch.bincount(graph.ntype, minlength=graph.num_ntypes).tolist()
    assert [data[n].num_nodes for n in names.ntypes] == node_counts
    assert [data[c].edge_index.shape[1] for c in names.canonical_etypes] == graph.etype_counts().tolist()

    grouped, _, _ = grouped_by_type(graph)
    back = from_pyg_hetero(data)
    assert_same_graph(back, grouped)
    assert back.ntype_names == names.ntypes and back.etype_names == names.canonical_etypes
    assert_same_graph(from_pyg_hetero(to_pyg_hetero(grouped)), grouped)

    # PyG's own flattening agrees with ours.
    flat = data.to_homogeneous()
    assert_same_graph(
        from_pyg(flat.edge_index, flat.edge_type, flat.num_nodes, flat.node_type, num_etypes=graph.num_etypes,
                 num_ntypes=graph.num_ntypes),
        back,
    )


@SETTINGS
@given(schema=schemas(), reverse=st.booleans())
def test_pyg_heterodata_to_pigeon_and_back(schema, reverse):
    num_nodes, relations = schema
    data = HeteroData()
    for ntype in sorted(num_nodes, reverse=reverse):
        data[ntype].num_nodes = num_nodes[ntype]
    for canonical, (src, dst) in relations.items():
        data[canonical].edge_index = torch.stack([src, dst])
    graph = from_pyg_hetero(data)
    assert graph.ntype_names == tuple(data.node_types) and graph.etype_names == tuple(data.edge_types)

    back = to_pyg_hetero(graph)
    assert back.validate()
    assert back.node_types == data.node_types and back.edge_types == data.edge_types
    for ntype in data.node_types:
        assert back[ntype].num_nodes == data[ntype].num_nodes
    for canonical in data.edge_types:
        assert torch.equal(back[canonical].edge_index, data[canonical].edge_index)


# ---- features -----------------------------------------------------------------------
@SETTINGS
@given(graph=graphs(heterograph=True), seed=st.integers(0, 2**31 - 1))
@example(graph=SINGLE_NODE_NO_EDGE, seed=0)
def test_feature_maps_round_trip(graph, seed):
    names = hetero_names(graph)
    grouped, node_order, edge_order = grouped_by_type(graph)
    x = random_features(graph.num_nodes, seed)
    w = random_features(graph.num_edges, seed + 1)

    per_type = global_to_hetero_features(x, graph)
    assert list(per_type) == list(names.ntypes)
    for t, ntype in enumerate(names.ntypes):
        assert torch.equal(per_type[ntype], x[graph.nodes_of_type(t)])
    assert torch.equal(hetero_features_to_global(per_type, graph), x)
    per_relation = global_to_hetero_features(w, graph, on="edges")
    assert list(per_relation) == list(names.canonical_etypes)
    assert torch.equal(hetero_features_to_global(per_relation, graph, on="edges"), w)
    # Keys may also be type ids.
    by_id = {t: value for t, value in enumerate(per_type.values())}
    assert torch.equal(hetero_features_to_global(by_id, graph), x)

    # Through DGL: features set per type come back in the relabelled global order.
    g = to_dgl(graph, hetero=True)
    if len(g.ntypes) == 1:
        g.ndata["x"] = per_type[names.ntypes[0]]
    else:
        g.ndata["x"] = per_type
    if len(g.canonical_etypes) == 1:
        g.edata["w"] = per_relation[names.canonical_etypes[0]]
    else:
        g.edata["w"] = per_relation
    back = from_dgl(g, ntype_names=names.ntypes, etype_names=names.canonical_etypes)
    node_feats = dgl_type_dict(g, g.ndata["x"], g.ntypes)
    edge_feats = dgl_type_dict(g, g.edata["w"], g.canonical_etypes)
    assert torch.equal(hetero_features_to_global(node_feats, back), x[node_order])
    assert torch.equal(hetero_features_to_global(edge_feats, back, on="edges"), w[edge_order])

    # Through PyG.
    data = to_pyg_hetero(graph)
    for ntype, value in per_type.items():
        data[ntype].x = value
    for canonical, value in per_relation.items():
        data[canonical].edge_attr = value
    assert data.validate()
    back = from_pyg_hetero(data)
    assert torch.equal(hetero_features_to_global(data.x_dict, back), x[node_order])
    edge_attr = data.collect("edge_attr")
    assert torch.equal(hetero_features_to_global(edge_attr, back, on="edges"), w[edge_order])


# ---- errors -------------------------------------------------------------------------
def mixed_relation_graph() -> HeteroGraph:
    # Edge type 0 joins user->item and item->item.
    return HeteroGraph(
        torch.tensor([0, 1]),
        torch.tensor([1, 1]),
        torch.tensor([0, 0]),
        ntype=torch.tensor([0, 1]),
        etype_names=["likes"],
        ntype_names=["user", "item"],
    )


@pytest.mark.parametrize("convert", [lambda g: to_dgl(g, hetero=True), to_pyg_hetero, hetero_names])
def test_relation_joining_several_type_pairs_is_rejected(convert):
    expected = r"edge of type 0 \('likes'\).*2 pairs.*'user', 'item'.*'item', 'item'"
    with pytest.raises(ValueError, match=expected):
        convert(mixed_relation_graph())
    # A flat conversion does not care.
    assert to_dgl(mixed_relation_graph()).num_edges() == 2


def test_hetero_name_errors():
    with pytest.raises(ValueError, match=r"connect 'user' to 'item' as its name"):
        hetero_names(
            HeteroGraph(
                torch.tensor([1]),
                torch.tensor([0]),
                ntype=torch.tensor([0, 1]),
                etype_names=[("user", "buys", "item")],
                ntype_names=["user", "item"],
            )
        )
    with pytest.raises(ValueError, match=r"among `graph.ntype_names`.*'shop'"):
        hetero_names(
            HeteroGraph(
                torch.tensor([0]),
                torch.tensor([0]),
                etype_names=[("user", "buys", "shop")],
                ntype_names=["user"],
            )
        )
    with pytest.raises(ValueError, match=r"ntype_names` to hold strings"):
        to_dgl(HeteroGraph(torch.tensor([0]), torch.tensor([0]), ntype_names=[7]), hetero=True)
    with pytest.raises(ValueError, match=r"distinct \(src, relation, dst\) triples"):
        hetero_names(
            HeteroGraph(
                torch.tensor([0, 0]),
                torch.tensor([0, 0]),
                torch.tensor([0, 1]),
                etype_names=[("a", "r", "a"), ("b", "r", "b")],
            )
        )


def test_from_pyg_errors():
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    with pytest.raises(ValueError, match=r"`edge_type`.*one entry per edge \(3\).*shape \[2\]"):
        from_pyg(edge_index, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`edge_index` to be a \[2, num_edges\].*shape \[3, 2\]"):
        from_pyg(edge_index.T)
    with pytest.raises(ValueError, match=r"`edge_index`.*dtype float32"):
        from_pyg(edge_index.float())
    with pytest.raises(ValueError, match=r"`node_type`.*one entry per node \(4\)"):
        from_pyg(edge_index, num_nodes=4, node_type=torch.tensor([0, 1, 0]))


def test_from_pyg_hetero_errors():
    data = HeteroData()
    data["user"].num_nodes = 2
    data["item"].num_nodes = 1
    data["user", "buys", "item"].edge_index = torch.tensor([[0, 1], [0, 1]])
    expected = r"destination ids of edge type \('user', 'buys', 'item'\).*\[0, 1\)"
    with pytest.raises(ValueError, match=expected):
        from_pyg_hetero(data)
    data = HeteroData()
    data["user"].num_nodes = 2
    data["user", "buys", "item"].edge_index = torch.tensor([[0], [0]])
    with pytest.raises(ValueError, match=r"got 'item'"):
        from_pyg_hetero(data)
    with pytest.raises(ValueError, match=r"HeteroData"):
        from_pyg_hetero(torch.zeros(2, 2))


def test_from_dgl_errors():
    g = dgl.heterograph(
        {("user", "r", "item"): ([0], [0]), ("item", "r", "user"): ([0], [1])},
        num_nodes_dict={"user": 2, "item": 1},
    )
    with pytest.raises(ValueError, match=r"`ntype_names` to name every type.*missing \['user'\]"):
        from_dgl(g, ntype_names=["item"])
    with pytest.raises(ValueError, match=r"`ntype_names` to name one type.*'shop'"):
        from_dgl(g, ntype_names=["item", "shop"])
    with pytest.raises(ValueError, match=r"`etype_names` to name one type.*got 'r'"):  # ambiguous relation
        from_dgl(g, etype_names=["r", ("item", "r", "user")])
    with pytest.raises(ValueError, match=r"`num_etypes` to match the 2 types"):
        from_dgl(g, num_etypes=3)
    # A relation name is enough where only one canonical edge type has it.
    h = dgl.heterograph({("user", "buys", "item"): ([0], [0]), ("item", "sold", "user"): ([0], [1])})
    read = from_dgl(h, ntype_names=["user", "item"], etype_names=["sold", "buys"])
    assert read.etype_names == ("sold", "buys") and read.etype.tolist() == [0, 1]
    assert read.src.tolist() == [2, 0] and read.dst.tolist() == [1, 2]

    flat = dgl.graph(([0, 1], [1, 0]))
    flat.edata[dgl.ETYPE] = torch.tensor([0.5, 1.0])
    with pytest.raises(ValueError, match=r"`g.edata\['_TYPE'\]`.*integer.*float32"):
        from_dgl(flat)
    with pytest.raises(ValueError, match=r"dgl.DGLGraph"):
        from_dgl(mixed_relation_graph())


def test_feature_map_errors():
    graph = HeteroGraph(
        torch.tensor([0]), torch.tensor([1]), ntype=torch.tensor([0, 1, 1]), ntype_names=["user", "item"]
    )
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"missing \['item'\]"):
        hetero_features_to_global({"user": x[:1]}, graph)
    expected = r"`features\['item'\]` to have one row per node of type 'item' \(2\).*\[1, 4\]"
    with pytest.raises(ValueError, match=expected):
        hetero_features_to_global({"user": x[:1], "item": x[:1]}, graph)
    with pytest.raises(ValueError, match=r"name node types.*got 'shop'"):
        hetero_features_to_global({"user": x[:1], "item": x, "shop": x}, graph)
    with pytest.raises(ValueError, match=r"got type 'user' twice"):
        hetero_features_to_global({"user": x[:1], 0: x[:1], "item": x}, graph)
    with pytest.raises(ValueError, match=r"share trailing shape"):
        hetero_features_to_global({"user": x[:1, :2], "item": x}, graph)
    with pytest.raises(ValueError, match=r"one row per node \(3\)"):
        global_to_hetero_features(x, graph)
    with pytest.raises(ValueError, match=r"'nodes' or 'edges'"):
        global_to_hetero_features(x, graph, on="relations")


def test_pigeon_imports_without_dgl_or_pyg():
    code = (
        "import sys, pigeon, pigeon.interop\n"
        "assert 'dgl' not in sys.modules, 'dgl imported'\n"
        "assert 'torch_geometric' not in sys.modules, 'torch_geometric imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dgl_imports_whole_after_a_failed_import_left_submodules():
    # ogb tries `import dgl` without the graphbolt stub; the failure leaves dgl's
    # submodules in sys.modules, and a later import must not reuse them unbound.
    code = ("import sys, types\n"
            "sys.modules['dgl.utils'] = types.ModuleType('dgl.utils')  # a leftover of a failed import\n"
            "from pigeon.interop.dgl import import_dgl\n"
            "dgl = import_dgl()\n"
            "dgl.utils.set_num_threads(1)\n"
            "print(type(dgl.utils.set_num_threads).__name__)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "function"
