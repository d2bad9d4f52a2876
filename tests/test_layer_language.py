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


def nbfnet_case(graph, message, aggregate, batch=2, dim=4, layer_norm=True, short_cut=True, seed=0):
    """(program, inputs, params, reference module, reference args) for one NBFNet layer.

    The compiled layout holds one row per node with ``[batch, dim]`` in it; the reference
    takes ``[batch, num_nodes, dim]``.
    """
    module = reference.NBFNetLayer(dim, graph.num_etypes, message=message, aggregate=aggregate,
                                   layer_norm=layer_norm, short_cut=short_cut).double()
    gen = torch.Generator().manual_seed(seed)
    x, boundary = (torch.randn(batch, graph.num_nodes, dim, dtype=torch.float64, generator=gen) for _ in range(2))
    relation = torch.randn(batch, graph.num_etypes, dim, dtype=torch.float64, generator=gen)
    inputs = {"x": x.transpose(0, 1), "boundary": boundary.transpose(0, 1), "relation": relation.transpose(0, 1)}
    params = {name.replace(".", "_"): p for name, p in module.named_parameters()}
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    program = functional.nbfnet.trace({k: (batch, dim) for k in inputs}, shapes, message=message,
                                      reduce=aggregate, short_cut=short_cut)
    return program, inputs, params, module, (x, boundary, relation)


@pytest.mark.parametrize("message", ["distmult", "transe", "rotate"])
@pytest.mark.parametrize("aggregate", ["sum", "mean", "max", "min", "pna"])
@settings(max_examples=6)
@given(graph=hetero_graphs(max_nodes=10, max_edges=30))
def test_nbfnet(graph, message, aggregate):
    program, inputs, params, module, ref_args = nbfnet_case(graph, message, aggregate)
    leaves = [*inputs.values(), *params.values()]
    for leaf in leaves:
        leaf.requires_grad_(True)
    got = run(program, graph, inputs, params)["out"].transpose(0, 1)
    expected = module(graph, *ref_args)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(expected.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref_leaves = [*ref_args, *module.parameters()]
    for leaf in ref_leaves:
        leaf.requires_grad_(True)
    expected = module(graph, *ref_args)
    got_grads = torch.autograd.grad(got, leaves, upstream)
    ref_grads = torch.autograd.grad(expected, ref_leaves, upstream)
    for i, (a, b) in enumerate(zip(got_grads, ref_grads)):
        a = a.transpose(0, 1) if i < 3 else a
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
