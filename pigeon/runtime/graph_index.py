"""Per-graph index arrays every backend reads, built once per graph and kept while it lives.

A :class:`GraphIndex` turns a graph's memoized layouts into what kernels take: int64
index maps, the row segments of a typed GEMM, the CSR a traversal walks, blocks of rows
handed to threads. Everything is keyed by the graph object (weakly, so a graph's arrays
go with it) and by the map or layout, so a kernel launched many times on one graph
builds its arrays once. :data:`GRAPH_INDEX` is the one instance the backends share.
"""

from __future__ import annotations

import weakref

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import COMPACT_DST_OF_EDGE, COMPACT_SRC_OF_EDGE, IndexMap
from pigeon.ir.kernel_ir import SegmentLayout
from pigeon.native import ascends, sort_with_ptr
from pigeon.runtime.interpret import resolve_index

__all__ = ["PerGraphCache", "GraphIndex", "GRAPH_INDEX", "row_blocks"]

# Groups whose CSR is a graph layout (the edges of each compact row).
_COMPACT_EDGES = {COMPACT_SRC_OF_EDGE.name: "compact_src_edges", COMPACT_DST_OF_EDGE.name: "compact_dst_edges"}


class PerGraphCache:
    """Values built once per graph and kept while the graph lives."""

    def __init__(self):
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _memo(self, graph: HeteroGraph, key: tuple, build):
        per_graph = self._cache.setdefault(graph, {})
        if key not in per_graph:
            per_graph[key] = build()
        return per_graph[key]


class GraphIndex(PerGraphCache):
    """Per graph: GEMM row segments and the index arrays GEMMs read, built once.

    ``segments`` gives a permutation into segment order (None when rows already are in
    it) and the segment bounds, read to the host once per graph, never per call.
    """

    def index(self, graph: HeteroGraph, index: IndexMap) -> tuple[torch.Tensor, int]:
        def build():
            tensor, size = resolve_index(graph, index)
            return tensor.to(torch.int64).contiguous(), size
        return self._memo(graph, ("index", index.name), build)

    def segments(self, graph: HeteroGraph, index: IndexMap, layout: SegmentLayout | None):
        def build():
            if layout is None:
                raise ValueError(f"GEMM segment map {index.name!r} has no segment layout")
            if layout is SegmentLayout.COO_ETYPE:
                perm, ptr = graph.coo_etype.eid.long(), graph.coo_etype.rel_ptr
            elif not layout.permuted:
                perm, ptr = None, graph.layout(layout.value).rel_ptr
            else:
                segments = graph.layout(layout.value)
                perm, ptr = segments.perm.long(), segments.ptr
            return perm, ptr.tolist()
        return self._memo(graph, ("segments", index.name), build)

    def in_order(self, graph: HeteroGraph, index: IndexMap, layout: SegmentLayout | None) -> bool:
        """Whether the rows already are in segment order (no permutation, or the identity,
        as with one node type): the torch and C GEMMs then read and write them in place.
        (Triton's kernels are rendered for the layout's permutation and take it as is.)"""
        def build():
            perm = self.segments(graph, index, layout)[0]
            return perm is None or ascends(perm, strict=True)   # a permutation: the identity
        return self._memo(graph, ("in_order", index.name), build)

    def segment_profile(self, graph: HeteroGraph, index: IndexMap, layout: SegmentLayout | None) -> tuple[int, bool]:
        """(types that own rows, whether every type owns as many rows and there are
        several): what picks a GEMM's execution path, decided once per graph."""
        def build():
            bounds = self.segments(graph, index, layout)[1]
            sizes = [hi - lo for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
            return len(sizes), len(bounds) - 1 == len(sizes) > 1 and len(set(sizes)) == 1
        return self._memo(graph, ("profile", index.name), build)

    def sorted_rows(self, graph: HeteroGraph, gather: IndexMap | None, segment: IndexMap, layout: SegmentLayout | None):
        """For each position in segment order, the row of the A operand to read (None: identity)."""
        def build():
            perm, _ = self.segments(graph, segment, layout)
            if gather is None:
                return perm
            index = self.index(graph, gather)[0]
            return index if perm is None else index.index_select(0, perm)
        return self._memo(graph, ("rows", gather.name if gather else None, segment.name), build)

    def blocks(self, graph: HeteroGraph, segment: IndexMap, layout: SegmentLayout | None, rows: int) -> torch.Tensor:
        """``[blocks, 3]`` int64 rows (type, first position, end position): each type's
        positions in segment order cut into runs of at most ``rows``, the units a
        generated GEMM hands to its threads."""
        return self._memo(graph, ("blocks", segment.name, rows),
                          lambda: row_blocks(self.segments(graph, segment, layout)[1], rows))

    def group_blocks(self, graph: HeteroGraph, group: IndexMap, rows: int) -> torch.Tensor:
        """As :meth:`blocks`, for the groups of ``group``'s CSR (:meth:`group_csr`)."""
        return self._memo(graph, ("group_blocks", group.name, rows),
                          lambda: row_blocks(self.group_csr(graph, group)[0].tolist(), rows))

    def sorted_scatter(self, graph: HeteroGraph, scatter: IndexMap, segment: IndexMap, layout: SegmentLayout | None):
        """The scatter target of each position in segment order, and the target size."""
        def build():
            perm, _ = self.segments(graph, segment, layout)
            index, size = self.index(graph, scatter)
            return (index if perm is None else index.index_select(0, perm)), size
        return self._memo(graph, ("scatter", scatter.name, segment.name), build)

    def group_csr(self, graph: HeteroGraph, group: IndexMap) -> tuple[torch.Tensor, torch.Tensor]:
        """(rowptr, perm): the source rows of each target row of ``group``, in row order
        (the CSR a node-parallel traversal walks)."""
        def build():
            if group.name in ("dst", "src"):
                csr = graph.layout(f"csr_{group.name}")
                return csr.rowptr.to(torch.int64).contiguous(), csr.eid.to(torch.int64).contiguous()
            if group.name in _COMPACT_EDGES:   # built with the compact map, where C counted it
                edges = graph.layout(_COMPACT_EDGES[group.name])
                return edges.ptr.to(torch.int64).contiguous(), edges.perm.to(torch.int64).contiguous()
            keys, size = self.index(graph, group)
            perm, rowptr = sort_with_ptr(keys, size)
            return rowptr, perm.contiguous()
        return self._memo(graph, ("csr", group.name), build)

    def group_in_order(self, graph: HeteroGraph, group: IndexMap) -> bool:
        """Whether ``group``'s CSR keeps the rows in their order (a sampled block's edges
        come grouped by relation and destination: grouped by their (destination,
        relation) pair, they already are in CSR order)."""
        def build():
            perm = self.group_csr(graph, group)[1]
            return ascends(perm, strict=True)
        return self._memo(graph, ("csr_in_order", group.name), build)

    def sorted_index(self, graph: HeteroGraph, group: IndexMap, index: IndexMap) -> torch.Tensor:
        """``index``'s value for each position of ``group``'s CSR (its rows in CSR order)."""
        def build():
            values = self.index(graph, index)[0]
            if self.group_in_order(graph, group):
                return values
            return values.index_select(0, self.group_csr(graph, group)[1])
        return self._memo(graph, ("sorted_index", group.name, index.name), build)

    def largest(self, graph: HeteroGraph, group: IndexMap) -> int:
        """The number of rows of ``group``'s largest group (0 without rows)."""
        return self._memo(graph, ("largest", group.name),
                          lambda: int(self.counts(graph, group).max()) if self.counts(graph, group).numel() else 0)

    def counts(self, graph: HeteroGraph, group: IndexMap) -> torch.Tensor:
        """The number of source rows of each target row of ``group``."""
        return self._memo(graph, ("counts", group.name), lambda: self.group_csr(graph, group)[0].diff())


def row_blocks(bounds: list[int], rows: int) -> torch.Tensor:
    """``[blocks, 3]`` (group, first, end) runs of at most ``rows`` within each group,
    built without a loop over groups (a block graph has a new set of groups every batch)."""
    ptr = torch.tensor(bounds, dtype=torch.int64)
    lengths = ptr[1:] - ptr[:-1]
    counts = (lengths + rows - 1) // rows                 # blocks per group (0 for empty ones)
    group = torch.repeat_interleave(torch.arange(lengths.numel()), counts)
    first_block = torch.cumsum(counts, 0) - counts
    start = ptr[group] + (torch.arange(group.numel()) - first_block[group]) * rows
    end = torch.minimum(start + rows, ptr[group + 1])
    return torch.stack([group, start, end], 1).contiguous()


GRAPH_INDEX = GraphIndex()
