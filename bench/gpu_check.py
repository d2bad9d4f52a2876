"""Check and time the Triton backend on a GPU, in one run: ``bash bench/gpu_check.sh``.

First, in this process (each recorded in the JSON report as it ends):

1. **environment**: GPU, torch, triton and PyG versions, the Pigeon commit, the command;
2. **kernels**: the Triton source of every layer's forward and backward kernels,
   rendered the way ``pigeon show-kernels`` does (planning only: nothing is compiled
   or launched) and written beside the report;
   -- without a CUDA device (and without ``--smoke``) the run stops here, says so and
   exits with status 2 --

then the three GPU stages, the most telling first. Each runs in a process of its own,
in a session of its own, and the whole session is killed at the stage's deadline: a
stage that hangs (a kernel that never ends, a compiler that never returns; neither lets
a Python signal handler run) costs its own budget and no more. A stage's deadline is
the sum of its budget and those of the stages before it, counted from when the first
began, so what one leaves unused goes to the next; none runs past ``--budget-s``. Each
stage's output goes to a log beside the report and is echoed, and what it has finished
reaches the report as it arrives, so a stage that is killed still counts what it did.

3. **timing**: every dataset x model x mode x system, every model x mode on aifb before
   any other graph; each case is built from the :mod:`pigeon.bench.systems` builders
   with the reference's weights, checked against :mod:`pigeon.reference` in float64
   (``||out - ref|| / ||ref||`` of the output and, in train mode, of the input and
   parameter gradients), then timed with ``triton.testing.do_bench`` (CUDA events, L2
   flushed before each run; median and spread of every run), with its first call
   (where pigeon-triton compiles its kernels) and peak memory. A failing case (error,
   CUDA out of memory, over ``--case-limit-s``) is recorded and the run goes on; a case
   that does not answer 15 s after its limit is killed with its process, and a fresh
   process (also after a lost CUDA context) goes on with the cases left;
4. **sync**: each layer on backend ``triton`` runs forward and backward once (plans,
   layouts and tile tables are built there), then again under
   ``torch.cuda.set_sync_debug_mode("error")``: any host-device synchronisation that
   goes through PyTorch (``.item()``, ``.tolist()``, ``nonzero``, a blocking copy)
   raises there and fails the check. Each phase is announced before it starts, so a
   hang shows where it stopped;
5. **tests**: ``pytest`` on :data:`TEST_FILES` (those that exist; by default the subset
   each names, ``--tests all`` for everything), on CUDA without Triton's interpreter.
   A test that runs past ``--test-limit-s`` is killed with pytest, and pytest starts
   again without it and without those already run.

The table is printed last. ``--smoke`` runs the same flow on the CPU with
``TRITON_INTERPRET=1`` on tiny graphs (the sync stage runs its phases without the
debug mode, which needs CUDA; the tests are only collected), to validate this script
before spending GPU time.

The report keeps the schema of ``pigeon bench --json`` (its ``results`` are cases, the
extra steps are under ``gpu_check``), so ``pigeon bench --from-json`` shows it too.

Exit status: 0 when every step passed; 1 when a test failed, a sync check found a
synchronisation, a check found a mismatch, a pigeon-triton case failed or a stage was
killed at its deadline; 2 without a CUDA device (after the steps that need none).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import datetime
import gc
import json
import os
import re
import resource
import select
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Nothing from torch, triton or pigeon is imported at module level: --smoke must set
# TRITON_INTERPRET before triton is first imported, and the stage the tests use
# (``sleep``) runs without them.

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()

# The GPU tests, and the pytest -k expression that picks each file's default subset
# (None: the whole file); a file not (yet) in the checkout is skipped. On an H100 the
# GEMM file takes about 77 s. The layer file is mostly Triton compiling each layer
# configuration (10-25 kernels, 3-10 s), so by default it runs the cost model's choices
# for every layer, the one-node graphs, float32 and the checks that compile nothing.
TEST_FILES = {
    "tests/test_triton_backend.py": "cost-model or single_node_graph or float32 or traversal or content_hashed "
                                    "or clear_error",
    "tests/test_triton_gemm.py": None,
}
MAXFAIL = 10

MODELS = ("rgcn", "rgat", "hgt")
SYNC_MODELS = ("rgcn", "rgat", "hgt", "nbfnet")
DATASETS = ("aifb", "mutag", "bgs")
MODES = ("infer", "train")
SYSTEMS = ("pigeon-triton", "pigeon-torch", "pyg")
SUBJECT = "pigeon-triton"        # the system the speedups are of
AGAINST_SELF = "pigeon-torch"    # the unfused lowering it replaces

# ||out - ref|| / ||ref|| against the float64 reference, keyed by whether torch lets
# float32 matmuls run in tf32 (Pigeon's Triton GEMMs follow the same flag). float32
# lands near 1e-6, sums over a hub's in-edges in another order included; tf32 near
# 3e-4. A wrong coefficient, a missing term or a mishandled row moves it above 1e-2.
CHECK_TOLERANCE = {False: 1e-4, True: 2e-3}

NO_CUDA_EXIT = 2
NO_CUDA_MESSAGE = "gpu_check: no CUDA device; stopping before the GPU steps"

# The stages in the order they run, with their default budgets in seconds.
STAGE_BUDGETS = {"timing": 200.0, "sync": 60.0, "tests": 150.0}
BUDGET_S = 440.0          # the whole run: the stages plus start-up, kernels and the report
FINISH_S = 5.0            # kept back from --budget-s to write the report
KILL_GRACE_S = 15.0       # an item that has not answered this long after its own limit is killed
MIN_START_S = 20.0        # the least time worth starting a stage's process in (imports, CUDA)
MIN_ITEM_S = 15.0         # the least time worth starting a case or a sync check in
MAX_RUNS = 6              # processes one stage may start (after kills and lost CUDA contexts)
CONTEXT_LOST_EXIT = 3     # a stage child's status when CUDA died under it: the rest needs a fresh process
NOT_REACHED = "not reached"

# --smoke: graphs the interpreter (about 2 ms per program instance) gets through.
SMOKE_DEFAULTS = {"models": ("rgcn",), "datasets": ("aifb",), "scale": 0.01, "dim": 16, "repeat": 1, "tests": "collect",
                  "render_scale": 0.01, "sync_scale": 0.005, "sync_models": ("rgcn", "nbfnet")}


# ---- arguments ------------------------------------------------------------------------
def _names(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names (got {text!r})")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/gpu_check.sh",
        description="Time the Triton backend on a CUDA GPU against Pigeon's torch backend and PyG, "
                    "with a check of every system against pigeon.reference, check that a warm forward "
                    "and backward never synchronise with the host, and run its tests: each stage in a "
                    "process of its own, killed at its deadline. Writes a JSON report and prints a "
                    "table last.",
        epilog="example:\n  bash bench/gpu_check.sh                  # on the GPU machine\n"
               "  PYTHON=.venv/bin/python bash bench/gpu_check.sh --smoke   # on a CPU, interpreted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true",
                        help="run the whole flow on the CPU with TRITON_INTERPRET=1 on a tiny graph "
                             f"(defaults then: {SMOKE_DEFAULTS})")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="report path; the stages' logs and partial results go beside it (default: "
                             "$OUT/gpu_check.json when OUT is set, else bench/results/gpu-check.json, or "
                             "gpu-check-smoke.json with --smoke)")
    parser.add_argument("--models", type=_names, default=None, help=f"timed models (default: {','.join(MODELS)})")
    parser.add_argument("--datasets", type=_names, default=None,
                        help=f"timed graphs, synthetic profiles (default: {','.join(DATASETS)})")
    parser.add_argument("--modes", type=_names, default=MODES, help="infer and/or train (default: both)")
    parser.add_argument("--systems", type=_names, default=SYSTEMS,
                        help=f"timed systems, as pigeon bench names them (default: {','.join(SYSTEMS)})")
    parser.add_argument("--dim", type=int, default=None, help="hidden size, in and out (default: 64)")
    parser.add_argument("--heads", type=int, default=1, help="attention heads of RGAT and HGT (default: 1)")
    parser.add_argument("--scale", type=float, default=None, help="scale of the timed profiles (default: 1.0)")
    parser.add_argument("--sync-models", type=_names, default=None,
                        help=f"layers of the sync stage (default: {','.join(SYNC_MODELS)})")
    parser.add_argument("--sync-scale", type=float, default=None,
                        help="scale of the aifb graph of the sync stage (default: 1.0)")
    parser.add_argument("--render-scale", type=float, default=None,
                        help="scale of the aifb graph the kernels are rendered for (default: 0.02)")
    parser.add_argument("--tests", choices=("subset", "all", "collect", "skip"), default=None,
                        help="run the subset of the GPU tests that TEST_FILES names, all of them, only "
                             "collect the subset, or skip them (default: subset; collect with --smoke)")
    for stage, seconds in STAGE_BUDGETS.items():
        parser.add_argument(f"--{stage}-s", type=float, default=seconds, metavar="S",
                            help=f"budget of the {stage} stage, plus what the stages before it left "
                                 f"unused (default: {seconds:g})")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="wall-clock budget of the whole run; no stage runs past it "
                             f"(default: {BUDGET_S:g})")
    parser.add_argument("--case-limit-s", type=float, default=60.0,
                        help="time limit of one case or one sync check; its process is killed "
                             f"{KILL_GRACE_S:g} s later if it does not answer (default: 60)")
    parser.add_argument("--test-limit-s", type=float, default=90.0,
                        help="time limit of one test; pytest is killed and started again without it "
                             "(default: 90)")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up, in ms (default: 25)")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench timed runs, in ms (default: 100)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed runs per case on the CPU (--smoke); do_bench decides on CUDA (default: 3)")
    # How the run starts a stage in a process of its own: a file that says what to run.
    parser.add_argument("--stage-spec", metavar="FILE", default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    defaults = {"models": MODELS, "datasets": DATASETS, "scale": 1.0, "dim": 64, "repeat": 3, "tests": "subset",
                "render_scale": 0.02, "sync_scale": 1.0, "sync_models": SYNC_MODELS}
    if args.smoke:
        defaults.update(SMOKE_DEFAULTS)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.dim % args.heads:
        raise SystemExit(f"gpu_check: --dim must be divisible by --heads (got dim {args.dim}, heads {args.heads})")
    unknown = [model for model in args.sync_models if model not in SYNC_MODELS]
    if unknown:
        raise SystemExit(f"gpu_check: --sync-models takes {','.join(SYNC_MODELS)} (got {','.join(unknown)})")
    for name in (*(f"{stage}_s" for stage in STAGE_BUDGETS), "budget_s", "case_limit_s", "test_limit_s"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"gpu_check: --{name.replace('_', '-')} must be a positive number of seconds "
                             f"(got {getattr(args, name)})")
    return args


def report_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The report and the files written beside it: the summary, the rendered kernels,
    and per stage its log, its partial results (``-timing.json``) and what its
    process was asked to run (``-timing-spec.json``)."""
    if args.json:
        report = Path(args.json)
    elif os.environ.get("OUT"):
        report = Path(os.environ["OUT"]) / "gpu_check.json"
    else:
        report = ROOT / "bench" / "results" / ("gpu-check-smoke.json" if args.smoke else "gpu-check.json")
    return {"report": report,
            "summary": report.with_name(report.stem + "-summary.txt"),
            "kernels": report.with_name(report.stem + "-kernels.txt")}


def stage_file(report: Path, stage: str, suffix: str) -> Path:
    """``<report>-<stage><suffix>`` beside the report."""
    return report.with_name(f"{report.stem}-{stage}{suffix}")


# ---- small helpers ------------------------------------------------------------------
def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()[:300]


class CaseTimeout(Exception):
    """A case or sync check ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`CaseTimeout` in the main thread after ``seconds``. Python checks
    for it between bytecodes, so it cannot stop a CUDA call or a compiler that never
    returns: the parent process kills those (:func:`run_item_stage`)."""

    def expire(signum, frame):
        raise CaseTimeout(f"no result within {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def save(report: dict, path: Path) -> None:
    from pigeon.bench.report import save_report

    path.parent.mkdir(parents=True, exist_ok=True)
    save_report(report, path)


# ---- 1. environment ---------------------------------------------------------------------
def environment(argv: list[str], device: str) -> tuple[dict, dict]:
    """``(machine, environment)``: the machine as ``pigeon bench`` describes it, with
    triton's version added, and what else this run depends on."""
    import torch

    from pigeon.bench.harness import describe_machine

    machine = describe_machine("cuda")
    try:
        import triton

        machine["versions"]["triton"] = triton.__version__
    except ImportError as exc:
        machine["versions"]["triton"] = f"not importable ({one_line(exc)})"
    env = {
        "command": shlex.join(["python3", "bench/gpu_check.py", *argv]),
        "python_executable": sys.executable,
        "cwd": os.getcwd(),
        "device": device,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "tf32_matmul_in_torch": torch.backends.cuda.matmul.allow_tf32,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
                      "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count}
    return machine, env


# ---- 2. kernels ---------------------------------------------------------------------------
def render_kernels(args: argparse.Namespace, device: str, path: Path) -> list[dict]:
    """Render every layer's forward and backward Triton module (as ``pigeon
    show-kernels`` does) for a graph on ``device`` and write them all to ``path``."""
    import torch

    from pigeon.cli import kernel_source
    from pigeon.data import load

    graph = load("aifb", scale=args.render_scale, seed=0).graph.to(device)
    entries, texts = [], []
    for model in SYNC_MODELS:
        for direction in ("forward", "backward"):
            entry = {"model": model, "direction": direction}
            begin = time.perf_counter()
            try:
                source = kernel_source(model, "triton", graph, args.dim, args.heads, torch.float32,
                                       backward=direction == "backward")
            except Exception as exc:  # recorded in the report and printed; the run goes on
                entry.update(status="error", error=one_line(exc))
            else:
                entry.update(status="ok", lines=source.count("\n") + 1, kernels=source.count("@triton.jit"))
                texts.append(f"# ==== {model} {direction} (aifb x{args.render_scale}, hidden {args.dim}, "
                             f"heads {args.heads}, float32) ====\n{source.rstrip()}\n")
            entry["seconds"] = round(time.perf_counter() - begin, 3)
            entries.append(entry)
    if texts:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(texts))
    return entries


# ---- stages, each in a process of its own --------------------------------------------------
class Interrupted(Exception):
    """The run got SIGTERM or SIGINT (an outer time limit, say): the report is still written."""


def _interrupt(signum, frame):
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the process's whole session: pytest, a compiler it started, all."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:   # everything in it has exited already
        pass


def child_env() -> dict:
    """The environment of a stage's process: this one's (TRITON_INTERPRET already set
    or cleared), output unbuffered so the log is current when it is killed, and the
    checkout importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_process(command: list[str], *, log: Path, deadline: float, stall: Callable[[], str | None] | None = None,
                on_output: Callable[[str], None] | None = None, on_poll: Callable[[], None] | None = None,
                cwd: Path = ROOT) -> dict:
    """Run ``command`` in ``cwd``, in a session of its own, its stdout and stderr
    appended to ``log`` and echoed as they come. The session is killed at ``deadline``
    (``time.monotonic()``) or as soon as ``stall()`` gives a reason; ``on_poll`` runs
    about four times a second.

    Returns ``{"returncode", "killed": None | "deadline" | "stall", "reason", "seconds"}``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    killed = reason = None
    ended = None   # when the process exited or was killed
    with open(log, "a", encoding="utf-8", errors="replace") as sink:
        sink.write(f"$ {shlex.join(command)}\n")
        sink.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=child_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = proc.stdout.fileno()

        def echo(text: str) -> None:
            sink.write(text)
            sink.flush()
            sys.stdout.write(text)
            sys.stdout.flush()
            if on_output is not None:
                on_output(text)

        try:
            while True:
                if killed is None:
                    if time.monotonic() >= deadline:
                        killed, reason = "deadline", f"its deadline, after {time.monotonic() - begin:.0f} s"
                    elif stall is not None and (reason := stall()):
                        killed = "stall"
                    if killed:
                        echo(f"\ngpu_check: killing the process (pid {proc.pid}) and its session: {reason}\n")
                        _kill_group(proc)
                ready, _, _ = select.select([fd], [], [], 0.25)
                chunk = os.read(fd, 1 << 16) if ready else None
                if chunk == b"":
                    break
                if chunk:
                    echo(decoder.decode(chunk))
                elif killed or proc.poll() is not None:
                    # Gone, but the pipe is open: something it started outlived it.
                    ended = ended or time.monotonic()
                    if time.monotonic() - ended > 3:
                        _kill_group(proc)
                        break
                if on_poll is not None:
                    on_poll()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            proc.stdout.close()
            returncode = proc.wait()
            echo(decoder.decode(b"", final=True))
    return {"returncode": returncode, "killed": killed, "reason": reason,
            "seconds": round(time.monotonic() - begin, 1)}


class Progress:
    """A stage process's results so far, in a JSON file rewritten (atomically) at
    every step, so the parent can read them while it runs and after it is killed:
    ``{"results": {index: item}, "current": {index, started, step, item} | null}``."""

    def __init__(self, path: Path, deadline: float, total: int):
        self.path = path
        self.deadline = deadline   # time.time()
        self.total = total         # items in the whole stage, for "[3/54]"
        self.results: dict[int, dict] = {}
        self.current: dict | None = None

    def left(self) -> float:
        return self.deadline - time.time()

    def start(self, index: int, item: dict) -> None:
        self.current = {"index": index, "started": time.time(), "step": "start", "item": item}
        self._write()

    def step(self, name: str) -> None:
        if self.current is not None:
            self.current["step"] = name
            self._write()

    def done(self, index: int, item: dict) -> None:
        self.results[index] = item
        self.current = None
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "results": self.results, "current": self.current},
                                  default=str))
        os.replace(tmp, self.path)


class ProgressReader:
    """The parent's side of :class:`Progress`: reads the file again when it changed."""

    def __init__(self, path: Path):
        self.path = path
        self.stamp = None
        self.results: dict[int, dict] = {}
        self.current: dict | None = None

    def read(self) -> bool:
        """Whether the file changed since the last read."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp == self.stamp:
                return False
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):   # not written yet, or replaced while read: the next poll reads it
            return False
        self.stamp = stamp
        self.results = {int(index): item for index, item in data["results"].items()}
        self.current = data["current"]
        return True


@dataclass
class ItemStage:
    """A stage whose work is a list of items (timing cases, sync checks) that
    :func:`stage_child` runs in another process, one after the other."""

    name: str               # what :func:`stage_child` runs: timing, sync (or sleep, for the tests)
    items: list[dict]       # the report's entries: "not run" until a result replaces them, in place
    kill_after_s: float     # the parent kills the process when one item has run this long
    step_key: str           # the entry's field that says where an item had got to
    report: Path            # the stage's files go beside it
    min_start_s: float = MIN_START_S   # the least time worth starting its process in

    @property
    def log(self) -> Path:
        return stage_file(self.report, self.name, ".log")

    @property
    def progress(self) -> Path:
        return stage_file(self.report, self.name, ".json")

    @property
    def spec(self) -> Path:
        return stage_file(self.report, self.name, "-spec.json")


def placeholder(**fields) -> dict:
    """A report entry before its stage reached it."""
    return {**fields, "status": "not run", "error": NOT_REACHED}


def _run_items_once(stage: ItemStage, pending: list[int], deadline: float, argv: list[str], device: str,
                    on_change: Callable[[], None]) -> dict:
    """One process of ``stage`` on the ``pending`` items; what it finished (and the item
    it was on when it ended) is merged into ``stage.items`` as it arrives."""
    seconds_left = deadline - time.monotonic()
    spec = {"stage": stage.name, "argv": argv, "device": device, "progress": str(stage.progress),
            # its own deadline, a little before the kill, so it can skip what would not fit
            "deadline": time.time() + seconds_left - 2,
            "items": [[index, stage.items[index]] for index in pending], "total": len(stage.items)}
    stage.spec.parent.mkdir(parents=True, exist_ok=True)
    stage.spec.write_text(json.dumps(spec, indent=1, default=str) + "\n")
    stage.progress.unlink(missing_ok=True)
    reader = ProgressReader(stage.progress)
    seen_work = False

    def merge() -> None:
        nonlocal seen_work
        if not reader.read():
            return
        seen_work = seen_work or bool(reader.results) or reader.current is not None
        for index, item in reader.results.items():
            if stage.items[index]["status"] == "not run":
                stage.items[index].clear()
                stage.items[index].update(item)
        on_change()

    def stall() -> str | None:
        current = reader.current
        if current is None:
            return None
        ran = time.time() - current["started"]
        if ran <= stage.kill_after_s:
            return None
        return f"item {current['index']} ran {ran:.0f} s (at {current['step']}) without a result"

    run = {"killed": "interrupted", "returncode": None}
    try:
        run = run_process([sys.executable, str(SCRIPT), "--stage-spec", str(stage.spec)], log=stage.log,
                          deadline=deadline, stall=stall, on_poll=merge)
    finally:
        merge()
        _end_current(stage, reader.current, run)
        on_change()
    return {**run, "items": len(pending), "finished": len(reader.results), "seen_work": seen_work}


def _end_current(stage: ItemStage, current: dict | None, run: dict) -> None:
    """Give the item a stage process was on when it ended (``current`` of its progress
    file) the result that says how, where and after how long."""
    if current is None or stage.items[current["index"]]["status"] != "not run":
        return
    item = stage.items[current["index"]]
    item.update(current["item"], **{stage.step_key: current["step"]})
    ran = f"after {time.time() - current['started']:.0f} s at {current['step']}"
    if run["killed"] == "stall":
        item.update(status="timeout", error=f"killed {ran}: no result within {stage.kill_after_s:g} s")
    elif run["killed"] == "deadline":
        item.update(status="not run", error=f"stage killed at its deadline {ran}")
    elif run["killed"] == "interrupted":
        item.update(status="not run", error=f"the run was interrupted {ran}")
    else:
        item.update(status="error", error=f"its process exited with status {run['returncode']} {ran} "
                                          f"(see {stage.log.name})")


def run_item_stage(stage: ItemStage, deadline: float, record: dict, *, argv: list[str], device: str,
                   on_change: Callable[[], None] = lambda: None) -> None:
    """Run ``stage`` until every item has a result or ``deadline`` (``time.monotonic()``):
    after a process was killed over one item, or died after finishing some (a lost CUDA
    context), a fresh one goes on with the items left. Fills ``record``; items never
    reached stay "not run" and say why."""
    record.update(log=str(stage.log), progress=str(stage.progress), runs=[])
    pending = [index for index, item in enumerate(stage.items) if item["status"] == "not run"]
    reason = NOT_REACHED
    try:
        while pending:
            if deadline - time.monotonic() < stage.min_start_s:
                reason = "time budget"
                if not record["runs"]:
                    record["status"] = "skipped"
                break
            if len(record["runs"]) == MAX_RUNS:
                record["status"], reason = "error", f"the stage gave up after {MAX_RUNS} processes"
                break
            if record["runs"]:
                print(f"gpu_check: {stage.name}: a fresh process for the {len(pending)} item(s) left", flush=True)
            run = _run_items_once(stage, pending, deadline, argv, device, on_change)
            record["runs"].append(run)
            pending = [index for index in pending if stage.items[index]["status"] == "not run"]
            if run["killed"] == "deadline":
                record["status"], reason = "timeout", "stage killed at its deadline"
                break
            if pending and not run["seen_work"]:
                record["status"] = "error"
                reason = f"its process exited with status {run['returncode']} before any item (see {stage.log.name})"
                break
    except (Interrupted, KeyboardInterrupt):
        record["status"], reason = "interrupted", "the run was interrupted"
        raise
    finally:
        for index in pending:
            item = stage.items[index]
            if item["status"] == "not run" and item["error"] == NOT_REACHED:
                item.update(status="skipped" if reason == "time budget" else "not run", error=reason)
        if record.get("status", "running") == "running":
            record["status"] = "done"
        on_change()


@dataclass
class Stage:
    """One step of the run: its name, its budget, and what runs it."""

    name: str
    budget_s: float
    run: Callable[[float, dict], None]   # (deadline as time.monotonic(), the stage's record to fill)


def run_stages(stages: list[Stage], run_deadline: float, records: dict,
               on_change: Callable[[], None] = lambda: None) -> None:
    """Each stage in turn, until its budget plus what the stages before it left unused
    (counted from now), never past ``run_deadline``. ``records[name]`` is the stage's
    record, there from its start, so an interrupted run still reports it."""
    planned = time.monotonic()
    for stage in stages:
        planned += stage.budget_s
        deadline = min(planned, run_deadline)
        granted = deadline - time.monotonic()
        record = records[stage.name] = {"status": "running", "budget_s": stage.budget_s,
                                        "granted_s": round(granted, 1)}
        print(f"gpu_check: {stage.name}: {max(granted, 0):.0f} s (budget {stage.budget_s:g} s) ...", flush=True)
        begin = time.monotonic()
        try:
            stage.run(deadline, record)
        finally:
            record["seconds"] = round(time.monotonic() - begin, 1)
            if record["status"] == "running":
                record["status"] = "done"
            print(f"gpu_check: {stage.name}: {record['status']} in {record['seconds']:.0f} s", flush=True)
            on_change()


# ---- what runs in a stage's process -----------------------------------------------------------
def stage_child(spec_path: Path) -> int:
    """The stage that ``spec_path`` describes, in this (fresh) process."""
    spec = json.loads(spec_path.read_text())
    progress = Progress(Path(spec["progress"]), spec["deadline"], spec["total"])
    items = [(index, item) for index, item in spec["items"]]
    if spec["stage"] == "sleep":
        return sleep_child(items, progress)
    args = parse_args(spec["argv"])
    import torch

    args.check_tolerance = CHECK_TOLERANCE[torch.backends.cuda.matmul.allow_tf32]
    child = {"timing": timing_child, "sync": sync_child}[spec["stage"]]
    return child(args, spec["device"], items, progress)


def sleep_child(items: list[tuple[int, dict]], progress: Progress) -> int:
    """The stage the tests of this script use in place of a GPU: each item sleeps its
    ``seconds`` (a long sleep stands for a kernel that never ends)."""
    for index, item in items:
        progress.start(index, item)
        print(f"sleep: item {index}: {item['seconds']:g} s ...", flush=True)
        time.sleep(item["seconds"])
        item.update(status="ok", error=None)
        progress.done(index, item)
    return 0


# ---- 3. timing -------------------------------------------------------------------------------
def timing_items(args: argparse.Namespace, device: str) -> list[dict]:
    """Every case, "not run" until it has a result: dataset by dataset (aifb first by
    default, so a run cut short still has a whole aifb table), then model, mode and
    system."""
    return [placeholder(system=system, model=model, dataset=dataset, mode=mode, dim=args.dim, heads=args.heads,
                        scale=args.scale, seed=0, device=device, stage="start")
            for dataset in args.datasets for model in args.models for mode in args.modes for system in args.systems]


def timing_child(args: argparse.Namespace, device: str, items: list[tuple[int, dict]], progress: Progress) -> int:
    """The cases in ``items``, one after the other, each under ``--case-limit-s``."""
    from pigeon.bench.report import time_cell

    import torch

    from pigeon.bench.harness import is_out_of_memory

    for index, result in items:
        label = f"[{index + 1}/{progress.total}] {result['system']} {result['model']} {result['dataset']} {result['mode']}"
        left = progress.left()
        if left < MIN_ITEM_S:
            result.update(status="skipped", error="time budget")
            progress.done(index, result)
            continue
        print(f"gpu_check: {label} ...", flush=True)
        progress.start(index, result)

        def mark(name: str) -> None:
            result["stage"] = name
            progress.step(name)

        begin = time.perf_counter()
        try:
            with time_limit(min(args.case_limit_s, left - 3)):
                measure(result["system"], result["model"], result["dataset"], result["mode"], args, device, result,
                        mark)
        except torch.cuda.OutOfMemoryError as exc:
            result.update(status="OOM", error=one_line(exc))
        except Exception as exc:  # the case's result; the run goes on
            timeout = _timeout_in(exc)
            if timeout is not None:
                result.update(status="timeout", error=f"{timeout} (stage: {result['stage']})")
            else:
                line = one_line(exc)
                result.update(status="OOM" if is_out_of_memory(line) else "error", error=line)
        result["wall_s"] = round(time.perf_counter() - begin, 3)
        progress.done(index, result)
        print(f"gpu_check: {label}: {time_cell(result)} {_check_cell(result)}".rstrip(), flush=True)
        gc.collect()
        if device == "cuda":
            if result["status"] != "ok" and not _cuda_alive():
                print(f"gpu_check: the CUDA context is lost after {label}; the cases left need a fresh process",
                      flush=True)
                return CONTEXT_LOST_EXIT
            torch.cuda.empty_cache()
    return 0


# ---- 4. sync ---------------------------------------------------------------------------------
SYNC_PHASES = ("build", "warm-up train", "warm-up infer", "infer", "train")   # the last two under the debug mode


def sync_items(args: argparse.Namespace) -> list[dict]:
    return [placeholder(model=model, graph=f"aifb x{args.sync_scale}", dim=args.dim, heads=args.heads, phase="start")
            for model in args.sync_models]


def _sync_layer(model: str, graph, dim: int, heads: int):
    """A ``pigeon.nn`` layer on backend ``triton`` and its inputs, on ``graph``'s device."""
    import torch

    from pigeon import nn as pnn

    device = graph.device
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen).to(device).requires_grad_(True)

    if model == "nbfnet":
        batch = 2
        layer = pnn.NBFNetLayer(dim, graph.num_etypes, aggregate="pna", backend="triton")
        inputs = (leaf(batch, graph.num_nodes, dim), leaf(batch, graph.num_nodes, dim),
                  leaf(batch, graph.num_etypes, dim))
    else:
        layer = {
            "rgcn": lambda: pnn.RGCN(dim, dim, graph.num_etypes, backend="triton"),
            "rgat": lambda: pnn.RGAT(dim, dim // heads, graph.num_etypes, heads=heads, backend="triton"),
            "hgt": lambda: pnn.HGT(dim, dim, graph.num_ntypes, graph.num_etypes, heads=heads, backend="triton"),
        }[model]()
        inputs = (leaf(graph.num_nodes, dim),)
    return layer.to(device), inputs


@contextlib.contextmanager
def _sync_errors(cuda: bool):
    """``set_sync_debug_mode("error")`` for the block (on CUDA; the CPU has no such mode)."""
    import torch

    if not cuda:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def sync_one(model: str, graph, args: argparse.Namespace, phase: Callable[[str], None]) -> None:
    """Warm ``model`` up (forward and backward, then forward alone), then run the same
    under ``set_sync_debug_mode("error")``; ``phase`` is told before each of
    :data:`SYNC_PHASES`."""
    import torch

    cuda = graph.device.type == "cuda"

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    phase("build")
    layer, inputs = _sync_layer(model, graph, args.dim, args.heads)
    phase("warm-up train")
    out = layer(graph, *inputs)
    upstream = torch.randn_like(out)   # made on the device: a copy from the host would synchronise
    out.backward(upstream)
    synchronize()
    phase("warm-up infer")
    with torch.no_grad():
        layer(graph, *inputs)
    synchronize()
    phase("infer")
    with _sync_errors(cuda), torch.no_grad():
        layer(graph, *inputs)
    synchronize()
    phase("train")
    with _sync_errors(cuda):
        layer(graph, *inputs).backward(upstream)
    synchronize()


def sync_child(args: argparse.Namespace, device: str, items: list[tuple[int, dict]], progress: Progress) -> int:
    """The sync check of each layer in ``items``, each under ``--case-limit-s``, saying
    each phase before it starts."""
    from pigeon.data import load

    graph = load("aifb", scale=args.sync_scale, seed=0).graph.to(device)
    for index, entry in items:
        model = entry["model"]
        left = progress.left()
        if left < MIN_ITEM_S:
            entry.update(status="skipped", error="time budget")
            progress.done(index, entry)
            continue
        progress.start(index, entry)

        def phase(name: str) -> None:
            entry["phase"] = name
            progress.step(name)
            print(f"sync: {model} {name} ...", flush=True)

        begin = time.perf_counter()
        try:
            with time_limit(min(args.case_limit_s, left - 3)):
                sync_one(model, graph, args, phase)
            entry.update(status="ok", error=None, phase="done")
        except Exception as exc:  # the check's verdict: recorded, and the next layer runs
            if _timeout_in(exc) is not None:
                status = "timeout"
            elif entry["phase"] in ("infer", "train") and "synchroniz" in str(exc):
                status = "sync"
            else:
                status = "error"
            entry.update(status=status, error=one_line(exc))
        entry["wall_s"] = round(time.perf_counter() - begin, 3)
        if device != "cuda":
            entry["note"] = "--smoke on the CPU: the phases ran without set_sync_debug_mode, which needs CUDA"
        progress.done(index, entry)
        where = f" at {entry['phase']}: {entry['error']}" if entry["error"] else ""
        print(f"sync: {model} {entry['status']}{where}", flush=True)
        if device == "cuda" and entry["status"] != "ok" and not _cuda_alive():
            print(f"sync: the CUDA context is lost after {model}; the layers left need a fresh process", flush=True)
            return CONTEXT_LOST_EXIT
    return 0


# ---- 5. tests --------------------------------------------------------------------------------
_OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
_VERBOSE_LINE = re.compile(r"^(\S+::\S+)(?: <- \S+)? (" + "|".join(_OUTCOMES) + r")\b")
_COUNTED = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped",
            "XFAIL": "xfailed", "XPASS": "xpassed"}


def subset_expression(files: dict[str, str | None]) -> str:
    """The pytest ``-k`` expression of the subsets of ``files`` (a module's name is one
    of the names ``-k`` matches, so it picks a file)."""
    parts = []
    for path, subset in files.items():
        module = Path(path).stem
        parts.append(module if subset is None else f"({module} and ({subset}))")
    return " or ".join(parts)


def pytest_command(args: argparse.Namespace, files: dict[str, str | None]) -> list[str]:
    """pytest on ``files``: verbose, so every test's outcome is a line of its own as it
    ends (the log counts them when pytest is killed) and the test that hung is the
    last one named; failures and errors as one line each, listed again at the end."""
    command = [sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider"]
    if args.tests in ("subset", "collect"):
        command += ["-k", subset_expression(files)]
    if args.tests == "collect":
        return command + ["--collect-only", "-q"]
    return command + ["-v", "-rfE", "--tb=line", "--durations=15"]


class PytestWatcher:
    """Follows ``pytest -v`` output as it streams: each test's outcomes (into a dict it
    is given, so they survive a kill) and the test running now, from when its name
    appeared."""

    def __init__(self, outcomes: dict[str, list[str]]):
        self.outcomes = outcomes
        self.lines: list[str] = []
        self.partial = ""
        self.current: str | None = None
        self.started = 0.0

    def feed(self, text: str) -> None:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.lines.append(line)
            match = _VERBOSE_LINE.match(line)
            if match:
                self.outcomes.setdefault(match[1], []).append(match[2])
                self.current = None
        # pytest -v names a test, then runs it, then ends the line with its outcome.
        head = self.partial.split()
        if head and "::" in head[0] and not _VERBOSE_LINE.match(self.partial) and head[0] != self.current:
            self.current, self.started = head[0], time.monotonic()

    def running_over(self, limit: float) -> str | None:
        if self.current is None or time.monotonic() - self.started <= limit:
            return None
        return f"{self.current} ran over --test-limit-s ({limit:g} s)"


def count_outcomes(outcomes: dict[str, list[str]]) -> dict[str, int]:
    counts = dict.fromkeys(_COUNTED.values(), 0)
    for found in outcomes.values():
        for outcome in found:
            counts[_COUNTED[outcome]] += 1
    return counts


def run_tests(args: argparse.Namespace, deadline: float, record: dict, log: Path,
              files: dict[str, str | None] = TEST_FILES, rootdir: Path = ROOT) -> None:
    """pytest on those of ``files`` (paths in ``rootdir``) that exist, each with its
    subset, in a session of its own, until ``deadline``; a test that runs past
    ``--test-limit-s`` is killed with it, and pytest starts again without the tests that
    have an outcome and the ones that hung. Fills ``record``.

    pytest runs in ``rootdir``, so ``-v`` shows node ids as ``--deselect`` takes them."""
    present = {path: subset for path, subset in files.items() if (rootdir / path).exists()}
    record.update(files=list(present), missing=[f for f in files if f not in present], mode=args.tests,
                  log=str(log), timeout_s=record.get("granted_s"))
    if args.tests == "skip":
        record.update(status="skipped", note="--tests skip")
        return
    if not present:
        record.update(status="skipped", note="none of the test files exists")
        return
    if deadline - time.monotonic() < MIN_START_S:
        record.update(status="skipped", note="time budget")
        return
    command = pytest_command(args, present)
    record.update(command=shlex.join(command), runs=[])
    if args.tests == "collect":
        watcher = PytestWatcher({})
        run = run_process(command, log=log, deadline=deadline, on_output=watcher.feed, cwd=rootdir)
        watcher.feed("\n")
        record["runs"].append(run)
        collected = sum(1 for line in watcher.lines if "::" in line)
        status = "timeout" if run["killed"] else "collected" if run["returncode"] == 0 else "error"
        record.update(status=status, collected=collected, tail=watcher.lines[-25:])
        return

    outcomes: dict[str, list[str]] = record.setdefault("outcomes", {})
    stalled: list[str] = record.setdefault("stalled", [])
    watcher = PytestWatcher(outcomes)
    interrupted = False
    try:
        while True:
            failures = sum(outcome in ("FAILED", "ERROR") for found in outcomes.values() for outcome in found)
            done = [*outcomes, *stalled]
            watcher = PytestWatcher(outcomes)
            run = run_process([*command, f"--maxfail={max(1, MAXFAIL - failures)}",
                               *(f"--deselect={nodeid}" for nodeid in done)],
                              log=log, deadline=deadline, stall=lambda: watcher.running_over(args.test_limit_s),
                              on_output=watcher.feed, cwd=rootdir)
            watcher.feed("\n")
            record["runs"].append(run)
            if run["killed"] != "stall":
                break
            stalled.append(watcher.current)
            if deadline - time.monotonic() < MIN_START_S or len(record["runs"]) == MAX_RUNS:
                break
            print(f"gpu_check: tests: pytest again, without the {len(outcomes)} test(s) done and the "
                  f"{len(stalled)} that hung", flush=True)
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
        raise
    finally:
        failed = [nodeid for nodeid, found in outcomes.items() if "FAILED" in found or "ERROR" in found]
        # pytest's -rf lines, there when it got to its summary
        short = [line for line in watcher.lines if line.startswith(("FAILED ", "ERROR "))]
        record.update(count_outcomes(outcomes), status=_tests_status(record["runs"], outcomes, stalled, interrupted),
                      failed_tests=failed, short_summary=short[:20], tail=watcher.lines[-25:])


def _tests_status(runs: list[dict], outcomes: dict, stalled: list[str], interrupted: bool) -> str:
    counts = count_outcomes(outcomes)
    if interrupted:
        return "interrupted"
    if not runs:
        return "error"
    last = runs[-1]
    if last["killed"] == "deadline":
        return "timeout"
    if counts["failed"] or counts["errors"] or stalled:
        return "failed"
    # 5 is "no tests collected": right after a restart that deselected every test left
    if last["returncode"] == 0 or (last["returncode"] == 5 and outcomes):
        return "passed"
    return "error"   # interrupted, internal error, usage error, or nothing collected


# ---- a timing case --------------------------------------------------------------------------
def prepare_case(system_name: str, model: str, dataset_name: str, args: argparse.Namespace, device: str):
    """``(system, workload, runner, synthetic)`` as :func:`pigeon.bench.worker.prepare`
    builds them (seeded graph, features and reference weights; the system's layer
    from its :mod:`pigeon.bench.systems` builder), without that function's check of
    the system's device: with ``--smoke``, pigeon-triton runs on the CPU through
    Triton's interpreter."""
    import torch

    from pigeon.bench.systems import Workload, available_systems, make_reference
    from pigeon.bench.worker import _perturb_constants
    from pigeon.data import load

    systems = available_systems()
    if system_name not in systems:
        raise ValueError(f"unknown system {system_name!r}; this installation has {sorted(systems)}")
    system = systems[system_name]
    seed = 0
    dataset = load(dataset_name, scale=args.scale, seed=seed)
    graph = dataset.graph.to(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reference = make_reference(model, graph, args.dim, args.heads)
    _perturb_constants(reference, generator, torch)
    reference.to(device)
    x = torch.randn(graph.num_nodes, args.dim, generator=generator).to(device)
    workload = Workload(model, graph, x, reference, args.dim, args.heads)
    return system, workload, system.build(workload), dataset.synthetic


def check_case(system, runner, workload, train: bool, generator, tolerance: float) -> dict:
    """The system's output (and, with ``train``, the gradients of the input and, where
    it has the reference's parameter names, of every parameter) against the float64
    reference, by ``||out - ref|| / ||ref||``: the ``pigeon bench`` worker's check."""
    from pigeon.bench.worker import check_against_reference

    if workload.model not in system.same_maths:
        return {"status": "n/a", "note": f"{system.name}'s {workload.model} is different maths"}
    return check_against_reference(system, runner, workload, train, generator, tolerance, measure="rel_err")


def _times(step, device: str, args: argparse.Namespace, grad_to_none) -> list[float]:
    """Seconds of each timed run of ``step``."""
    if device == "cuda":
        from triton.testing import do_bench

        ms = do_bench(step, warmup=args.warmup_ms, rep=args.rep_ms, grad_to_none=grad_to_none, return_mode="all")
        return [t / 1e3 for t in ms]
    times = []
    for _ in range(args.repeat):
        for tensor in grad_to_none or ():
            tensor.grad = None
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return times


def _quantiles(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    return {"p10": at(0.1), "p25": at(0.25), "p50": at(0.5), "p75": at(0.75), "p90": at(0.9)}


def measure(system_name: str, model: str, dataset: str, mode: str, args: argparse.Namespace, device: str,
            result: dict, mark: Callable[[str], None]) -> None:
    """Fill ``result`` with one case: build, first call, check, peak memory, times;
    ``mark`` is told before each (and after the last, "done"). Raises what the case raised."""
    import torch

    from pigeon.bench.worker import _leaves, _tensors, make_step

    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    mark("build")
    system, workload, runner, synthetic = prepare_case(system_name, model, dataset, args, device)
    graph = workload.graph
    result["graph"] = {"nodes": graph.num_nodes, "edges": graph.num_edges, "etypes": graph.num_etypes,
                       "ntypes": graph.num_ntypes, "synthetic": synthetic}

    train = mode == "train"
    generator = torch.Generator().manual_seed(1)
    native = _leaves(runner.to_native(workload.x), requires_grad=train)
    inputs = _tensors(native)
    step = make_step(runner, native, train, generator)

    grad_to_none = [*inputs, *runner.module.parameters()] if train else None

    mark("first call")
    sync()
    begin = time.perf_counter()
    step()
    sync()
    result["first_call_s"] = time.perf_counter() - begin

    def reset_grads():
        for tensor in grad_to_none or ():
            tensor.grad = None

    mark("check")
    reset_grads()   # the check's backward must not add to the first call's gradients
    result["check"] = check_case(system, runner, workload, train, generator, args.check_tolerance)

    # Peak memory of one run on its own: do_bench's L2-flush buffer stays out of it.
    mark("memory")
    reset_grads()
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        result.update(peak_mib=torch.cuda.max_memory_allocated() / 2**20, resident_before_mib=before / 2**20,
                      peak_source="torch.cuda.max_memory_allocated")

    mark("timing")
    times = _times(step, device, args, grad_to_none)
    if not cuda:
        # No run of its own on the CPU: under the interpreter each run costs seconds.
        result.update(peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      peak_source="ru_maxrss (the whole run so far)")
    result.update(status="ok", error=None, samples=len(times), median_s=statistics.median(times),
                  min_s=min(times), max_s=max(times), quantiles_s=_quantiles(times),
                  timer="triton.testing.do_bench" if cuda else "time.perf_counter")
    mark("done")


def _timeout_in(exc: BaseException) -> CaseTimeout | None:
    """The :class:`CaseTimeout` behind ``exc``: Triton's interpreter re-raises what a
    kernel raised as its own ``InterpreterError``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CaseTimeout):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _cuda_alive() -> bool:
    """Whether the CUDA context still works (an illegal access poisons it for good)."""
    import torch

    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
        return True
    except Exception:  # any failure here means the context is gone: said in the report
        return False


# ---- the table -------------------------------------------------------------------------------
def _check_cell(r: dict) -> str:
    check = r.get("check")
    if not check:
        return "-"
    if check["status"] == "n/a":
        return "n/a"
    text = f"{check['status']} {check['rel_err']:.1e}"
    return text if check["status"] == "ok" else f"MISMATCH {check['rel_err']:.1e} ({check['worst']})"


def speedups(results: list[dict]) -> dict[int, tuple[float | None, float | None]]:
    """Per finished pigeon-triton result (by position): its speedup over the fastest
    finished baseline (PyG, DGL) of the same case and over pigeon-torch."""
    from pigeon.bench.systems import BASELINE_LIBRARIES

    def group(r):
        return (r["dataset"], r["model"], r["mode"], r["dim"], r["heads"], r["scale"], r["device"])

    baseline, own = {}, {}
    for r in results:
        if r["status"] != "ok":
            continue
        if r["system"] in BASELINE_LIBRARIES:
            baseline[group(r)] = min(baseline.get(group(r), float("inf")), r["median_s"])
        elif r["system"] == AGAINST_SELF:
            own[group(r)] = r["median_s"]
    out = {}
    for i, r in enumerate(results):
        if r["system"] == SUBJECT and r["status"] == "ok":
            vs_base, vs_own = baseline.get(group(r)), own.get(group(r))
            out[i] = (vs_base / r["median_s"] if vs_base else None, vs_own / r["median_s"] if vs_own else None)
    return out


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}x"


COLUMNS = ("dataset", "model", "mode", "system", "median ms (min-max)", "first ms", "peak MiB",
           "vs pyg", "vs torch", "check")
RIGHT_ALIGNED = (4, 5, 6, 7, 8)


def format_cases(results: list[dict]) -> list[str]:
    """The timing table, one row per case."""
    from pigeon.bench.report import format_ms, time_cell

    ratios = speedups(results)
    rows = []
    previous = None
    for i, r in enumerate(results):
        vs_base, vs_own = ratios.get(i, (None, None))
        key = (r["dataset"], r["model"], r["mode"])
        shown = [*key] if key != previous else ["", "", ""]
        previous = key
        rows.append([*shown, r["system"], time_cell(r),
                     format_ms(r["first_call_s"]) if r.get("first_call_s") is not None else "",
                     f"{r['peak_mib']:.0f}" if r["status"] == "ok" and r.get("peak_mib") is not None else "",
                     _ratio(vs_base), _ratio(vs_own), _check_cell(r)])
    widths = [max(len(COLUMNS[c]), *(len(row[c]) for row in rows)) for c in range(len(COLUMNS))]
    lines = ["  ".join(name.ljust(w) for name, w in zip(COLUMNS, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(cell.rjust(w) if c in RIGHT_ALIGNED else cell.ljust(w)
                               for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return lines


def _tests_line(tests: dict | None) -> str:
    if not tests:
        return "tests: not run"
    if tests["status"] in ("skipped", "not run"):
        return f"tests: {tests['status']} ({tests.get('note')})"
    if tests.get("mode") == "collect":
        counts = f"{tests.get('collected', 0)} collected"
    else:
        counts = ", ".join(f"{tests.get(k, 0)} {k}" for k in ("passed", "failed", "errors", "skipped"))
        if tests.get("stalled"):
            counts += f", {len(tests['stalled'])} killed over --test-limit-s"
    which = "" if tests.get("mode") == "all" else "subset of "
    return (f"tests: {tests['status'].upper()}: {counts} in {tests.get('seconds')} s "
            f"(limit {tests.get('timeout_s')} s; {which}{', '.join(tests.get('files', ()))})")


def _tests_failures(tests: dict | None) -> list[str]:
    """The failed and hung tests, one line each (pytest's own lines when it got to its summary)."""
    if not tests:
        return []
    lines = tests.get("short_summary") or [f"FAILED {nodeid}" for nodeid in tests.get("failed_tests", ())]
    lines += [f"HUNG {nodeid} (killed over --test-limit-s)" for nodeid in tests.get("stalled", ())]
    shown = [f"  {line[:200]}" for line in lines[:MAXFAIL]]
    if len(lines) > MAXFAIL:
        shown.append(f"  ... and {len(lines) - MAXFAIL} more in the report")
    return shown


def _sync_line(sync: list[dict] | str | None) -> str:
    if isinstance(sync, str):
        return f"sync: {sync}"
    if not sync:
        return "sync: not run"
    cells = []
    for e in sync:
        if e["status"] == "ok":
            cells.append(f"{e['model']} ok")
        elif e["status"] in ("skipped", "not run"):
            cells.append(f"{e['model']} {e['status']} ({e.get('error')})")
        else:
            cells.append(f"{e['model']} {e['status'].upper()} ({e.get('phase')}: {e.get('error')})")
    note = next((e["note"] for e in sync if e.get("note")), None)
    return "sync: " + "; ".join(cells) + (f" [{note}]" if note else "")


def _kernels_line(kernels: list[dict] | None) -> str:
    if not kernels:
        return "kernels: not rendered"
    cells = []
    for e in kernels:
        short = "fwd" if e["direction"] == "forward" else "bwd"
        cells.append(f"{e['model']} {short} {e['kernels']} kernels" if e["status"] == "ok"
                     else f"{e['model']} {short} ERROR")
    errors = sorted({e["error"] for e in kernels if e["status"] != "ok"})
    return "kernels: " + ", ".join(cells) + (f" ({'; '.join(errors)})" if errors else "")


def _stages_line(stages: dict | None) -> str:
    if not stages:
        return "stages: none ran"
    cells = []
    for name, record in stages.items():
        if "seconds" not in record:
            cells.append(f"{name} {record['status']}")
            continue
        runs = len(record.get("runs") or ())
        extra = f", {runs} processes" if runs > 1 else ""
        cells.append(f"{name} {record['status']} in {record.get('seconds', 0):.0f} s "
                     f"(budget {record['budget_s']:g} s, had {record.get('granted_s', 0):.0f} s{extra})")
    return "stages: " + "; ".join(cells)


# A stage that ends so says what it did not finish; these are not failures of what it checks.
UNFINISHED = ("skipped", "not run")


def verdict(report: dict) -> list[str]:
    """What failed, one phrase each (empty: everything passed)."""
    check = report["gpu_check"]
    problems = []
    if any(e["status"] != "ok" for e in check.get("kernels") or ()):
        problems.append("kernel rendering failed")
    stages = check.get("stages") or {}
    for name, record in stages.items():
        if name != "tests" and record["status"] in ("timeout", "error", "interrupted"):
            problems.append(f"{name} stage {record['status']}")
    tests = stages.get("tests")
    if tests and tests["status"] in ("failed", "error", "timeout", "interrupted"):
        problems.append(f"tests {tests['status']}")
    if isinstance(check.get("sync"), list):
        bad = [f"{e['model']} {e['status']}" for e in check["sync"] if e["status"] not in ("ok", *UNFINISHED)]
        if bad:
            problems.append("sync check: " + ", ".join(bad))
    results = report["results"]
    if any((r.get("check") or {}).get("status") == "mismatch" for r in results):
        problems.append("reference check mismatch")
    failed = [r for r in results if r["system"] == SUBJECT and r["status"] not in ("ok", *UNFINISHED)]
    if failed:
        problems.append(f"{len(failed)} {SUBJECT} case(s) failed")
    return problems


def _not_ok(results: list[dict]) -> list[str]:
    """Each failed case on a line (cut short so the table stays in view; the report has
    each whole line), then the unfinished ones counted by reason."""
    lines, unfinished = [], {}
    for r in results:
        if r["status"] in UNFINISHED:
            reason = f"{r['status']}: {r.get('error')}"
            unfinished[reason] = unfinished.get(reason, 0) + 1
        elif r["status"] != "ok" and r.get("error"):
            lines.append(f"  {r['system']} {r['model']} {r['dataset']} {r['mode']}: {r['status']}: {r['error'][:150]}")
    lines += [f"  {count} case(s) {reason}" for reason, count in unfinished.items()]
    return lines


def format_summary(report: dict) -> str:
    """What the run prints last: environment, kernels, stages, tests, sync, the timing
    table, failures and the verdict."""
    check, machine = report["gpu_check"], report["machine"]
    env, v = check.get("environment", {}), machine["versions"]
    gpu = (env.get("gpu") or {}).get("name") or machine.get("gpu") or "no GPU"
    stages = check.get("stages") or {}
    lines = [f"gpu_check on {gpu}: torch {v.get('torch')}, triton {v.get('triton')}, torch_geometric "
             f"{v.get('torch_geometric')}, pigeon {v.get('pigeon')} ({v.get('pigeon_commit') or 'no git'})",
             f"command: {report['command']}",
             _kernels_line(check.get("kernels"))]
    if stages:
        lines.append(_stages_line(stages))
    lines += [_tests_line(stages.get("tests")), *_tests_failures(stages.get("tests")), _sync_line(check.get("sync"))]
    results = report["results"]
    if results:
        c = report["config"]
        timer = (f"do_bench median (min-max) over {c['rep_ms']:g} ms of runs after {c['warmup_ms']:g} ms warm-up, L2 flushed"
                 if c["device"] == "cuda" else f"median (min-max) of {c['repeat']} run(s), perf_counter")
        lines += ["", f"timing: hidden {c['dim']}, heads {c['heads']}, profile scale {c['scale']}, {c['device']}; "
                      f"{timer}; vs pyg / vs torch: their median over {SUBJECT}'s (above 1: faster); "
                      f"check: ||out-ref||/||ref|| against float64 (tolerance {c['check_tolerance']:g})"]
        lines += format_cases(results)
        not_ok = _not_ok(results)
        if not_ok:
            lines += ["", "not ok:"] + not_ok
    problems = check.get("problems", [])
    lines += ["", f"gpu_check: {'FAILED: ' + '; '.join(problems) if problems else 'all passed'} "
                  f"({check.get('seconds', 0):.0f} s)"]
    return "\n".join(lines)


# ---- the run ---------------------------------------------------------------------------------
def new_report(args: argparse.Namespace, device: str, machine: dict, env: dict) -> dict:
    """The report before any step ran, in ``pigeon bench``'s schema."""
    from pigeon.bench.harness import SCHEMA

    config = {"models": list(args.models), "datasets": list(args.datasets), "modes": list(args.modes),
              "systems": list(args.systems), "dim": args.dim, "heads": args.heads, "scale": args.scale,
              "seed": 0, "device": device, "threads": None, "memory_gb": None, "timeout_s": args.case_limit_s,
              "warmup_ms": args.warmup_ms, "rep_ms": args.rep_ms,
              # pigeon bench prints "median of {repeat} after {warmup} warm-up"
              "repeat": f"do_bench {args.rep_ms:g} ms" if device == "cuda" else args.repeat,
              "warmup": f"{args.warmup_ms:g} ms" if device == "cuda" else 0,
              "check_tolerance": args.check_tolerance, "smoke": args.smoke, "budget_s": args.budget_s,
              "stage_budgets_s": {stage: getattr(args, f"{stage}_s") for stage in STAGE_BUDGETS},
              "case_limit_s": args.case_limit_s, "test_limit_s": args.test_limit_s, "tests": args.tests,
              "sync_scale": args.sync_scale}
    return {"schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": env["command"], "machine": machine, "config": config, "results": [],
            "gpu_check": {"environment": env}}


def plan_stages(args: argparse.Namespace, argv: list[str], device: str, report: dict, report_path: Path,
                on_change: Callable[[], None]) -> list[Stage]:
    """The GPU stages in the order they run; their entries are in ``report`` already,
    "not run" until they have results."""
    check = report["gpu_check"]
    report["results"] = timing_items(args, device)
    check["sync"] = sync_items(args)
    kill_after = args.case_limit_s + KILL_GRACE_S
    timing = ItemStage("timing", report["results"], kill_after, "stage", report_path)
    sync = ItemStage("sync", check["sync"], kill_after, "phase", report_path)

    def items(stage: ItemStage) -> Callable[[float, dict], None]:
        return lambda deadline, record: run_item_stage(stage, deadline, record, argv=argv, device=device,
                                                       on_change=on_change)

    def tests(deadline: float, record: dict) -> None:
        run_tests(args, deadline, record, stage_file(report_path, "tests", ".log"))

    return [Stage("timing", args.timing_s, items(timing)), Stage("sync", args.sync_s, items(sync)),
            Stage("tests", args.tests_s, tests)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.stage_spec:
        return stage_child(Path(args.stage_spec))
    start = time.monotonic()
    # Read when triton is first imported, just below, and by every stage's process.
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("gpu_check: ignoring TRITON_INTERPRET: outside --smoke the kernels run compiled", flush=True)
        del os.environ["TRITON_INTERPRET"]
    paths = report_paths(args)

    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    machine, env = environment(argv, device)
    args.check_tolerance = CHECK_TOLERANCE[torch.backends.cuda.matmul.allow_tf32]
    report = new_report(args, device, machine, env)
    check = report["gpu_check"]
    check["files"] = {name: str(path) for name, path in paths.items()}

    def save_now() -> None:
        check["seconds"] = round(time.monotonic() - start, 1)
        save(report, paths["report"])

    def finish(code: int, last: str | None = None) -> int:
        check["problems"] = verdict(report)
        check["exit_status"] = code
        save_now()
        summary = format_summary(report) + (f"\n{last}" if last else "")
        paths["summary"].write_text(summary + "\n")
        print(f"gpu_check: report written to {paths['report']}, this summary to {paths['summary']}")
        print()
        print(summary, flush=True)
        return code

    budgets = ", ".join(f"{stage} {getattr(args, f'{stage}_s'):g} s" for stage in STAGE_BUDGETS)
    print(f"gpu_check: {device}; torch {torch.__version__}; report {paths['report']}; stages {budgets} "
          f"within {args.budget_s:g} s", flush=True)
    check["kernels"] = render_kernels(args, device, paths["kernels"])
    save_now()
    if not cuda and not args.smoke:
        check["sync"] = "not run: no CUDA device"
        return finish(NO_CUDA_EXIT, NO_CUDA_MESSAGE)

    stages = plan_stages(args, argv, device, report, paths["report"], save_now)
    check["stages"] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    try:
        run_stages(stages, start + args.budget_s - FINISH_S, check["stages"], save_now)
    except (Interrupted, KeyboardInterrupt) as exc:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)   # the report first
        for stage in stages:
            check["stages"].setdefault(stage.name, {"status": "not run", "budget_s": stage.budget_s,
                                                    "note": "the run was interrupted"})
        for item in (*report["results"], *check["sync"]):
            if item["error"] == NOT_REACHED:
                item["error"] = "the run was interrupted"
        return finish(1, f"gpu_check: {str(exc) or 'interrupted'}; the report has what had finished")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    return finish(1 if verdict(report) else 0)


if __name__ == "__main__":
    sys.exit(main())
