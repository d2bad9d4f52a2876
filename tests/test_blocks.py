"""Compiled layers on blocks (sampled mini-batch graphs: destinations a prefix of the
sources) against the reference layers on the same blocks (which tests/test_reference.py
checks against DGL's layers on DGL blocks, and against the plain graph with the same
edges cut to its destinations). Forward and every gradient, float64 to 1e-10 (the same
products and sums, reassociated at most)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import pigeon
import pigeon.nn as pnn
import pigeon.reference as reference
from pigeon.bench.floor import kernel_work
from pigeon.ir.kernel_ir import GemmKernel, ViewKernel
from strategies import as_plain_graph, hetero_blocks

F64 = dict(rtol=1e-10, atol=1e-10)
LAYERS = ["rgcn", "rgcn-bases", "rgat", "hgt", "hgt-skip", "nbfnet-distmult-pna", "nbfnet-rotate-max",
          "nbfnet-transe-mean"]


def _pair(name, graph, backend, dim=4):
    torch.manual_seed(graph.num_edges + 7 * graph.num_dst_nodes)
    if name == "rgcn":
        cls, args, kwargs = "RGCN", (3, dim, graph.num_etypes), dict(norm="right")
    elif name == "rgcn-bases":
        cls, args, kwargs = "RGCN", (3, dim, graph.num_etypes), dict(num_bases=2, norm="relation")
    elif name == "rgat":
        cls, args, kwargs = "RGAT", (3, 2, graph.num_etypes), dict(heads=2)
    elif name.startswith("hgt"):
        in_dim = dim if name == "hgt-skip" else 3          # the skip gate needs in_dim == out_dim
        cls, args, kwargs = "HGT", (in_dim, dim, graph.num_ntypes, graph.num_etypes), dict(heads=2)
    else:
        message, aggregate = name.split("-")[1:]
        cls, args, kwargs = "NBFNetLayer", (dim, graph.num_etypes), dict(message=message, aggregate=aggregate)
    compiled = getattr(pnn, cls)(*args, **kwargs, backend=backend).double()
    ref = getattr(reference, cls)(*args, **kwargs).double()
    ref.load_state_dict(compiled.state_dict())
    gen = torch.Generator().manual_seed(graph.num_nodes)
    if cls == "NBFNetLayer":
        shapes = [(2, graph.num_nodes, dim), (2, graph.num_nodes, dim), (2, graph.num_etypes, dim)]
    else:
        shapes = [(graph.num_nodes, args[0])]
    inputs = [torch.randn(s, dtype=torch.float64, generator=gen, requires_grad=True) for s in shapes]
    return compiled, ref, inputs


def _check_block(name, block, backend):
    compiled, ref, inputs = _pair(name, block, backend)
    got = compiled(block, *inputs)
    want = ref(block, *inputs)
    torch.testing.assert_close(got, want, **F64)
    upstream = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got_grads = torch.autograd.grad(got, [*inputs, *compiled.parameters()], upstream, allow_unused=True)
    want_grads = torch.autograd.grad(want, [*inputs, *ref.parameters()], upstream, allow_unused=True)
    names = [f"input{i}" for i in range(len(inputs))] + [n for n, _ in compiled.named_parameters()]
    leaves = [*inputs, *compiled.parameters()]
    for label, leaf, a, b in zip(names, leaves, got_grads, want_grads):
        a = torch.zeros_like(leaf) if a is None else a
        b = torch.zeros_like(leaf) if b is None else b
        torch.testing.assert_close(a, b, **F64, msg=lambda m: f"gradient of {label}: {m}")


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=12)
@given(block=hetero_blocks(max_nodes=12, max_edges=30))
def test_compiled_layers_on_blocks_match_the_reference(block, name, backend):
    _check_block(name, block, backend)


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt-skip", "nbfnet-distmult-pna"])
@settings(max_examples=3)
@given(block=hetero_blocks(max_nodes=8, max_edges=16, max_etypes=3, max_ntypes=2))
def test_triton_layers_on_blocks_match_the_reference(block, name):
    pytest.importorskip("triton")
    _check_block(name, block, "triton")


def _block(num_src=400, num_dst=40, edges=1200, etypes=4, ntypes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return pigeon.HeteroGraph(torch.randint(0, num_src, (edges,), generator=gen),
                              torch.randint(0, num_dst, (edges,), generator=gen),
                              torch.randint(0, etypes, (edges,), generator=gen), num_src,
                              torch.randint(0, ntypes, (num_src,), generator=gen), num_etypes=etypes,
                              num_ntypes=ntypes, num_dst_nodes=num_dst)


@pytest.mark.parametrize("name", ["rgcn", "hgt-skip"])
def test_no_work_on_source_only_rows_beyond_what_the_maths_needs(name):
    # RGCN's self-loop and HGT's query, output projection and skip read only destination
    # rows: on a block with 10x more sources than destinations, their GEMMs run on the
    # destinations and moving rows between the two spaces copies nothing.
    block = _block()
    compiled, _, inputs = _pair(name, block, "cpu", dim=16)
    tensors = {"x": inputs[0], **dict(compiled.named_parameters())}
    plan = compiled.compiled.plan(block, tensors)
    program = plan.forward_kernels
    gemms = [k for k in program.kernels if isinstance(k, GemmKernel)]
    node_gemms = [k for k in gemms if program.buffer(k.out).type.space.name == "node"]
    dst_gemms = [k for k in gemms if program.buffer(k.out).type.space.name == "dst_node"]
    if name == "rgcn":
        assert not node_gemms and len(dst_gemms) == 1     # the self-loop, on destinations only
    else:
        # K and V are read at every source; Q, the output projection and nothing else per node.
        assert len(dst_gemms) == 2 and len(node_gemms) <= 2
    assert any(isinstance(k, ViewKernel) for k in program.kernels)
    # Against the plain graph with the same edges, whose outputs cover every node: at
    # least one node-wise product (the self-loop; the query) is saved on each source-only
    # row, forward and backward (the data and the weight gradient).
    plain = as_plain_graph(block)
    on_block = kernel_work(plan, block, "train").flops
    on_plain = kernel_work(compiled.compiled.plan(plain, tensors), plain, "train").flops
    in_dim, out_dim = inputs[0].shape[1], 16
    assert on_plain - on_block >= 3 * 2 * (block.num_nodes - block.num_dst_nodes) * in_dim * out_dim


def test_a_block_output_has_a_row_per_destination_and_prefix_views_copy_nothing():
    block = _block(num_src=50, num_dst=5, edges=120)
    layer = pnn.RGCN(8, 8, block.num_etypes, backend="cpu")
    x = torch.randn(block.num_nodes, 8)
    assert layer(block, x).shape == (5, 8)
    plan = layer.compiled.plan(block, {"x": x, **dict(layer.named_parameters())})
    from pigeon.runtime.torch_backend import run_view

    prefix = next(k for k in plan.forward_kernels.kernels if isinstance(k, ViewKernel))
    view = run_view(prefix, block, plan.forward_kernels, {prefix.a: x})
    assert view.data_ptr() == x.data_ptr() and view.shape[0] == 5
