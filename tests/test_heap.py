"""pigeon.runtime.heap: the padded C heap that lets a call reuse the last call's pages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pigeon.runtime import heap

# Inference calls of a compiled HGT on the mutag profile (148k edges); print the pad and
# the minor page faults of five calls after two. With the pad, those calls write pages
# the earlier ones left mapped; without it, glibc hands their large buffers back to the
# system when they are freed, and every call faults them in again.
_CALLS = r"""
import resource, torch, pigeon.nn as pnn
from pigeon.data import load
from pigeon.runtime.heap import keep_freed_memory
graph = load("mutag", scale=1.0, seed=0).graph
layer = pnn.HGT(64, 64, graph.num_ntypes, graph.num_etypes, heads=1, backend="cpu")
x = torch.randn(graph.num_nodes, 64)
with torch.no_grad():
    for _ in range(2):
        layer(graph, x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        layer(graph, x)
print(keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _calls_faults(pad: str) -> tuple[int, int]:
    env = {**os.environ, "PIGEON_HEAP_PAD_MB": pad}
    out = subprocess.run([sys.executable, "-c", _CALLS], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_padded_heap_reuses_freed_pages_and_the_default_heap_faults_them_in_again():
    pad, faults = _calls_faults("1024")
    off, faults_off = _calls_faults("0")
    assert (pad, off) == (1024, 0)
    # (measured here: over 100,000 faults without the pad; with it a handful alone, under
    # 7,500 beside a busy test suite)
    assert faults_off > 20000 and faults < faults_off / 10, (faults, faults_off)


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
