"""Level-1 IR: tracing, printing, verification, trace-time errors and the interpreter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import pigeon
from pigeon.frontend import (
    PerEtype, Shared, aggregate, dot, edge_softmax, layer, leaky_relu, linear, merge_heads,
    split_heads,
)
from pigeon.ir import (
    EDGE, GLOBAL, NODE, SRC, Builder, IRError, Op, Reduce, TensorType, format_program, replace,
    verify,
)
from pigeon.ir.graph_ir import Program
from pigeon.runtime.interpret import run
from strategies import hetero_graphs


@layer
def rgat_sketch(g, h, W: PerEtype, a_src: PerEtype, a_dst: PerEtype, *, heads=1):
    z = split_heads(linear(g.src(h), W), heads)
    s = leaky_relu(dot(z, a_src) + dot(split_heads(linear(g.dst(h), W), heads), a_dst), 0.2)
    return merge_heads(aggregate(g, edge_softmax(g, s) * z, "sum"))


def _lines_in_order(text: str, expected: list[str]) -> None:
    """FileCheck-style: each expected fragment occurs on a later line than the previous one."""
    lines = text.splitlines()
    at = 0
    for fragment in expected:
        while at < len(lines) and fragment not in lines[at]:
            at += 1
        assert at < len(lines), f"{fragment!r} not found in order in:\n{text}"
        at += 1


def test_trace_prints_a_stable_program():
    program = rgat_sketch.trace({"h": (4,)}, {"W": (4, 6), "a_src": (2, 3), "a_dst": (2, 3)}, heads=2)
    text = format_program(program)
    _lines_in_order(text, [
        '= input "h" : node[4]',
        '= param "W" : etype[4x6]',
        "= gather[src] %0 : edge[4]",
        "= typed_linear[etype] %4, %1 : edge[6]",
        "= reshape %5 {shape=(2, 3)} : edge[2x3]",
        "= gather[etype] %2 : edge[2x3]",
        "= dot %6, %7 : edge[2]",
        "= unary.leaky_relu",
        "= softmax[dst]",
        "= binary.mul",
        "= aggregate.sum[dst]",
        "= reshape",
        '= output "out"',
    ])
    assert text == format_program(rgat_sketch.trace(
        {"h": (4,)}, {"W": (4, 6), "a_src": (2, 3), "a_dst": (2, 3)}, heads=2))


@layer
def typed_weight_on_nodes(g, h, W: PerEtype):
    return linear(h, W)


@layer
def shape_mismatch(g, h, W: Shared):
    return linear(g.src(h), W)


@layer
def unknown_reduction(g, h):
    return aggregate(g, g.src(h), "median")


@pytest.mark.parametrize(
    "fn, params, message, line",
    [
        (typed_weight_on_nodes, {"W": (4, 4)}, "a weight typed per etype needs rows that have a etype", "return linear(h, W)"),
        (shape_mismatch, {"W": (5, 4)}, "expected rows with last dim 5 to match the weight global[5x4], got edge[4]",
         "return linear(g.src(h), W)"),
        (unknown_reduction, {}, "expected `reduce` to be one of ['sum', 'mean', 'max', 'min'], got 'median'",
         'return aggregate(g, g.src(h), "median")'),
    ],
)
def test_trace_errors_name_the_layer_line(fn, params, message, line):
    with pytest.raises(IRError) as info:
        fn.trace({"h": (4,)}, params)
    text = str(info.value)
    assert message in text
    assert text.startswith("test_ir.py:")
    assert line in text
    assert info.value.loc.line == fn.fn.__code__.co_firstlineno + 2


def test_trace_rejects_wrong_argument_sets():
    with pytest.raises(TypeError, match=r"expected `params` for \['W', 'a_dst', 'a_src'\]"):
        rgat_sketch.trace({"h": (4,)}, {"W": (4, 4)})
    with pytest.raises(TypeError, match="unknown configuration"):
        rgat_sketch.trace({"h": (4,)}, {"W": (4, 4), "a_src": (4,), "a_dst": (4,)}, hedas=2)


def test_verifier_catches_a_broken_node():
    program = rgat_sketch.trace({"h": (4,)}, {"W": (4, 6), "a_src": (1, 6), "a_dst": (1, 6)})
    nodes = list(program.nodes)
    nodes[5] = replace(nodes[5], type=TensorType(EDGE, (7,)))
    with pytest.raises(IRError, match=r"%5 \(typed_linear\) is typed edge\[7\] but its operands give edge\[6\]"):
        verify(Program(tuple(nodes)))
    nodes = list(program.nodes)
    nodes[4] = replace(nodes[4], inputs=(9,))
    with pytest.raises(IRError, match="not earlier nodes"):
        verify(Program(tuple(nodes)))
    with pytest.raises(TypeError, match="unknown"):
        replace(nodes[0], opcode=Op.GATHER)


def test_builder_rejects_mixed_spaces():
    b = Builder()
    h = b.add(Op.INPUT, type=TensorType(NODE, (3,)), name="h")
    e = b.add(Op.GATHER, (h,), index=SRC)
    with pytest.raises(IRError, match="expected operands in one row space"):
        b.add(Op.BINARY, (h, e), fn=pigeon.ir.Binary.ADD)
    c = b.add(Op.CONST, type=TensorType(GLOBAL, ()), value=2.0)
    assert b.type_of(b.add(Op.BINARY, (e, c), fn=pigeon.ir.Binary.MUL)) == TensorType(EDGE, (3,))


def _brute_force_rgat(graph, h, W, a_src, a_dst, heads):
    """Per-destination loops: the RGAT maths written out edge by edge."""
    out_dim = W.shape[-1] // heads
    out = torch.zeros(graph.num_nodes, heads, out_dim, dtype=h.dtype)
    for v in range(graph.num_nodes):
        edges = [e for e in range(graph.num_edges) if int(graph.dst[e]) == v]
        if not edges:
            continue
        zs, scores = [], []
        for e in edges:
            u, r = int(graph.src[e]), int(graph.etype[e])
            z = (h[u] @ W[r]).view(heads, out_dim)
            zd = (h[v] @ W[r]).view(heads, out_dim)
            zs.append(z)
            scores.append(torch.nn.functional.leaky_relu((z * a_src[r]).sum(-1) + (zd * a_dst[r]).sum(-1), 0.2))
        alpha = torch.softmax(torch.stack(scores), dim=0)
        out[v] = (alpha.unsqueeze(-1) * torch.stack(zs)).sum(0)
    return out.reshape(graph.num_nodes, heads * out_dim)


@given(hetero_graphs(max_nodes=10, max_edges=30))
def test_interpreter_matches_brute_force(graph):
    heads, in_dim, out_dim = 2, 3, 2
    gen = torch.Generator().manual_seed(graph.num_edges)
    dt = torch.float64
    h = torch.randn(graph.num_nodes, in_dim, generator=gen, dtype=dt)
    W = torch.randn(graph.num_etypes, in_dim, heads * out_dim, generator=gen, dtype=dt)
    a_src = torch.randn(graph.num_etypes, heads, out_dim, generator=gen, dtype=dt)
    a_dst = torch.randn(graph.num_etypes, heads, out_dim, generator=gen, dtype=dt)
    program = rgat_sketch.trace({"h": (in_dim,)}, {"W": (in_dim, heads * out_dim), "a_src": (heads, out_dim),
                                                   "a_dst": (heads, out_dim)}, heads=heads)
    got = run(program, graph, {"h": h}, {"W": W, "a_src": a_src, "a_dst": a_dst})["out"]
    torch.testing.assert_close(got, _brute_force_rgat(graph, h, W, a_src, a_dst, heads), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("how", list(Reduce))
def test_interpreter_aggregations_leave_isolated_nodes_at_zero(how):
    graph = pigeon.HeteroGraph(torch.tensor([0, 1, 1, 2]), torch.tensor([1, 2, 2, 1]), num_nodes=4)

    @layer
    def agg(g, h):
        return aggregate(g, g.src(h), how.value)

    h = torch.tensor([[1.5], [-2.0], [4.0], [7.0]], dtype=torch.float64)
    out = run(agg.trace({"h": (1,)}, {}), graph, {"h": h}, {})["out"].flatten().tolist()
    expected = {
        Reduce.SUM: [0, 1.5 + 4.0, -4.0, 0], Reduce.MEAN: [0, 2.75, -2.0, 0],
        Reduce.MAX: [0, 4.0, -2.0, 0], Reduce.MIN: [0, 1.5, -2.0, 0],
    }[how]
    assert out == expected


# ---- level 2 ------------------------------------------------------------------------------

def _rgat_kernels():
    import dataclasses

    from pigeon.passes import PassContext, RowCounts, optimize
    from pigeon.passes.lower import lower

    graph = pigeon.HeteroGraph(torch.tensor([0, 1, 2, 2]), torch.tensor([1, 2, 0, 0]), torch.tensor([0, 1, 1, 0]))
    program = rgat_sketch.trace({"h": (4,)}, {"W": (4, 6), "a_src": (6,), "a_dst": (6,)})
    return dataclasses, lower(optimize(program, PassContext(RowCounts.from_graph(graph))), "csr")


def test_level2_verifier_accepts_what_lowering_emits_and_names_the_broken_kernel():
    from pigeon.ir.graph_ir import IndexMap
    from pigeon.ir.kernel_ir import (
        GemmKernel, KernelIRError, SegmentLayout, TraversalKernel, TraversalLayout, verify_kernels,
    )

    dataclasses, program = _rgat_kernels()
    verify_kernels(program)
    kernels = list(program.kernels)
    gemm = next(i for i, k in enumerate(kernels) if isinstance(k, GemmKernel) and k.segment is not None)
    walk = next(i for i, k in enumerate(kernels) if isinstance(k, TraversalKernel))

    def broken(i, kernel):
        return dataclasses.replace(program, kernels=tuple(kernel if j == i else k for j, k in enumerate(kernels)))

    with pytest.raises(KernelIRError, match="before any kernel writes it"):
        verify_kernels(dataclasses.replace(program, kernels=tuple(reversed(kernels))))
    with pytest.raises(KernelIRError, match=f"k{gemm} .*is ordered by layout coo_etype, not ntype_sorted"):
        verify_kernels(broken(gemm, dataclasses.replace(kernels[gemm], layout=SegmentLayout.NTYPE_SORTED)))
    with pytest.raises(KernelIRError, match=f"k{gemm} .*do not fit a weight"):
        verify_kernels(broken(gemm, dataclasses.replace(kernels[gemm], transpose_w=True, w=kernels[gemm].w)))
    with pytest.raises(KernelIRError, match=f"k{walk} .*walks a CSR or COO, not rows"):
        verify_kernels(broken(walk, dataclasses.replace(kernels[walk], layout=TraversalLayout.ROWS)))
    with pytest.raises(KernelIRError, match=f"k{walk} .*not the domain"):
        verify_kernels(broken(walk, dataclasses.replace(kernels[walk], group=IndexMap("bogus", NODE, NODE))))
