"""Graph-layout helpers in C: a stable counting sort of small integer keys.

A sampled block is a new graph every step, and each of its layouts (the CSR of its
destinations and of its sources, the groups of a compact map) orders its edges by a key
with few distinct values (node ids of the block, relation ids). A counting sort does
that in two passes over the edges, where ``torch.sort`` sorts; it is compiled once per
machine (:mod:`pigeon.clib`) and called through ctypes. Without a C compiler the layouts
use ``torch.sort``, said once in a warning.
"""

from __future__ import annotations

import ctypes
import functools
import warnings

import torch

from pigeon.clib import CompilerError, build_library, compiler_available

__all__ = ["stable_order", "COUNTED_KEYS"]

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
"""


@functools.lru_cache(maxsize=1)
def _library():
    """The compiled helpers, or None without a compiler (warned once)."""
    if not compiler_available():
        warnings.warn("pigeon: no C compiler on PATH: graph layouts are ordered with torch.sort instead of a "
                      "counting sort (slower on the sampled blocks of mini-batch training; set CC to a compiler)",
                      RuntimeWarning, stacklevel=3)
        return None
    try:
        library, _ = build_library(_SOURCE)
    except CompilerError as error:
        warnings.warn(f"pigeon: the graph-layout helpers did not compile ({error}); graph layouts are ordered "
                      "with torch.sort", RuntimeWarning, stacklevel=3)
        return None
    library.pigeon_counting_sort.restype = None
    return library


def stable_order(keys: torch.Tensor, num_keys: int) -> torch.Tensor:
    """The stable ascending order of ``keys`` (int64 in ``[0, num_keys)``): what
    ``torch.sort(keys, stable=True).indices`` gives, by a counting sort when the key range
    is small and the tensor is on the CPU."""
    library = _library() if keys.device.type == "cpu" else None
    if library is None or num_keys > max(COUNTED_KEYS, 4 * keys.numel()):
        return torch.sort(keys, stable=True).indices
    keys = keys.to(torch.int64).contiguous()
    order = torch.empty_like(keys)
    scratch = torch.empty(max(num_keys, 1), dtype=torch.int64)
    library.pigeon_counting_sort(ctypes.c_void_p(keys.data_ptr()), ctypes.c_int64(keys.numel()),
                                 ctypes.c_int64(num_keys), ctypes.c_void_p(scratch.data_ptr()),
                                 ctypes.c_void_p(order.data_ptr()))
    return order
