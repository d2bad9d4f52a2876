"""The heterogeneous graph container and its memoized layouts.

A :class:`HeteroGraph` is a list of typed edges ``(src[i], dst[i], etype[i])`` over
``num_nodes`` nodes with global ids, plus an optional node type per node. Node
types share one id space (as in DGL's ``to_homogeneous``); the ``ntype`` vector
says which type each node has.

A graph may be a *block* (bipartite, DGL's convention for sampled mini-batches): its
first ``num_dst_nodes`` nodes are the destinations, every edge ends in one of them,
and all ``num_nodes`` nodes (``num_src_nodes``) may be sources. Node inputs of a layer
have ``num_src_nodes`` rows and its outputs ``num_dst_nodes``. A plain graph is the
block whose destinations are all its nodes.

Kernels never read the raw edge list: they read *layouts* derived from it (CSR by
destination, CSR by source, COO sorted by edge type, the compact maps, the
(node type, edge type) pairs). Each
layout is built once on first use and memoized on the graph, so compiling and
running a layer many times on the same graph pays for it once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from pigeon.native import COUNTED_KEYS, compact_map, counted_unique, csr, grouped_keys, sort_with_ptr

__all__ = ["HeteroGraph", "CSR", "SortedCOO", "CompactMap", "Segments", "TypePairs", "LAYOUTS", "find_graph"]

_INT32_MAX = 2**31 - 1


class CSR(NamedTuple):
    """Compressed rows. Row ``r`` owns positions ``rowptr[r]:rowptr[r+1]``.

    ``col[p]`` is the node at the other end of the edge at position ``p`` and
    ``eid[p]`` its id in the original edge list. Within a row, edges keep their
    original order.
    """

    rowptr: torch.Tensor
    col: torch.Tensor
    eid: torch.Tensor


class SortedCOO(NamedTuple):
    """Edges sorted by ``(etype, dst)`` (stable), with per-etype offsets.

    Relation ``t`` owns positions ``rel_ptr[t]:rel_ptr[t+1]``; ``eid[p]`` is the
    original id of the edge at position ``p``.
    """

    src: torch.Tensor
    dst: torch.Tensor
    etype: torch.Tensor
    eid: torch.Tensor
    rel_ptr: torch.Tensor


class Segments(NamedTuple):
    """Rows grouped by type: type ``t`` owns ``perm[ptr[t]:ptr[t+1]]`` (ascending ids)."""

    perm: torch.Tensor
    ptr: torch.Tensor


class CompactMap(NamedTuple):
    """Unique ``(node, etype)`` pairs, the rows of a compact materialization.

    Rows are sorted by ``(etype, node)``; relation ``t`` owns rows
    ``rel_ptr[t]:rel_ptr[t+1]``. ``edge_row[e]`` is the row of edge ``e``
    (original edge order).
    """

    node: torch.Tensor
    etype: torch.Tensor
    rel_ptr: torch.Tensor
    edge_row: torch.Tensor

    @property
    def num_rows(self) -> int:
        return self.node.numel()


class TypePairs(NamedTuple):
    """The (source node type, edge type) pairs that occur on edges: where a weight
    folded from a per-node-type and a per-edge-type matrix lives (HGT's ``K_tau W_r``).

    Rows are sorted by ``(etype, ntype)``; relation ``t`` owns rows
    ``rel_ptr[t]:rel_ptr[t+1]``. ``edge_row[e]`` is the row of edge ``e`` (original edge
    order); the row of each ``compact_src`` row is the layout ``compact_src_pair``.
    """

    ntype: torch.Tensor
    etype: torch.Tensor
    rel_ptr: torch.Tensor
    edge_row: torch.Tensor

    @property
    def num_rows(self) -> int:
        return self.ntype.numel()


def _check_index_tensor(name: str, value, length: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"Expected `{name}` to be a 1-D integer tensor (got {type(value).__name__}: {err})"
            ) from None
    if value.dim() != 1:
        raise ValueError(
            f"Expected `{name}` to be a 1-D integer tensor (got shape {list(value.shape)}, "
            f"dtype {str(value.dtype).replace('torch.', '')})"
        )
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise ValueError(
            f"Expected `{name}` to be a 1-D integer tensor (got dtype "
            f"{str(value.dtype).replace('torch.', '')}, shape {list(value.shape)})"
        )
    if length is not None and value.numel() != length:
        raise ValueError(
            f"Expected `{name}` to have one entry per {'edge' if name != 'ntype' else 'node'} "
            f"({length}), got {value.numel()}"
        )
    if value.numel() and int(value.min()) < 0:
        raise ValueError(f"Expected `{name}` to hold non-negative ids (got minimum {int(value.min())})")
    return value.to(torch.int64)


def _check_count(name: str, value, at_least: int) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Expected `{name}` to be an int (got a tensor of shape {list(value.shape)})")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"Expected `{name}` to be an int (got {type(value).__name__})")
    if value < at_least:
        raise ValueError(f"Expected `{name}` to be at least {at_least} (got {value})")
    return value


def _check_names(name: str, names, count: int) -> tuple | None:
    if names is None:
        return None
    names = tuple(tuple(n) if isinstance(n, list) else n for n in names)
    if len(names) != count:
        raise ValueError(f"Expected `{name}` to have {count} entries, one per type (got {len(names)})")
    if len(set(names)) != len(names):
        raise ValueError(f"Expected `{name}` to hold distinct names (got {list(names)})")
    return names


def index_dtype(*counts: int) -> torch.dtype:
    """int32 when every count fits in it, int64 otherwise."""
    return torch.int32 if max(counts, default=0) <= _INT32_MAX else torch.int64


def _rowptr(keys: torch.Tensor, num_rows: int, dtype: torch.dtype) -> torch.Tensor:
    counts = torch.bincount(keys, minlength=num_rows)
    ptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr.to(dtype)


@dataclass(frozen=True)
class GraphStats:
    """Statistics the cost model and the autotuner key their decisions on."""

    num_nodes: int
    num_edges: int
    num_etypes: int
    num_ntypes: int
    num_dst_nodes: int
    compact_src_rows: int
    compact_dst_rows: int
    max_in_degree: int

    @property
    def compaction_ratio(self) -> float:
        """Edges per unique (src, etype) pair: how much compact materialization saves."""
        return self.num_edges / max(self.compact_src_rows, 1)


LAYOUTS = (
    "csr_dst", "csr_src", "coo_etype", "compact_src", "compact_dst", "ntype_sorted", "dst_ntype_sorted",
    "in_degree", "out_degree", "ntype_etype", "ntype_etype_edges", "ntype_etype_compact_src", "compact_src_pair",
    "compact_src_edges", "compact_dst_edges",
)



def unique_keys(key: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(key, sorted=True, return_inverse=True)`` for integer keys in
    ``[0, num_keys)``: by counting (one pass and a prefix sum over the key range) when the
    range is small, as the (node, relation) and (node type, relation) keys of a sampled
    block are, instead of a sort per batch; in C on the CPU (:func:`counted_unique`)."""
    if num_keys > max(COUNTED_KEYS, 4 * key.numel()):
        return torch.unique(key, sorted=True, return_inverse=True)
    counted = counted_unique(key, num_keys)
    if counted is not None:
        return counted
    present = torch.bincount(key, minlength=num_keys) > 0
    rank = torch.cumsum(present, 0) - 1
    return torch.nonzero(present).flatten(), rank.index_select(0, key)


class HeteroGraph:
    """A graph with typed edges and (optionally) typed nodes.

    Args:
        src (Tensor): 1-D integer tensor, the source node of each edge.
        dst (Tensor): 1-D integer tensor, the destination node of each edge.
        etype (Tensor, optional): 1-D integer tensor, the type of each edge. Defaults
            to all zeros (one relation).
        num_nodes (int, optional): number of nodes. Defaults to one past the largest
            id in ``src``/``dst`` (or the length of ``ntype`` when given).
        ntype (Tensor, optional): 1-D integer tensor, the type of each node. Defaults
            to all zeros.
        num_etypes (int, optional): number of edge types. Defaults to
            ``len(etype_names)`` or one past the largest ``etype``. Types with no edges
            are allowed.
        num_ntypes (int, optional): number of node types, defaulting like ``num_etypes``.
        etype_names (sequence, optional): a name per edge type; a name may be a
            ``(src_type, relation, dst_type)`` triple as in DGL and PyG.
        ntype_names (sequence of str, optional): a name per node type.
        num_dst_nodes (int, optional): make the graph a block whose destinations are
            nodes ``0 .. num_dst_nodes - 1`` (every ``dst`` must be below it); the
            sources are all ``num_nodes`` nodes. Defaults to ``num_nodes`` (a plain graph).

    Isolated nodes, self-loops, repeated edges and empty relations are all valid.
    """

    def __init__(
        self,
        src,
        dst,
        etype=None,
        num_nodes: int | None = None,
        ntype=None,
        *,
        num_etypes: int | None = None,
        num_ntypes: int | None = None,
        etype_names: Sequence | None = None,
        ntype_names: Sequence[str] | None = None,
        num_dst_nodes: int | None = None,
    ):
        src = _check_index_tensor("src", src)
        dst = _check_index_tensor("dst", dst, src.numel())
        if dst.device != src.device:
            raise ValueError(f"Expected `dst` on the device of `src` ({src.device}), got {dst.device}")
        if etype is None:
            etype = torch.zeros_like(src)
        etype = _check_index_tensor("etype", etype, src.numel()).to(src.device)
        if ntype is not None:
            ntype = _check_index_tensor("ntype", ntype).to(src.device)

        max_id = int(torch.maximum(src.max(), dst.max())) if src.numel() else -1
        if num_nodes is None:
            num_nodes = ntype.numel() if ntype is not None else max_id + 1
        num_nodes = _check_count("num_nodes", num_nodes, at_least=0)
        for name, ids in (("src", src), ("dst", dst)):
            if ids.numel() and int(ids.max()) >= num_nodes:
                raise ValueError(
                    f"Expected every id in `{name}` to be < num_nodes={num_nodes} (got {int(ids.max())})"
                )
        num_dst_nodes = num_nodes if num_dst_nodes is None else _check_count("num_dst_nodes", num_dst_nodes, 0)
        if num_dst_nodes > num_nodes:
            raise ValueError(f"Expected `num_dst_nodes` to be at most num_nodes={num_nodes}: the destinations "
                             f"of a block are a prefix of its source nodes (got {num_dst_nodes})")
        if num_dst_nodes < num_nodes and dst.numel() and int(dst.max()) >= num_dst_nodes:
            raise ValueError(f"Expected every id in `dst` to be < num_dst_nodes={num_dst_nodes}, the "
                             f"destinations of the block (got {int(dst.max())})")
        if ntype is None:
            ntype = torch.zeros(num_nodes, dtype=torch.int64, device=src.device)
        elif ntype.numel() != num_nodes:
            raise ValueError(f"Expected `ntype` to have one entry per node ({num_nodes}), got {ntype.numel()}")

        self._num_etypes = self._type_count("etype", etype, num_etypes, etype_names)
        self._num_ntypes = self._type_count("ntype", ntype, num_ntypes, ntype_names)
        self.etype_names = _check_names("etype_names", etype_names, self._num_etypes)
        self.ntype_names = _check_names("ntype_names", ntype_names, self._num_ntypes)

        self.src, self.dst, self.etype, self.ntype = src, dst, etype, ntype
        self._num_nodes = num_nodes
        self._num_dst_nodes = num_dst_nodes
        self._layouts: dict[str, object] = {}
        _register(self)

    @staticmethod
    def _type_count(kind: str, types: torch.Tensor, given: int | None, names) -> int:
        observed = int(types.max()) + 1 if types.numel() else 0
        if given is None:
            given = len(names) if names is not None else max(observed, 1)
        given = _check_count(f"num_{kind}s", given, at_least=1)
        if observed > given:
            raise ValueError(
                f"Expected every `{kind}` to be < num_{kind}s={given} (got {observed - 1})"
            )
        return given

    # ---- sizes -------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @property
    def num_src_nodes(self) -> int:
        """Nodes that may be sources: all of them (DGL's name, for blocks)."""
        return self._num_nodes

    @property
    def num_dst_nodes(self) -> int:
        """Nodes that may be destinations: ``0 .. num_dst_nodes - 1`` (all nodes but in a block)."""
        return self._num_dst_nodes

    @property
    def is_block(self) -> bool:
        """Whether some source nodes are no destination (a sampled mini-batch block)."""
        return self._num_dst_nodes < self._num_nodes

    @property
    def num_edges(self) -> int:
        return self.src.numel()

    @property
    def num_etypes(self) -> int:
        return self._num_etypes

    @property
    def num_ntypes(self) -> int:
        return self._num_ntypes

    @property
    def device(self) -> torch.device:
        return self.src.device

    @property
    def index_dtype(self) -> torch.dtype:
        """The dtype of layout index arrays: int32 where every count fits, else int64."""
        return index_dtype(self.num_nodes, self.num_edges, self.num_nodes * self.num_etypes)

    def __repr__(self) -> str:
        dst = f", num_dst_nodes={self.num_dst_nodes}" if self.is_block else ""
        return (
            f"HeteroGraph(num_nodes={self.num_nodes}{dst}, num_edges={self.num_edges}, "
            f"num_etypes={self.num_etypes}, num_ntypes={self.num_ntypes}, device={self.device})"
        )

    # ---- layouts -----------------------------------------------------------------
    def layout(self, name: str):
        """Return the layout called ``name`` (one of :data:`LAYOUTS`), building it once."""
        if name not in LAYOUTS:
            raise ValueError(f"Expected `name` to be one of {list(LAYOUTS)} (got {name!r})")
        cached = self._layouts.get(name)
        if cached is None:
            cached = getattr(self, f"_build_{name}")()
            self._layouts[name] = cached
        return cached

    def computed_layouts(self) -> tuple[str, ...]:
        """Names of the layouts built so far (in build order)."""
        return tuple(self._layouts)

    @property
    def csr_dst(self) -> CSR:
        """CSR by destination: row ``v`` lists the incoming edges of ``v`` (``col`` = source)."""
        return self.layout("csr_dst")

    @property
    def csr_src(self) -> CSR:
        """CSR by source: row ``u`` lists the outgoing edges of ``u`` (``col`` = destination)."""
        return self.layout("csr_src")

    @property
    def coo_etype(self) -> SortedCOO:
        """COO sorted by ``(etype, dst)`` with per-relation offsets ``rel_ptr``."""
        return self.layout("coo_etype")

    @property
    def compact_src(self) -> CompactMap:
        """Unique ``(src, etype)`` pairs and each edge's row among them."""
        return self.layout("compact_src")

    @property
    def compact_dst(self) -> CompactMap:
        """Unique ``(dst, etype)`` pairs and each edge's row among them."""
        return self.layout("compact_dst")

    @property
    def ntype_sorted(self) -> Segments:
        """Nodes grouped by node type, for GEMMs with per-node-type weights."""
        return self.layout("ntype_sorted")

    @property
    def dst_ntype_sorted(self) -> Segments:
        """Destination nodes grouped by node type (per-node-type GEMMs on destination rows)."""
        return self.layout("dst_ntype_sorted")

    @property
    def dst_ntype(self) -> torch.Tensor:
        """The node type of every destination node."""
        return self.ntype[: self.num_dst_nodes]

    @property
    def ntype_etype(self) -> TypePairs:
        """The (source node type, edge type) pairs present, and each edge's and compact row's pair."""
        return self.layout("ntype_etype")

    def in_degree(self) -> torch.Tensor:
        """In-degree of every destination node over all relations (int64, ``num_dst_nodes``)."""
        return self.layout("in_degree")

    def out_degree(self) -> torch.Tensor:
        """Out-degree of every node over all relations (int64)."""
        return self.layout("out_degree")

    def _sorted_by(self, major: torch.Tensor, major_size: int, minor: torch.Tensor | None = None,
                   minor_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Stable permutation sorting edges by ``major`` (below ``major_size``) then
        ``minor`` (below ``minor_size``), and where each key's run starts: the identity
        when they are in that order already (a sampled block's edges come grouped by
        relation and destination), else a counting sort of the keys
        (:func:`pigeon.native.sort_with_ptr`)."""
        key = major if minor is None else major * minor_size + minor
        return sort_with_ptr(key, major_size * minor_size)

    def _csr(self, rows: torch.Tensor, cols: torch.Tensor, num_rows: int) -> CSR:
        dtype = self.index_dtype
        built = csr(rows, cols, num_rows, dtype)   # in C, in the index dtype
        if built is not None:
            return CSR(*built)
        perm, ptr = self._sorted_by(rows, num_rows)
        return CSR(rowptr=ptr.to(dtype), col=cols[perm].to(dtype), eid=perm.to(dtype))

    def _build_csr_dst(self) -> CSR:
        return self._csr(self.dst, self.src, self.num_dst_nodes)

    def _build_csr_src(self) -> CSR:
        return self._csr(self.src, self.dst, self.num_nodes)

    def _build_coo_etype(self) -> SortedCOO:
        dtype = self.index_dtype
        perm = self._sorted_by(self.etype, self.num_etypes, self.dst, self.num_nodes)[0]
        return SortedCOO(
            src=self.src[perm].to(dtype),
            dst=self.dst[perm].to(dtype),
            etype=self.etype[perm].to(dtype),
            eid=perm.to(dtype),
            rel_ptr=_rowptr(self.etype, self.num_etypes, dtype),
        )

    def _compact(self, nodes: torch.Tensor, name: str) -> CompactMap:
        """The compact map of ``nodes`` (the edges' sources or destinations); where C
        builds or counts it, also the edges grouped by their row (layout
        ``{name}_edges``), from the same passes."""
        dtype = self.index_dtype
        built = compact_map(self.etype, nodes, self.num_nodes, self.num_etypes, dtype)
        if built is not None:   # relation by relation, in C (a sampled block's edges)
            node, etype, rel_ptr, edge_row, perm, ptr = built
            self._layouts[f"{name}_edges"] = Segments(perm=perm, ptr=ptr)
            return CompactMap(node=node, etype=etype, rel_ptr=rel_ptr, edge_row=edge_row)
        key = self.etype * self.num_nodes + nodes
        grouped = grouped_keys(key, self.num_etypes * self.num_nodes)
        if grouped is None:
            keys, edge_row = unique_keys(key, self.num_etypes * self.num_nodes)
        else:
            keys, edge_row, ptr, order = grouped
            self._layouts[f"{name}_edges"] = Segments(perm=order.to(dtype), ptr=ptr.to(dtype))
        row_etype = keys // max(self.num_nodes, 1)
        return CompactMap(
            node=(keys - row_etype * self.num_nodes).to(dtype),
            etype=row_etype.to(dtype),
            rel_ptr=_rowptr(row_etype, self.num_etypes, dtype),
            edge_row=edge_row.to(dtype),
        )

    def _build_compact_src(self) -> CompactMap:
        return self._compact(self.src, "compact_src")

    def _build_compact_dst(self) -> CompactMap:
        return self._compact(self.dst, "compact_dst")

    def _compact_edges(self, name: str) -> Segments:
        """The edges grouped by their row of compact map ``name``: row ``r`` owns edges
        ``perm[ptr[r]:ptr[r+1]]``, ascending."""
        compact = self.layout(name)
        if f"{name}_edges" in self._layouts:   # built with the map
            return self._layouts[f"{name}_edges"]
        perm, ptr = sort_with_ptr(compact.edge_row.long(), compact.num_rows)
        return Segments(perm=perm.to(self.index_dtype), ptr=ptr.to(self.index_dtype))

    def _build_compact_src_edges(self) -> Segments:
        return self._compact_edges("compact_src")

    def _build_compact_dst_edges(self) -> Segments:
        return self._compact_edges("compact_dst")

    def _type_segments(self, types: torch.Tensor) -> Segments:
        dtype = self.index_dtype
        perm, ptr = self._sorted_by(types, self.num_ntypes)
        return Segments(perm=perm.to(dtype), ptr=ptr.to(dtype))

    def _build_ntype_sorted(self) -> Segments:
        return self._type_segments(self.ntype)

    def _build_dst_ntype_sorted(self) -> Segments:
        if not self.is_block:
            return self.ntype_sorted
        return self._type_segments(self.dst_ntype)

    def _build_ntype_etype(self) -> TypePairs:
        dtype = self.index_dtype
        num_ntypes = self.num_ntypes
        built = compact_map(self.etype, self.ntype[self.src], num_ntypes, self.num_etypes, dtype)
        if built is not None:   # relation by relation, in C, with the edges grouped by pair
            ntype, etype, rel_ptr, edge_row, perm, ptr = built
            self._layouts["ntype_etype_edges"] = Segments(perm=perm, ptr=ptr)
            return TypePairs(ntype=ntype, etype=etype, rel_ptr=rel_ptr, edge_row=edge_row)
        keys, edge_row = unique_keys(self.etype * num_ntypes + self.ntype[self.src], self.num_etypes * num_ntypes)
        row_etype = keys // num_ntypes
        return TypePairs(
            ntype=(keys - row_etype * num_ntypes).to(dtype),
            etype=row_etype.to(dtype),
            rel_ptr=_rowptr(row_etype, self.num_etypes, dtype),
            edge_row=edge_row.to(dtype),
        )

    def _build_compact_src_pair(self) -> torch.Tensor:
        """The (source node type, edge type) pair row of each ``compact_src`` row."""
        compact = self.compact_src
        # The compact rows come relation by relation and hold the edges' (source type,
        # relation) pairs, no more, no fewer: their own pairs, numbered in C, are the
        # edges' (with the rows grouped by pair on the way).
        built = compact_map(compact.etype, self.ntype[compact.node.long()], self.num_ntypes, self.num_etypes,
                            self.index_dtype)
        if built is not None:
            self._layouts["ntype_etype_compact_src"] = Segments(perm=built[4], ptr=built[5])
            return built[3]
        pairs = self.ntype_etype
        keys = pairs.etype.long() * self.num_ntypes + pairs.ntype.long()
        compact_keys = compact.etype.long() * self.num_ntypes + self.ntype[compact.node.long()]
        return torch.searchsorted(keys, compact_keys).to(self.index_dtype)

    def _pair_segments(self, pair_of_row: torch.Tensor) -> Segments:
        """Rows grouped by their (ntype, etype) pair, for GEMMs with per-pair weights."""
        dtype = self.index_dtype
        pairs = self.ntype_etype
        perm, ptr = self._sorted_by(pair_of_row.long(), pairs.num_rows)
        return Segments(perm=perm.to(dtype), ptr=ptr.to(dtype))

    def _build_ntype_etype_edges(self) -> Segments:
        return self._pair_segments(self.ntype_etype.edge_row)

    def _build_ntype_etype_compact_src(self) -> Segments:
        return self._pair_segments(self.layout("compact_src_pair"))

    def _build_in_degree(self) -> torch.Tensor:
        return torch.bincount(self.dst, minlength=self.num_dst_nodes)

    def _build_out_degree(self) -> torch.Tensor:
        return torch.bincount(self.src, minlength=self.num_nodes)

    def stats(self) -> GraphStats:
        """Statistics for cost models and autotuner keys (builds the compact maps)."""
        in_deg = self.in_degree()
        return GraphStats(
            num_nodes=self.num_nodes,
            num_edges=self.num_edges,
            num_etypes=self.num_etypes,
            num_ntypes=self.num_ntypes,
            num_dst_nodes=self.num_dst_nodes,
            compact_src_rows=self.compact_src.num_rows,
            compact_dst_rows=self.compact_dst.num_rows,
            max_in_degree=int(in_deg.max()) if in_deg.numel() else 0,
        )

    def with_reverse_edges(self, num_relations: int | None = None) -> "HeteroGraph":
        """This graph plus one reverse edge per edge, in relations of their own.

        With ``R = num_relations`` (default ``self.num_etypes``), edge ``(u, v, r)``
        gains ``(v, u, r + R)``; the reverse edges follow the originals in the edge
        list. A larger ``R`` keeps relation ids fixed for a model that knows relations
        this graph has no edges of. Relation names become ``rev_<name>``, and a
        ``(src_type, rel, dst_type)`` name becomes ``(dst_type, rev_<rel>, src_type)``
        (names are dropped when ``R`` differs from ``self.num_etypes``). This is the
        inverse-relation convention of R-GCN and NBFNet.
        """
        if self.is_block:
            raise ValueError("Expected a plain graph for `with_reverse_edges` (got a block: the reverse of an "
                             "edge into a destination starts at a destination and may end at any source)")
        num_rel = self.num_etypes if num_relations is None else num_relations
        if num_rel < self.num_etypes:
            raise ValueError(f"Expected `num_relations` to be at least graph.num_etypes={self.num_etypes} "
                             f"(got {num_rel})")
        names = None
        if self.etype_names is not None and num_rel == self.num_etypes:
            reversed_names = []
            for name in self.etype_names:
                if isinstance(name, tuple):
                    src_type, rel, dst_type = name
                    reversed_names.append((dst_type, f"rev_{rel}", src_type))
                else:
                    reversed_names.append(f"rev_{name}")
            names = list(self.etype_names) + reversed_names
        return HeteroGraph(
            torch.cat([self.src, self.dst]),
            torch.cat([self.dst, self.src]),
            torch.cat([self.etype, self.etype + num_rel]),
            num_nodes=self.num_nodes,
            ntype=self.ntype,
            num_etypes=2 * num_rel,
            num_ntypes=self.num_ntypes,
            etype_names=names,
            ntype_names=self.ntype_names,
        )

    # ---- movement ----------------------------------------------------------------
    def to(self, device) -> "HeteroGraph":
        """A copy on ``device`` that carries every layout computed so far."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = HeteroGraph.__new__(HeteroGraph)
        moved.__dict__.update(self.__dict__)
        moved.src, moved.dst = self.src.to(device), self.dst.to(device)
        moved.etype, moved.ntype = self.etype.to(device), self.ntype.to(device)
        moved._layouts = {name: _move(value, device) for name, value in self._layouts.items()}
        _register(moved)
        return moved

    def __setstate__(self, state: dict) -> None:
        # Unpickled and copied graphs are found by their tensors too (see find_graph).
        self.__dict__.update(state)
        _register(self)

    def nodes_of_type(self, t: int) -> torch.Tensor:
        """Global ids of the nodes of type ``t``, ascending."""
        return torch.nonzero(self.ntype == t, as_tuple=False).flatten()

    def etype_counts(self) -> torch.Tensor:
        """Number of edges of each type (int64, length ``num_etypes``)."""
        return torch.bincount(self.etype, minlength=self.num_etypes)


def _move(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return type(value)(*(_move(v, device) for v in value))
    return value


# ---- finding a graph by its tensors ------------------------------------------------
# Live graphs by the memory of their tensors and their counts. A graph that reaches a
# torch.library operator under torch.compile arrives as its tensors only; this finds
# the graph object again, with its memoized layouts. A key names the tensors' memory,
# which cannot be reused while the graph (holding the tensors) lives; a later graph
# made of the same tensors replaces an earlier one (they are the same graph).
_LIVE: "weakref.WeakValueDictionary[tuple, HeteroGraph]" = weakref.WeakValueDictionary()


def _tensor_key(t: torch.Tensor) -> tuple:
    return t.data_ptr(), t.shape, t.stride(), t.dtype, t.device


def graph_key(src: torch.Tensor, dst: torch.Tensor, etype: torch.Tensor, ntype: torch.Tensor, num_dst_nodes: int,
              num_etypes: int, num_ntypes: int) -> tuple:
    """What identifies a graph made of these tensors and counts (the arguments of
    :func:`find_graph`)."""
    return (*map(_tensor_key, (src, dst, etype, ntype)), int(num_dst_nodes), int(num_etypes), int(num_ntypes))


def _register(graph: HeteroGraph) -> None:
    _LIVE[graph_key(graph.src, graph.dst, graph.etype, graph.ntype, graph.num_dst_nodes, graph.num_etypes,
                    graph.num_ntypes)] = graph


def find_graph(src: torch.Tensor, dst: torch.Tensor, etype: torch.Tensor, ntype: torch.Tensor, num_dst_nodes: int,
               num_etypes: int, num_ntypes: int) -> HeteroGraph | None:
    """The live graph whose ``src``, ``dst``, ``etype`` and ``ntype`` are these very
    tensors (the same memory, shape and strides) and whose counts are these, or None."""
    return _LIVE.get(graph_key(src, dst, etype, ntype, num_dst_nodes, num_etypes, num_ntypes))
