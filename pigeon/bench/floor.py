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

**The machine floor** (:func:`machine_work`) is the same bound for the least work any
plan could do, not for the plan Pigeon chose: every input, weight and output moved once
(in training also the output's gradient read and the gradient of every input and weight
written once, each the size of what it is the gradient of), the graph's edges read once
(one source index per edge, at the graph's index width), and the FLOPs of the cheapest
plan the rewrites can reach (the fewest over every setting of the decisions the cost
model takes: linear reordering, compact materialization). It is at most the plan floor;
"x machine" is the ratio against the machine rather than against Pigeon's own plan.

The counting lives in :mod:`pigeon.passes.cost` (the compiler's cost model reads the
same work) and the machine's measurement in :mod:`pigeon.runtime.target`.
"""

from __future__ import annotations

from pigeon.ir.graph_ir import GLOBAL
from pigeon.ir.kernel_ir import BufferRole
from pigeon.passes.base import RowCounts
from pigeon.passes.choose import variants
from pigeon.passes.cost import KernelWork, Work, program_work
from pigeon.runtime.choice import Choice
from pigeon.runtime.target import measure_machine

__all__ = ["KernelWork", "Work", "kernel_work", "machine_work", "floor_seconds", "add_floor", "measure_machine",
           "program_work"]


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


def machine_work(compiled, graph, tensors: dict, mode: str, elem: int = 4) -> Work:
    """The :class:`Work` of the machine floor (module docstring) for the compiled layer
    ``compiled`` (a :class:`~pigeon.runtime.compiled.Compiled`) on ``graph`` with
    ``tensors`` (every input and parameter by name), in ``mode``."""
    if mode not in ("infer", "train"):
        raise ValueError(f"Expected `mode` to be 'infer' or 'train' (got {mode!r})")
    rows = RowCounts.from_graph(graph)
    flops, program = None, None
    for options in variants(compiled.options):
        fixed = compiled.with_options(sink=options.sink)   # a tuned choice does not carry that decision
        plan = fixed.plan(graph, tensors, Choice(options.reorder, options.compact), mode=mode)
        work = kernel_work(plan, graph, mode, elem)
        if flops is None or work.flops < flops:
            flops, program = work.flops, plan.forward_kernels
    moved = 0
    for buffer in program.buffers:
        if buffer.role in (BufferRole.INPUT, BufferRole.PARAM, BufferRole.OUTPUT):
            count = 1 if buffer.type.space == GLOBAL else rows.of(buffer.type.space.name)
            moved += count * buffer.type.numel * elem
    if mode == "train":
        moved *= 2   # the output's gradient read, each input's and weight's gradient written
    moved += graph.num_edges * graph.index_dtype.itemsize
    return Work(flops, moved)


def floor_seconds(work: Work, machine: dict) -> tuple[float, str]:
    """``(seconds, "compute" | "memory")``: ``max(flops / rate, bytes / bandwidth)`` for
    ``machine`` as :func:`measure_machine` returns it, and which term is the larger."""
    compute = work.flops / (machine["matmul_gflops"] * 1e9)
    memory = work.bytes / (machine["bandwidth_gbs"] * 1e9)
    return (compute, "compute") if compute >= memory else (memory, "memory")


def add_floor(result: dict, machine: dict | None) -> None:
    """Set ``floor_s`` and ``floor_bound`` of a case's result from its ``flops`` and
    ``bytes``, and ``machine_floor_s`` and ``machine_floor_bound`` from its
    ``machine_flops`` and ``machine_bytes``; nothing for a pair that is missing, or when
    the run measured no machine."""
    if machine is None:
        return
    for prefix, flops, moved in (("", "flops", "bytes"), ("machine_", "machine_flops", "machine_bytes")):
        if result.get(flops) is None or result.get(moved) is None:
            continue
        seconds, bound = floor_seconds(Work(result[flops], result[moved]), machine)
        result[f"{prefix}floor_s"] = seconds
        result[f"{prefix}floor_bound"] = bound
