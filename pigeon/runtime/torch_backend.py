"""The torch backend: executes a level-2 program with plain torch ops.

GEMMs run as one matmul per type segment on the rows the graph's layout groups for
that segment (the unfused reference lowering the generated backends are measured
against); traversal and dense bodies run through the level-1 interpreter, which
materialises per-row temporaries that the Triton and C templates keep in registers.

Precision follows the generated kernels' rule (:mod:`pigeon.runtime.precision`), so this
backend stays their executable semantics: every buffer is stored in the call's dtype, a
kernel body computes in the compute dtype (:func:`run_body`: its inputs converted, its
outputs rounded once), matmuls take the stored operands and sum in float32 (torch's
rule for 16-bit matmuls), and a GEMM's scatter sums its rows in the compute dtype
(:func:`scatter_rows`).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import GLOBAL, IndexMap, Op
from pigeon.ir.kernel_ir import GemmKernel, KernelProgram, View, ViewKernel, dead_after
from pigeon.runtime.graph_index import GRAPH_INDEX
from pigeon.runtime.interpret import pad_rows, run
from pigeon.runtime.precision import compute_dtype
from pigeon.runtime.profiling import kernel_ranges


class DeadBuffers:
    """Per set of kept buffers, the temporaries each kernel of a program is the last to
    read (:func:`~pigeon.ir.kernel_ir.dead_after`), computed once: executors drop them as
    they go, so a program's peak memory is its largest live set, not all it writes."""

    def __init__(self, program: KernelProgram):
        self.program = program
        self._memo: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {}

    def __call__(self, keep: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        if keep not in self._memo:
            self._memo[keep] = dead_after(self.program, keep)
        return self._memo[keep]


def run_view(kernel: ViewKernel, graph: HeteroGraph, program: KernelProgram, env: dict) -> torch.Tensor:
    """A :class:`ViewKernel` with torch ops, shared by every backend: a view of the
    operand, except a zero padding on a block."""
    a = env[kernel.a]
    if kernel.view is View.DESTINATIONS:
        return a[: graph.num_dst_nodes]
    if kernel.view is View.ZERO_EXTEND:
        return pad_rows(a, graph.num_nodes)
    return a.view(a.shape[0], *program.buffer(kernel.out).type.shape)


def run_body(body, graph: HeteroGraph, env: Mapping[str, torch.Tensor], dtype: torch.dtype,
             fused: bool = True) -> dict[str, torch.Tensor]:
    """A traversal or dense kernel's body through the level-1 interpreter, its inputs and
    outputs stored in ``dtype``.

    ``fused``: as a generated kernel runs it, its intermediate values in registers: the
    inputs converted to the compute dtype, every value computed there (``equal``
    comparing values as stored), the outputs rounded once. Otherwise op by op in
    ``dtype``, as torch runs a sequence of its operations: each computes in its own
    accumulation type (float32 for 16-bit tensors) and stores its result, rounded, in
    ``dtype``; intermediate values take the storage dtype's memory."""
    compute = compute_dtype(dtype) if fused else dtype
    inputs = {n.attr("name"): env[n.attr("name")].to(compute) for n in body.nodes if n.op is Op.INPUT}
    outputs = run(body, graph, inputs, {}, dtype=compute, storage=None if compute == dtype else dtype)
    return {name: value.to(dtype) for name, value in outputs.items()}


SCATTER_CHUNK_BYTES = 64 * 2**20   # 16-bit rows converted to the compute dtype this many bytes at a time


def scatter_rows(rows: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``rows`` summed into ``size`` rows by ``index`` (``[size, *rows.shape[1:]]`` in the
    rows' dtype), the sums kept in the compute dtype and rounded once. 16-bit rows are
    added into a float32 buffer (some of torch's index_add_ paths add 16-bit rows in 16
    bits), converted a chunk at a time so no float32 copy of them all exists."""
    compute = compute_dtype(rows.dtype)
    if compute == rows.dtype:
        return rows.new_zeros(size, *rows.shape[1:]).index_add_(0, index, rows)
    out = torch.zeros(size, *rows.shape[1:], dtype=compute, device=rows.device)
    step = max(1, SCATTER_CHUNK_BYTES // max(1, rows[:1].numel() * 4))
    for start in range(0, rows.shape[0], step):
        out.index_add_(0, index[start:start + step], rows[start:start + step].to(compute))
    return out.to(rows.dtype)


class TorchExecutor:
    """Runs one level-2 program; holds nothing per call."""

    def __init__(self, program: KernelProgram):
        self.program = program
        self.index = GRAPH_INDEX
        self.dead = DeadBuffers(program)

    def gemm(self, k: GemmKernel, graph: HeteroGraph, env: dict) -> torch.Tensor:
        """One GEMM kernel: rows put in segment order once (gather fused into that
        permutation), one matmul per segment on contiguous slices, then one scatter."""
        a, w = env[k.a], env[k.w]
        if k.segment is None:
            return self._untyped_gemm(k, graph, a, w)
        perm, bounds = self.index.segments(graph, k.segment, k.layout)
        rows = self.index.sorted_rows(graph, k.a_gather, k.segment, k.layout)
        if self.index.in_order(graph, k.segment, k.layout):
            perm, rows = None, rows if k.a_gather is not None else None
        a_sorted = a if rows is None else a.index_select(0, rows)
        used, uniform = self.index.segment_profile(graph, k.segment, k.layout)
        if uniform:
            # Every type owns as many rows (FNO's (mode, batch) rows, HGT's per-(node type,
            # edge type) weight products): one batched product replaces the loop over
            # types, whose per-call overhead dominates small segments.
            if k.scatter is None or k.weight_grad:
                return self._uniform_gemm(k, a_sorted, w, perm, used)
            return self._scatter(graph, k, self._uniform_gemm(k, a_sorted, w, None, used))
        segments = [(t, bounds[t], bounds[t + 1]) for t in range(len(bounds) - 1) if bounds[t + 1] > bounds[t]]
        if k.weight_grad:
            b_sorted = w if perm is None else w.index_select(0, perm)
            spec = "r...i,r...o->...io" if k.batched else "r...i,r...o->io"
            out = a.new_zeros(len(bounds) - 1, *(a.shape[1:-1] if k.batched else ()), a.shape[-1], w.shape[-1])
            for t, lo, hi in segments:
                out[t] = torch.einsum(spec, a_sorted[lo:hi], b_sorted[lo:hi])
            return out
        if k.transpose_w:
            w = w.transpose(-1, -2)
        out_sorted = a.new_empty(a_sorted.shape[0], *a.shape[1:-1], w.shape[-1])
        for t, lo, hi in segments:
            if k.batched:
                out_sorted[lo:hi] = torch.einsum("r...i,...io->r...o", a_sorted[lo:hi], w[t])
            else:
                torch.matmul(a_sorted[lo:hi], w[t], out=out_sorted[lo:hi])
        if k.scatter is not None:
            return self._scatter(graph, k, out_sorted)
        if perm is None:
            return out_sorted
        return torch.empty_like(out_sorted).index_copy_(0, perm, out_sorted)

    def _uniform_gemm(self, k: GemmKernel, a_sorted: torch.Tensor, w: torch.Tensor, perm, types: int):
        """The uniform case as one einsum over (type, row of the type, middle dims):
        ``a_sorted`` is ``[types * c, *middle, in]``; a batched weight has the middle
        dims too (``[types, *middle, in, out]``), a plain one does not."""
        middle = a_sorted.shape[1:-1]
        a4 = a_sorted.reshape(types, -1, math.prod(middle), a_sorted.shape[-1])
        if k.weight_grad:
            b4 = (w if perm is None else w.index_select(0, perm)).reshape(types, a4.shape[1], a4.shape[2], -1)
            if k.batched:
                return torch.einsum("tcmi,tcmo->tmio", a4, b4).reshape(types, *middle, a4.shape[-1], -1)
            return torch.einsum("tcmi,tcmo->tio", a4, b4)
        if k.transpose_w:
            w = w.transpose(-1, -2)
        if k.batched:
            out4 = torch.einsum("tcmi,tmio->tcmo", a4, w.reshape(types, a4.shape[2], *w.shape[-2:]))
        else:
            out4 = torch.bmm(a4.reshape(types, -1, a4.shape[-1]), w).reshape(*a4.shape[:3], -1)
        out_sorted = out4.reshape(a_sorted.shape[0], *middle, -1)
        if perm is None:
            return out_sorted
        return torch.empty_like(out_sorted).index_copy_(0, perm, out_sorted)

    def _scatter(self, graph: HeteroGraph, k: GemmKernel, out_sorted: torch.Tensor) -> torch.Tensor:
        """Rows in segment order summed into the rows of ``k.scatter``'s target."""
        index, size = self.index.sorted_scatter(graph, k.scatter, k.segment, k.layout)
        return scatter_rows(out_sorted, index, size)

    def _untyped_gemm(self, k: GemmKernel, graph: HeteroGraph, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if k.a_gather is not None:
            a = a.index_select(0, self.index.index(graph, k.a_gather)[0])
        if k.weight_grad:  # one sum over all rows (a GLOBAL operand is one row)
            spec = "r...i,r...o->...io" if k.batched else "r...i,r...o->io"
            a, w = (v.unsqueeze(0) if self.program.buffer(name).type.space == GLOBAL else v
                    for v, name in ((a, k.a), (w, k.w)))
            return torch.einsum(spec, a, w)
        if k.transpose_w:
            w = w.transpose(-1, -2)
        out = torch.einsum("r...i,...io->r...o", a, w) if w.dim() > 2 else a @ w
        if k.scatter is not None:
            index, size = self.index.index(graph, k.scatter)
            out = scatter_rows(out, index, size)
        return out

    def __call__(self, graph: HeteroGraph, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 keep: tuple[str, ...] = (), scope: str = "") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Run the program: (outputs by name, the buffers named in ``keep``). Under a
        profiler each kernel is a range named ``{scope}/k{i}: ...``."""
        env = dict(tensors)
        ranges = kernel_ranges(self, self.program, scope)
        for i, (kernel, dead) in enumerate(zip(self.program.kernels, self.dead(keep))):
            with ranges(i):
                if isinstance(kernel, GemmKernel):
                    env[kernel.out] = self.gemm(kernel, graph, env)
                elif isinstance(kernel, ViewKernel):
                    env[kernel.out] = run_view(kernel, graph, self.program, env)
                else:
                    env.update(run_body(kernel.body, graph, env, dtype))
            for name in dead:
                del env[name]
        return {name: env[buffer] for name, buffer in self.program.outputs}, {name: env[name] for name in keep}
