"""Graph-layout helpers in C: a stable counting sort of small integer keys, and the
distinct values of such keys with each key's rank among them.

A sampled block is a new graph every step, and each of its layouts (the CSR of its
destinations and of its sources, the groups of a compact map) orders its edges by a key
with few distinct values (node ids of the block, relation ids). A counting sort does
that in two passes over the edges, where ``torch.sort`` sorts; the unique (node,
relation) pairs of a compact map, with its edges grouped by pair, take two passes over
the edges and one over the key range (one relation's range at a time where the edges
come relation by relation), where torch takes five operations over the key range and a
sort. Both are compiled once per
machine (:mod:`pigeon.clib`) and called through ctypes. Without a C compiler the layouts
use ``torch.sort`` and torch's counting, said once in a warning.
"""

from __future__ import annotations

import ctypes
import functools
import warnings

import torch

from pigeon.clib import CompilerError, build_library, compiler_available

__all__ = ["sort_with_ptr", "counted_unique", "grouped_keys", "COUNTED_KEYS"]

#: Keys with at most this many distinct values (or four per element) are counted, not sorted.
COUNTED_KEYS = 1 << 24

_SOURCE = r"""
#include <stdint.h>
#include <string.h>

/* order[i] = the index of the i-th key in ascending order, ties in index order:
   counts of each key, their exclusive prefix sums as each key's first position, then
   every index placed at its key's next free position (ascending, so stable). */
void pigeon_counting_sort(const int64_t *keys, int64_t n, int64_t num_keys, int64_t *next, int64_t *order)
{
    memset(next, 0, (size_t)num_keys * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) next[keys[i]]++;
    int64_t start = 0;
    for (int64_t k = 0; k < num_keys; k++) { int64_t c = next[k]; next[k] = start; start += c; }
    for (int64_t i = 0; i < n; i++) order[next[keys[i]]++] = i;
}

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

/* pigeon_group_keys for keys major * minor_size + minor whose majors ascend (a sampled
   block's edges come relation by relation): each major's keys are grouped in a table of
   minor_size entries, which stays in cache, not in one table over the whole key range.
   `group` has minor_size entries. Returns -1 as soon as a major is smaller than the one
   before it (what it wrote is then to be overwritten: group over the whole range). */
int64_t pigeon_group_sorted_major(const int64_t *keys, int64_t n, int64_t minor_size, int32_t *group,
                                  int64_t *unique, int64_t *inverse, int64_t *ptr, int64_t *next, int64_t *order)
{
    int64_t count = 0, start = 0;
    for (int64_t lo = 0, hi; lo < n; lo = hi) {
        const int64_t base = keys[lo] / minor_size * minor_size;
        for (hi = lo; hi < n && keys[hi] < base + minor_size; hi++)
            if (keys[hi] < base) return -1;
        memset(group, 0, (size_t)minor_size * sizeof(int32_t));
        for (int64_t i = lo; i < hi; i++) group[keys[i] - base]++;
        const int64_t first = count;
        for (int64_t m = 0; m < minor_size; m++) {
            if (!group[m]) continue;
            unique[count] = base + m;
            ptr[count] = next[count] = start;
            start += group[m];
            group[m] = (int32_t)(count++ - first);
        }
        for (int64_t i = lo; i < hi; i++) {
            int64_t g = first + group[keys[i] - base];
            inverse[i] = g;
            order[next[g]++] = i;
        }
    }
    ptr[count] = start;
    return count;
}
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
    library.pigeon_counting_sort.restype = None
    library.pigeon_group_keys.restype = ctypes.c_int64
    library.pigeon_group_sorted_major.restype = ctypes.c_int64
    return library


def sort_with_ptr(keys: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stable ascending order of ``keys`` (int64 in ``[0, num_keys)``), what
    ``torch.sort(keys, stable=True).indices`` gives, and where each key's run starts in
    it: ``(order, ptr)``, ``ptr`` int64 of ``num_keys + 1`` entries (a CSR's row
    pointer). The identity when the keys already ascend (one pass); else a counting sort
    in C when the key range is small and the tensor is on the CPU, which counts the keys
    anyway (the other ways count them with ``torch.bincount``)."""
    library = _library() if keys.device.type == "cpu" else None
    if (keys.numel() >= 2 and library is not None and num_keys <= max(COUNTED_KEYS, 4 * keys.numel())
            and not bool((keys[1:] >= keys[:-1]).all())):
        keys = keys.to(torch.int64).contiguous()
        order = torch.empty_like(keys)
        ptr = torch.zeros(num_keys + 1, dtype=torch.int64)
        library.pigeon_counting_sort(ctypes.c_void_p(keys.data_ptr()), ctypes.c_int64(keys.numel()),
                                     ctypes.c_int64(num_keys), ctypes.c_void_p(ptr.data_ptr() + 8),
                                     ctypes.c_void_p(order.data_ptr()))
        return order, ptr   # the sort leaves each key's next free position: its run's end
    ptr = torch.zeros(num_keys + 1, dtype=torch.int64, device=keys.device)
    torch.cumsum(torch.bincount(keys, minlength=num_keys), 0, out=ptr[1:])
    if keys.numel() < 2 or bool((keys[1:] >= keys[:-1]).all()):
        return torch.arange(keys.numel(), device=keys.device), ptr
    return torch.sort(keys, stable=True).indices, ptr


def counted_unique(keys: torch.Tensor, num_keys: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``torch.unique(keys, sorted=True, return_inverse=True)`` for CPU int64 keys in
    ``[0, num_keys)`` by counting in C (:func:`grouped_keys`); None where that does not
    apply (no compiler, a GPU tensor, 2^31 keys or more, or a key range larger than
    :data:`COUNTED_KEYS` and four per key)."""
    grouped = grouped_keys(keys, num_keys)
    return None if grouped is None else grouped[:2]


def grouped_keys(keys: torch.Tensor, num_keys: int, minor_size: int | None = None):
    """:func:`counted_unique` and the keys' stable order by group in one pass of C:
    ``(unique, inverse, ptr, order)``, group ``g`` holding the indices
    ``order[ptr[g]:ptr[g+1]]``; None where :func:`counted_unique` does not apply. With
    ``minor_size``, keys that are ``major * minor_size + minor`` with ascending majors
    are grouped one major at a time (a table of ``minor_size`` entries that stays in
    cache)."""
    library = _library() if keys.device.type == "cpu" else None
    if library is None or num_keys > max(COUNTED_KEYS, 4 * keys.numel()) or keys.numel() >= 2**31:
        return None
    keys = keys.to(torch.int64).contiguous()
    by_major = minor_size is not None and 0 < minor_size < num_keys
    group = torch.empty(max(minor_size if by_major else num_keys, 1), dtype=torch.int32)
    unique, inverse, next_free, order = (torch.empty_like(keys) for _ in range(4))
    ptr = torch.empty(keys.numel() + 1, dtype=torch.int64)
    data, n = ctypes.c_void_p(keys.data_ptr()), ctypes.c_int64(keys.numel())
    count = -1
    if by_major:   # -1 when the majors do not ascend
        count = library.pigeon_group_sorted_major(data, n, ctypes.c_int64(minor_size), *_pointers(
            group, unique, inverse, ptr, next_free, order))
    if count < 0:
        if group.numel() < num_keys:
            group = torch.empty(max(num_keys, 1), dtype=torch.int32)
        count = library.pigeon_group_keys(data, n, ctypes.c_int64(num_keys), *_pointers(
            group, unique, inverse, ptr, next_free, order))
    return unique[:count].clone(), inverse, ptr[:count + 1].clone(), order


def _pointers(*tensors: torch.Tensor) -> list[ctypes.c_void_p]:
    return [ctypes.c_void_p(t.data_ptr()) for t in tensors]
