"""The layer-language RGCN/RGAT/HGT, run by the level-1 interpreter, against pigeon.reference.

Forward and every gradient in float64 to 1e-10: this pins the semantics of the traced
programs before any pass or backend touches them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from pigeon import reference
from pigeon.frontend.lang import Layer
from pigeon.ir import GLOBAL
from pigeon.nn import functional
from pigeon.runtime.interpret import run
from strategies import hetero_graphs


def _param_shapes(fn: Layer, module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, tensor in module.named_parameters():
        kind = fn.param_kinds[name]
        shapes[name] = tuple(tensor.shape) if kind.space == GLOBAL else tuple(tensor.shape[1:])
    return shapes


def _check_against_reference(fn: Layer, module: torch.nn.Module, graph, in_dim: int, **config):
    module = module.double()
    gen = torch.Generator().manual_seed(graph.num_edges + 7)
    x = torch.randn(graph.num_nodes, in_dim, dtype=torch.float64, generator=gen, requires_grad=True)
    program = fn.trace({"x": (in_dim,)}, _param_shapes(fn, module), **config)
    params = dict(module.named_parameters())
    got = run(program, graph, {"x": x}, params)["out"]
    expected = module(graph, x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

    upstream = torch.randn(expected.shape, dtype=torch.float64, generator=gen)
    wrt = [x, *params.values()]
    got_grads = torch.autograd.grad(got, wrt, upstream, allow_unused=True)
    ref_grads = torch.autograd.grad(expected, wrt, upstream, allow_unused=True)
    for name, a, b in zip(["x", *params], got_grads, ref_grads):
        a = torch.zeros_like(wrt[0]) if a is None and b is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("norm", ["right", "relation", None])
@pytest.mark.parametrize("num_bases", [None, 2])
@settings(max_examples=15)
@given(graph=hetero_graphs(max_nodes=12, max_edges=40))
def test_rgcn(graph, norm, num_bases):
    module = reference.RGCN(3, 4, graph.num_etypes, num_bases=num_bases, norm=norm)
    _check_against_reference(functional.rgcn, module, graph, 3, norm=norm)


@pytest.mark.parametrize("heads", [1, 2])
@settings(max_examples=15)
@given(graph=hetero_graphs(max_nodes=12, max_edges=40))
def test_rgat(graph, heads):
    module = reference.RGAT(3, 2, graph.num_etypes, heads=heads)
    _check_against_reference(functional.rgat, module, graph, 3, heads=heads)


@pytest.mark.parametrize("heads, in_dim", [(1, 4), (2, 4), (2, 3)])
@settings(max_examples=15)
@given(graph=hetero_graphs(max_nodes=12, max_edges=40))
def test_hgt(graph, heads, in_dim):
    module = reference.HGT(in_dim, 4, graph.num_ntypes, graph.num_etypes, heads=heads)
    _check_against_reference(functional.hgt, module, graph, in_dim, heads=heads)
