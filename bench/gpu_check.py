"""The GPU check, one command for a lent GPU machine: ``bash bench/gpu_check.sh``.

It records the environment (GPU, commit and whether the tree was clean, versions) and
renders the Triton source of every layer's forward and backward kernels, as ``pigeon
show-kernels`` does (nothing is compiled or launched). Without a CUDA device (and without
``--smoke``) it stops there with status 2. Then four stages, each a process of its own:

1. **tests**: pytest on the tests marked ``gpu`` and the Triton tests (by default each
   file's subset in :data:`TRITON_TESTS`);
2. **sync**: pytest on ``tests/test_gpu_sync.py``: warm compiled layers never synchronise
   the host with the GPU;
3. **bench**: ``pigeon bench`` on pigeon-triton, pigeon-torch and PyG (and ``ref`` and
   ``inductor`` where pigeon bench has them), each case in a worker of its own;
4. **precision**: ``bench/precision.py --device cuda``: peak GPU memory and time of
   forward + backward in float32 against bfloat16 (RGCN, RGAT, HGT on bgs, the NBFNet
   PNA layer on fb15k), each case in a process of its own.

A test that runs past ``--test-limit-s`` ends pytest (``bench/gpu_check_pytest.py``),
which starts again without it and without the tests done. A stage's deadline is its
budget plus what the stages before it left, never past ``--budget-s``; there its whole
process tree is killed, what it finished is kept (each stage writes as it goes) and the
next stage runs. The report says what each stage produced or why it stopped.

Exit status: 0 when all passed; 1 when something failed, hung or ran out of time; 2
without CUDA. ``--smoke`` runs the flow on the CPU with ``TRITON_INTERPRET=1`` on tiny
graphs (a few Triton tests; the sync test skips; pigeon bench on the CPU's systems).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# No torch, triton or pigeon at module level: --smoke sets TRITON_INTERPRET first.
ROOT = Path(__file__).resolve().parents[1]

# Each Triton test file with its default subset as a -k expression (None: all of it).
# On an H100 the GEMM file takes about 77 s; the layer file is mostly Triton compiling
# layer configurations (3-10 s each), hence the cost model's choices and cheap checks.
TRITON_TESTS = {
    "tests/test_triton_backend.py": "cost-model or single_node_graph or float32 or traversal or content_hashed "
                                    "or clear_error",
    "tests/test_triton_gemm.py": None,
}
SMOKE_TESTS = {"tests/test_triton_gemm.py": "hand_built_gemms_match_torch"}
SYNC_TESTS = "tests/test_gpu_sync.py"
BENCH_SYSTEMS = ("pigeon-triton", "pigeon-torch", "pyg", "ref", "inductor")
STAGE_BUDGETS = {"tests": 170.0, "sync": 50.0, "bench": 160.0, "precision": 100.0}
MIN_START_S = 10.0        # no stage and no pytest restart starts with less time left
MAX_PYTEST_RUNS = 8       # per stage: restarts after tests that hung or crashed
FAILING = ("failed", "error", "timeout", "crashed")
NO_CUDA_EXIT = 2
NO_CUDA_MESSAGE = "gpu_check: no CUDA device; stopping before the GPU stages"
SMOKE = {"models": "rgcn", "scale": 0.01, "dim": 16, "repeat": 1, "precision_models": "rgcn",
         "precision_scale": 0.01}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu_check.sh", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--smoke", action="store_true", help=f"the flow on the CPU, interpreted, on tiny graphs ({SMOKE})")
    add("--json", metavar="FILE", help="the report; its other files go beside it (default: $OUT/gpu_check.json, "
                                       "else bench/results/gpu-check.json or gpu-check-smoke.json)")
    add("--commit", help="the commit the tree was copied from, recorded where the checkout has no .git")
    add("--tests", choices=("subset", "all"), default="subset",
        help="each Triton test file's subset, or every tests/test_triton_*.py whole (default: subset)")
    add("--test-limit-s", type=float, default=90.0, help="time limit of one test (default: 90)")
    add("--models", default="rgcn,rgat,hgt", help="models pigeon bench times (default: %(default)s)")
    add("--datasets", default="aifb", help="graphs pigeon bench times on (default: %(default)s)")
    add("--systems", default=",".join(BENCH_SYSTEMS), help="systems pigeon bench times, those it lacks left "
                                                            "out (default: %(default)s)")
    add("--scale", type=float, default=1.0, help="scale of the benchmark graphs (default: 1)")
    add("--dim", type=int, default=64, help="hidden size (default: 64)")
    add("--repeat", type=int, default=3, help="timed runs per benchmark case (default: 3)")
    add("--case-limit-s", type=float, default=120.0, help="time limit of one benchmark case (default: 120)")
    add("--precision-models", default="rgcn,rgat,hgt,nbfnet", help="bench/precision.py's cases (default: "
                                                                   "%(default)s)")
    add("--precision-scale", type=float, default=1.0, help="scale of its graphs (default: 1)")
    for stage, seconds in STAGE_BUDGETS.items():
        add(f"--{stage}-s", type=float, default=seconds, help=f"budget of the {stage} stage (default: {seconds:g})")
    add("--budget-s", type=float, default=480.0, help="the whole run (default: 480)")
    if "--smoke" in argv:
        parser.set_defaults(**SMOKE)
    return parser.parse_args(argv)


# ---- processes ---------------------------------------------------------------------------
def kill_tree(pid: int) -> None:
    """SIGKILL to ``pid``, every process below it and their process groups: the group
    alone would miss ``pigeon bench``'s workers, each in a session of its own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):   # it ended while being read
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, waiting = [], [pid]
    while waiting:
        member = waiting.pop()
        tree.append(member)
        waiting += children.get(member, [])
    for member in tree:
        try:
            group = os.getpgid(member)
            if group != os.getpgrp():
                os.killpg(group, signal.SIGKILL)
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_command(command: list[str], log: Path, deadline: float, env: dict | None = None, cwd: Path = ROOT) -> dict:
    """``command`` in a session of its own, its output appended to ``log``, until it ends
    or ``deadline`` (``time.monotonic()``). Then its tree is killed, what it left running
    too, while it is a zombie still (so its group cannot be a newcomer's)."""
    begin, killed = time.monotonic(), False
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(env or {})}
    with open(log, "a", encoding="utf-8") as sink:
        sink.write(f"\n$ {shlex.join(command)}\n")
        sink.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                if time.monotonic() >= deadline:
                    killed = True
                    break
                time.sleep(0.1)
        finally:
            kill_tree(proc.pid)
            proc.wait()
    return {"command": shlex.join(command), "returncode": proc.returncode, "killed_at_deadline": killed,
            "seconds": round(time.monotonic() - begin, 1)}


def run_stages(stages: list[tuple], run_deadline: float, records: dict, save, min_start_s: float = MIN_START_S) -> None:
    """Each ``(name, budget, run)`` in turn: ``run(deadline, record)`` until its budget plus
    what the stages before it left unused, never past ``run_deadline``; a stage with less
    than ``min_start_s`` left is not started."""
    planned = time.monotonic()
    for name, budget, run in stages:
        planned += budget
        deadline = min(planned, run_deadline)
        record = records[name] = {"status": "running", "granted_s": round(deadline - time.monotonic(), 1)}
        print(f"gpu_check: {name}: {record['granted_s']:.0f} s ...", flush=True)
        begin = time.monotonic()
        try:
            if deadline - time.monotonic() < min_start_s:
                record.update(status="not run", reason="time budget")
            else:
                run(deadline, record)
        finally:
            if record["status"] == "running":   # an interrupt went through it
                record["status"] = "interrupted"
            record["seconds"] = round(time.monotonic() - begin, 1)
            print(f"gpu_check: {name}: {record['status']} in {record['seconds']:.0f} s", flush=True)
            save()


# ---- pytest --------------------------------------------------------------------------------
def test_selections(args: argparse.Namespace) -> list[list[str]]:
    """pytest's arguments for the tests stage: the tests marked ``gpu`` (every module is
    collected for the marker; a lent machine lacks some packages), then the Triton tests."""
    if args.smoke:
        return [[*SMOKE_TESTS, "-k", " or ".join(SMOKE_TESTS.values())]]
    if args.tests == "all":
        triton = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "tests").glob("test_triton_*.py"))]
    else:
        parts = [Path(f).stem if k is None else f"({Path(f).stem} and ({k}))" for f, k in TRITON_TESTS.items()]
        triton = [*TRITON_TESTS, "-k", " or ".join(parts)]
    return [["tests", "-m", "gpu", f"--ignore={SYNC_TESTS}", "--continue-on-collection-errors"], triton]


def read_events(path: Path, tests: dict, collection_errors: dict) -> str | None:
    """Each test's outcome from the plugin's events into ``tests`` and the modules that
    failed to import into ``collection_errors`` (each pytest run collects again); returns
    the test that had started and not finished, if any."""
    running = None
    lines = path.read_text().splitlines() if path.exists() else []
    for event in map(json.loads, lines):
        if event["event"] == "collect_error":
            collection_errors[event["nodeid"]] = event["message"]
        elif event["event"] == "start":
            running = event["nodeid"]
        else:
            entry = tests.setdefault(event["nodeid"], {"outcome": "passed", "seconds": 0.0, "message": None})
            entry["seconds"] = round(entry["seconds"] + event["seconds"], 3)
            if event["outcome"] == "failed":
                entry.update(outcome="failed" if event["when"] == "call" else "error", message=event["message"])
            elif entry["outcome"] == "passed" and event["outcome"] == "skipped":
                entry["outcome"] = "xfailed" if event["xfail"] else "skipped"
            if event["when"] == "teardown":
                running = None
    return running


def run_tests(selections: list[list[str]], test_limit_s: float, deadline: float, record: dict, log: Path,
              cwd: Path = ROOT) -> None:
    """pytest on each selection until every test ran or ``deadline``. After a test hung
    past ``test_limit_s`` or crashed pytest, it is recorded so and pytest starts again
    without it and without the tests done. Fills ``record``."""
    tests: dict[str, dict] = {}
    record.update(tests=tests, collection_errors={}, runs=[], unfinished=[])
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for selection in selections:
            while True:
                if deadline - time.monotonic() < MIN_START_S or len(record["runs"]) == MAX_PYTEST_RUNS:
                    record["unfinished"].append(shlex.join(selection))
                    break
                events = Path(tmp) / f"events-{len(record['runs'])}.jsonl"
                command = [sys.executable, "-m", "pytest", *selection, "-p", "gpu_check_pytest", "-p",
                           "no:cacheprovider", "-q", "-rfE", *(f"--deselect={nodeid}" for nodeid in tests)]
                env = {"GPU_CHECK_EVENTS": str(events), "GPU_CHECK_TEST_LIMIT_S": str(test_limit_s)}
                run = run_command(command, log, deadline, env, cwd)
                record["runs"].append(run)
                running = read_events(events, tests, record["collection_errors"])
                if run["killed_at_deadline"]:
                    record.update(status="timeout", running_at_deadline=running)
                    return
                if running is None:
                    break
                # faulthandler wrote the stacks, innermost frame first: where it hung.
                hung = Path(f"{events}.hung").read_text().strip()
                tests[running] = {"outcome": "timeout" if hung else "crashed", "seconds": None,
                                  "message": "\n".join(hung.splitlines()[:12]) or f"exit status {run['returncode']}"}
    record["counts"] = dict(Counter(entry["outcome"] for entry in tests.values()))
    broken = [r for r in record["runs"] if r["returncode"] not in (0, 1, 5)]   # 5: nothing collected
    # A module that imports a package this machine lacks (DGL) is listed, not failed.
    imports = [e for e in record["collection_errors"].values() if "ModuleNotFoundError" not in e]
    if broken or imports or any(e["outcome"] in FAILING for e in tests.values()):
        record["status"] = "failed"
    elif record["unfinished"]:
        record["status"] = "incomplete"
    else:
        record["status"] = "passed" if record["counts"].get("passed") else "skipped"


# ---- pigeon bench ----------------------------------------------------------------------------
def bench_systems(wanted: tuple[str, ...], device: str) -> tuple[list[str], dict[str, str]]:
    """The systems of ``wanted`` that pigeon bench has and runs on ``device``, and why
    each other one is left out."""
    from pigeon.bench import available_systems

    systems = available_systems()
    left_out = {name: "not in this pigeon bench" if name not in systems else f"runs on {systems[name].device} only"
                for name in wanted if name not in systems or systems[name].device not in (None, device)}
    return [name for name in wanted if name not in left_out], left_out


def bench_command(args: argparse.Namespace, device: str, systems: list[str], json_path: Path) -> list[str]:
    return [sys.executable, "-m", "pigeon", "bench", "--device", device, "--systems", ",".join(systems),
            "--models", args.models, "--datasets", args.datasets, "--dim", str(args.dim), "--scale",
            str(args.scale), "--repeat", str(args.repeat), "--timeout-s", str(args.case_limit_s), "--json",
            str(json_path), "--no-progress"]


def run_bench(command: list[str], json_path: Path, planned: int, deadline: float, record: dict, log: Path) -> None:
    """pigeon bench until it ends or ``deadline``; it rewrites its results file after
    every case, so a killed run keeps the cases it finished."""
    from pigeon.bench.report import load_report

    json_path.unlink(missing_ok=True)
    run = run_command(command, log, deadline)
    results = load_report(json_path)["results"] if json_path.exists() else []
    record.update(run=run, results_file=str(json_path), planned=planned, finished=len(results), results=results)
    mismatch = any((r.get("check") or {}).get("status") == "mismatch" for r in results)
    pigeon_failed = any(r["system"].startswith("pigeon-") and r["status"] != "ok" for r in results)
    if run["killed_at_deadline"]:
        record["status"] = "timeout"
    elif mismatch or pigeon_failed:
        record["status"] = "failed"
    else:   # 1 is pigeon bench's status for a mismatch
        record["status"] = "passed" if run["returncode"] == 0 and len(results) == planned else "error"


def precision_command(args: argparse.Namespace, device: str, out: Path) -> list[str]:
    """bench/precision.py on ``device``, writing ``out``.json and .md as each case ends."""
    return [sys.executable, str(ROOT / "bench" / "precision.py"), "--device", device, "--models",
            args.precision_models, "--scale", str(args.precision_scale), "--dim", str(args.dim), "--repeat",
            str(args.repeat), "--timeout-s", str(args.case_limit_s), "--out", str(out)]


def run_precision(command: list[str], out: Path, planned: int, deadline: float, record: dict, log: Path) -> None:
    """bench/precision.py until it ends or ``deadline``; its rows go into ``record``."""
    results = out.with_name(out.name + ".json")
    results.unlink(missing_ok=True)
    run = run_command(command, log, deadline)
    rows = json.loads(results.read_text())["rows"] if results.exists() else []
    record.update(run=run, results_file=str(results), planned=planned, finished=len(rows), rows=rows)
    if run["killed_at_deadline"]:
        record["status"] = "timeout"
    elif run["returncode"] != 0 or any(r["status"] != "ok" for r in rows):
        record["status"] = "failed"
    else:
        record["status"] = "passed" if len(rows) == planned else "error"


# ---- the report ------------------------------------------------------------------------------
def environment(args: argparse.Namespace, argv: list[str], device: str) -> dict:
    """The machine and versions as pigeon bench records them, the commit and whether the
    tree was clean, the GPU."""
    import torch

    from pigeon.bench.harness import describe_machine, git_state

    env = {"command": shlex.join(["bash", "bench/gpu_check.sh", *argv]), "device": device,
           "git": git_state() or {"commit": args.commit, "clean": None, "source": "--commit (no git checkout)"},
           "machine": describe_machine(device), "torch_cuda": torch.version.cuda, "gpu": None,
           "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": props.name, "capability": [props.major, props.minor],
                      "memory_gib": round(props.total_memory / 2**30, 1),
                      "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    return env


def render_kernels(args: argparse.Namespace, device: str, path: Path) -> list[dict]:
    """Every layer's forward and backward Triton module for a small aifb graph, written
    to ``path``; one entry each in the report."""
    import torch

    from pigeon.cli import kernel_source
    from pigeon.data import load
    from pigeon.nn.examples import EXAMPLE_LAYERS

    graph = load("aifb", scale=0.02, seed=0).graph.to(device)
    entries, texts = [], []
    for model in EXAMPLE_LAYERS:
        for direction in ("forward", "backward"):
            entry = {"model": model, "direction": direction, "status": "ok"}
            try:
                source = kernel_source(model, "triton", graph, args.dim, 1, torch.float32,
                                       backward=direction == "backward")
                entry["kernels"] = source.count("@triton.jit")
                texts.append(f"# ==== {model} {direction} (aifb x0.02, hidden {args.dim}) ====\n{source}")
            except Exception as exc:  # the report says which and why; the run goes on
                entry.update(status="error", error=f"{type(exc).__name__}: {exc}"[:300])
            entries.append(entry)
    path.write_text("\n\n".join(texts))
    return entries


def problems(report: dict) -> list[str]:
    """What failed, one phrase each; empty when everything passed. GPU tests skip on the
    CPU (--smoke), so a stage whose tests all skipped fails only on CUDA."""
    found = [f"{e['model']} {e['direction']} kernels: {e['error']}" for e in report["kernels"] if e["status"] != "ok"]
    cpu = report["environment"]["device"] != "cuda"
    found += [f"{name} {record['status']}" for name, record in report["stages"].items()
              if record["status"] != "passed" and not (cpu and record["status"] == "skipped")]
    return found


def format_summary(report: dict) -> str:
    """What the run prints last: where it ran, each step's result, pigeon bench's table."""
    from pigeon.bench.report import format_table, load_report

    env = report["environment"]
    versions, git = env["machine"]["versions"], env["git"]
    tree = {True: "clean", False: "uncommitted changes", None: "unknown"}[git["clean"]]
    kernels = [f"{e['model']} {e['direction']} {e.get('kernels', 'ERROR')}" for e in report["kernels"]]
    lines = [f"gpu_check on {(env['gpu'] or {}).get('name', 'no GPU')}: commit {git['commit']} ({tree}); torch "
             f"{versions['torch']}, triton {versions['triton']}, torch_geometric {versions['torch_geometric']}",
             "kernels (Triton functions per module): " + ", ".join(kernels)]
    for name, record in report["stages"].items():
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(record.get("counts", {}).items()))
        done = f"{record['finished']} of {record['planned']} cases" if "planned" in record else counts
        done = done or record.get("reason")
        lines.append(f"{name}: {record['status']} in {record['seconds']:.0f} s" + (f"; {done}" if done else ""))
        lines += [f"  {e['outcome'].upper()} {nodeid}: {(e['message'] or '').splitlines()[0][:160]}"
                  for nodeid, e in record.get("tests", {}).items() if e["outcome"] in FAILING]
        lines += [f"  not collected: {nodeid}: {message.splitlines()[-1][:120]}"
                  for nodeid, message in record.get("collection_errors", {}).items()]
        lines += [f"  unfinished: {selection}" for selection in record.get("unfinished", ())]
        if record.get("running_at_deadline"):
            lines.append(f"  running at the deadline: {record['running_at_deadline']}")
        if record.get("left_out"):
            lines.append("  left out: " + ", ".join(f"{s} ({why})" for s, why in record["left_out"].items()))
        if record.get("finished") and name == "bench":
            lines.append(format_table(load_report(record["results_file"])))
        elif record.get("finished"):   # precision: its markdown table
            lines.append(Path(record["results_file"]).with_suffix(".md").read_text().rstrip())
    verdict = "FAILED: " + "; ".join(report["problems"]) if report["problems"] else "all passed"
    return "\n".join([*lines, f"gpu_check: {verdict} ({report['seconds']:.0f} s)"])


def report_files(args: argparse.Namespace) -> dict[str, Path]:
    """The report and beside it the summary, the kernels, the log of every stage and
    pigeon bench's results and bench/precision.py's (.json, .md): seven files, within what a lent
    machine sends back."""
    if args.json:
        report = Path(args.json).resolve()
    elif os.environ.get("OUT"):
        report = Path(os.environ["OUT"]).resolve() / "gpu_check.json"
    else:
        report = ROOT / "bench" / "results" / ("gpu-check-smoke.json" if args.smoke else "gpu-check.json")
    beside = {"summary": "-summary.txt", "kernels": "-kernels.txt", "log": ".log", "bench": "-bench.json",
              "precision": "-precision"}   # .json and .md
    return {"report": report, **{name: report.with_name(report.stem + end) for name, end in beside.items()}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    start = time.monotonic()
    # Read when triton is first imported, here and in every stage's process.
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    elif os.environ.pop("TRITON_INTERPRET", "0") not in ("", "0"):
        print("gpu_check: ignoring TRITON_INTERPRET: outside --smoke the kernels run compiled", flush=True)
    files = report_files(args)
    files["report"].parent.mkdir(parents=True, exist_ok=True)
    files["log"].write_text(f"gpu_check {shlex.join(argv)}: the output of every stage\n")

    import torch

    from pigeon.bench import MODES
    from pigeon.bench.report import save_report

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    report = {"schema": "pigeon-gpu-check/2", "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "environment": environment(args, argv, device), "config": vars(args),
              "files": {name: str(path) for name, path in files.items()}, "kernels": [], "stages": {}}

    def save() -> None:
        report["seconds"] = round(time.monotonic() - start, 1)
        save_report(report, files["report"])

    def finish(code: int, last: str | None = None) -> int:
        report.update(problems=problems(report), exit_status=code)
        save()
        summary = format_summary(report) + (f"\n{last}" if last else "")
        files["summary"].write_text(summary + "\n")
        print(f"gpu_check: report in {files['report']}\n\n{summary}", flush=True)
        return code

    print(f"gpu_check: {device}; report {files['report']}", flush=True)
    report["kernels"] = render_kernels(args, device, files["kernels"])
    if device != "cuda" and not args.smoke:
        return finish(NO_CUDA_EXIT, NO_CUDA_MESSAGE)
    systems, left_out = bench_systems(tuple(args.systems.split(",")), device)
    planned = len(args.models.split(",")) * len(args.datasets.split(",")) * len(MODES) * len(systems)

    def bench(deadline: float, record: dict) -> None:
        record["left_out"] = left_out
        if not systems:
            record.update(status="not run", reason="none of --systems runs here")
            return
        run_bench(bench_command(args, device, systems, files["bench"]), files["bench"], planned, deadline, record,
                  files["log"])

    stages = [("tests", args.tests_s, lambda d, r: run_tests(test_selections(args), args.test_limit_s, d, r,
                                                              files["log"])),
              ("sync", args.sync_s, lambda d, r: run_tests([[SYNC_TESTS]], args.test_limit_s, d, r, files["log"])),
              ("bench", args.bench_s, bench),
              ("precision", args.precision_s,
               lambda d, r: run_precision(precision_command(args, device, files["precision"]), files["precision"],
                                          2 * len(args.precision_models.split(",")), d, r, files["log"]))]
    # An outer time limit's SIGTERM, like Ctrl-C, ends the stage running (its tree is
    # killed on the way out: its own session would outlive this process) and the report
    # is still written.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run_stages(stages, start + args.budget_s, report["stages"], save)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the report first
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return finish(1, "gpu_check: interrupted; the report has what had finished")
    return finish(1 if problems(report) else 0)


if __name__ == "__main__":
    sys.exit(main())
