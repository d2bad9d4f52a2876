"""pigeon.passes.sink: messages summed per (destination, edge type) pair before their
product. What it rewrites, the layers it serves against the float64 reference on blocks
and plain graphs (every backend, forward and every gradient), and the cost model's
choice on graphs where it pays and where it does not."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pigeon  # noqa: E402
import pigeon.nn as pnn  # noqa: E402
import pigeon.reference as reference  # noqa: E402
from pigeon.ir.graph_ir import COMPACT_DST_OF_EDGE, ETYPE_OF_COMPACT_DST, ETYPE_OF_COMPACT_SRC, ETYPE_OF_EDGE, Op  # noqa: E402
from pigeon.ir.kernel_ir import GemmKernel  # noqa: E402
from pigeon.passes import PassContext  # noqa: E402
from pigeon.passes.pipeline import PASS_NAMES, Options, optimize  # noqa: E402
from pigeon.passes.sink import applies  # noqa: E402
from strategies import hetero_blocks, hetero_graphs  # noqa: E402

F64 = dict(rtol=1e-10, atol=1e-10)
LAYERS = ["rgcn", "rgcn-relation", "rgcn-bases", "rgat", "rgat-one-head", "hgt"]


def _pair(name, graph, **options):
    torch.manual_seed(graph.num_edges + 5 * graph.num_dst_nodes)
    if name.startswith("rgcn"):
        norm = "relation" if name != "rgcn" else "right"
        extra = dict(num_bases=2) if name == "rgcn-bases" else {}
        cls, args, kwargs = "RGCN", (3, 4, graph.num_etypes), dict(norm=norm, **extra)
    elif name.startswith("rgat"):
        cls, args, kwargs = "RGAT", (3, 2, graph.num_etypes), dict(heads=1 if name == "rgat-one-head" else 2)
    else:
        cls, args, kwargs = "HGT", (3, 4, graph.num_ntypes, graph.num_etypes), dict(heads=2)
    compiled = getattr(pnn, cls)(*args, **kwargs, **options).double()
    ref = getattr(reference, cls)(*args, **kwargs).double()
    ref.load_state_dict(compiled.state_dict())
    x = torch.randn(graph.num_nodes, args[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    return compiled, ref, x


def _check(name, graph, **options):
    compiled, ref, x = _pair(name, graph, **options)
    got, want = compiled(graph, x), ref(graph, x)
    torch.testing.assert_close(got, want, **F64)
    upstream = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got_grads = torch.autograd.grad(got, [x, *compiled.parameters()], upstream, allow_unused=True)
    want_grads = torch.autograd.grad(want, [x, *ref.parameters()], upstream, allow_unused=True)
    names = ["x"] + [n for n, _ in compiled.named_parameters()]
    for label, leaf, a, b in zip(names, [x, *compiled.parameters()], got_grads, want_grads):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        torch.testing.assert_close(a, b, **F64, msg=lambda m: f"gradient of {label}: {m}")
    return compiled


def _traced(name, graph):
    compiled, _, x = _pair(name, graph, backend="torch")
    program, _ = compiled.compiled.trace(graph, {"x": x, **dict(compiled.named_parameters())})
    return program


@pytest.mark.parametrize("name", LAYERS)
def test_the_pass_rewrites_each_layers_messages(name):
    graph = pigeon.data.load("aifb", scale=0.01, seed=0).graph
    compiled, _, x = _pair(name, graph, backend="torch", sink=True, reorder=True, compact=False)
    plan = compiled.compiled.plan(graph, {"x": x, **dict(compiled.named_parameters())})
    assert any(d.startswith("sink:") for d in plan.decisions), plan.decisions
    nodes = plan.forward.nodes
    assert any(n.op is Op.AGGREGATE and n.attr("index") == COMPACT_DST_OF_EDGE for n in nodes)
    assert any(n.op is Op.TYPED_LINEAR and n.attr("index") == ETYPE_OF_COMPACT_DST for n in nodes)
    # no product per edge is left but the attention scores' folded ones (in x heads)
    per_edge = [n for n in nodes if n.op is Op.TYPED_LINEAR and n.attr("index") in (ETYPE_OF_EDGE, ETYPE_OF_COMPACT_SRC)]
    assert all(n.type.shape[-1] <= 2 for n in per_edge), [str(n.type) for n in per_edge]


def test_nothing_to_rewrite_in_a_layer_without_typed_messages():
    graph = pigeon.data.load("aifb", scale=0.01, seed=0).graph
    layer = pnn.NBFNetLayer(4, graph.num_etypes, message="distmult", aggregate="sum", backend="torch")
    x = torch.randn(2, graph.num_nodes, 4)
    rel = torch.randn(2, graph.num_etypes, 4)
    params = {n.replace(".", "_"): p for n, p in layer.named_parameters()}
    plan = layer.compiled.plan(graph, {"x": x.transpose(0, 1), "boundary": x.transpose(0, 1),
                                       "relation": rel.transpose(0, 1), **params})
    assert not applies(plan.forward)
    assert not any(d.startswith("sink:") for d in plan.decisions)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=6)
@given(block=hetero_blocks(max_nodes=12, max_edges=30))
def test_layers_match_the_reference_on_blocks(block, name, backend):
    _check(name, block, backend=backend, sink=True)


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt"])
@settings(max_examples=3)
@given(graph=hetero_graphs(max_nodes=10, max_edges=24), reorder=st.booleans(), compact=st.booleans())
def test_layers_match_the_reference_with_every_other_decision(graph, name, reorder, compact):
    _check(name, graph, backend="cpu", sink=True, reorder=reorder, compact=compact)


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt"])
@settings(max_examples=2)
@given(block=hetero_blocks(max_nodes=6, max_edges=12, max_etypes=3, max_ntypes=2))
def test_triton_layers_match_the_reference_on_blocks(block, name):
    pytest.importorskip("triton")
    _check(name, block, backend="triton", sink=True)


def _block(num_dst: int, fanout: int, num_src: int, num_etypes: int, seed: int = 0) -> pigeon.HeteroGraph:
    """Each destination draws ``fanout`` edges of random relations from ``num_src``
    sources (destinations first): a sampled block's first layer."""
    gen = torch.Generator().manual_seed(seed)
    dst = torch.arange(num_dst).repeat_interleave(fanout)
    src = torch.randint(0, num_src, (dst.numel(),), generator=gen)
    etype = torch.randint(0, num_etypes, (dst.numel(),), generator=gen)
    return pigeon.HeteroGraph(src, dst, etype, num_src, num_etypes=num_etypes, num_dst_nodes=num_dst)


def _decided(module, graph) -> str:
    x = torch.randn(graph.num_nodes, 64, requires_grad=True)
    plan = module.compiled.plan(graph, {"x": x, **dict(module.named_parameters())})
    (decision,) = [d for d in plan.decisions if d.startswith("cost model")]
    return decision


@pytest.mark.parametrize("cls", ["RGCN", "RGAT"])
def test_the_cost_model_sums_per_pair_where_destinations_share_relations(cls):
    # 500 destinations x 25 edges over 4 relations: about 2,000 (dst, etype) pairs
    # against 12,000 (src, etype) pairs over 100,000 sources
    block = _block(num_dst=500, fanout=25, num_src=100_000, num_etypes=4)
    args = (64, 64, 4)
    module = getattr(pnn, cls)(*args, backend="cpu", **(dict(heads=4) if cls == "RGAT" else {}))
    assert "sink=True (" in _decided(module, block)


@pytest.mark.parametrize("cls", ["RGCN", "RGAT"])
def test_the_cost_model_keeps_the_product_per_source_where_sources_repeat(cls):
    # the transpose: 500 sources x 25 edges to 100,000 destinations
    gen = torch.Generator().manual_seed(1)
    src = torch.arange(500).repeat_interleave(25)
    dst = torch.randint(0, 12_000, (src.numel(),), generator=gen)
    etype = torch.zeros(src.numel(), dtype=torch.long)
    graph = pigeon.HeteroGraph(src, dst, etype, 12_000, num_etypes=1)
    module = getattr(pnn, cls)(64, 64, 1, backend="cpu", **(dict(heads=4) if cls == "RGAT" else {}))
    assert "sink=False (" in _decided(module, graph)


def test_a_forced_decision_and_disable_turn_it_off():
    block = _block(num_dst=500, fanout=25, num_src=100_000, num_etypes=4)
    for options in (dict(sink=False), dict(disable=("sink",))):
        module = pnn.RGCN(64, 64, 4, backend="cpu", **options)
        x = torch.randn(block.num_nodes, 64)
        plan = module.compiled.plan(block, {"x": x, **dict(module.named_parameters())})
        assert not any(d.startswith("sink:") for d in plan.decisions)
        assert not any(isinstance(k, GemmKernel) and k.segment == ETYPE_OF_COMPACT_DST
                       for k in plan.forward_kernels.kernels)


def test_options_name_the_pass():
    assert Options(sink=True).sink and "sink" in PASS_NAMES
    program = _traced("rgat", pigeon.data.load("aifb", scale=0.01, seed=0).graph)
    ctx = PassContext()
    optimize(program, ctx, Options(sink=True, reorder=True, compact=False))
    assert any(d.startswith("sink:") for d in ctx.decisions)
