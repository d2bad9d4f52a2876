"""Where a run's numbers come from, recorded in every results file.

:func:`provenance` is the ``provenance`` block of a results document: the commit and
whether the tree was clean, the torch, DGL and PyG versions and the threads, what the
workers read of the tuning cache, the rates the cost model planned with, and the other
load on the machine (:func:`other_load`) at the start; :func:`finish_report` adds the
load at the end and the most other processes kept busy during any case's timed runs.
"""

from __future__ import annotations

import hashlib
import os
import time
from importlib import metadata
from pathlib import Path

from pigeon.runtime.heap import heap_pad_mib
from pigeon.version import git_state

__all__ = ["provenance", "finish_report", "other_load", "tuning_state", "git_state"]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _process_ticks() -> dict[int, tuple[str, int]]:
    """``pid -> (command name, user + system ticks)`` of every process /proc shows."""
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        ticks[int(stat.parent.name)] = (name, int(rest[11]) + int(rest[12]))
    return ticks


def other_load(seconds: float = 1.0, top: int = 5) -> dict:
    """What else the machine is doing: the 1-minute load average and, over ``seconds``,
    the cores other processes kept busy and the busiest of them (command names only)."""
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    if not Path("/proc/stat").exists():
        return {"loadavg_1min": load}
    before, start = _process_ticks(), time.perf_counter()
    time.sleep(seconds)
    after, elapsed = _process_ticks(), time.perf_counter() - start
    per_second = os.sysconf("SC_CLK_TCK") * elapsed
    me = os.getpid()
    busy = sorted(((after[pid][1] - before[pid][1]) / per_second, name, pid)
                  for pid, (name, _) in after.items() if pid in before and pid != me)
    busy = [b for b in reversed(busy) if b[0] >= 0.05]
    return {"loadavg_1min": load, "other_cores_busy": round(sum(b[0] for b in busy), 2),
            "busiest": [{"command": name, "cores": round(cores, 2)} for cores, name, _ in busy[:top]]}


def tuning_state(tuned: bool) -> dict:
    """What the workers' compiled layers read of the tuning cache."""
    if not tuned:
        return {"state": "fresh-empty", "how": "workers run with PIGEON_AUTOTUNE=0: no tuned choice is read, "
                                               "the cost model decides every plan (pass --tuned to read the cache)"}
    from pigeon.tune.cache import TuneCache

    cache = TuneCache()
    files = sorted(cache.root.glob("*.json"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    return {"state": "tuned", "cache": str(cache.root), "entries": len(files), "digest": digest}


def provenance(config) -> dict:
    """Where a run of ``config`` (a :class:`pigeon.bench.harness.Config`) gets its
    numbers: the commit and whether the tree was clean, the library versions and
    threads, the tuning cache the workers read, the rates the cost model planned with,
    and the other load on the machine when the run started."""
    import torch

    from pigeon.runtime.target import machine_target

    git = git_state()
    rates = None
    if config.device == "cpu":
        previous = torch.get_num_threads()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        try:
            target = machine_target("cpu", torch.device("cpu"))
            rates = {"matmul_gflops": target.matmul_gflops, "bandwidth_gbs": target.bandwidth_gbs,
                     "fixed_by": "PIGEON_COST_RATES" if os.environ.get("PIGEON_COST_RATES") else "measured, cached"}
        finally:
            torch.set_num_threads(previous)
    return {
        "commit": None if git is None else git["commit"],
        "clean": None if git is None else git["clean"],
        "versions": {"torch": torch.__version__, "dgl": _version("dgl"), "torch_geometric": _version("torch_geometric")},
        "threads": {"per_case": config.threads or torch.get_num_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "tuning_cache": tuning_state(config.tuned),
        "heap_pad_mib": heap_pad_mib() if config.device == "cpu" else 0,   # pigeon.runtime.heap, every system
        "cost_model_rates": rates,
        "torch_compile": "the inductor system compiles in its first call, outside the timed runs",
        "load_at_start": other_load(),
    }


def finish_report(report: dict) -> None:
    """Add the load at the end of a run, and the most other processes kept busy during
    any case's timed runs (each result's ``other_cores_busy``)."""
    busy = [r["other_cores_busy"] for r in report["results"] if r.get("other_cores_busy") is not None]
    report["provenance"]["load_at_end"] = other_load()
    report["provenance"]["max_other_cores_busy_in_timed_runs"] = max(busy) if busy else None
