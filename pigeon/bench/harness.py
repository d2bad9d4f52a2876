"""Cases, the subprocess each one runs in, and the machine the run is on.

:func:`run_cases` runs each :class:`Case` as ``python -m pigeon.bench.worker`` in a
new session, one after another (cases running side by side would time each other),
and gives it ``case.timeout_s`` to its first call, then as long as that call predicts
for the rest (:func:`run_case`). The worker writes its result to a file; when
none is written, the exit status says what happened: killed by SIGKILL (the kernel's
out-of-memory killer), a C++ ``std::bad_alloc``, or a crash.

This module imports nothing heavy (no torch), so ``pigeon bench --help`` and name
errors come back at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

from pigeon.bench.provenance import git_state, provenance

SCHEMA = "pigeon-bench/1"

# What an allocation failure says, in Python, PyTorch's allocators, C++ and OpenMP.
# Under an address-space cap a thread stack that cannot be mapped is the same failure.
_OUT_OF_MEMORY = re.compile(
    r"MemoryError|out of memory|can't allocate memory|cannot allocate memory|not enough memory"
    r"|std::bad_alloc|Thread creation failed|failed to map segment",
    re.IGNORECASE,
)


_CAUSE = re.compile(r"error|exception|assert|failed|abort|terminate|fault", re.IGNORECASE)


def is_out_of_memory(text: str) -> bool:
    """Whether an error message or a crash's output is an allocation failure."""
    return bool(_OUT_OF_MEMORY.search(text))


@dataclass(frozen=True)
class Case:
    """One measurement: ``system`` running ``model`` on ``dataset`` in ``mode``.

    Args:
        system, model, dataset, mode: names as ``pigeon bench`` takes them.
        dim (int): hidden size, in and out. Default: 64.
        heads (int): attention heads (RGAT, HGT). Default: 1.
        scale (float): synthetic profile scale. Default: 1.0.
        seed (int): graph, features and weights. Default: 0.
        repeat (int): timed runs; the result is their median. Default: 5.
        warmup (int): untimed runs after the first call and the check. Default: 1.
        memory_gb (float): address-space cap of the worker (CPU) or share of the GPU's
            memory (CUDA), in GiB. Default: 12.
        timeout_s (float): wall-clock limit of the worker to its first call, start-up
            included; the rest has at least :func:`rest_of_case_s` after it. Default: 600.
        device (str): ``cpu`` or ``cuda``. Default: ``cpu``.
        threads (int, optional): torch and OpenMP threads. Default: torch's own choice.
        profile (bool): for Pigeon's systems, also run the timed step ``repeat`` times
            under ``torch.profiler`` and record the time of each kernel (its
            ``record_function`` range). Default: False.
        repeats, skew (float, optional): a structure-sweep case: ``dataset``'s profile
            generated with this mean number of edges per (node, edge type) pair and
            this degree skew (:class:`pigeon.data.profiles.Structure`). Default: None,
            the dataset as :func:`pigeon.data.load` gives it.
        tuned (bool): let compiled layers read the tuning cache; otherwise the worker
            runs with ``PIGEON_AUTOTUNE=0``, as with a fresh, empty cache (the cost
            model decides). Default: False.
    """

    system: str
    model: str
    dataset: str
    mode: str
    dim: int = 64
    heads: int = 1
    scale: float = 1.0
    seed: int = 0
    repeat: int = 5
    warmup: int = 1
    memory_gb: float = 12.0
    timeout_s: float = 600.0
    device: str = "cpu"
    threads: int | None = None
    profile: bool = False
    repeats: float | None = None
    skew: float | None = None
    tuned: bool = False

    @property
    def label(self) -> str:
        return f"{self.system} {self.model} {dataset_label(self.dataset, self.repeats, self.skew)} {self.mode}"


def dataset_label(dataset: str, repeats: float | None, skew: float | None) -> str:
    """``aifb``, or ``aifb[repeats 2, skew 1]`` for a structure-sweep case."""
    return dataset if repeats is None else f"{dataset}[repeats {repeats:g}, skew {skew or 0:g}]"


# Fields that make two results comparable (``--compare`` matches cases on them).
KEY_FIELDS = ("system", "model", "dataset", "mode", "dim", "heads", "scale", "device", "repeats", "skew")


def case_key(result: dict) -> tuple:
    # Results saved before the structure sweep have no repeats or skew.
    return tuple(result.get(field) for field in KEY_FIELDS)


@dataclass(frozen=True)
class Config:
    """A whole run: every combination of the listed names, with shared settings."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    modes: tuple[str, ...]
    systems: tuple[str, ...]
    dim: int = 64
    heads: int = 1
    scale: float = 1.0
    seed: int = 0
    repeat: int = 5
    warmup: int = 1
    memory_gb: float = 12.0
    timeout_s: float = 600.0
    device: str = "cpu"
    threads: int | None = None
    profile: bool = False
    repeats: tuple[float, ...] = ()
    skews: tuple[float, ...] = ()
    tuned: bool = False

    def structures(self) -> list[tuple[float | None, float | None]]:
        """The structure-sweep points ``(repeats, skew)``, or ``[(None, None)]``: the
        datasets as they are."""
        if not self.repeats:
            return [(None, None)]
        return [(r, s) for r in self.repeats for s in (self.skews or (0.0,))]

    def cases(self) -> list[Case]:
        """Grouped as the table prints them: dataset (and structure), model, mode, then system."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(Case)
                  if f.name not in ("system", "model", "dataset", "mode", "repeats", "skew")}
        return [Case(system, model, dataset, mode, repeats=repeats, skew=skew, **shared)
                for dataset in self.datasets for repeats, skew in self.structures() for model in self.models
                for mode in self.modes for system in self.systems]


# ---- running --------------------------------------------------------------------------
def run_cases(cases: Iterable[Case], *, progress: bool = True,
              on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every case in its own worker, one at a time, and return one result each.

    A result is the case's fields plus ``status`` (``ok``, ``OOM``, ``timeout`` or
    ``error``), ``error`` (one line, or None) and what the worker measured (see
    :mod:`pigeon.bench.worker`). ``progress`` shows a tqdm bar on stderr, one step
    per case.
    """
    cases = list(cases)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), unit="case", file=sys.stderr, dynamic_ncols=True)
    results = []
    try:
        for case in cases:
            if bar is not None:
                bar.set_postfix_str(case.label)
            result = run_case(case)
            results.append(result)
            if on_result is not None:
                on_result(result)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return results


# After the first call, the rest of a case is the check (a float64 run of the system,
# for Pigeon a second compilation, and of the reference: counted as CHECK_CALLS calls),
# the warm-up and the timed runs. None is slower than the first call, which compiles;
# the deadline leaves twice what that predicts.
CHECK_CALLS = 3
REST_MARGIN = 2.0
POLL_S = 0.25
# Other processes keeping at least this share of the usable cores busy make a machine busy.
BUSY_SHARE = 0.25


def rest_of_case_s(case: Case, first_call_s: float) -> float:
    """The time a case gets after its first call returns, sized from that call."""
    return REST_MARGIN * first_call_s * (CHECK_CALLS + case.warmup + case.repeat)


def run_case(case: Case) -> dict:
    """Run one case in a fresh worker process and return its result.

    ``case.timeout_s`` bounds the start-up, the build and the first call. Once the
    first call has returned, the case may run until :func:`rest_of_case_s` after it
    if that is later: on a machine doing other work, everything a case does is slower
    by about as much as its first call, and a case that is merely slowed finishes.
    A case that times out says how busy the other processes kept the machine.
    """
    env = dict(os.environ)
    if not case.tuned:
        env["PIGEON_AUTOTUNE"] = "0"
    if case.threads is not None:
        # DGL's kernels use OpenMP directly: the variable must be set before it loads.
        env["OMP_NUM_THREADS"] = str(case.threads)
    with tempfile.TemporaryDirectory(prefix="pigeon-bench-") as tmp:
        out_path, log_path = Path(tmp) / "result.json", Path(tmp) / "output.txt"
        command = worker_command(case, out_path)
        busy_before, children_before = _machine_busy_s(), _children_cpu_s()
        start = time.perf_counter()
        deadline, sized = start + case.timeout_s, False
        # A session of its own, so a timeout can end the worker and anything it started.
        # Output goes to a file: the worker is polled, and a pipe nobody reads would fill.
        with open(log_path, "w+", errors="replace") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            timed_out = False
            try:
                while True:
                    now = time.perf_counter()
                    if not sized:
                        first_call_s = _first_call_s(out_path)
                        if first_call_s is not None:
                            deadline, sized = max(deadline, now + rest_of_case_s(case, first_call_s)), True
                    if now >= deadline:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        timed_out = True
                        break
                    try:
                        proc.wait(timeout=min(POLL_S, deadline - now))
                        break
                    except subprocess.TimeoutExpired:
                        pass
            except BaseException:
                # Ctrl-C reaches only our process group: end the worker's too.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            log.seek(0)
            output = log.read()
        wall = time.perf_counter() - start
        others = _other_cores_busy(busy_before, children_before, wall)
        measured = json.loads(out_path.read_text()) if out_path.exists() else None

    result = dataclasses.asdict(case)
    # The worker rewrites its file as each stage ends: a worker that died leaves the
    # fields it had measured and the stage it died in.
    result.update(measured or {"stage": "start-up"})
    if timed_out:
        limit = deadline - start
        error = f"no result within {limit:g} s (stage: {result['stage']})" if not sized else (
            f"no result within {limit:.0f} s: {case.timeout_s:g} s to the first call, then "
            f"{REST_MARGIN:g} x what the first call ({result['first_call_s']:.1f} s) predicts for the rest "
            f"(stage: {result['stage']})")
        result.update(status="timeout", error=error + busy_note(others, usable_cores()))
    elif result["stage"] != "done":
        status, error = classify_exit(proc.returncode, output)
        result.update(status=status, error=f"{error} (stage: {result['stage']})")
    result["wall_s"] = round(wall, 3)
    return result


def worker_command(case: Case, out_path: Path) -> list[str]:
    """The worker process of ``case``, writing its result to ``out_path``."""
    return [sys.executable, "-m", "pigeon.bench.worker", "--case", json.dumps(dataclasses.asdict(case)),
            "--out", str(out_path)]


def _first_call_s(path: Path) -> float | None:
    """The first call's time from the worker's partial result, once it has one (the
    worker replaces the file whole, so a read sees a complete version)."""
    try:
        return json.loads(path.read_text()).get("first_call_s")
    except (OSError, ValueError):
        return None


def _machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    return sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4)) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    """CPU seconds of this process's children that have ended (a worker, with the
    compilers it waited for, counts once it is reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _other_cores_busy(busy_before: float | None, children_before: float, wall: float) -> float | None:
    """Cores that processes other than the worker kept busy, on average, during a case."""
    busy_after = _machine_busy_s()
    if busy_before is None or busy_after is None or wall <= 0:
        return None
    others = (busy_after - busy_before) - (_children_cpu_s() - children_before)
    return max(others, 0.0) / wall


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_note(others: float | None, cores: int) -> str:
    """What a timeout's message adds about the other processes' load on ``cores``."""
    if others is None:
        return ""
    note = f"; other processes kept {others:.1f} of {cores} cores busy meanwhile"
    if others >= BUSY_SHARE * cores:
        note += (": the machine was busy, so this timeout says little about the system; rerun when it is "
                 "idle, or with a larger --timeout-s")
    return note


def classify_exit(returncode: int, output: str) -> tuple[str, str]:
    """``(status, one-line error)`` for a worker that ended without writing a result."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    # A native abort ends with diagnostics (e.g. LIBXSMM's uptime); the cause is the
    # last line that reads like one.
    causes = [line for line in lines if _CAUSE.search(line)]
    last = (causes or lines or ["no output"])[-1][:300]
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        if -returncode == signal.SIGKILL:
            return "OOM", "killed by SIGKILL (the kernel's out-of-memory killer)"
        if is_out_of_memory(output):
            return "OOM", f"killed by {name}: {last}"
        return "error", f"killed by {name}: {last}"
    if is_out_of_memory(output):
        return "OOM", last
    return "error", f"exit status {returncode}: {last}"


# ---- the machine ----------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(device: str) -> dict:
    """CPU, cores, memory, GPU and library versions, for the results file."""
    import torch

    from pigeon.version import __version__

    gpu = torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else None
    git = git_state()
    # "-dirty": the checkout had uncommitted changes.
    commit = None if git is None else git["commit"] + ("" if git["clean"] else "-dirty")
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": _memory_gib(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "pigeon": __version__,
            "pigeon_commit": commit,
            "torch": torch.__version__,
            "triton": _version("triton"),
            "dgl": _version("dgl"),
            "torch_geometric": _version("torch_geometric"),
            # PyG's RGCNConv and HGTConv take faster paths when these are installed.
            "pyg_lib": _version("pyg_lib"),
            "torch_scatter": _version("torch_scatter"),
            "torch_sparse": _version("torch_sparse"),
        },
    }


def new_report(config: Config, argv: list[str]) -> dict:
    """The results document before any case has run.

    On the CPU, ``machine["measured"]`` holds the matrix-multiply rate and memory
    bandwidth (:func:`pigeon.bench.floor.measure_machine`, a few seconds, with the
    cases' thread count) that every case's floor is computed from; with ``--device
    cuda`` it is None: those are the host's rates, not the GPU's.
    """
    from pigeon.bench.floor import measure_machine
    
    machine = describe_machine(config.device)
    machine["measured"] = measure_machine(config.threads) if config.device == "cpu" else None
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["pigeon", *argv]),
        "machine": machine,
        "provenance": provenance(config),
        "config": dataclasses.asdict(config),
        "results": [],
    }
