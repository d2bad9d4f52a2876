"""Pigeon layers inside PyTorch's tools.

- ``torch.compile(model, fullgraph=True)`` traces through compiled layers (they are
  ``torch.library`` operators there), forward and backward match the reference, and
  graphs of new sizes do not recompile after the first size change;
- ``torch.profiler`` sees one range per kernel of the plan, forward and backward, on
  every backend; ``pigeon bench --profile`` tabulates them;
- the backward runs only the kernels the gradients asked for;
- a second backward through a compiled layer's backward is an error.

float64 throughout, to 1e-10 against :mod:`pigeon.reference` (sums of a few dozen
products: rounding stays near 1e-15).
"""

from __future__ import annotations

import copy
import gc
import json
import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import pigeon
from pigeon import nn as pnn
from pigeon import reference
from pigeon.bench import Case, run_cases
from pigeon.bench.report import format_profiles
from pigeon.bench.worker import prepare
from pigeon.codegen.c import CConfig
from pigeon.data.graph import find_graph
from pigeon.ir.kernel_ir import GemmKernel, TraversalKernel
from pigeon.runtime import ops, profiling
from pigeon.runtime.choice import Choice
from pigeon.runtime.profiling import kernel_label

F64 = dict(rtol=1e-10, atol=1e-10)
ETYPES, NTYPES, DIM = 3, 2, 6


def _graph(seed: int, nodes: int, edges: int) -> pigeon.HeteroGraph:
    """Random edges among the first ``nodes - 2`` nodes (the last two are isolated), a
    self-loop, a repeated edge, and the last relation empty."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, nodes - 2, (edges,), generator=gen)
    dst = torch.randint(0, nodes - 2, (edges,), generator=gen)
    src[0] = dst[0]
    src[1], dst[1] = src[2], dst[2]
    etype = torch.randint(0, ETYPES - 1, (edges,), generator=gen)
    ntype = torch.randint(0, NTYPES, (nodes,), generator=gen)
    return pigeon.HeteroGraph(src, dst, etype, nodes, ntype, num_etypes=ETYPES, num_ntypes=NTYPES)


def _features(graph: pigeon.HeteroGraph, seed: int, requires_grad: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(graph.num_nodes, DIM, dtype=torch.float64, generator=gen).requires_grad_(requires_grad)


class TwoRGCN(torch.nn.Module):
    """Two R-GCN layers with a ReLU between (``layers``: pigeon.nn or pigeon.reference)."""

    def __init__(self, layers, **options):
        super().__init__()
        self.first = layers.RGCN(DIM, DIM, ETYPES, **options)
        self.second = layers.RGCN(DIM, 4, ETYPES, num_bases=2, **options)

    def forward(self, graph, x):
        return self.second(graph, torch.relu(self.first(graph, x)))


def _models(name: str, backend: str = "cpu"):
    """(compiled model, reference model) with the same weights, float64."""
    torch.manual_seed(0)
    if name == "rgcn2":
        model, ref = TwoRGCN(pnn, backend=backend), TwoRGCN(reference)
    elif name == "rgcn":
        model, ref = pnn.RGCN(DIM, DIM, ETYPES, backend=backend), reference.RGCN(DIM, DIM, ETYPES)
    else:
        model = pnn.HGT(DIM, DIM, NTYPES, ETYPES, heads=2, backend=backend)
        ref = reference.HGT(DIM, DIM, NTYPES, ETYPES, heads=2)
    model, ref = model.double(), ref.double()
    with torch.no_grad():   # no parameter left at a constant (zero biases, unit gates)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref.load_state_dict(model.state_dict())
    return model, ref


def _output_and_grads(model, graph, x):
    """The output and the gradients of x and every parameter for a fixed upstream gradient."""
    out = model(graph, x)
    upstream = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    leaves = [x, *model.parameters()]
    grads = torch.autograd.grad(out, leaves, upstream, allow_unused=True)
    return out, [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]


def _assert_same(got, want):
    (out, grads), (ref_out, ref_grads) = got, want
    torch.testing.assert_close(out, ref_out, **F64)
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        torch.testing.assert_close(a, b, **F64, msg=lambda m: f"gradient {i}: {m}")


# ---- torch.compile -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rgcn2", "hgt"])
def test_fullgraph_compile_matches_the_reference_forward_and_backward(name):
    torch._dynamo.reset()
    model, ref = _models(name)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for seed, (nodes, edges) in enumerate([(12, 40), (17, 55)]):
        graph = _graph(seed, nodes, edges)
        x = _features(graph, seed)
        got = _output_and_grads(compiled, graph, x)
        _assert_same(got, _output_and_grads(ref, graph, x))
        _assert_same(got, _output_and_grads(model, graph, x))


@pytest.mark.parametrize("dynamic", [None, True])
def test_graphs_of_new_sizes_do_not_recompile(dynamic):
    """Node and edge counts change every step: Dynamo marks them dynamic after the first
    change (one recompile), or from the start with ``dynamic=True``."""
    torch._dynamo.reset()
    model, ref = _models("rgcn2")
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=dynamic)
    frames = []
    for step in range(7):
        graph = _graph(step, 10 + 3 * step, 30 + 11 * step)
        x = _features(graph, step)
        _assert_same(_output_and_grads(compiled, graph, x), _output_and_grads(ref, graph, x))
        frames.append(counter.frame_count)
    assert frames[-1] == frames[2] == (1 if dynamic else 2), frames


def test_inductor_compiles_two_layers_to_the_reference():
    torch._dynamo.reset()
    model, ref = _models("rgcn2")
    compiled = torch.compile(model, fullgraph=True)
    for seed, (nodes, edges) in enumerate([(12, 40), (15, 47)]):
        graph = _graph(seed, nodes, edges)
        x = _features(graph, seed)
        _assert_same(_output_and_grads(compiled, graph, x), _output_and_grads(ref, graph, x))


def test_inference_under_no_grad_and_a_graph_dropped_before_backward():
    torch._dynamo.reset()
    model, ref = _models("rgcn2")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    graph = _graph(3, 14, 50)
    x = _features(graph, 3)
    with torch.no_grad():
        torch.testing.assert_close(compiled(graph, x), ref(graph, x), **F64)
    # The graph object lives only through the call; the backward finds it again.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _output_and_grads(compiled, _graph(3, 14, 50), x)
    _assert_same(got, _output_and_grads(ref, graph, x))


def test_a_deep_copy_compiles_on_its_own():
    """A copy (an EMA or teacher model) is a layer of its own for the operators."""
    torch._dynamo.reset()
    model, ref = _models("rgcn2")
    graph = _graph(2, 12, 40)
    x = _features(graph, 2)
    model(graph, x)   # plans hold loaded libraries: the copy plans again
    twin = copy.deepcopy(model)
    assert twin.first.compiled.op_handle != model.first.compiled.op_handle
    del model
    gc.collect()
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    _assert_same(_output_and_grads(compiled, graph, x), _output_and_grads(ref, graph, x))


def test_wrong_rows_under_compile_name_the_tensor():
    torch._dynamo.reset()
    model, _ = _models("rgcn2")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    graph = _graph(1, 12, 30)
    with pytest.raises(ValueError, match="Expected `x` to have one row per node"):
        compiled(graph, torch.randn(graph.num_nodes + 1, DIM, dtype=torch.float64))


def test_a_graph_is_found_by_its_tensors_while_it_lives():
    graph = _graph(0, 9, 20)
    parts = (graph.src, graph.dst, graph.etype, graph.ntype)
    counts = (graph.num_dst_nodes, graph.num_etypes, graph.num_ntypes)
    assert find_graph(*parts, *counts) is graph
    assert find_graph(*parts, graph.num_dst_nodes, graph.num_etypes + 1, graph.num_ntypes) is None
    assert find_graph(parts[0].clone(), *parts[1:], *counts) is None
    twin = copy.deepcopy(graph)   # unpickled and copied graphs register too
    assert find_graph(twin.src, twin.dst, twin.etype, twin.ntype, *counts) is twin
    del graph, twin
    gc.collect()
    assert find_graph(*parts, *counts) is None


def test_a_freed_graph_is_rebuilt_from_its_tensors_with_a_warning(monkeypatch):
    monkeypatch.setattr(ops, "_WARNED", set())
    monkeypatch.setattr(ops, "_RECENT", type(ops._RECENT)())
    graph = _graph(0, 9, 20)
    parts = (graph.src, graph.dst, graph.etype, graph.ntype)
    counts = (graph.num_dst_nodes, graph.num_etypes, graph.num_ntypes)
    del graph
    gc.collect()
    with pytest.warns(RuntimeWarning, match="rebuilt from them"):
        rebuilt = ops._graph(*parts, *counts)
    assert rebuilt.src is parts[0] and rebuilt.num_nodes == 9 and rebuilt.num_etypes == ETYPES
    assert ops._graph(*parts, *counts) is rebuilt   # kept, and found again


# ---- torch.profiler ---------------------------------------------------------------------------
def _profiled_names(fn) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [event.name for event in prof.events()]


def _expected_ranges(scope: str, program) -> list[str]:
    return [f"pigeon.{scope}/{kernel_label(i, k)}" for i, k in enumerate(program.kernels)]


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_the_profiler_sees_one_range_per_kernel_forward_and_backward(backend):
    model, _ = _models("hgt", backend)
    graph = _graph(2, 12, 40)
    x = _features(graph, 2)
    plan = model.compiled.plan(graph, {"x": x, **dict(model.named_parameters())})
    names = _profiled_names(lambda: model(graph, x).square().sum().backward())
    for scope, program in (("hgt.forward", plan.forward_kernels), ("hgt.backward", plan.backward_kernels)):
        expected = _expected_ranges(scope, program)
        assert len(set(expected)) == len(expected) > 3
        ours = [n for n in names if n.startswith(f"pigeon.{scope}/")]
        assert sorted(ours) == sorted(expected), scope
        assert names.count(f"pigeon.{scope}") == 1


def test_the_profiler_sees_the_kernels_of_a_compiled_model():
    torch._dynamo.reset()
    model, _ = _models("rgcn2")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    graph = _graph(4, 12, 40)
    x = _features(graph, 4)
    compiled(graph, x).sum().backward()
    names = _profiled_names(lambda: compiled(graph, x).sum().backward())
    for layer in (model.first, model.second):
        plan = layer.compiled.plan(graph, {"x": x, **dict(layer.named_parameters())})
        forward = _expected_ranges("rgcn.forward", plan.forward_kernels)
        assert all(names.count(label) >= 1 for label in forward), forward
    assert names.count("pigeon.rgcn.forward") == names.count("pigeon.rgcn.backward") == 2


def test_without_a_profiler_no_labels_are_made():
    model, _ = _models("rgcn2")
    graph = _graph(5, 10, 30)
    model(graph, _features(graph, 5)).sum().backward()
    plan = model.first.compiled.plan(graph, {"x": _features(graph, 5), **dict(model.first.named_parameters())})
    assert plan.run_forward not in profiling._LABELS and plan.run_backward not in profiling._LABELS
    assert profiling.kernel_ranges(plan.run_forward, plan.forward_kernels)(0) is profiling._NO_RANGE


def test_bench_profile_tabulates_each_kernel(tmp_path):
    case = Case("pigeon-cpu", "rgcn", "aifb", "train", dim=8, scale=0.02, repeat=2, warmup=0, profile=True)
    (result,) = run_cases([case], progress=False)
    assert result["status"] == "ok", result
    _, workload, runner, _ = prepare(case)
    plan = runner.module.compiled.plan(workload.graph, {"x": workload.x, **dict(runner.module.named_parameters())})
    names = [row["name"] for row in result["profile"]]
    for scope, program in (("rgcn.forward", plan.forward_kernels), ("rgcn.backward", plan.backward_kernels)):
        assert f"pigeon.{scope}" in names
        assert sorted(n for n in names if n.startswith(f"pigeon.{scope}/")) == sorted(_expected_ranges(scope, program))
    assert all(row["calls"] == 1 and row["cpu_s"] > 0 for row in result["profile"])
    table = format_profiles({"results": [result]})
    assert "profile: pigeon-cpu rgcn aifb train" in table and "  k0: " in table
    assert json.loads(json.dumps(result))["profile"] == result["profile"]


def test_bench_profile_is_spelled_in_the_recorded_command():
    from pigeon.bench.command import _command_line, _config
    from pigeon.cli import build_parser

    args = build_parser().parse_args(["bench", "--models", "rgcn", "--profile"])
    config = _config(args)
    assert config.profile and all(case.profile for case in config.cases())
    assert "--profile" in _command_line(config, args)
    plain = build_parser().parse_args(["bench", "--models", "rgcn"])
    assert "--profile" not in _command_line(_config(plain), plain)


# ---- gradients only for what needs them --------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("name", ["rgcn", "hgt"])
def test_backward_runs_only_the_kernels_the_gradients_need(name, backend):
    model, ref = _models(name, backend)
    layer = model
    graph = _graph(6, 14, 50)
    x = _features(graph, 6)
    params = frozenset(n for n, _ in layer.named_parameters())
    plan = layer.compiled.plan(graph, {"x": x, **dict(layer.named_parameters())})
    full, _ = plan.backward_for(params | {"x"})
    without_x, _ = plan.backward_for(params)
    only_x, _ = plan.backward_for(frozenset({"x"}))
    assert full is plan.backward_kernels
    assert len(without_x.kernels) < len(full.kernels) and len(only_x.kernels) < len(full.kernels)
    assert not any(isinstance(k, GemmKernel) and k.weight_grad for k in only_x.kernels)

    # x needs no gradient: the parameters' gradients are those of the full backward.
    want = _output_and_grads(ref, graph, x)
    frozen_x = x.detach()
    out = model(graph, frozen_x)
    upstream = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(out, list(model.parameters()), upstream, allow_unused=True)
    for got, expected, p in zip(grads, want[1][1:], model.parameters()):
        torch.testing.assert_close(torch.zeros_like(p) if got is None else got, expected, **F64)

    # Only x needs one: no weight-gradient GEMM runs, and x's gradient is right.
    for p in model.parameters():
        p.requires_grad_(False)
    names = _profiled_names(lambda: torch.autograd.grad(model(graph, x), x, upstream))
    backward = [n for n in names if n.startswith(f"pigeon.{name}.backward/")]
    assert sorted(backward) == sorted(_expected_ranges(f"{name}.backward", only_x))
    assert not any("weight-gradient" in n for n in backward)
    (grad_x,) = torch.autograd.grad(model(graph, x), x, upstream)
    torch.testing.assert_close(grad_x, want[1][0], **F64)


def test_tuned_backward_configs_carry_over_to_a_specialised_backward():
    torch.manual_seed(0)
    layer = pnn.RGCN(DIM, DIM, ETYPES, backend="cpu").double()
    graph = _graph(8, 14, 50)
    tensors = {"x": _features(graph, 8), **dict(layer.named_parameters())}
    default = layer.compiled.plan(graph, tensors)
    traversals = [f"k{i}" for i, k in enumerate(default.backward_kernels.kernels) if isinstance(k, TraversalKernel)]
    assert traversals
    choice = Choice(reorder=default.choice.reorder, compact=default.choice.compact,
                    backward=tuple((name, CConfig("static", 3)) for name in traversals))
    plan = layer.compiled.plan(graph, tensors, choice)
    params = frozenset(n for n, _ in layer.named_parameters())
    kernels, run = plan.backward_for(params)
    specialised = sum(isinstance(k, TraversalKernel) for k in kernels.kernels)
    assert specialised and run.source(torch.float64).count("schedule(static, ") == specialised
    assert "schedule(static, " not in default.backward_for(params)[1].source(torch.float64)


# ---- second derivatives -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_double_backward_is_a_clear_error(backend):
    model, _ = _models("hgt", backend)
    graph = _graph(9, 12, 40)
    x = _features(graph, 9)
    (grad_x,) = torch.autograd.grad(model(graph, x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice a function that was marked with @once_differentiable"):
        grad_x.sum().backward()
