"""The torch backend: executes a level-2 program with plain torch ops.

GEMMs run as one matmul per type segment on the rows the graph's layout groups for
that segment (the unfused reference lowering the generated backends are measured
against); traversal and dense bodies run through the level-1 interpreter, which
materialises per-row temporaries that the Triton and C templates keep in registers.
"""

from __future__ import annotations

from typing import Mapping

import weakref

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import GLOBAL, IndexMap, Op
from pigeon.ir.kernel_ir import GemmKernel, KernelProgram
from pigeon.runtime.interpret import resolve_index, run


class _SegmentCache:
    """Per graph and segment map: (row permutation or None, python bounds per type).

    The bounds are read to the host once per graph, never per call.
    """

    def __init__(self):
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, graph: HeteroGraph, index: IndexMap, layout: str | None):
        per_graph = self._cache.setdefault(graph, {})
        if index.name in per_graph:
            return per_graph[index.name]
        if layout == "coo_etype":
            perm, ptr = graph.coo_etype.eid.long(), graph.coo_etype.rel_ptr
        elif layout in ("compact_src", "compact_dst", "ntype_etype"):
            perm, ptr = None, graph.layout(layout).rel_ptr
        elif layout in ("ntype_sorted", "ntype_etype_edges", "ntype_etype_compact_src"):
            segments = graph.layout(layout)
            perm, ptr = segments.perm.long(), segments.ptr
        else:
            raise ValueError(f"GEMM segment map {index.name!r} has no segment layout (got layout={layout!r})")
        per_graph[index.name] = (perm, ptr.tolist())
        return per_graph[index.name]


def _rows(perm, lo: int, hi: int) -> torch.Tensor | slice:
    return slice(lo, hi) if perm is None else perm[lo:hi]


class TorchExecutor:
    """Runs one level-2 program; holds nothing per call."""

    def __init__(self, program: KernelProgram):
        self.program = program
        self.segments = _SegmentCache()

    def gemm(self, k: GemmKernel, graph: HeteroGraph, env: dict) -> torch.Tensor:
        a = env[k.a]
        if k.a_gather is not None:
            a = a.index_select(0, resolve_index(graph, k.a_gather)[0])
        w = env[k.w]
        if k.weight_grad:
            spec = "r...i,r...o->...io" if k.batched else "r...i,r...o->io"
            if k.segment is None:  # one sum over all rows (a GLOBAL operand is one row)
                a, w = (v.unsqueeze(0) if self.program.buffer(name).type.space == GLOBAL else v
                        for v, name in ((a, k.a), (w, k.w)))
                return torch.einsum(spec, a, w)
            perm, bounds = self.segments.get(graph, k.segment, k.layout)
            out = a.new_zeros(len(bounds) - 1, *(a.shape[1:-1] if k.batched else ()), a.shape[-1], w.shape[-1])
            for t in range(len(bounds) - 1):
                if bounds[t + 1] > bounds[t]:
                    rows = _rows(perm, bounds[t], bounds[t + 1])
                    out[t] = torch.einsum(spec, a[rows], w[rows])
            return out
        if k.transpose_w:
            w = w.transpose(-1, -2)
        if k.segment is None:
            out = torch.einsum("r...i,...io->r...o", a, w) if w.dim() > 2 else a @ w
        else:
            perm, bounds = self.segments.get(graph, k.segment, k.layout)
            out = a.new_zeros(*a.shape[:-1], w.shape[-1])
            for t in range(len(bounds) - 1):
                if bounds[t + 1] > bounds[t]:
                    rows = _rows(perm, bounds[t], bounds[t + 1])
                    out[rows] = torch.einsum("r...i,...io->r...o", a[rows], w[t]) if k.batched else a[rows] @ w[t]
        if k.scatter is not None:
            index, size = resolve_index(graph, k.scatter)
            out = out.new_zeros(size, *out.shape[1:]).index_add(0, index, out)
        return out

    def __call__(self, graph: HeteroGraph, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 keep: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Run the program: (outputs by name, the buffers named in ``keep``)."""
        env = dict(tensors)
        for kernel in self.program.kernels:
            if isinstance(kernel, GemmKernel):
                env[kernel.out] = self.gemm(kernel, graph, env)
                continue
            body_inputs = {n.attr("name"): env[n.attr("name")] for n in kernel.body.nodes if n.op is Op.INPUT}
            env.update(run(kernel.body, graph, body_inputs, {}, dtype=dtype))
        return {name: env[buffer] for name, buffer in self.program.outputs}, {name: env[name] for name in keep}
