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

The counting lives in :mod:`pigeon.passes.cost` (the compiler's cost model reads the
same work) and the machine's measurement in :mod:`pigeon.runtime.target`.
"""

from __future__ import annotations

from pigeon.passes.base import RowCounts
from pigeon.passes.cost import KernelWork, Work, program_work
from pigeon.runtime.target import measure_machine

__all__ = ["KernelWork", "Work", "kernel_work", "floor_seconds", "add_floor", "measure_machine", "program_work"]


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
