"""Sampled mini-batches: DGL's sampler and PyG's loader format as Pigeon blocks, the feature store.

The checks that matter: every block edge is an edge of the full graph with the same
type; destinations are a prefix of sources and each block's destinations are the next
block's sources; fanouts hold per (destination, edge type); with every neighbour taken
(fanout -1) a stack of reference layers on the blocks gives, at the seeds, exactly what
it gives on the full graph (float64, 1e-10: the same sums in another order).
"""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData

import pigeon
from pigeon.data.sampling import (
    FeatureStore, NeighborSampler, PyGNeighborSampler, dgl_fanouts, parse_fanouts,
)
from pigeon.interop import hetero_names
from pigeon.reference import HGT, RGAT, RGCN

DTYPE = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
NTYPES = ("paper", "author", "venue")
# "writes" twice, between different node types: two edge types.
ETYPES = (("author", "writes", "paper"), ("paper", "cites", "paper"), ("paper", "in", "venue"),
          ("venue", "writes", "paper"), ("paper", "rev_writes", "author"))


def typed_graph(seed: int, sizes=(40, 25, 6), edges_per_relation=60) -> pigeon.HeteroGraph:
    """A random graph with canonical edge types; node types interleaved in id order (the
    samplers must not assume contiguous type blocks)."""
    gen = torch.Generator().manual_seed(seed)
    ntype = torch.cat([torch.full((n,), t) for t, n in enumerate(sizes)])
    ntype = ntype[torch.randperm(ntype.numel(), generator=gen)]
    nodes = [torch.nonzero(ntype == t).flatten() for t in range(len(sizes))]
    src, dst, etype = [], [], []
    for r, (s, _, d) in enumerate(ETYPES):
        pool_s, pool_d = nodes[NTYPES.index(s)], nodes[NTYPES.index(d)]
        src.append(pool_s[torch.randint(0, pool_s.numel(), (edges_per_relation,), generator=gen)])
        dst.append(pool_d[torch.randint(0, pool_d.numel(), (edges_per_relation,), generator=gen)])
        etype.append(torch.full((edges_per_relation,), r))
    return pigeon.HeteroGraph(torch.cat(src), torch.cat(dst), torch.cat(etype), ntype.numel(), ntype,
                              etype_names=ETYPES, ntype_names=NTYPES)


def edge_keys(graph, src, dst, etype):
    return (src * graph.num_etypes + etype) * graph.num_nodes + dst


def check_minibatch(graph, mb, num_layers):
    assert len(mb.blocks) == num_layers
    full = edge_keys(graph, graph.src, graph.dst, graph.etype)
    ids = mb.input_nodes
    for layer, block in enumerate(mb.blocks):
        assert block.is_block or block.num_dst_nodes == block.num_src_nodes
        assert block.num_etypes == graph.num_etypes and block.num_ntypes == graph.num_ntypes
        assert torch.equal(block.ntype, graph.ntype[ids[: block.num_src_nodes]]), "node types follow the ids"
        keys = edge_keys(graph, ids[block.src], ids[block.dst], block.etype)
        assert bool(torch.isin(keys, full).all()), "every block edge is a graph edge of the same type"
        if layer + 1 < num_layers:
            assert mb.blocks[layer + 1].num_src_nodes == block.num_dst_nodes
    assert torch.equal(mb.seeds, ids[: mb.blocks[-1].num_dst_nodes])


def test_dgl_blocks_are_pigeon_blocks_with_the_fanouts_held():
    graph = typed_graph(0)
    seeds = graph.nodes_of_type(0)
    fanouts = [3, {("author", "writes", "paper"): 2, "cites": 1}]
    sampler = NeighborSampler(graph, fanouts, seeds=seeds, seed_ntype="paper", batch_size=7, seed=1)
    assert len(sampler) == -(-seeds.numel() // 7)
    seen = []
    for mb in sampler:
        check_minibatch(graph, mb, 2)
        seen.append(mb.seeds)
        assert bool((graph.ntype[mb.seeds] == 0).all())
        for block, limits in zip(mb.blocks, dgl_fanouts(fanouts, hetero_names(graph))):
            per_pair = torch.bincount(block.dst * graph.num_etypes + block.etype,
                                      minlength=block.num_dst_nodes * graph.num_etypes)
            limit = torch.tensor([limits[c] for c in ETYPES]).repeat(block.num_dst_nodes)
            assert bool((per_pair <= limit).all())
        # The last layer samples no edge of the relations the dict leaves out.
        last = mb.blocks[-1]
        assert set(last.etype.unique().tolist()) <= {0, 1}
    assert torch.equal(torch.sort(torch.cat(seen)).values, seeds), "every seed once per epoch"


def full_graph_model(kind, graph, seed):
    """Two reference layers (float64) of ``kind`` with random parameters."""
    torch.manual_seed(seed)
    if kind == "rgcn":
        layers = [RGCN(5, 6, graph.num_etypes, dtype=DTYPE), RGCN(6, 3, graph.num_etypes, dtype=DTYPE)]
    elif kind == "rgat":
        layers = [RGAT(5, 3, graph.num_etypes, heads=2, dtype=DTYPE), RGAT(6, 3, graph.num_etypes, dtype=DTYPE)]
    else:
        layers = [HGT(5, 6, graph.num_ntypes, graph.num_etypes, heads=2, dtype=DTYPE),
                  HGT(6, 6, graph.num_ntypes, graph.num_etypes, heads=3, dtype=DTYPE)]
    with torch.no_grad():
        for layer in layers:
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, dtype=DTYPE) * 0.5)

    def run(blocks, x):
        return layers[1](blocks[1], torch.tanh(layers[0](blocks[0], x)))
    return run


@pytest.mark.parametrize("kind", ["rgcn", "rgat", "hgt"])
def test_full_fanout_blocks_give_the_full_graph_output_at_the_seeds(kind):
    graph = typed_graph(1)
    x = torch.randn(graph.num_nodes, 5, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    model = full_graph_model(kind, graph, 3)
    expected = model([graph, graph], x)
    seeds = graph.nodes_of_type(0)
    sampler = NeighborSampler(graph, [-1, -1], seeds=seeds, batch_size=9, shuffle=False)
    for mb in sampler:
        check_minibatch(graph, mb, 2)
        torch.testing.assert_close(model(mb.blocks, x[mb.input_nodes]), expected[mb.seeds], **TOL)


class FakeNeighborLoader:
    """Yields what PyG's ``NeighborLoader`` yields (``disjoint=False``, every neighbour),
    for tests where pyg-lib and torch-sparse are absent: per node type ``n_id`` (ids
    within the type, seeds first, then each hop's new nodes in order of discovery) and
    ``num_sampled_nodes``; per edge type ``edge_index`` in batch-local ids (hop by hop:
    the in-edges of the hop's nodes) and ``num_sampled_edges``; the seed type's
    ``batch_size``."""

    def __init__(self, graph, seeds, num_layers, batch_size):
        self.graph, self.seeds, self.num_layers, self.batch_size = graph, seeds, num_layers, batch_size
        self.names = hetero_names(graph)
        self.local = torch.empty(graph.num_nodes, dtype=torch.long)
        for t in range(graph.num_ntypes):
            nodes = graph.nodes_of_type(t)
            self.local[nodes] = torch.arange(nodes.numel())

    def __len__(self):
        return -(-self.seeds.numel() // self.batch_size)

    def __iter__(self):
        g, names = self.graph, self.names
        for start in range(0, self.seeds.numel(), self.batch_size):
            chunk = self.seeds[start:start + self.batch_size].tolist()
            order = {t: [] for t in range(g.num_ntypes)}
            index = {}
            sampled_nodes = {t: [0] * (self.num_layers + 1) for t in range(g.num_ntypes)}
            edges = {c: [] for c in names.canonical_etypes}
            sampled_edges = {c: [0] * self.num_layers for c in names.canonical_etypes}

            def add(node, hop):
                if node not in index:
                    t = int(g.ntype[node])
                    index[node] = len(order[t])
                    order[t].append(node)
                    sampled_nodes[t][hop] += 1
                    return True
                return False

            frontier = [v for v in chunk if add(v, 0)]
            for hop in range(self.num_layers):
                new = []
                for r, canonical in enumerate(names.canonical_etypes):
                    for v in frontier:
                        into = torch.nonzero((g.dst == v) & (g.etype == r)).flatten().tolist()
                        for e in into:
                            u = int(g.src[e])
                            if add(u, hop + 1):
                                new.append(u)
                            edges[canonical].append((index[u], index[v]))
                            sampled_edges[canonical][hop] += 1
                frontier = new
            batch = HeteroData()
            for t, name in enumerate(names.ntypes):
                batch[name].n_id = self.local[torch.tensor(order[t], dtype=torch.long)]
                batch[name].num_sampled_nodes = sampled_nodes[t]
            for canonical in names.canonical_etypes:
                pairs = torch.tensor(edges[canonical], dtype=torch.long).view(-1, 2)
                batch[canonical].edge_index = pairs.T.contiguous()
                batch[canonical].num_sampled_edges = sampled_edges[canonical]
            batch[names.ntypes[int(g.ntype[chunk[0]])]].batch_size = len(chunk)
            yield batch


@pytest.mark.parametrize("kind", ["rgcn", "hgt"])
def test_pyg_loader_batches_become_blocks_that_match_the_full_graph(kind):
    graph = typed_graph(4)
    x = torch.randn(graph.num_nodes, 5, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    model = full_graph_model(kind, graph, 6)
    expected = model([graph, graph], x)
    seeds = graph.nodes_of_type(0)[:20]
    sampler = PyGNeighborSampler(graph, 2, loader=FakeNeighborLoader(graph, seeds, 2, 8))
    assert len(sampler) == 3
    count = 0
    for mb in sampler:
        check_minibatch(graph, mb, 2)
        assert torch.equal(mb.seeds, seeds[count:count + mb.seeds.numel()]), "seeds first, in order"
        count += mb.seeds.numel()
        torch.testing.assert_close(model(mb.blocks, x[mb.input_nodes]), expected[mb.seeds], **TOL)
    assert count == seeds.numel()


def test_pyg_neighbor_loader_without_its_backends_is_a_clear_error():
    import importlib.util

    if any(importlib.util.find_spec(m) is not None for m in ("pyg_lib", "torch_sparse")):
        pytest.skip("pyg-lib or torch-sparse is installed: NeighborLoader builds")
    graph = typed_graph(0)
    with pytest.raises(ModuleNotFoundError, match=r"needs `pyg-lib` or `torch-sparse`"):
        PyGNeighborSampler(graph, 2, fanouts=[2, 2], seed_ntype="paper")


def test_feature_store_gathers_rows_by_type_without_copying_tables():
    graph = typed_graph(2)
    widths = (4, None, 3)
    tables = [None if w is None else torch.randn(int((graph.ntype == t).sum()), w) for t, w in enumerate(widths)]
    store = FeatureStore(graph, tables)
    assert store.widths == list(widths)
    nodes = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(0))[:30]
    inputs = store.gather(nodes)
    assert inputs.num_nodes == 30
    assert sum(r.numel() for r in inputs.rows) == 30
    for t in range(graph.num_ntypes):
        of_type = graph.nodes_of_type(t)
        picked = nodes[inputs.rows[t]]
        assert bool((graph.ntype[picked] == t).all())
        assert torch.equal(of_type[inputs.local[t]], picked)
        if widths[t] is None:
            assert inputs.features[t] is None
        else:
            assert torch.equal(inputs.features[t], tables[t][inputs.local[t]])
    assert store.features[0] is tables[0], "the store keeps the caller's table, not a copy"
    with pytest.raises(ValueError, match=r"`features\[0\]` to have shape \[\d+, width\]"):
        FeatureStore(graph, [tables[0][1:], None, tables[2]])


def test_fanout_arguments_are_checked():
    graph = typed_graph(0)
    names = hetero_names(graph)
    assert parse_fanouts("25,20") == [25, 20] and parse_fanouts("-1") == [-1]
    with pytest.raises(ValueError, match=r"comma-separated integers"):
        parse_fanouts("25;20")
    with pytest.raises(ValueError, match=r"positive int or -1"):
        parse_fanouts("0,3")
    with pytest.raises(ValueError, match=r"several edge types have that relation name"):
        dgl_fanouts([{"writes": 2}], names)
    with pytest.raises(ValueError, match=r"no edge type has that name"):
        dgl_fanouts([{"likes": 2}], names)
    per_layer = dgl_fanouts([{("venue", "writes", "paper"): 4}], names)
    assert per_layer[0][("venue", "writes", "paper")] == 4 and per_layer[0][("author", "writes", "paper")] == 0
    with pytest.raises(ValueError, match=r"one entry per layer"):
        dgl_fanouts(5, names)
    with pytest.raises(ValueError, match=r"every seed to be of node type 'paper'"):
        NeighborSampler(graph, [2], seeds=graph.nodes_of_type(1), seed_ntype="paper")
    with pytest.raises(ValueError, match=r"`seed_ntype` to be a node type of the graph"):
        NeighborSampler(graph, [2], seed_ntype="book")


def test_dgl_distgraph_blocks_in_standalone_mode(tmp_path, monkeypatch):
    """Partitioned storage (docs/ARCHITECTURE.md, "Graphs larger than one machine"):
    ``dgl.distributed.partition_graph`` then ``DistGraph`` in DGL's standalone mode (one
    partition, no server). Its ``DistNodeDataLoader`` yields the same heterogeneous blocks,
    in the partitioned id space; mapped back to Pigeon's ids with the partitioner's
    ``orig_nids``, ``blocks_from_dgl`` makes Pigeon blocks whose model output at the seeds
    is the full graph's (every neighbour taken)."""
    from pigeon.interop.dgl import blocks_from_dgl, import_dgl, to_dgl

    dgl = import_dgl()
    monkeypatch.setenv("DGL_DIST_MODE", "standalone")
    graph = typed_graph(8)
    names = hetero_names(graph)
    x = torch.randn(graph.num_nodes, 5, generator=torch.Generator().manual_seed(9), dtype=DTYPE)
    orig_nids, _ = dgl.distributed.partition_graph(to_dgl(graph, hetero=True), "typed", 1, str(tmp_path),
                                                   part_method="random", return_mapping=True)
    dgl.distributed.initialize(None)
    dist_graph = dgl.distributed.DistGraph("typed", part_config=str(tmp_path / "typed.json"))
    # Partition ids -> ids within the type -> Pigeon's global ids. (Standalone mode takes
    # one partition, whose ids are the original ones; with several the map permutes.)
    type_nodes = [graph.nodes_of_type(t)[orig_nids[name]] for t, name in enumerate(names.ntypes)]
    seeds = torch.arange(12)
    loader = dgl.dataloading.DistNodeDataLoader(dist_graph, {"paper": seeds},
                                                dgl.dataloading.MultiLayerNeighborSampler([-1, -1]), batch_size=5)
    model = full_graph_model("rgcn", graph, 10)
    expected = model([graph, graph], x)
    count = 0
    for _, _, blocks in loader:
        converted, input_nodes, out_nodes = blocks_from_dgl(blocks, names, type_nodes)
        torch.testing.assert_close(model(converted, x[input_nodes]), expected[out_nodes], **TOL)
        count += out_nodes.numel()
    assert count == seeds.numel()


def test_sampler_workers_give_the_batches_of_in_process_sampling():
    """With every neighbour taken and no shuffle, a sampler worker process (one thread,
    DGL's worker set-up) yields the blocks that sampling in this process does: the same
    seeds, nodes and typed edges (DGL may number the source-only nodes in another order)."""
    graph = typed_graph(3)
    seeds = graph.nodes_of_type(0)
    here = list(NeighborSampler(graph, [-1, -1], seeds=seeds, batch_size=16, shuffle=False))
    there = list(NeighborSampler(graph, [-1, -1], seeds=seeds, batch_size=16, shuffle=False, num_workers=1))
    assert len(here) == len(there) == -(-seeds.numel() // 16)
    for a, b in zip(here, there):
        assert torch.equal(a.seeds, b.seeds)
        assert torch.equal(torch.sort(a.input_nodes).values, torch.sort(b.input_nodes).values)
        for x, y in zip(a.blocks, b.blocks):
            assert (x.num_src_nodes, x.num_dst_nodes) == (y.num_src_nodes, y.num_dst_nodes)
            keys = [torch.sort(edge_keys(graph, m.input_nodes[g.src], m.input_nodes[g.dst], g.etype)).values
                    for m, g in ((a, x), (b, y))]
            assert torch.equal(*keys)
