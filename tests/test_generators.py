"""The C and Triton generators against the torch backend on what the model tests do not
reach: non-finite constants, a shared bias of one element, and kernels that leave
outputs unwritten (caught by poisoning fresh outputs with NaN).

float64 throughout, held to 1e-10 as elsewhere; NaNs compare equal where the layer makes
them on purpose. Triton runs through its interpreter without a GPU.
"""

from __future__ import annotations

import pytest
import torch

import pigeon
from pigeon.codegen.rules import ArgKind
from pigeon.frontend import PerEtype, Shared, aggregate, concat, layer, linear, maximum, minimum
from pigeon.ir.kernel_ir import GemmKernel, TraversalKernel
from pigeon.runtime.cpu_backend import CpuExecutor
from pigeon.runtime.torch_backend import TorchExecutor
from pigeon.runtime.triton_backend import TritonExecutor

F64 = dict(rtol=1e-10, atol=1e-10)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@layer
def nonfinite(g, x, w: PerEtype):
    m = linear(g.src(x), w)
    # NaN and inf propagate through sums in any order; max and min keep finite values
    # (their NaN handling would depend on the order of the rows).
    return concat(aggregate(g, m * float("nan"), "sum"),
                  aggregate(g, maximum(m, float("-inf")), "max"),
                  aggregate(g, minimum(m, float("inf")), "min"),
                  aggregate(g, m + float("inf"), "sum"),
                  x * float("-inf"))


@layer
def shared_bias(g, x, w: PerEtype, bias: Shared):
    return aggregate(g, linear(g.src(x), w), "sum") + bias


def _graph():
    return pigeon.data.load("aifb", scale=0.01, seed=3).graph.to(DEVICE)


def _leaves(graph, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {name: torch.randn(shape, dtype=torch.float64, generator=gen).to(DEVICE).requires_grad_()
            for name, shape in shapes.items()}


def _against_torch(fn, backend: str, graph, leaves: dict[str, torch.Tensor]) -> None:
    """Output and every gradient of ``fn`` on ``backend`` against the torch backend."""
    got = pigeon.compile(fn, backend=backend)(graph, **leaves)
    want = pigeon.compile(fn, backend="torch")(graph, **leaves)
    torch.testing.assert_close(got, want, **F64, equal_nan=True)
    upstream = torch.randn(want.shape, dtype=want.dtype, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    got_grads = torch.autograd.grad(got, list(leaves.values()), upstream)
    want_grads = torch.autograd.grad(want, list(leaves.values()), upstream)
    for name, a, b in zip(leaves, got_grads, want_grads):
        torch.testing.assert_close(a, b, **F64, equal_nan=True, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_non_finite_constants(backend):
    if backend == "cpu" and DEVICE != "cpu":
        pytest.skip("backend='cpu' runs on CPU tensors")
    graph = _graph()
    leaves = _leaves(graph, {"x": (graph.num_nodes, 3), "w": (graph.num_etypes, 3, 2)})
    out = pigeon.compile(nonfinite, backend="torch")(graph, **leaves)
    # The layer makes every kind of value, so the comparison below sees each one.
    assert out.isnan().any() and out.isposinf().any() and out.isneginf().any() and out.isfinite().any()
    _against_torch(nonfinite, backend, graph, leaves)


@pytest.mark.parametrize("out_dim", [1, 4])
def test_triton_shared_bias_of_one_element(out_dim):
    # The bias gradient sums every node's row into one global row of shape [1] (a row
    # shape of ones), scatter-added with atomics.
    graph = _graph()
    leaves = _leaves(graph, {"x": (graph.num_nodes, 3), "w": (graph.num_etypes, 3, out_dim), "bias": (1,)})
    _against_torch(shared_bias, "triton", graph, leaves)


# ---- poisoned outputs -----------------------------------------------------------------------

class _WritesNothing:
    """Stands in for a generated kernel: a ctypes function, or a Triton kernel's launcher."""

    def __call__(self, *args, **kwargs):
        return None

    def __getitem__(self, grid):
        return self


def _rgcn(graph):
    module = pigeon.nn.RGCN(5, 6, graph.num_etypes, compact=True).double()
    gen = torch.Generator().manual_seed(2)
    tensors = {"x": torch.randn(graph.num_nodes, 5, dtype=torch.float64, generator=gen),
               **{n: p.detach() for n, p in module.named_parameters()}}
    return module.compiled.plan(graph, tensors), tensors


def _kernel_to_break(executor, kind) -> tuple[str, object, list[str]]:
    """The first kernel of ``kind`` the executor generated: its function's name, where
    the function lives (the C library or the Triton module), and the buffers it writes."""
    i, rendered = next((i, r) for i, r in executor.rendered.items() if isinstance(executor.program.kernels[i], kind))
    if isinstance(executor, TritonExecutor):
        (rendered,) = rendered
        home = executor.module()
    else:
        home = executor.library(torch.float64)
    if kind is GemmKernel and isinstance(executor, CpuExecutor):
        return rendered.name, home, [executor.program.kernels[i].out]
    return rendered.name, home, [a.key for a in rendered.args if a.kind is ArgKind.OUTPUT]


@pytest.mark.parametrize("backend, kind", [("cpu", TraversalKernel), ("cpu", GemmKernel),
                                           ("triton", TraversalKernel)])
def test_poison_catches_a_kernel_that_writes_nothing(backend, kind, monkeypatch):
    if backend == "cpu" and DEVICE != "cpu":
        pytest.skip("backend='cpu' runs on CPU tensors")
    graph = pigeon.data.load("aifb", scale=0.05, seed=5).graph.to(DEVICE)
    plan, tensors = _rgcn(graph)
    tensors = {k: v.to(DEVICE) for k, v in tensors.items()}
    program = plan.forward_kernels
    (want,) = TorchExecutor(program)(graph, tensors, torch.float64)[0].values()
    executor = (CpuExecutor if backend == "cpu" else TritonExecutor)(program, poison=True)
    name, home, written = _kernel_to_break(executor, kind)
    monkeypatch.setattr(home, name, _WritesNothing())
    outputs, kept = executor(graph, tensors, torch.float64, keep=tuple(written))
    for buffer in written:
        assert kept[buffer].isnan().all(), f"{buffer}, written by nobody, should hold the poison"
    (got,) = outputs.values()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(got, want, **F64)


def test_c_traversals_prefetch_their_own_rows_read_through_the_permutation():
    """A traversal grouped by (source, edge type) pair reads its per-edge inputs at the
    scattered ``perm[p]``; the C kernel prefetches them a few rows ahead, as it does the
    rows it gathers."""
    from pigeon.codegen.c import PREFETCH_AHEAD, render_traversal

    graph = pigeon.data.load("aifb", scale=0.01, seed=0).graph
    module = pigeon.nn.RGAT(8, 8, graph.num_etypes, heads=2, reorder=True, compact=True, backend="cpu")
    x = torch.randn(graph.num_nodes, 8, requires_grad=True)
    plan = module.compiled.plan(graph, {"x": x, **dict(module.named_parameters())})
    grouped = [k for k in plan.backward_kernels.kernels
               if isinstance(k, TraversalKernel) and k.group is not None and k.group.name == "edge_to_compact_src"]
    edge_inputs = [k for k in grouped if any(n.op.value == "input" and n.type.space == k.domain for n in k.body.nodes)]
    assert edge_inputs, [k.describe() for k in grouped]
    source = render_traversal(edge_inputs[0], "k").source
    assert f"perm[p + {PREFETCH_AHEAD}]" in source


def test_c_softmax_backward_keeps_narrow_values_instead_of_gathering_again():
    """RGAT's backward traversal over destinations runs three sweeps (the softmax's
    statistics, the sum it needs, then per-edge values). The narrow per-edge values of
    the first sweep (a dot product per head) are kept in scratch, so the later sweeps
    gather no source row again; the gradients themselves are held to the reference
    by the model tests on every backend."""
    import re

    from pigeon.codegen.c import KEEP_WIDTH, render_traversal
    from pigeon.ir.graph_ir import Op

    graph = pigeon.data.load("aifb", scale=0.01, seed=0).graph
    module = pigeon.nn.RGAT(8, 8, graph.num_etypes, heads=2, reorder=True, compact=True, backend="cpu")
    x = torch.randn(graph.num_nodes, 8, requires_grad=True)
    plan = module.compiled.plan(graph, {"x": x, **dict(module.named_parameters())})
    (softmax,) = [k for k in plan.backward_kernels.kernels if isinstance(k, TraversalKernel)
                  and any(n.op is Op.SEGMENT_SOFTMAX for n in k.body.nodes)]
    source = render_traversal(softmax, "k").source
    sweeps = source.split("/* sweep ")[1:]
    assert len(sweeps) == 3, source
    gathered = re.findall(r"sidx_edge_to_compact_src\[p\]", sweeps[0])
    assert gathered, sweeps[0]
    for later in sweeps[1:]:
        assert "sidx_edge_to_compact_src" not in later, later
        assert "scratch_mine" in later
    width = int(re.search(r"sizes\[1\] \* (\d+);", source).group(1))
    assert 0 < width <= 4 * KEEP_WIDTH
