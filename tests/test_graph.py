"""HeteroGraph: input validation and every layout against a brute-force construction."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pigeon
from pigeon.data.graph import LAYOUTS, index_dtype
from strategies import hetero_blocks, hetero_graphs


def _edges(graph):
    return list(zip(graph.src.tolist(), graph.dst.tolist(), graph.etype.tolist()))


# ---- validation ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(src=[0, 1], dst=[1], etype=[0, 0]), r"`dst` to have one entry per edge \(2\), got 1"),
        (dict(src=[0, 1], dst=[1, 0], etype=[0]), r"`etype` to have one entry per edge \(2\), got 1"),
        (dict(src=[0, -1], dst=[1, 0]), r"`src` to hold non-negative ids \(got minimum -1\)"),
        (dict(src=[0, 1], dst=[1, 5], num_nodes=3), r"every id in `dst` to be < num_nodes=3 \(got 5\)"),
        (dict(src=[0, 1], dst=[1, 0], etype=[0, 3], num_etypes=2), r"every `etype` to be < num_etypes=2 \(got 3\)"),
        (dict(src=[0.0, 1.0], dst=[1, 0]), r"`src` to be a 1-D integer tensor \(got dtype float32"),
        (dict(src=[[0, 1]], dst=[1, 0]), r"`src` to be a 1-D integer tensor \(got shape \[1, 2\]"),
        (dict(src=[0, 1], dst=[1, 0], num_nodes=2, ntype=[0, 0, 0]), r"`ntype` to have one entry per node \(2\), got 3"),
        (dict(src=[0, 1], dst=[1, 0], num_nodes=-1), r"`num_nodes` to be at least 0 \(got -1\)"),
        (dict(src=[0, 1], dst=[1, 0], num_nodes=2.0), r"`num_nodes` to be an int \(got float\)"),
        (dict(src=[0, 1], dst=[1, 0], etype_names=["a", "a"]), r"`etype_names` to hold distinct names"),
        (dict(src=[0, 1], dst=[1, 0], etype=[0, 1], etype_names=["a"]), r"every `etype` to be < num_etypes=1"),
        (dict(src=[0, 1], dst=[1, 0], num_etypes=2, etype_names=["a"]), r"`etype_names` to have 2 entries"),
        (dict(src=[True, False], dst=[1, 0]), r"`src` to be a 1-D integer tensor \(got dtype bool"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    kwargs = {k: torch.tensor(v) if isinstance(v, list) and k in {"src", "dst", "etype", "ntype"} else v
              for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        pigeon.HeteroGraph(**kwargs)


def test_defaults_and_valid_corner_cases():
    # Isolated node 3, self-loop on 2, a repeated edge, and relation 2 empty.
    g = pigeon.HeteroGraph(
        torch.tensor([0, 2, 0]), torch.tensor([1, 2, 1]), torch.tensor([1, 0, 1]),
        num_nodes=4, num_etypes=3,
    )
    assert (g.num_nodes, g.num_edges, g.num_etypes, g.num_ntypes) == (4, 3, 3, 1)
    assert g.ntype.tolist() == [0, 0, 0, 0]
    assert g.etype_counts().tolist() == [1, 2, 0]
    assert g.in_degree().tolist() == [0, 2, 1, 0]
    assert g.out_degree().tolist() == [2, 0, 1, 0]
    empty = pigeon.HeteroGraph(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), num_nodes=1)
    assert empty.num_edges == 0 and empty.csr_dst.rowptr.tolist() == [0, 0]
    assert empty.compact_src.num_rows == 0


def test_unknown_layout_lists_the_valid_ones():
    g = pigeon.HeteroGraph(torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="`name` to be one of"):
        g.layout("csc")


def test_index_dtype_switches_to_int64_when_counts_overflow_int32():
    assert index_dtype(10, 2**31 - 1) == torch.int32
    assert index_dtype(10, 2**31) == torch.int64


# ---- layouts against brute force ----------------------------------------------------

@given(hetero_graphs())
def test_csr_layouts_match_brute_force(graph):
    edges = _edges(graph)
    for name, key, other in (("csr_dst", 1, 0), ("csr_src", 0, 1)):
        csr = graph.layout(name)
        assert csr.rowptr.dtype == graph.index_dtype == torch.int32
        assert csr.rowptr.numel() == graph.num_nodes + 1
        for node in range(graph.num_nodes):
            lo, hi = int(csr.rowptr[node]), int(csr.rowptr[node + 1])
            expected = [e for e in range(len(edges)) if edges[e][key] == node]  # original order
            assert csr.eid[lo:hi].tolist() == expected
            assert csr.col[lo:hi].tolist() == [edges[e][other] for e in expected]


@given(hetero_graphs())
def test_coo_by_etype_matches_brute_force(graph):
    edges = _edges(graph)
    coo = graph.coo_etype
    expected = sorted(range(len(edges)), key=lambda e: (edges[e][2], edges[e][1], e))
    assert coo.eid.tolist() == expected
    assert coo.src.tolist() == [edges[e][0] for e in expected]
    assert coo.dst.tolist() == [edges[e][1] for e in expected]
    assert coo.etype.tolist() == [edges[e][2] for e in expected]
    for t in range(graph.num_etypes):
        lo, hi = int(coo.rel_ptr[t]), int(coo.rel_ptr[t + 1])
        assert set(coo.etype[lo:hi].tolist()) <= {t}
        assert hi - lo == sum(1 for e in edges if e[2] == t)


@given(hetero_graphs())
def test_compact_maps_match_brute_force(graph):
    edges = _edges(graph)
    for name, end in (("compact_src", 0), ("compact_dst", 1)):
        cmap = graph.layout(name)
        pairs = sorted({(e[2], e[end]) for e in edges})
        assert list(zip(cmap.etype.tolist(), cmap.node.tolist())) == pairs
        row_of = {pair: row for row, pair in enumerate(pairs)}
        assert cmap.edge_row.tolist() == [row_of[(e[2], e[end])] for e in edges]
        for t in range(graph.num_etypes):
            lo, hi = int(cmap.rel_ptr[t]), int(cmap.rel_ptr[t + 1])
            assert hi - lo == sum(1 for p in pairs if p[0] == t)
    stats = graph.stats()
    assert stats.compact_src_rows == len({(e[2], e[0]) for e in edges})
    assert stats.compaction_ratio >= 1.0 or graph.num_edges == 0


@given(hetero_graphs())
def test_ntype_etype_pairs_match_brute_force(graph):
    edges = _edges(graph)
    types = graph.ntype.tolist()
    pairs = graph.ntype_etype
    expected = sorted({(e[2], types[e[0]]) for e in edges})  # (etype, source node type)
    assert list(zip(pairs.etype.tolist(), pairs.ntype.tolist())) == expected
    assert pairs.num_rows == len(expected) and pairs.rel_ptr.dtype == graph.index_dtype
    row_of = {pair: row for row, pair in enumerate(expected)}
    assert pairs.edge_row.tolist() == [row_of[(e[2], types[e[0]])] for e in edges]
    compact = graph.compact_src
    assert graph.layout("compact_src_pair").tolist() == [
        row_of[(t, types[v])] for v, t in zip(compact.node.tolist(), compact.etype.tolist())]
    for t in range(graph.num_etypes):
        lo, hi = int(pairs.rel_ptr[t]), int(pairs.rel_ptr[t + 1])
        assert pairs.etype[lo:hi].tolist() == [t] * (hi - lo) and hi - lo == sum(1 for p in expected if p[0] == t)
    by_pair = (("ntype_etype_edges", pairs.edge_row), ("ntype_etype_compact_src", graph.layout("compact_src_pair")))
    for name, pair_of_row in by_pair:
        segments = graph.layout(name)
        assert segments.ptr.numel() == pairs.num_rows + 1
        for p in range(pairs.num_rows):
            lo, hi = int(segments.ptr[p]), int(segments.ptr[p + 1])
            assert segments.perm[lo:hi].tolist() == [r for r, q in enumerate(pair_of_row.tolist()) if q == p]


@given(hetero_graphs())
def test_ntype_segments_match_brute_force(graph):
    segments = graph.ntype_sorted
    types = graph.ntype.tolist()
    for t in range(graph.num_ntypes):
        lo, hi = int(segments.ptr[t]), int(segments.ptr[t + 1])
        assert segments.perm[lo:hi].tolist() == [v for v in range(graph.num_nodes) if types[v] == t]


@given(hetero_graphs())
def test_degrees_match_brute_force(graph):
    edges = _edges(graph)
    assert graph.in_degree().tolist() == [sum(1 for e in edges if e[1] == v) for v in range(graph.num_nodes)]
    assert graph.out_degree().tolist() == [sum(1 for e in edges if e[0] == v) for v in range(graph.num_nodes)]


# ---- memoization and movement -------------------------------------------------------

def test_layouts_are_built_once_and_travel_with_to():
    g = pigeon.HeteroGraph(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), torch.tensor([0, 1, 0]))
    first = g.csr_dst
    assert g.csr_dst is first
    assert g.computed_layouts() == ("csr_dst",)
    g.compact_src   # counted in C, with its edges grouped by row in the same pass
    moved = g.to("meta")
    assert moved.device.type == "meta" and moved.src.device.type == "meta"
    assert moved.computed_layouts() == ("csr_dst", "compact_src_edges", "compact_src")
    assert all(t.device.type == "meta" for t in moved.layout("compact_src_edges"))
    assert all(t.device.type == "meta" for t in moved.csr_dst)
    assert g.to("cpu") is g
    assert set(LAYOUTS) >= set(moved.computed_layouts())


# ---- blocks --------------------------------------------------------------------------

def test_a_block_has_its_destinations_first_and_layouts_sized_by_them():
    src = torch.tensor([4, 0, 3, 2, 2, 1])
    dst = torch.tensor([0, 0, 1, 1, 2, 2])
    g = pigeon.HeteroGraph(src, dst, torch.tensor([0, 1, 1, 0, 1, 0]), num_nodes=5,
                           ntype=torch.tensor([1, 0, 1, 0, 1]), num_dst_nodes=3)
    assert g.is_block and (g.num_src_nodes, g.num_dst_nodes, g.num_nodes) == (5, 3, 5)
    assert "num_dst_nodes=3" in repr(g)
    assert g.csr_dst.rowptr.tolist() == [0, 2, 4, 6]           # one row per destination
    assert g.csr_src.rowptr.numel() == 6                       # one row per source
    assert g.in_degree().tolist() == [2, 2, 2]
    assert g.dst_ntype.tolist() == [1, 0, 1]
    segments = g.dst_ntype_sorted
    assert segments.ptr.tolist() == [0, 1, 3] and segments.perm.tolist() == [1, 0, 2]
    assert g.compact_dst.node.max() < 3
    moved = g.to("cpu")
    assert moved.num_dst_nodes == 3
    plain = pigeon.HeteroGraph(src, torch.tensor([0, 0, 1, 1, 4, 2]), num_nodes=5)
    assert not plain.is_block and plain.num_dst_nodes == 5
    assert plain.dst_ntype_sorted is plain.ntype_sorted


def test_block_arguments_are_checked():
    src, dst = torch.tensor([3, 2]), torch.tensor([0, 2])
    with pytest.raises(ValueError, match=r"Expected every id in `dst` to be < num_dst_nodes=2.*\(got 2\)"):
        pigeon.HeteroGraph(src, dst, num_nodes=4, num_dst_nodes=2)
    with pytest.raises(ValueError, match=r"Expected `num_dst_nodes` to be at most num_nodes=4.*\(got 5\)"):
        pigeon.HeteroGraph(src, dst, num_nodes=4, num_dst_nodes=5)
    with pytest.raises(ValueError, match="Expected `num_dst_nodes` to be an int"):
        pigeon.HeteroGraph(src, dst, num_nodes=4, num_dst_nodes=2.5)
    block = pigeon.HeteroGraph(src, dst, num_nodes=4, num_dst_nodes=3)
    with pytest.raises(ValueError, match="Expected a plain graph for `with_reverse_edges`"):
        block.with_reverse_edges()


@given(st.lists(st.integers(0, 40), max_size=60), st.integers(41, 200))
def test_unique_keys_by_counting_matches_torch_unique(values, num_keys):
    from pigeon.data import graph
    from pigeon.native import counted_unique

    key = torch.tensor(values, dtype=torch.int64)
    want_keys, want_inverse = torch.unique(key, sorted=True, return_inverse=True)
    # Counted in C (on the CPU), and by torch's bincount and prefix sum (a GPU tensor).
    for counter in (counted_unique, lambda *_: None):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(graph, "counted_unique", counter)
            keys, inverse = graph.unique_keys(key, num_keys)
        assert keys.tolist() == want_keys.tolist() and inverse.tolist() == want_inverse.tolist()


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 29)), max_size=80), st.booleans())
def test_grouped_keys_match_torch_unique_and_a_stable_sort(pairs, relation_order):
    # Keys relation * 30 + node, in relation order (a block's edges) or not, grouped over
    # the whole key range (relation by relation is compact_map's, tested below).
    from pigeon.native import grouped_keys

    pairs = sorted(pairs, key=lambda p: p[0]) if relation_order else pairs
    keys = torch.tensor([r * 30 + v for r, v in pairs], dtype=torch.int64)
    unique, inverse, ptr, order = grouped_keys(keys, 150)
    want_unique, want_inverse = torch.unique(keys, sorted=True, return_inverse=True)
    assert unique.tolist() == want_unique.tolist() and inverse.tolist() == want_inverse.tolist()
    assert order.tolist() == torch.sort(want_inverse, stable=True).indices.tolist()
    counts = torch.bincount(want_inverse, minlength=want_unique.numel())
    assert ptr.tolist() == [0] + torch.cumsum(counts, 0).tolist()


@given(hetero_graphs(max_nodes=12, max_edges=40))
def test_compact_edges_group_every_edge_under_its_row_in_either_way_of_building(graph):
    # With the compact map (C counts the keys) or on their own (a counting sort of the
    # map's rows): row r owns perm[ptr[r]:ptr[r+1]], the edges whose row is r, ascending.
    from pigeon.data import graph as graph_module

    for name in ("compact_src", "compact_dst"):
        for counted in (True, False):
            g = pigeon.HeteroGraph(graph.src, graph.dst, graph.etype, graph.num_nodes, graph.ntype,
                                   num_etypes=graph.num_etypes, num_ntypes=graph.num_ntypes)
            with pytest.MonkeyPatch.context() as patch:
                if not counted:
                    patch.setattr(graph_module, "grouped_keys", lambda *_, **__: None)
                edges = g.layout(f"{name}_edges")
            row = g.layout(name).edge_row.long()
            want_perm = torch.sort(row, stable=True).indices
            want_ptr = torch.cat([torch.zeros(1, dtype=torch.long),
                                  torch.bincount(row, minlength=g.layout(name).num_rows).cumsum(0)])
            assert edges.perm.long().tolist() == want_perm.tolist(), (name, counted)
            assert edges.ptr.long().tolist() == want_ptr.tolist(), (name, counted)


def test_layouts_of_edges_already_in_order_skip_the_sort_and_are_the_identity():
    # A sampled block's edges come grouped by relation, then destination: COO by (etype,
    # dst) is the edge order itself.
    g = pigeon.HeteroGraph(torch.tensor([3, 1, 2, 0, 3]), torch.tensor([0, 1, 1, 0, 2]), torch.tensor([0, 0, 0, 1, 1]),
                           num_nodes=4, num_dst_nodes=3)
    assert g.coo_etype.eid.tolist() == [0, 1, 2, 3, 4]
    assert g.csr_dst.eid.tolist() == [0, 3, 1, 2, 4]   # not in destination order: sorted, stably


@given(st.lists(st.integers(0, 30), max_size=80))
def test_the_counting_sort_is_torch_sorts_stable_order(values):
    from pigeon.native import sort_with_ptr

    keys = torch.tensor(values, dtype=torch.int64)
    order, ptr = sort_with_ptr(keys, 31)
    assert order.tolist() == torch.sort(keys, stable=True).indices.tolist()
    assert ptr.tolist() == [0] + torch.cumsum(torch.bincount(keys, minlength=31), 0).tolist()


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 29), st.integers(0, 29)), max_size=80),
       st.sampled_from(["node", "relation", "shuffled"]), st.sampled_from([torch.int32, torch.int64]))
def test_the_c_block_layouts_match_torch(edges, order, dtype):
    # compact_map and csr in C, in the index dtype, against torch's unique and stable
    # sort: edges in (relation, node) order (a block's destinations: runs of equal
    # nodes), in relation order only (its sources: counted per relation), or shuffled
    # (relations not ascending: None, and the graph falls back).
    from pigeon.native import compact_map, csr

    if order == "node":
        edges = sorted(edges, key=lambda e: (e[0], e[1]))
    elif order == "relation":
        edges = sorted(edges, key=lambda e: e[0])
    etype, node, other = (torch.tensor([e[i] for e in edges], dtype=torch.int64) for i in range(3))
    relations_ascend = bool((etype[1:] >= etype[:-1]).all())
    built = compact_map(etype, node, 30, 5, dtype)
    if not relations_ascend:
        assert built is None
    else:
        row_node, row_etype, rel_ptr, edge_row, perm, ptr = built
        assert all(t.dtype == dtype for t in built)
        keys, inverse = torch.unique(etype * 30 + node, sorted=True, return_inverse=True)
        assert row_etype.tolist() == (keys // 30).tolist() and row_node.tolist() == (keys % 30).tolist()
        assert edge_row.tolist() == inverse.tolist()
        assert rel_ptr.tolist() == [0] + torch.cumsum(torch.bincount(keys // 30, minlength=5), 0).tolist()
        assert perm.tolist() == torch.sort(inverse, stable=True).indices.tolist()
        assert ptr.tolist() == [0] + torch.cumsum(torch.bincount(inverse, minlength=keys.numel()), 0).tolist()
    rowptr, col, eid = csr(node, other, 30, dtype)
    want = torch.sort(node, stable=True).indices
    assert eid.tolist() == want.tolist() and col.tolist() == other[want].tolist()
    assert rowptr.tolist() == [0] + torch.cumsum(torch.bincount(node, minlength=30), 0).tolist()
    assert rowptr.dtype == col.dtype == eid.dtype == dtype


@given(hetero_blocks())
def test_every_layout_is_the_same_without_the_c_helpers(block):
    # Without a C compiler the layouts come from torch (sorts and counting): the same
    # arrays, in the same dtype, as the C helpers give (blocks' edges are in relation and
    # destination order half of the time, where the C path builds them relation by relation).
    from pigeon import native

    def layouts():
        g = pigeon.HeteroGraph(block.src, block.dst, block.etype, block.num_nodes, block.ntype,
                               num_etypes=block.num_etypes, num_ntypes=block.num_ntypes,
                               num_dst_nodes=block.num_dst_nodes)
        return {name: g.layout(name) for name in LAYOUTS}

    with_c = layouts()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native, "_library", lambda: None)
        without_c = layouts()
    for name in LAYOUTS:
        got, want = with_c[name], without_c[name]
        for a, b in zip(*(((x,) if isinstance(x, torch.Tensor) else tuple(x)) for x in (got, want))):
            assert a.dtype == b.dtype and a.tolist() == b.tolist(), name
