"""The Triton backend: whole layers against pigeon.reference, forward and every gradient,
and the generated source's structure.

Without a GPU the kernels run through Triton's interpreter on CPU tensors (exact, about
2 ms per program instance, hence the small graphs); with one they run on CUDA.
float64 is held to 1e-10 like the other backends. float32 is held to 2e-5 relative:
each output is a short chain of sums of at most a few dozen float32 products (rounding
about 1e-7 each) whose order differs from the reference's, and softmax and layer norm
divide by sums that can be small.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402

import pigeon  # noqa: E402
from pigeon import nn as pnn  # noqa: E402
from pigeon.codegen.triton import render_traversal  # noqa: E402
from pigeon.ir.kernel_ir import DenseKernel, GemmKernel, TraversalKernel, TraversalLayout, ViewKernel  # noqa: E402
from strategies import hetero_graphs  # noqa: E402
from test_nn import LAYERS, _pair  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DECISIONS = [dict(), dict(reorder=True, compact=True), dict(reorder=False, compact=False, layout="coo"),
             dict(reorder=True, compact=False, layout="coo")]


def _on_device(compiled, ref, graph, inputs):
    inputs = [x.detach().to(DEVICE).requires_grad_() for x in inputs]
    return compiled.to(DEVICE), ref.to(DEVICE), graph.to(DEVICE), inputs


def _compare(compiled, ref, graph, inputs, tol=1e-10):
    """Output and every gradient (inputs and parameters) against the reference layer."""
    got, want = compiled(graph, *inputs), ref(graph, *inputs)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    gen = torch.Generator().manual_seed(2)
    upstream = torch.randn(want.shape, dtype=want.dtype, generator=gen).to(want.device)
    got_grads = torch.autograd.grad(got, [*inputs, *compiled.parameters()], upstream, allow_unused=True)
    want_grads = torch.autograd.grad(want, [*inputs, *ref.parameters()], upstream, allow_unused=True)
    names = [f"input{i}" for i in range(len(inputs))] + [n for n, _ in compiled.named_parameters()]
    for name, a, b in zip(names, got_grads, want_grads):
        # A parameter the graph never reaches has no gradient in the reference; Pigeon gives zeros.
        if b is None:
            assert a is None or not a.any(), f"gradient of {name}: expected zeros"
            continue
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("options", DECISIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "cost-model")
@settings(max_examples=3)
@given(graph=hetero_graphs(max_nodes=8, max_edges=20))
def test_triton_layer_matches_reference(graph, name, options):
    compiled, ref, inputs = _pair(name, graph, {**options, "backend": "triton"})
    compiled, ref, graph, inputs = _on_device(compiled, ref, graph, inputs)
    _compare(compiled, ref, graph, inputs)


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt", "nbfnet-distmult-sum", "nbfnet-transe-min"])
def test_single_node_graph(name):
    graph = pigeon.HeteroGraph(torch.tensor([0]), torch.tensor([0]), num_nodes=1, num_etypes=2)
    compiled, ref, inputs = _pair(name, graph, {"backend": "triton"})
    compiled, ref, graph, inputs = _on_device(compiled, ref, graph, inputs)
    _compare(compiled, ref, graph, inputs)


@pytest.mark.parametrize("name", ["rgat", "hgt", "nbfnet-distmult-pna"])
def test_float32(name):
    graph = pigeon.data.load("aifb", scale=0.01, seed=1).graph
    compiled, ref, inputs = _pair(name, graph, {"backend": "triton"})
    compiled, ref, graph, inputs = _on_device(compiled.float(), ref.float(), graph, [x.float() for x in inputs])
    _compare(compiled, ref, graph, inputs, tol=2e-5)


# ---- the generated source -------------------------------------------------------------------

def _plan(layer, graph, x_dim=8, **options):
    module = layer(graph, backend="triton", **options)
    params = dict(module.named_parameters())
    x = torch.randn(graph.num_nodes, x_dim, dtype=torch.float64)
    return module.compiled.plan(graph, {"x": x, **params})


def _graph():
    return pigeon.data.load("aifb", scale=0.01, seed=0).graph


def _rgat(graph, **options):
    return pnn.RGAT(8, 8, graph.num_etypes, **options).double()


def test_node_parallel_traversal_has_no_atomics_and_walks_the_csr():
    plan = _plan(_rgat, _graph())
    traversals = [k for k in plan.forward_kernels.kernels if isinstance(k, TraversalKernel)]
    assert traversals and all(k.softmax for k in traversals)
    (rendered,) = render_traversal(traversals[0], "k")
    assert rendered.mode is TraversalLayout.CSR
    assert "tl.atomic" not in rendered.source
    assert "for start in range(begin, end, BLOCK)" in rendered.source
    # Online softmax: a running maximum rescales the running sum, then a second sweep normalises.
    assert "tl.exp(m" in rendered.source and rendered.source.count("# sweep") == 2


def test_edge_parallel_traversal_scatters_with_atomics():
    plan = _plan(_rgat, _graph(), layout="coo")
    backward = [k for k in plan.backward_kernels.kernels if isinstance(k, TraversalKernel) and k.layout is TraversalLayout.COO]
    rendered = [part for k in backward for part in render_traversal(k, "k")]
    assert any(part.mode is TraversalLayout.ROWS and "tl.atomic_add" in part.source for part in rendered)


def test_every_kernel_is_generated_and_the_module_is_a_content_hashed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    plan = _plan(lambda g, **o: pnn.HGT(8, 8, g.num_ntypes, g.num_etypes, heads=2, **o).double(), _graph())
    executor = plan.run_forward
    kinds = {type(k) for k in executor.program.kernels}
    assert {GemmKernel, TraversalKernel, DenseKernel} <= kinds
    source = executor.source(torch.float64)
    # Every kernel but the moves between node and destination rows (views) is generated.
    generated = [k for k in executor.program.kernels if not isinstance(k, ViewKernel)]
    assert source.count("@triton.jit") >= len(generated)
    module = executor.module()
    path = os.path.realpath(module.__file__)
    assert path.startswith(os.path.realpath(tmp_path)) and open(path).read() == source


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    graph = _graph()
    module = _rgat(graph, backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' runs on CUDA tensors.*TRITON_INTERPRET=1"):
        module(graph, torch.randn(graph.num_nodes, 8, dtype=torch.float64))


def test_unsupported_dtype_is_a_clear_error():
    graph = _graph().to(DEVICE)
    module = _rgat(graph, backend="triton").to(DEVICE)
    x = torch.randn(graph.num_nodes, 8, device=DEVICE).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"one of float64, float32, bfloat16, float16 for backend='triton' "
                                         r"\(got torch.float8_e4m3fn\)"):
        module(graph, x)


def test_a_template_error_names_the_template_and_line():
    from pigeon.codegen.templates import TemplateError, render

    with pytest.raises(TemplateError, match=r"template traversal\.py\.jinja line \d+: 'name' is undefined"):
        render("traversal.py.jinja", title="t", params=[], grouped=False, sweeps=[{"body": []}],
               group_init=[], group_store=[])
