"""The tuning cache: one JSON file per tuned (program, graph bucket, dtype, mode, backend),
under ``PIGEON_CACHE_DIR/tune``.

A key has two halves. ``what`` says which problem was tuned: the traced level-1
program and the level-2 programs the cost model builds from it (their printed text,
hashed), the layer, the backend, the decisions forced at :func:`pigeon.compile`, the
dtype, the mode and the graph statistics the choice depends on, bucketed so that a
similar graph reuses the result. ``where`` says what measured
it: the Pigeon, torch and Triton versions, the device, and a hash of the templates and
generators. The file is named by the hash of ``what``; an entry whose ``where`` differs
from this process's is stale (a version or device changed) and is ignored with one
warning, as is a file that does not parse. Writes go to a temporary file renamed into
place, so a reader sees a whole entry or none.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pigeon.codegen.c import CConfig
from pigeon.codegen.triton import TritonConfig
from pigeon.codegen.triton_gemm import GemmConfig
from pigeon.data.graph import HeteroGraph
from pigeon.ir import format_program
from pigeon.ir.graph_ir import Program
from pigeon.ir.kernel_ir import format_kernel_program
from pigeon.paths import cache_dir
from pigeon.runtime.choice import Choice
from pigeon.runtime.compiled import Compiled, Plan
from pigeon.runtime.target import device_name
from pigeon.version import __version__

#: Bumped when the entry layout changes: older files then read as stale.
FORMAT = 1

# Warned-about files, so a corrupt or stale entry warns once per process however often
# compiled layers look it up.
_WARNED: set[str] = set()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


@functools.lru_cache(maxsize=1)
def template_hash() -> str:
    """Hash of the kernel templates and the code that renders them: a change to either
    may change what a config means."""
    root = Path(__file__).resolve().parent.parent
    files = sorted([*(root / "kernels").glob("*.jinja"), *(root / "codegen").glob("*.py")])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _bucket(value: float, per_octave: int) -> int:
    """``floor(per_octave * log2(value))``: values within a factor ``2**(1/per_octave)``
    mostly share a bucket; -1 for zero."""
    return -1 if value <= 0 else math.floor(per_octave * math.log2(value))


def graph_bucket(graph: HeteroGraph) -> dict[str, int]:
    """The graph statistics a tuned choice depends on, bucketed: rows per space decide
    the grid and the chunking (half-octave buckets), the compaction ratio decides compact
    materialization (quarter-octave buckets), the largest in-degree the longest group."""
    stats = graph.stats()
    return {
        "nodes": _bucket(stats.num_nodes, 2),
        "edges": _bucket(stats.num_edges, 2),
        "etypes": _bucket(stats.num_etypes, 1),
        "ntypes": _bucket(stats.num_ntypes, 1),
        "compaction_ratio": _bucket(stats.compaction_ratio, 4),
        "max_in_degree": _bucket(stats.max_in_degree, 1),
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tune_key(compiled: Compiled, traced: Program, default: Plan, graph: HeteroGraph, backend: str,
             dtype: torch.dtype, mode: str) -> dict[str, dict[str, Any]]:
    """The complete key of one tuning problem (see the module docstring). ``default`` is
    the plan the cost model builds for this graph: its level-2 programs are in the key,
    so a graph of the same buckets on which the cost model decides otherwise (whose
    kernels differ from those a stored choice's configs name) does not share the entry."""
    options = compiled.options
    kernels = format_kernel_program(default.forward_kernels) + format_kernel_program(default.backward_kernels)
    what = {
        "layer": compiled.layer.name,
        "program": _digest(format_program(traced)),
        "kernels": _digest(kernels),
        "backend": backend,
        "forced": {"reorder": options.reorder, "compact": options.compact, "layout": compiled.layout,
                   "disable": sorted(options.disable)},
        "dtype": str(dtype).removeprefix("torch."),
        "mode": mode,
        "graph": graph_bucket(graph),
    }
    where = {
        "format": FORMAT,
        "pigeon": __version__,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "device": device_name(graph.device),
        "templates": template_hash(),
    }
    return {"what": what, "where": where}


# ---- choices as JSON -------------------------------------------------------------------

def _config_types() -> dict[str, type]:
    return {"CConfig": CConfig, "TritonConfig": TritonConfig, "GemmConfig": GemmConfig}


def choice_to_json(choice: Choice) -> dict[str, Any]:
    def configs(pairs):
        return [[name, {"type": type(c).__name__, **dataclasses.asdict(c)}] for name, c in pairs]

    return {"reorder": choice.reorder, "compact": choice.compact, "layout": choice.layout,
            "forward": configs(choice.forward), "backward": configs(choice.backward)}


def choice_from_json(data: dict[str, Any]) -> Choice:
    """The :class:`Choice` ``data`` describes; raises ``ValueError``/``KeyError``/``TypeError``
    on anything malformed."""
    types = _config_types()

    def configs(pairs):
        out = []
        for name, fields in pairs:
            fields = dict(fields)
            kind = fields.pop("type")
            if kind not in types:
                raise ValueError(f"unknown config type {kind!r}")
            out.append((str(name), types[kind](**fields)))
        return tuple(out)

    for flag in ("reorder", "compact"):
        if data[flag] not in (None, True, False):
            raise ValueError(f"`{flag}` must be null or a boolean (got {data[flag]!r})")
    return Choice(data["reorder"], data["compact"], data["layout"], configs(data["forward"]),
                  configs(data["backward"]))


# ---- the cache -------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheEntry:
    """One tuned result: its key, the choice and what the tuner measured (``summary``:
    default and best median seconds, speedup, candidates measured, the ranked table)."""

    path: Path
    key: dict[str, dict[str, Any]]
    choice: Choice
    summary: dict[str, Any]


class TuneCache:
    """The tuning cache under ``root`` (default ``PIGEON_CACHE_DIR/tune``, read when the
    cache is made, so a test can point it elsewhere)."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else cache_dir("tune")

    def path(self, key: dict[str, dict[str, Any]]) -> Path:
        what = json.dumps(key["what"], sort_keys=True)
        return self.root / f"{hashlib.sha256(what.encode()).hexdigest()[:24]}.json"

    def has_entries(self) -> bool:
        """Whether any entry file exists (a listing, nothing parsed)."""
        return self.root.is_dir() and any(self.root.glob("*.json"))

    def _warn(self, path: Path, message: str) -> None:
        if str(path) not in _WARNED:
            _WARNED.add(str(path))
            warnings.warn(f"pigeon: ignoring tuning cache entry {path}: {message}", RuntimeWarning, stacklevel=3)

    def _read(self, path: Path) -> CacheEntry | None:
        """The entry in ``path``; None with one warning when it does not parse."""
        try:
            data = json.loads(path.read_text())
            return CacheEntry(path, {"what": dict(data["key"]["what"]), "where": dict(data["key"]["where"])},
                              choice_from_json(data["choice"]), dict(data["summary"]))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            self._warn(path, f"it is corrupt ({type(err).__name__}: {err}); retune to replace it")
            return None

    def lookup(self, key: dict[str, dict[str, Any]]) -> CacheEntry | None:
        """The entry for ``key``; None on a miss, and (with one warning) for a corrupt entry
        or one measured with other versions or on another device."""
        path = self.path(key)
        if not path.exists():
            return None
        entry = self._read(path)
        if entry is None:
            return None
        if entry.key["what"] != key["what"]:
            self._warn(path, "its key differs from the one its file name hashes; retune to replace it")
            return None
        if entry.key["where"] != key["where"]:
            changed = sorted(k for k in set(key["where"]) | set(entry.key["where"])
                             if entry.key["where"].get(k) != key["where"].get(k))
            detail = ", ".join(f"{k} {entry.key['where'].get(k)!r} -> {key['where'].get(k)!r}" for k in changed)
            self._warn(path, f"it is stale ({detail}); retune to replace it")
            return None
        return entry

    def store(self, key: dict[str, dict[str, Any]], choice: Choice, summary: dict[str, Any]) -> Path:
        """Write the entry for ``key`` atomically (a concurrent reader sees all or none)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        data = {"key": key, "choice": choice_to_json(choice), "summary": {**summary, "stored_at": time.time()}}
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        _WARNED.discard(str(path))
        return path

    def entries(self) -> list[CacheEntry]:
        """Every readable entry (corrupt files are skipped with one warning each)."""
        if not self.root.is_dir():
            return []
        found = (self._read(p) for p in sorted(self.root.glob("*.json")))
        return [e for e in found if e is not None]

    def clear(self) -> int:
        """Delete every entry; returns how many files were removed."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.glob("*.json"):
            path.unlink()
            removed += 1
        return removed


def cached_choice(compiled: Compiled, graph: HeteroGraph, tensors, backend: str, dtype: torch.dtype,
                  mode: str) -> Choice | None:
    """The tuned choice stored for this layer, graph, backend, dtype and mode, or None: the
    :data:`~pigeon.runtime.compiled.ChoiceLookup` that :func:`pigeon.compile` gives its
    layers (compiled layers remember the answer per graph)."""
    cache = TuneCache()
    # An empty cache needs no key: the graph statistics in it cost a sort per new graph.
    if not cache.has_entries():
        return None
    traced, _ = compiled.trace(graph, tensors)
    default = compiled.plan(graph, tensors, Choice())
    entry = cache.lookup(tune_key(compiled, traced, default, graph, backend, dtype, mode))
    return None if entry is None else entry.choice
