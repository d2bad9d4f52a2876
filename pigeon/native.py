"""Graph-layout helpers in C: a stable counting sort of small integer keys, the distinct
values of such keys with each key's rank among them, and a sampled block's CSR and
compact maps written straight in the graph's index dtype.

A sampled block is a new graph every step, and each of its layouts (the CSR of its
destinations and of its sources, the groups of a compact map) orders its edges by a key
with few distinct values (node ids of the block, relation ids). A counting sort does
that in two passes over the edges, where ``torch.sort`` sorts, and only counts keys that
already ascend. A block's edges come relation by relation, then by destination: its
compact maps are built one relation at a time (:func:`compact_map`), a run of equal
destinations being a row, and the sources of a relation numbered through a bitmap of
the nodes present, with no table cleared over the whole key range and no key array.
Everything is compiled once per machine (:mod:`pigeon.clib`) and called through
ctypes. Without a C compiler the layouts use ``torch.sort`` and torch's counting, said
once in a warning.
"""

from __future__ import annotations

import ctypes
import functools
import warnings

import torch

from pigeon.clib import CompilerError, build_library, compiler_available

__all__ = ["sort_with_ptr", "counted_unique", "grouped_keys", "csr", "compact_map", "ascends", "COUNTED_KEYS"]

#: Keys with at most this many distinct values (or four per element) are counted, not sorted.
COUNTED_KEYS = 1 << 24

_SOURCE = r"""
#include <stdint.h>
#include <string.h>

/* order[i] = the index of the i-th key in ascending order, ties in index order:
   counts of each key, their exclusive prefix sums as each key's first position, then
   every index placed at its key's next free position (ascending, so stable). Keys that
   already ascend are only counted (their order is the identity, not written): returns
   1 then, else 0. */
int64_t pigeon_counting_sort(const int64_t *keys, int64_t n, int64_t num_keys, int64_t *next, int64_t *order)
{
    memset(next, 0, (size_t)num_keys * sizeof(int64_t));
    int ascending = 1;
    for (int64_t i = 0; i < n; i++) { next[keys[i]]++; ascending &= i == 0 || keys[i] >= keys[i - 1]; }
    int64_t start = 0;
    for (int64_t k = 0; k < num_keys; k++) { int64_t c = next[k]; next[k] = start; start += c; }
    if (ascending) {
        for (int64_t k = 0; k < num_keys; k++) next[k] = (k + 1 < num_keys ? next[k + 1] : n);
        return 1;
    }
    for (int64_t i = 0; i < n; i++) order[next[keys[i]]++] = i;
    return 0;
}

/* Whether x[0..n) ascends (strictly, or never descends): one pass, stopping early. */
#define PIGEON_ASCENDING(T, SUFFIX) \
int pigeon_ascending_##SUFFIX(const T *x, int64_t n, int strict) \
{ \
    for (int64_t i = 1; i < n; i++) if (x[i] < x[i - 1] || (strict && x[i] == x[i - 1])) return 0; \
    return 1; \
}
PIGEON_ASCENDING(int32_t, i32)
PIGEON_ASCENDING(int64_t, i64)

/* The distinct keys in ascending order (`unique`, returns how many, u), each key's
   group among them (`inverse`), the groups' bounds (`ptr`, u + 1 entries) and the
   indices in group order, stable (`order`): count the keys, number the present ones in
   key order, then place each index. `group` has num_keys entries (32-bit: fewer than
   2^31 keys; counts, then each key's group); `next` has n. */
int64_t pigeon_group_keys(const int64_t *keys, int64_t n, int64_t num_keys, int32_t *group, int64_t *unique,
                          int64_t *inverse, int64_t *ptr, int64_t *next, int64_t *order)
{
    memset(group, 0, (size_t)num_keys * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) group[keys[i]]++;
    int32_t count = 0;
    int64_t start = 0;
    for (int64_t k = 0; k < num_keys; k++) {
        if (!group[k]) continue;
        unique[count] = k;
        ptr[count] = next[count] = start;
        start += group[k];
        group[k] = count++;
    }
    ptr[count] = start;
    for (int64_t i = 0; i < n; i++) {
        int32_t g = group[keys[i]];
        inverse[i] = g;
        order[next[g]++] = i;
    }
    return count;
}

/* The layouts of a sampled block, written in the graph's index type I (int32 where
   every count fits, else int64) straight away, with no key array, no second pass to
   narrow them and no table cleared over the whole node range. */
#define PIGEON_LAYOUTS(I, SUFFIX) \
/* A CSR over `rows` (each below num_rows): rowptr (num_rows + 1), the other end of \
   each edge in row order (col) and its id (eid), edges of a row in id order. `next` \
   has num_rows entries. */ \
void pigeon_csr_##SUFFIX(const int64_t *rows, const int64_t *cols, int64_t n, int64_t num_rows, \
                         I *rowptr, I *col, I *eid, I *next) \
{ \
    memset(next, 0, (size_t)num_rows * sizeof(I)); \
    for (int64_t i = 0; i < n; i++) next[rows[i]]++; \
    I start = 0; \
    for (int64_t r = 0; r < num_rows; r++) { I c = next[r]; rowptr[r] = next[r] = start; start += c; } \
    rowptr[num_rows] = start; \
    for (int64_t i = 0; i < n; i++) { I p = next[rows[i]]++; col[p] = (I)cols[i]; eid[p] = (I)i; } \
} \
\
/* The compact map of edges given relation by relation (etype ascending): the distinct \
   (node, relation) pairs in (relation, node) order as rows (row_node, row_etype, and \
   rel_ptr: each relation's first row, num_etypes + 1 entries), each edge's row \
   (edge_row), and the edges grouped by row in id order (perm; row r owns \
   perm[ptr[r]:ptr[r+1]]). Within a relation whose nodes ascend (a block's \
   destinations) a row is a run of equal nodes; otherwise a bitmap marks the nodes \
   present (num_nodes bits, zero on entry and on return), a scan of it numbers them in \
   order (`group`, num_nodes entries, only the present ones written), and the edges are \
   counted and placed by row. Returns the number of rows, or -1 when a relation is \
   smaller than the one before it (nothing is then usable). `next` has n entries. */ \
int64_t pigeon_compact_##SUFFIX(const int64_t *etype, const int64_t *nodes, int64_t n, int64_t num_nodes, \
                                int64_t num_etypes, uint64_t *bits, I *group, I *row_node, I *row_etype, \
                                I *rel_ptr, I *edge_row, I *perm, I *ptr, I *next) \
{ \
    int64_t count = 0, next_etype = 0; \
    for (int64_t lo = 0, hi; lo < n; lo = hi) { \
        const int64_t e = etype[lo]; \
        if (e < next_etype) return -1; \
        while (next_etype <= e) rel_ptr[next_etype++] = (I)count; \
        int ascending = 1; \
        for (hi = lo + 1; hi < n && etype[hi] == e; hi++) ascending &= nodes[hi] >= nodes[hi - 1]; \
        const int64_t first = count; \
        if (ascending) { \
            for (int64_t i = lo; i < hi; i++) { \
                if (i == lo || nodes[i] != nodes[i - 1]) { \
                    row_node[count] = (I)nodes[i]; row_etype[count] = (I)e; ptr[count] = (I)i; count++; \
                } \
                edge_row[i] = (I)(count - 1); perm[i] = (I)i; \
            } \
            continue; \
        } \
        for (int64_t i = lo; i < hi; i++) bits[nodes[i] >> 6] |= (uint64_t)1 << (nodes[i] & 63); \
        const int64_t words = (num_nodes + 63) >> 6; \
        for (int64_t w = 0; w < words; w++) { \
            for (uint64_t word = bits[w]; word; word &= word - 1) { \
                const int64_t node = (w << 6) + __builtin_ctzll(word); \
                group[node] = (I)count; row_node[count] = (I)node; row_etype[count] = (I)e; next[count] = 0; \
                count++; \
            } \
            bits[w] = 0; \
        } \
        for (int64_t i = lo; i < hi; i++) { I r = group[nodes[i]]; edge_row[i] = r; next[r]++; } \
        I start = (I)lo; \
        for (int64_t r = first; r < count; r++) { I c = next[r]; ptr[r] = next[r] = start; start += c; } \
        for (int64_t i = lo; i < hi; i++) perm[next[edge_row[i]]++] = (I)i; \
    } \
    while (next_etype <= num_etypes) rel_ptr[next_etype++] = (I)count; \
    ptr[count] = (I)n; \
    return count; \
}

PIGEON_LAYOUTS(int32_t, i32)
PIGEON_LAYOUTS(int64_t, i64)
"""


@functools.lru_cache(maxsize=1)
def _library():
    """The compiled helpers, or None without a compiler (warned once)."""
    if not compiler_available():
        warnings.warn("pigeon: no C compiler on PATH: graph layouts are ordered with torch.sort instead of a "
                      "counting sort, and compact maps counted by torch (slower on the sampled blocks of "
                      "mini-batch training; set CC to a compiler)",
                      RuntimeWarning, stacklevel=3)
        return None
    try:
        library, _ = build_library(_SOURCE)
    except CompilerError as error:
        warnings.warn(f"pigeon: the graph-layout helpers did not compile ({error}); graph layouts are ordered "
                      "with torch.sort", RuntimeWarning, stacklevel=3)
        return None
    library.pigeon_counting_sort.restype = ctypes.c_int64
    library.pigeon_group_keys.restype = ctypes.c_int64
    for suffix in ("i32", "i64"):
        getattr(library, f"pigeon_csr_{suffix}").restype = None
        getattr(library, f"pigeon_compact_{suffix}").restype = ctypes.c_int64
        getattr(library, f"pigeon_ascending_{suffix}").restype = ctypes.c_int
    return library


def sort_with_ptr(keys: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stable ascending order of ``keys`` (int64 in ``[0, num_keys)``), what
    ``torch.sort(keys, stable=True).indices`` gives, and where each key's run starts in
    it: ``(order, ptr)``, ``ptr`` int64 of ``num_keys + 1`` entries (a CSR's row
    pointer). A counting sort in C when the key range is small and the tensor is on the
    CPU (which only counts keys that already ascend: their order is the identity), else
    ``torch.bincount`` and ``torch.sort``."""
    library = _library() if keys.device.type == "cpu" else None
    if library is not None and num_keys <= max(COUNTED_KEYS, 4 * keys.numel()):
        keys = keys.to(torch.int64).contiguous()
        order = torch.empty_like(keys)
        ptr = torch.zeros(num_keys + 1, dtype=torch.int64)
        ascending = library.pigeon_counting_sort(ctypes.c_void_p(keys.data_ptr()), ctypes.c_int64(keys.numel()),
                                                 ctypes.c_int64(num_keys), ctypes.c_void_p(ptr.data_ptr() + 8),
                                                 ctypes.c_void_p(order.data_ptr()))
        # The sort leaves each key's next free position: its run's end.
        return (torch.arange(keys.numel()) if ascending else order), ptr
    ptr = torch.zeros(num_keys + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(torch.bincount(keys, minlength=num_keys), 0, out=ptr[1:])
    if ascends(keys):
        return torch.arange(keys.numel(), device=keys.device), ptr
    return torch.sort(keys, stable=True).indices, ptr


def ascends(values: torch.Tensor, strict: bool = False) -> bool:
    """Whether a 1-D tensor's values ascend (never descend; with ``strict``, each above
    the one before): one early-stopping pass of C for a CPU int32 or int64 tensor, torch
    otherwise. A permutation of ``0 .. n-1`` that strictly ascends is the identity."""
    if values.numel() < 2:
        return True
    library = _layout_library(values, dtype=values.dtype) if values.is_contiguous() else None
    if library is not None:
        return bool(getattr(library, f"pigeon_ascending_{_SUFFIX[values.dtype]}")(
            ctypes.c_void_p(values.data_ptr()), ctypes.c_int64(values.numel()), ctypes.c_int(strict)))
    return bool((values[1:] > values[:-1]).all() if strict else (values[1:] >= values[:-1]).all())


def counted_unique(keys: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``torch.unique(keys, sorted=True, return_inverse=True)`` for CPU int64 keys in
    ``[0, num_keys)`` by counting in C (:func:`grouped_keys`); None where that does not
    apply (no compiler, a GPU tensor, 2^31 keys or more, or a key range larger than
    :data:`COUNTED_KEYS` and four per key)."""
    grouped = grouped_keys(keys, num_keys)
    return None if grouped is None else grouped[:2]


def grouped_keys(keys: torch.Tensor, num_keys: int):
    """:func:`counted_unique` and the keys' stable order by group in one pass of C:
    ``(unique, inverse, ptr, order)``, group ``g`` holding the indices
    ``order[ptr[g]:ptr[g+1]]``; None where :func:`counted_unique` does not apply. (Edges
    that come relation by relation, as a sampled block's do, have :func:`compact_map`.)"""
    library = _library() if keys.device.type == "cpu" else None
    if library is None or num_keys > max(COUNTED_KEYS, 4 * keys.numel()) or keys.numel() >= 2**31:
        return None
    keys = keys.to(torch.int64).contiguous()
    group = torch.empty(max(num_keys, 1), dtype=torch.int32)
    unique, inverse, next_free, order = (torch.empty_like(keys) for _ in range(4))
    ptr = torch.empty(keys.numel() + 1, dtype=torch.int64)
    count = library.pigeon_group_keys(ctypes.c_void_p(keys.data_ptr()), ctypes.c_int64(keys.numel()),
                                      ctypes.c_int64(num_keys), *_pointers(group, unique, inverse, ptr, next_free,
                                                                           order))
    return unique[:count].clone(), inverse, ptr[:count + 1].clone(), order


_SUFFIX = {torch.int32: "i32", torch.int64: "i64"}


def _layout_library(*tensors: torch.Tensor, dtype: torch.dtype):
    """The compiled helpers where they apply to ``tensors`` and output ``dtype``, else None."""
    if dtype not in _SUFFIX or any(t.device.type != "cpu" for t in tensors):
        return None
    return _library()


def csr(rows: torch.Tensor, cols: torch.Tensor, num_rows: int, dtype: torch.dtype):
    """A CSR over ``rows`` (each below ``num_rows``), in ``dtype``: ``(rowptr, col,
    eid)``, what a stable sort of ``rows`` gives (``eid`` the order, ``col`` the ``cols``
    in that order), in two passes of C; None without the C helpers or off the CPU."""
    library = _layout_library(rows, cols, dtype=dtype)
    if library is None:
        return None
    rows, cols = rows.to(torch.int64).contiguous(), cols.to(torch.int64).contiguous()
    n = rows.numel()
    rowptr = torch.empty(num_rows + 1, dtype=dtype)
    col, eid = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
    next_free = torch.empty(max(num_rows, 1), dtype=dtype)
    getattr(library, f"pigeon_csr_{_SUFFIX[dtype]}")(
        *_pointers(rows, cols), ctypes.c_int64(n), ctypes.c_int64(num_rows),
        *_pointers(rowptr, col, eid, next_free))
    return rowptr, col, eid


def compact_map(etype: torch.Tensor, nodes: torch.Tensor, num_nodes: int, num_etypes: int, dtype: torch.dtype):
    """The distinct (node, relation) pairs of edges given relation by relation (as a
    sampled block's come), in ``dtype``: ``(row_node, row_etype, rel_ptr, edge_row, perm,
    ptr)``, rows in (relation, node) order, relation ``t`` owning rows
    ``rel_ptr[t]:rel_ptr[t+1]``, edge ``e`` in row ``edge_row[e]``, and row ``r`` owning
    edges ``perm[ptr[r]:ptr[r+1]]`` in id order. One pass of C per relation where its
    nodes ascend (a block's destinations), three otherwise. None where the relations do
    not ascend, without the C helpers, or off the CPU."""
    library = _layout_library(etype, nodes, dtype=dtype)
    if library is None:
        return None
    etype, nodes = etype.to(torch.int64).contiguous(), nodes.to(torch.int64).contiguous()
    n = etype.numel()
    bits = torch.zeros((num_nodes + 63) // 64 + 1, dtype=torch.int64)
    group = torch.empty(max(num_nodes, 1), dtype=dtype)
    row_node, row_etype, edge_row, perm, next_free = (torch.empty(n, dtype=dtype) for _ in range(5))
    rel_ptr, ptr = torch.empty(num_etypes + 1, dtype=dtype), torch.empty(n + 1, dtype=dtype)
    count = getattr(library, f"pigeon_compact_{_SUFFIX[dtype]}")(
        *_pointers(etype, nodes), ctypes.c_int64(n), ctypes.c_int64(num_nodes), ctypes.c_int64(num_etypes),
        *_pointers(bits, group, row_node, row_etype, rel_ptr, edge_row, perm, ptr, next_free))
    if count < 0:
        return None
    return row_node[:count], row_etype[:count], rel_ptr, edge_row, perm, ptr[:count + 1]


def _pointers(*tensors: torch.Tensor) -> list[ctypes.c_void_p]:
    return [ctypes.c_void_p(t.data_ptr()) for t in tensors]
