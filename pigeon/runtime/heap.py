"""Keep freed CPU memory for the next call: a padded C heap (glibc's ``M_TOP_PAD``).

Every call of a compiled layer on the CPU allocates its intermediate and output buffers
anew: tens to hundreds of megabytes per call on graphs of a few hundred thousand edges.
With glibc's defaults, the heap top is trimmed back to the system as soon as those
buffers are freed, and buffers above the mmap threshold are mapped and unmapped one by
one, so the next call touches fresh pages again and pays a page fault for every 4 KiB it
writes. On the mutag profile (148k edges, hidden 64, one head, 2-core machine) that
made HGT's inference 66-82 ms per call instead of 26-27 ms, and RGAT's 21-23 ms instead
of 11 ms.

:func:`keep_freed_memory` asks glibc to grow the heap by a pad of ``PIGEON_HEAP_PAD_MB``
(default 1024) megabytes beyond each request and to keep that much when it trims: the
next call's buffers then come from pages already mapped, much as torch's CUDA caching
allocator keeps GPU memory. It also grows the heap once right away, so that the pad is
at the heap's top before the first large buffer: glibc maps a buffer on its own whenever
the top has no room for it. The pad is address space, not resident memory: a page is
resident once written, and stays so while the process lives, so a process keeps about
the peak memory of its largest call. Under an address-space limit (``ulimit -v``,
``RLIMIT_AS``) the pad counts against the limit, so a process that runs within a
gigabyte of one should set the pad lower. It is process-wide: compiled layers call it once,
on their first CPU call; ``PIGEON_HEAP_PAD_MB=0`` leaves the allocator as it is. Where
the C library is not glibc (or the platform not Linux), nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

__all__ = ["keep_freed_memory", "heap_pad_mib", "DEFAULT_PAD_MIB"]

DEFAULT_PAD_MIB = 1024
_M_TOP_PAD = -2   # glibc's mallopt parameter numbers (malloc.h)


def heap_pad_mib() -> int:
    """The pad asked for, in MiB: ``PIGEON_HEAP_PAD_MB`` (0 turns it off), else the default."""
    text = os.environ.get("PIGEON_HEAP_PAD_MB")
    if text is None or not text.strip():
        return DEFAULT_PAD_MIB
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"Expected PIGEON_HEAP_PAD_MB to be a whole number of MiB, 0 to turn the pad off "
                         f"(got {text!r})") from None
    if not 0 <= value < 2048:
        raise ValueError(f"Expected PIGEON_HEAP_PAD_MB to be in [0, 2048) (got {value})")
    return value


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> int:
    """Pad the C heap so that freed buffers are reused by the next call (once per
    process); returns the pad set, in MiB, or 0 where it is off or glibc is absent."""
    pad = heap_pad_mib()
    if pad == 0 or not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc
        return 0
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_TOP_PAD, pad << 20) != 1:
        return 0
    _grow_heap_once(libc, pad << 20)
    return pad


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _grow_heap_once(libc: ctypes.CDLL, pad: int) -> None:
    """Make the heap grow now, so that its top holds the pad before the first large buffer.

    glibc maps a buffer above its mmap threshold (32 MiB at most) on its own, and unmaps
    it when freed, unless the heap's top chunk already has room for it; only a growth of
    the heap adds the pad to the top. Without this, whether a call's largest buffers come
    from the padded heap would depend on which small allocation happened to grow it
    first. Small blocks (64 KiB, always below the mmap threshold) are taken until the
    heap grows, then freed: the pad stays at the top.
    """
    try:
        mallinfo2 = libc.mallinfo2   # glibc 2.33 on
    except AttributeError:
        return
    mallinfo2.argtypes, mallinfo2.restype = [], _Mallinfo2
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
    start = mallinfo2()
    if start.keepcost >= pad:
        return
    block, taken = 64 << 10, []
    try:
        # the top and the free blocks hold at most this many blocks; one more grows the heap
        for _ in range((start.keepcost + start.fordblks) // block + 2):
            address = libc.malloc(block)
            if not address:
                break
            taken.append(address)
            if mallinfo2().arena > start.arena:
                break
    finally:
        for address in taken:
            libc.free(address)
