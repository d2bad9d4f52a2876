"""pigeon.runtime.heap: the padded C heap that lets a call reuse the last call's pages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pigeon.runtime import heap

# Seven times: take a 64 MiB buffer (above glibc's largest dynamic mmap threshold, 32 MiB),
# write it and free it; print the pad and each round's minor page faults.
_BUFFERS = r"""
import resource, torch
from pigeon.runtime.heap import keep_freed_memory
pad, faults = keep_freed_memory(), []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = torch.empty(16 << 20)
    buffer.fill_(1.0)
    del buffer
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(pad, *faults)
"""

# Inference calls of a compiled HGT on the mutag profile (148k edges); print the pad and
# the minor page faults of the first call and of the five calls after the second.
_CALLS = r"""
import resource, torch, pigeon.nn as pnn
from pigeon.data import load
from pigeon.runtime.heap import keep_freed_memory
graph = load("mutag", scale=1.0, seed=0).graph
layer = pnn.HGT(64, 64, graph.num_ntypes, graph.num_etypes, heads=1, backend="cpu")
x = torch.randn(graph.num_nodes, 64)
faults = []
with torch.no_grad():
    for _ in range(7):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        layer(graph, x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(keep_freed_memory(), faults[0], sum(faults[2:]))
"""


def _run(script: str, pad: str) -> list[int]:
    env = {**os.environ, "PIGEON_HEAP_PAD_MB": pad}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return [int(word) for word in out]


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")


@linux_only
def test_the_padded_heap_keeps_a_freed_buffer_and_the_default_heap_unmaps_it():
    pad, first, *rest = _run(_BUFFERS, "1024")
    off, first_off, *rest_off = _run(_BUFFERS, "0")
    assert (pad, off) == (1024, 0)
    # a 64 MiB buffer is at least 32 faults even in 2 MiB pages (16,384 in 4 KiB pages)
    assert first >= 32 and first_off >= 32, (first, first_off)
    # without the pad, every buffer is mapped anew and faulted in again
    assert all(faults >= first_off // 2 for faults in rest_off), (first_off, rest_off)
    # with it, the buffer comes from the heap's top and its pages stay: a small object
    # left behind may move it once to a second place in the heap, never more
    assert sum(rest) <= first + first // 8, (first, rest)


@linux_only
def test_a_compiled_layer_pads_the_heap_and_its_later_calls_fault_little():
    pad, first, later = _run(_CALLS, "1024")
    assert pad == 1024
    # measured here: about 26,000 faults in the first call; 900 to 5,100 over the five
    # later calls together (without the pad, up to 25,000 in each call)
    assert first > 2000 and later < first / 2, (first, later)


@pytest.mark.parametrize("text, message", [("lots", "a whole number of MiB"), ("-1", r"in \[0, 2048\)"),
                                           ("4096", r"in \[0, 2048\)")])
def test_a_bad_pad_names_the_variable(monkeypatch, text, message):
    monkeypatch.setenv("PIGEON_HEAP_PAD_MB", text)
    with pytest.raises(ValueError, match=f"PIGEON_HEAP_PAD_MB.*{message}"):
        heap.heap_pad_mib()


def test_the_default_pad_and_turning_it_off(monkeypatch):
    monkeypatch.delenv("PIGEON_HEAP_PAD_MB", raising=False)
    assert heap.heap_pad_mib() == heap.DEFAULT_PAD_MIB
    monkeypatch.setenv("PIGEON_HEAP_PAD_MB", "0")
    assert heap.heap_pad_mib() == 0
