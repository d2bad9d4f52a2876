"""The C and Triton generators against the torch backend on what the model tests do not
reach: non-finite constants and a shared bias of one element.

float64 throughout, held to 1e-10 as elsewhere; NaNs compare equal where the layer makes
them on purpose. Triton runs through its interpreter without a GPU.
"""

from __future__ import annotations

import pytest
import torch

import pigeon
from pigeon.frontend import PerEtype, Shared, aggregate, concat, layer, linear, maximum, minimum

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
