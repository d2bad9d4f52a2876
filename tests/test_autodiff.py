"""Level-1 autodiff: the backward program, run by the interpreter, against torch autograd
run through the same interpreter (and so against pigeon.reference, see test_layer_language)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from pigeon import reference
from pigeon.frontend import (
    PerEtype, Shared, aggregate, concat, dot, edge_softmax, exp, gelu, layer, layer_norm,
    leaky_relu, linear, log, maximum, minimum, relu, sigmoid, split_heads, sqrt, tanh,
)
from pigeon.ir import format_program
from pigeon.ir.autodiff import backward_program
from pigeon.nn import functional
from pigeon.runtime.interpret import run
from strategies import hetero_graphs
from test_layer_language import _param_shapes, nbfnet_case


def _check_backward(program, graph, inputs, params):
    leaves = {**inputs, **params}
    for value in leaves.values():
        value.requires_grad_(True)
    outputs = run(program, graph, inputs, params)
    gen = torch.Generator().manual_seed(3)
    seeds = {f"grad_{k}": torch.randn(v.shape, dtype=v.dtype, generator=gen) for k, v in outputs.items()}
    expected = torch.autograd.grad(list(outputs.values()), list(leaves.values()),
                                   [seeds[f"grad_{k}"] for k in outputs], allow_unused=True)
    backward = backward_program(program)
    got = run(backward, graph, {**inputs, **seeds}, params)
    for (name, leaf), want in zip(leaves.items(), expected):
        have = got.get(f"grad_{name}")
        if want is None:
            assert have is None or not have.abs().any(), name
            continue
        assert have is not None, f"no gradient for {name}:\n{format_program(backward)}"
        torch.testing.assert_close(have, want, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad of {name}: {m}")


@layer
def every_op(g, x, W: PerEtype, U: Shared, a: PerEtype, *, heads=2):
    z = split_heads(linear(g.src(x), W), heads)
    s = leaky_relu(dot(z, a), 0.1) + tanh(dot(z, a)) * sigmoid(dot(z, a))
    alpha = edge_softmax(g, s)
    m = alpha * z
    node = concat(aggregate(g, m, "sum"), aggregate(g, exp(m * 0.1), "mean"))
    ext = maximum(aggregate(g, m, "max"), aggregate(g, m, "min") * 0.5) - minimum(aggregate(g, relu(m), "max"), 0.3)
    y = layer_norm(linear(node, U)) + gelu(ext) + sqrt(exp(ext) + 1.0) + log(exp(ext) + 2.0) / 3.0
    return y


@settings(max_examples=25)
@given(graph=hetero_graphs(max_nodes=10, max_edges=30))
def test_every_rule_matches_torch_autograd(graph):
    gen = torch.Generator().manual_seed(graph.num_edges)
    dt = torch.float64
    inputs = {"x": torch.randn(graph.num_nodes, 3, dtype=dt, generator=gen)}
    params = {
        "W": torch.randn(graph.num_etypes, 3, 4, dtype=dt, generator=gen),
        "U": torch.randn(4, 2, dtype=dt, generator=gen),
        "a": torch.randn(graph.num_etypes, 2, 2, dtype=dt, generator=gen),
    }
    program = every_op.trace({"x": (3,)}, {"W": (3, 4), "U": (4, 2), "a": (2, 2)})
    _check_backward(program, graph, inputs, params)


@pytest.mark.parametrize("name, make, config", [
    ("rgcn", lambda g: reference.RGCN(3, 4, g.num_etypes, num_bases=2, norm="relation"), {"norm": "relation"}),
    ("rgcn", lambda g: reference.RGCN(3, 4, g.num_etypes), {}),
    ("rgat", lambda g: reference.RGAT(3, 2, g.num_etypes, heads=2), {"heads": 2}),
    ("hgt", lambda g: reference.HGT(4, 4, g.num_ntypes, g.num_etypes, heads=2), {"heads": 2}),
])
@settings(max_examples=10)
@given(graph=hetero_graphs(max_nodes=10, max_edges=30))
def test_layer_backward_programs(graph, name, make, config):
    fn = getattr(functional, name)
    module = make(graph).double()
    in_dim = 4 if name == "hgt" else 3
    gen = torch.Generator().manual_seed(graph.num_edges + 1)
    inputs = {"x": torch.randn(graph.num_nodes, in_dim, dtype=torch.float64, generator=gen)}
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    program = fn.trace({"x": (in_dim,)}, _param_shapes(fn, module), **config)
    _check_backward(program, graph, inputs, params)


@pytest.mark.parametrize("message, aggregate", [("distmult", "pna"), ("rotate", "max"), ("transe", "mean"),
                                                ("distmult", "min")])
@settings(max_examples=8)
@given(graph=hetero_graphs(max_nodes=10, max_edges=30))
def test_nbfnet_backward_programs(graph, message, aggregate):
    program, inputs, params, _, _ = nbfnet_case(graph, message, aggregate)
    inputs = {k: v.detach().clone() for k, v in inputs.items()}
    params = {k: v.detach().clone() for k, v in params.items()}
    _check_backward(program, graph, inputs, params)
