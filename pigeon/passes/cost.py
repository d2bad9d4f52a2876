"""The cost model: work per level-1 node, work per level-2 kernel, and the seconds a
target machine and backend take for it.

Level 1 (:func:`node_cost`): costs are per row of the node's space times the row counts
of the graph: a typed linear over edge rows costs ``2 * edges * in * out`` FLOPs
whatever the weight's type. Bytes count each operand read once and the result written
once (``elem`` bytes per element).

Level 2 (:func:`program_work`): the FLOPs and minimum bytes of each kernel of a lowered
program, by the counting rules of :mod:`pigeon.bench.floor` (which reports them as the
floor of a benchmark case).

Time (:func:`program_seconds`): each kernel is charged ``max(FLOPs / rate, bytes /
bandwidth) + overhead`` with the rates of a :class:`Target`: the machine's measured
matrix-multiply rate and bandwidth, and what the backend reaches of them for each kind
of kernel (a segmented GEMM with few rows per type runs below the dense rate; rows read
or written through an index map, a gather, a permuted segment order or a group's CSR
order, cost at least a cache line each and move at a share of the bandwidth, a row
written so twice). :func:`pigeon.passes.choose.decide` picks the compiler's decisions by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pigeon.ir.graph_ir import GLOBAL, IndexMap, Node, Op, Program, Space
from pigeon.ir.kernel_ir import (DenseKernel, GemmKernel, KernelProgram, TraversalKernel, TraversalLayout, View,
                                 ViewKernel)
from pigeon.passes.base import RowCounts


@dataclass(frozen=True)
class Cost:
    flops: int
    bytes: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def __str__(self) -> str:
        return f"{self.flops:,} FLOPs, {self.bytes:,} bytes"


def _rows(node: Node, rows: RowCounts) -> int:
    return 1 if node.type.space == GLOBAL else rows.of(node.type.space.name)


def node_cost(program: Program, node: Node, rows: RowCounts, elem: int = 4) -> Cost:
    """The cost of computing ``node`` once."""
    if node.op in (Op.INPUT, Op.PARAM, Op.CONST, Op.OUTPUT, Op.RESHAPE):
        return Cost(0, 0)
    out_rows = _rows(node, rows)
    operands = [program.nodes[i] for i in node.inputs]
    moved = sum(_rows(o, rows) * o.type.numel for o in operands) + out_rows * node.type.numel
    if node.op in (Op.LINEAR, Op.TYPED_LINEAR):
        x, w = operands
        in_dim = w.type.shape[-1] if node.attr("transpose_w") else w.type.shape[-2]
        flops = 2 * out_rows * node.type.numel * in_dim
        # A typed weight is read once per type, not once per row.
        moved = _rows(x, rows) * x.type.numel + _rows(w, rows) * w.type.numel + out_rows * node.type.numel
    elif node.op is Op.TYPED_OUTER:
        x = operands[0]
        flops = 2 * _rows(x, rows) * x.type.numel * operands[1].type.shape[-1]
    elif node.op in (Op.DOT, Op.BINARY, Op.UNARY, Op.AGGREGATE, Op.SEGMENT_SOFTMAX, Op.LAYER_NORM):
        widest = max([_rows(o, rows) * o.type.numel for o in operands] + [out_rows * node.type.numel])
        flops = widest * (5 if node.op in (Op.SEGMENT_SOFTMAX, Op.LAYER_NORM) else 1)
    else:
        flops = out_rows * node.type.numel
    return Cost(flops, moved * elem)


def program_cost(program: Program, rows: RowCounts, elem: int = 4) -> Cost:
    total = Cost(0, 0)
    for node in program.nodes:
        total = total + node_cost(program, node, rows, elem)
    return total


# ---- level 2: work per kernel ---------------------------------------------------------

INDEX_BYTES = 8

# Level-1 ops that move or relabel data without arithmetic.
_DATA_MOVEMENT = frozenset({
    Op.INPUT, Op.PARAM, Op.CONST, Op.OUTPUT, Op.GATHER, Op.RESHAPE, Op.CONCAT, Op.SLICE_LAST,
    Op.PAD_LAST, Op.EXPAND_LAST, Op.BROADCAST_ROWS, Op.DEGREE,
})


@dataclass(frozen=True)
class KernelWork:
    """One kernel's FLOPs and minimum bytes; ``kernel`` is the first line of its description."""

    kernel: str
    flops: int
    bytes: int


@dataclass(frozen=True)
class Work:
    """The FLOPs and minimum bytes of a case's kernels, and each kernel's share."""

    flops: int
    bytes: int
    kernels: tuple[KernelWork, ...] = ()


def _space_rows(space: Space, rows: RowCounts) -> int:
    return 1 if space == GLOBAL else rows.of(space.name)


def _buffer_bytes(program: KernelProgram, name: str, rows: RowCounts, elem: int) -> int:
    kind = program.buffer(name).type
    return _space_rows(kind.space, rows) * kind.numel * elem


def _map_bytes(index: IndexMap, rows: RowCounts) -> int:
    return _space_rows(index.source, rows) * INDEX_BYTES


def _gemm_work(program: KernelProgram, kernel: GemmKernel, rows: RowCounts, elem: int) -> tuple[int, int]:
    out = program.buffer(kernel.out).type
    if kernel.weight_grad:
        a_space = kernel.a_gather.source if kernel.a_gather else program.buffer(kernel.a).type.space
        flops = 2 * _space_rows(a_space, rows) * out.numel
    else:
        weight = program.buffer(kernel.w).type
        inner = weight.shape[-1] if kernel.transpose_w else weight.shape[-2]
        product_space = kernel.scatter.source if kernel.scatter else out.space
        flops = 2 * _space_rows(product_space, rows) * out.numel * inner
    moved = sum(_buffer_bytes(program, name, rows, elem) for name in {kernel.a, kernel.w, kernel.out})
    for index in {kernel.a_gather, kernel.scatter} - {None}:
        moved += _map_bytes(index, rows)
    if kernel.segment is not None:
        grouped = kernel.layout is not None
        moved += (_space_rows(kernel.segment.target, rows) + 1) * INDEX_BYTES if grouped else _map_bytes(kernel.segment, rows)
    return flops, moved


def _body_flops(body: Program, rows: RowCounts) -> int:
    total = 0
    for node in body.nodes:
        if node.op in _DATA_MOVEMENT:
            continue
        values = [body.nodes[i] for i in node.inputs] + [node]
        widest = max(_space_rows(v.type.space, rows) * v.type.numel for v in values)
        total += max(node_cost(body, node, rows).flops, widest)
    return total


def _body_work(program: KernelProgram, kernel: TraversalKernel | DenseKernel, rows: RowCounts,
               elem: int) -> tuple[int, int]:
    body = kernel.body
    read = {n.attr("name") for n in body.nodes if n.op is Op.INPUT}
    written = {n.attr("name") for n in body.nodes if n.op is Op.OUTPUT}
    moved = sum(_buffer_bytes(program, name, rows, elem) for name in read)
    moved += sum(_buffer_bytes(program, name, rows, elem) for name in written)
    maps = {n.attr("index") for n in body.nodes} - {None}
    if isinstance(kernel, TraversalKernel) and kernel.group is not None:
        maps.add(kernel.group)
    moved += sum(_map_bytes(index, rows) for index in maps if isinstance(index, IndexMap))
    return _body_flops(body, rows), moved


def _view_bytes(program: KernelProgram, kernel: ViewKernel, rows: RowCounts, elem: int) -> int:
    """Views move nothing; a zero padding copies the destination rows and zeroes the
    others, unless every node is a destination (then it is a view)."""
    if kernel.view is not View.ZERO_EXTEND or rows.node == rows.dst_node:
        return 0
    width = program.buffer(kernel.a).type.numel * elem
    return 2 * rows.dst_node * width + (rows.node - rows.dst_node) * width


def program_work(program: KernelProgram, rows: RowCounts, elem: int = 4) -> Work:
    """The :class:`Work` of one level-2 program, kernel by kernel (rules: module docstring)."""
    kernels = []
    for kernel in program.kernels:
        if isinstance(kernel, GemmKernel):
            flops, moved = _gemm_work(program, kernel, rows, elem)
        elif isinstance(kernel, ViewKernel):
            flops, moved = 0, _view_bytes(program, kernel, rows, elem)
        else:
            flops, moved = _body_work(program, kernel, rows, elem)
        kernels.append(KernelWork(kernel.describe().splitlines()[0], flops, moved))
    return Work(sum(k.flops for k in kernels), sum(k.bytes for k in kernels), tuple(kernels))


# ---- time: the work on a target ------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What the cost model knows of a machine and a backend.

    Args:
        matmul_gflops (float): the measured float32 dense matrix-multiply rate, GFLOP/s.
        bandwidth_gbs (float): the measured streaming bandwidth (read + write), GB/s.
        gemm_rows_half (float): a segmented GEMM whose types own this many rows each on
            average reaches half the dense rate (per-type weight tiles and short loops:
            ``rate * r / (r + gemm_rows_half)``).
        row_gather_bytes (int): bytes a row read through an index map costs at least (a
            cache line: scattered rows are not streamed).
        indexed_efficiency (float): the share of ``bandwidth_gbs`` that rows read or
            written through an index map reach (a gather, a permuted segment order, the
            rows of a group visited in its CSR order): each row is a separate access, so
            latency, not bandwidth, bounds it. A row written so costs twice (the line is
            read before it is written).
        elementwise_gflops (float): the rate of the per-row arithmetic of traversal and
            dense kernels (vector units, not the matrix-multiply rate).
        kernel_s (float): the fixed cost of running one kernel (a launch, a call through
            ctypes, the interpreter's per-op dispatch is charged per op instead).
        op_s (float): the fixed cost of each level-1 op of a dense kernel's body, which
            the cpu and torch backends run op by op through the interpreter.
        looped_gemms (str): which typed GEMMs the backend runs as one matrix-multiply call
            per type: ``"none"`` (every one is a generated kernel), ``"batched"`` (those
            with a weight per head: per-head rows), or ``"all"`` (the torch backend).
        type_call_s (float): the cost of one such per-type call (the call, the slices and
            copies around it).
    """

    matmul_gflops: float
    bandwidth_gbs: float
    gemm_rows_half: float = 24.0
    row_gather_bytes: int = 64
    indexed_efficiency: float = 1.0
    elementwise_gflops: float = 8.0
    kernel_s: float = 5e-6
    op_s: float = 10e-6
    looped_gemms: str = "batched"
    type_call_s: float = 40e-6

    def __post_init__(self):
        if self.looped_gemms not in ("none", "batched", "all"):
            raise ValueError(f"Expected `looped_gemms` to be 'none', 'batched' or 'all' (got {self.looped_gemms!r})")


def _row_bytes(program: KernelProgram, name: str, elem: int) -> int:
    return program.buffer(name).type.numel * elem


def _gemm_access(program: KernelProgram, kernel: GemmKernel, rows: RowCounts, target: Target,
                 elem: int) -> tuple[int, int, int]:
    """(streamed, indexed read, indexed written) bytes of a GEMM: A's rows through its
    gather map; the result's rows in a permuted segment order through the permutation;
    a scatter's rows read again through the targets' CSR."""
    line = target.row_gather_bytes
    streamed = _buffer_bytes(program, kernel.w, rows, elem)
    read = written = 0
    a_rows = _space_rows(kernel.a_gather.source, rows) if kernel.a_gather else 0
    if kernel.a_gather is not None:
        read += a_rows * max(_row_bytes(program, kernel.a, elem), line)
        streamed += _map_bytes(kernel.a_gather, rows)
    else:
        streamed += _buffer_bytes(program, kernel.a, rows, elem)
    permuted = kernel.layout is not None and kernel.layout.permuted
    if kernel.weight_grad:
        streamed += _buffer_bytes(program, kernel.out, rows, elem)
        if permuted and kernel.a_gather is None:   # A's rows in segment order
            streamed -= _buffer_bytes(program, kernel.a, rows, elem)
            read += _space_rows(program.buffer(kernel.a).type.space, rows) * max(
                _row_bytes(program, kernel.a, elem), line)
    elif kernel.scatter is not None:
        product = _space_rows(kernel.scatter.source, rows) * _row_bytes(program, kernel.out, elem)
        streamed += product + _buffer_bytes(program, kernel.out, rows, elem) + _map_bytes(kernel.scatter, rows)
        read += _space_rows(kernel.scatter.source, rows) * max(_row_bytes(program, kernel.out, elem), line)
    elif permuted:
        written += _space_rows(program.buffer(kernel.out).type.space, rows) * max(
            _row_bytes(program, kernel.out, elem), line)
    else:
        streamed += _buffer_bytes(program, kernel.out, rows, elem)
    if kernel.segment is not None:
        streamed += (_space_rows(kernel.segment.target, rows) + 1) * INDEX_BYTES
    return streamed, read, written


def _body_access(program: KernelProgram, kernel: TraversalKernel | DenseKernel, rows: RowCounts, target: Target,
                 elem: int) -> tuple[int, int, int]:
    """(streamed, indexed read, indexed written) bytes of a traversal or dense kernel.
    Rows of the group's source space (a traversal grouped by destination walks the
    edges in its CSR's order) and rows read through a gather other than the group's
    own map are indexed; so are, in an edge-parallel (COO) traversal, the group's rows
    its reductions add into. The rest streams."""
    line = target.row_gather_bytes
    grouped = isinstance(kernel, TraversalKernel) and kernel.group is not None
    csr = grouped and kernel.layout is not TraversalLayout.COO
    body = kernel.body
    users: dict[int, list[Node]] = {}
    for node in body.nodes:
        for i in node.inputs:
            users.setdefault(i, []).append(node)
    streamed = read = written = 0
    maps = {n.attr("index") for n in body.nodes} - {None}
    if grouped:
        maps.add(kernel.group)
    streamed += sum(_map_bytes(index, rows) for index in maps if isinstance(index, IndexMap))
    for i, node in enumerate(body.nodes):
        if node.op is Op.INPUT:
            name = node.attr("name")
            width = _row_bytes(program, name, elem)
            space = program.buffer(name).type.space
            gathered = users.get(i) and all(u.op is Op.GATHER and u.attr("index") != getattr(kernel, "group", None)
                                            for u in users[i])
            if gathered:
                continue   # read through its gathers, below
            if csr and space == kernel.group.source:
                read += _space_rows(space, rows) * max(width, line)
            else:
                streamed += _space_rows(space, rows) * width
        elif node.op is Op.OUTPUT:
            name = node.attr("name")
            width = _row_bytes(program, name, elem)
            space = program.buffer(name).type.space
            if grouped and ((csr and space == kernel.group.source) or (not csr and space == kernel.group.target)):
                written += _space_rows(space, rows) * max(width, line)
            else:
                streamed += _space_rows(space, rows) * width
        elif node.op is Op.GATHER and not (grouped and node.attr("index") == kernel.group):
            width = body.nodes[node.inputs[0]].type.numel * elem
            read += _space_rows(node.type.space, rows) * max(width, line)
    return streamed, read, written


def kernel_seconds(program: KernelProgram, kernel, rows: RowCounts, target: Target, elem: int = 4) -> float:
    """The modelled seconds of one kernel of ``program`` (module docstring)."""
    if isinstance(kernel, ViewKernel):
        return _view_bytes(program, kernel, rows, elem) / (target.bandwidth_gbs * 1e9)
    if isinstance(kernel, GemmKernel):
        flops = _gemm_work(program, kernel, rows, elem)[0]
        streamed, read, written = _gemm_access(program, kernel, rows, target, elem)
        rate = target.matmul_gflops
        if kernel.segment is not None:
            # Rows per weight: the product's rows per type, times the leading dims of a
            # row when one weight serves them all (a per-head weight does not).
            product_rows = _space_rows(kernel.segment.source, rows)
            per_type = product_rows / max(_space_rows(kernel.segment.target, rows), 1)
            a_shape = program.buffer(kernel.a).type.shape
            if not kernel.batched and not kernel.weight_grad:
                per_type *= math.prod(a_shape[:-1])
            rate *= per_type / (per_type + target.gemm_rows_half)
        compute = flops / (rate * 1e9)
        looped = target.looped_gemms == "all" or (target.looped_gemms == "batched" and kernel.batched)
        if kernel.segment is not None and looped:
            # One row per type (the (node type, edge type) pairs) is one batched call.
            types = _space_rows(kernel.segment.target, rows)
            calls = 1 if _space_rows(kernel.segment.source, rows) == types else types
            compute += calls * target.type_call_s
    else:
        flops = _body_flops(kernel.body, rows)
        streamed, read, written = _body_access(program, kernel, rows, target, elem)
        compute = flops / (target.elementwise_gflops * 1e9)
        if isinstance(kernel, DenseKernel):
            compute += target.op_s * len(kernel.body.nodes)
    bandwidth = target.bandwidth_gbs * 1e9
    memory = streamed / bandwidth + (read + 2 * written) / (bandwidth * target.indexed_efficiency)
    return max(compute, memory) + target.kernel_s


def program_seconds(program: KernelProgram, rows: RowCounts, target: Target, elem: int = 4) -> float:
    """The modelled seconds of a lowered program: the sum over its kernels."""
    return sum(kernel_seconds(program, k, rows, target, elem) for k in program.kernels)
