"""The floor of a case: the least time this machine could take for the work Pigeon does.

The floor is ``max(flops / matmul rate, bytes / copy bandwidth)``: the FLOPs and bytes
of the level-2 kernels Pigeon runs for the case (its plan for the model and the graph
at the case's sizes), over the float32 matrix-multiply rate and the memory bandwidth
:func:`measure_machine` measured once per run. Whichever term is larger *binds*
(``compute`` or ``memory``). A system's median over the floor ("x floor") says how far
it is from what the hardware allows for that work; it is the same work for every
system of a case, so baselines are measured against Pigeon's kernels too.

Counting rules (:func:`kernel_work`), per kernel of ``plan.forward_kernels`` (``infer``)
or of the forward and backward kernels (``train``):

* **GEMM FLOPs**: ``2 * rows * K * N`` per product, where ``rows`` are the product's
  rows (the scatter map's source rows when the result is scatter-added, the result's
  rows otherwise), ``K`` the weight's inner dimension and ``N`` the elements of one
  result row (``heads * out`` when batched); a typed product counts each row once
  whatever its type. Weight gradients ``dW_t = A_t^T B_t`` are ``2 * rows * in * out``
  with ``rows`` the rows of A.
* **Traversal and dense FLOPs**: per arithmetic node of the body, the cost model's FLOPs
  (:func:`pigeon.passes.cost.node_cost`, over the node's own rows: edge rows for edge
  values, node rows for node values), and at least one FLOP per element of its widest
  operand or result (a reduction to one row reads every row). Data movement (input,
  output, const, gather, reshape, concat, slice, pad, expand, broadcast) and degree
  counts are 0 FLOPs.
* **Bytes**: every buffer a kernel reads, once, plus every buffer it writes, once, at its
  full size: rows of its space times the elements of one row times ``elem`` (4 bytes,
  float32). Parameters count once (a typed weight once per type). Every index map a
  kernel uses counts 8 bytes (int64) per source row, except a GEMM's type segments over
  a layout grouped by type, which need one offset per type (8 bytes per type, plus 8).
  Values a kernel keeps in registers between its ops cost nothing: that is what fusion
  buys.

The floor is optimistic on purpose: elementwise FLOPs never run at the matrix-multiply
rate, gathers through index maps read more than each row once, and a kernel's compute
and memory traffic overlap at best. A result of 1x is out of reach; the ratio is for
comparing cases and systems, and for seeing which term binds.

This module imports torch only inside :func:`measure_machine`, so the report can use it
without loading torch.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from pigeon.ir.graph_ir import GLOBAL, IndexMap, Op, Program, Space
from pigeon.ir.kernel_ir import DenseKernel, GemmKernel, KernelProgram, TraversalKernel, View, ViewKernel
from pigeon.passes.base import RowCounts
from pigeon.passes.cost import node_cost

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


# ---- the machine ------------------------------------------------------------------------
def _median_seconds(fn, repeat: int) -> float:
    fn()  # first touch: page faults and thread start-up are not the rate
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def measure_machine(threads: int | None = None, *, matmul_size: int = 2048, copy_mib: int = 256,
                    repeat: int = 5) -> dict:
    """The float32 matrix-multiply rate and the memory bandwidth of this machine.

    Args:
        threads (int, optional): torch threads while measuring (the cases' ``--threads``);
            restored afterwards. Default: torch's current setting.
        matmul_size (int): side of the square ``torch.matmul``. Default: 2048.
        copy_mib (int): size of the tensor ``copy_`` copies, in MiB; bandwidth counts the
            bytes read plus the bytes written. Default: 256.
        repeat (int): timed runs of each, after one untimed; the median counts. Default: 5.

    Returns ``{"matmul_gflops", "bandwidth_gbs", "threads", "matmul_size", "copy_mib"}``
    (GFLOP/s and GB/s, 10^9 per second), as stored in ``report["machine"]["measured"]``.
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(matmul_size, matmul_size, generator=generator)
        b = torch.randn(matmul_size, matmul_size, generator=generator)
        product = torch.empty(matmul_size, matmul_size)
        seconds = _median_seconds(lambda: torch.matmul(a, b, out=product), repeat)
        gflops = 2 * matmul_size**3 / seconds / 1e9

        source = torch.ones(copy_mib * 2**20 // 4)
        target = torch.empty_like(source)
        seconds = _median_seconds(lambda: target.copy_(source), repeat)
        bandwidth = 2 * source.nbytes / seconds / 1e9
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return {"matmul_gflops": round(gflops, 2), "bandwidth_gbs": round(bandwidth, 2), "threads": used,
            "matmul_size": matmul_size, "copy_mib": copy_mib}


# ---- the work -----------------------------------------------------------------------------
def _rows(space: Space, rows: RowCounts) -> int:
    return 1 if space == GLOBAL else rows.of(space.name)


def _buffer_bytes(program: KernelProgram, name: str, rows: RowCounts, elem: int) -> int:
    kind = program.buffer(name).type
    return _rows(kind.space, rows) * kind.numel * elem


def _map_bytes(index: IndexMap, rows: RowCounts) -> int:
    return _rows(index.source, rows) * INDEX_BYTES


def _gemm_work(program: KernelProgram, kernel: GemmKernel, rows: RowCounts, elem: int) -> tuple[int, int]:
    out = program.buffer(kernel.out).type
    if kernel.weight_grad:
        a_space = kernel.a_gather.source if kernel.a_gather else program.buffer(kernel.a).type.space
        flops = 2 * _rows(a_space, rows) * out.numel
    else:
        weight = program.buffer(kernel.w).type
        inner = weight.shape[-1] if kernel.transpose_w else weight.shape[-2]
        product_space = kernel.scatter.source if kernel.scatter else out.space
        flops = 2 * _rows(product_space, rows) * out.numel * inner
    moved = sum(_buffer_bytes(program, name, rows, elem) for name in {kernel.a, kernel.w, kernel.out})
    for index in {kernel.a_gather, kernel.scatter} - {None}:
        moved += _map_bytes(index, rows)
    if kernel.segment is not None:
        grouped = kernel.layout is not None
        moved += (_rows(kernel.segment.target, rows) + 1) * INDEX_BYTES if grouped else _map_bytes(kernel.segment, rows)
    return flops, moved


def _body_flops(body: Program, rows: RowCounts) -> int:
    total = 0
    for node in body.nodes:
        if node.op in _DATA_MOVEMENT:
            continue
        values = [body.nodes[i] for i in node.inputs] + [node]
        widest = max(_rows(v.type.space, rows) * v.type.numel for v in values)
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


def kernel_work(plan, graph, mode: str, elem: int = 4) -> Work:
    """The FLOPs and minimum bytes of the kernels Pigeon runs for one call in ``mode``:
    ``plan.forward_kernels`` for ``infer``, and ``plan.backward_kernels`` too for
    ``train``, over ``graph``'s row counts, ``elem`` bytes per float (4: float32)."""
    if mode not in ("infer", "train"):
        raise ValueError(f"Expected `mode` to be 'infer' or 'train' (got {mode!r})")
    rows = RowCounts.from_graph(graph)
    work = program_work(plan.forward_kernels, rows, elem)
    if mode == "train":
        back = program_work(plan.backward_kernels, rows, elem)
        work = Work(work.flops + back.flops, work.bytes + back.bytes, work.kernels + back.kernels)
    return work


def floor_seconds(work: Work, machine: dict) -> tuple[float, str]:
    """``(seconds, "compute" | "memory")``: ``max(flops / rate, bytes / bandwidth)`` for
    ``machine`` as :func:`measure_machine` returns it, and which term is the larger."""
    compute = work.flops / (machine["matmul_gflops"] * 1e9)
    memory = work.bytes / (machine["bandwidth_gbs"] * 1e9)
    return (compute, "compute") if compute >= memory else (memory, "memory")


def add_floor(result: dict, machine: dict | None) -> None:
    """Set ``floor_s`` and ``floor_bound`` of a case's result from its ``flops`` and
    ``bytes``; nothing when either is missing or the run measured no machine."""
    if machine is None or result.get("flops") is None or result.get("bytes") is None:
        return
    seconds, bound = floor_seconds(Work(result["flops"], result["bytes"]), machine)
    result["floor_s"] = seconds
    result["floor_bound"] = bound
