"""pigeon.nn layers compiled with the torch backend against pigeon.reference, float64 to 1e-10,
forward and every gradient, with the cost model and with each decision forced on and off."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import pigeon
from pigeon import nn as pnn
from pigeon import reference
from pigeon.nn import functional
from strategies import hetero_graphs

F64 = dict(rtol=1e-10, atol=1e-10)
DECISIONS = [dict(), dict(reorder=True, compact=True), dict(reorder=False, compact=True, layout="csr"),
             dict(reorder=True, compact=False)] + [dict(disable=(name,), reorder=True, compact=True)
                                                   for name in ("cse", "reorder", "dce", "compact", "simplify")]


def _pair(name, graph, options):
    torch.manual_seed(graph.num_edges)
    if name == "rgcn-bases":
        args, kwargs, cls = (3, 4, graph.num_etypes), dict(num_bases=2, norm="relation"), "RGCN"
    elif name == "rgcn":
        args, kwargs, cls = (3, 4, graph.num_etypes), dict(norm="right"), "RGCN"
    elif name == "rgat":
        args, kwargs, cls = (3, 2, graph.num_etypes), dict(heads=2), "RGAT"
    elif name == "hgt":
        args, kwargs, cls = (4, 4, graph.num_ntypes, graph.num_etypes), dict(heads=2), "HGT"
    else:
        message, aggregate = name.split("-")[1:]
        args, kwargs, cls = (4, graph.num_etypes), dict(message=message, aggregate=aggregate), "NBFNetLayer"
    compiled = getattr(pnn, cls)(*args, **kwargs, **options).double()
    ref = getattr(reference, cls)(*args, **kwargs).double()
    ref.load_state_dict(compiled.state_dict())
    gen = torch.Generator().manual_seed(graph.num_nodes)
    if cls == "NBFNetLayer":
        shapes = [(2, graph.num_nodes, 4), (2, graph.num_nodes, 4), (2, graph.num_etypes, 4)]
    else:
        shapes = [(graph.num_nodes, args[0])]
    inputs = [torch.randn(s, dtype=torch.float64, generator=gen, requires_grad=True) for s in shapes]
    return compiled, ref, inputs


def _compare(compiled, ref, graph, inputs):
    got, want = compiled(graph, *inputs), ref(graph, *inputs)
    torch.testing.assert_close(got, want, **F64)
    upstream = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    leaves = [*inputs, *compiled.parameters()]
    got_grads = torch.autograd.grad(got, leaves, upstream, allow_unused=True)
    # A parameter the graph never reaches (an edgeless graph) has no gradient in the
    # reference; the compiled layer gives zeros.
    want_grads = torch.autograd.grad(want, [*inputs, *ref.parameters()], upstream, allow_unused=True)
    names = [f"input{i}" for i in range(len(inputs))] + [n for n, _ in compiled.named_parameters()]
    for name, leaf, a, b in zip(names, leaves, got_grads, want_grads):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        torch.testing.assert_close(a, b, **F64, msg=lambda m: f"gradient of {name}: {m}")


LAYERS = ["rgcn", "rgcn-bases", "rgat", "hgt", "nbfnet-distmult-pna", "nbfnet-rotate-max", "nbfnet-transe-mean"]


# Every decision on both backends; a pass turned off (a level-1 matter) on the torch
# backend, the executable semantics. The C generator's share of those programs is the
# decisions' (and tests/test_cpu_backend.py's generated kernels).
PLANS = [(options, backend) for options in DECISIONS for backend in ("torch", "cpu")
         if backend == "torch" or "disable" not in options]


def _plan_id(plan) -> str:
    options, backend = plan
    return (",".join(f"{k}={v}" for k, v in options.items()) or "cost-model") + f"-{backend}"


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("options,backend", PLANS, ids=[_plan_id(p) for p in PLANS])
@settings(max_examples=6)
@given(graph=hetero_graphs(max_nodes=10, max_edges=30))
def test_compiled_layer_matches_reference(graph, name, options, backend):
    compiled, ref, inputs = _pair(name, graph, {**options, "backend": backend})
    _compare(compiled, ref, graph, inputs)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt", "nbfnet-distmult-sum"])
def test_single_node_graph(name, backend):
    graph = pigeon.HeteroGraph(torch.tensor([0]), torch.tensor([0]), num_nodes=1, num_etypes=2)
    compiled, ref, inputs = _pair(name, graph, {"backend": backend})
    _compare(compiled, ref, graph, inputs)


def test_profile_graph_uses_the_optimisations_and_matches(monkeypatch):
    # Rates fixed for the cost model (what it decides on this machine depends on what it measures).
    monkeypatch.setenv("PIGEON_COST_RATES", "60,10")
    # Half the aifb profile: 24k edges of 104 relations; at a twentieth of it the folded
    # per-relation weights cost more than the per-edge products they save.
    graph = pigeon.data.load("aifb", scale=0.5, seed=3).graph
    torch.manual_seed(0)
    compiled = pnn.RGAT(16, 8, graph.num_etypes, heads=2).double()
    ref = reference.RGAT(16, 8, graph.num_etypes, heads=2).double()
    ref.load_state_dict(compiled.state_dict())
    x = torch.randn(graph.num_nodes, 16, dtype=torch.float64, requires_grad=True)
    _compare(compiled, ref, graph, [x])
    plan = compiled.compiled.plan(graph, dict(x=x, **dict(compiled.named_parameters())))
    assert any(d.startswith("cost model (train): reorder=True compact=True") for d in plan.decisions)
    assert any(d.startswith("reorder:") for d in plan.decisions)
    assert any(d.startswith("compact:") for d in plan.decisions)
    again = compiled.compiled.plan(graph, dict(x=x, **dict(compiled.named_parameters())))
    assert again is plan  # cached per signature and graph row counts


def test_bad_inputs_name_the_argument():
    graph = pigeon.HeteroGraph(torch.tensor([0, 1]), torch.tensor([1, 0]), num_etypes=2)
    layer = pnn.RGCN(3, 4, 2)
    with pytest.raises(ValueError, match=r"Expected `x` to have one row per node \(2\) \(got \[3, 3\]\)"):
        layer(graph, torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"Expected `x` to be a floating tensor \(got torch.int64\)"):
        layer(graph, torch.ones(2, 3, dtype=torch.int64))
    fn = pigeon.compile(functional.rgat)
    with pytest.raises(TypeError, match="missing parameter `att_src`"):
        fn(graph, x=torch.randn(2, 3), weight=torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="`backend` to be one of"):
        pigeon.compile(functional.rgat, backend="cuda-magic")
    with pytest.raises(TypeError, match="decorated with @pigeon.layer"):
        pigeon.compile(lambda g, x: x)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_edge_parallel_layout_is_refused_where_the_backend_has_none(backend):
    # Only the Triton generator has edge-parallel traversals; elsewhere "coo" would be the
    # CSR program under another name (and the tuner would time it twice).
    graph = pigeon.HeteroGraph(torch.tensor([0, 1]), torch.tensor([1, 0]), num_etypes=2)
    layer = pnn.RGAT(3, 4, 2, backend=backend, layout="coo")
    with pytest.raises(ValueError, match=f"layout.*'{backend}' backend has.*only backend='triton'"):
        layer(graph, torch.randn(2, 3))
