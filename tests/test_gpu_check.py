"""``bench/gpu_check.sh``, the GPU check: without CUDA it stops where CUDA is needed and
says so; a stage that hangs is killed at its deadline and the next one runs, with what
the hung one finished in the report; its report and table read right on results made
up here (the GPU run itself is not part of the suite)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def test_without_cuda_it_renders_the_kernels_then_stops_with_status_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TRITON_INTERPRET")}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, PIGEON_CACHE_DIR=str(tmp_path / "cache"))
    report_path = tmp_path / "report.json"
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--json", str(report_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == gpu_check.NO_CUDA_EXIT, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == gpu_check.NO_CUDA_MESSAGE
    report = json.loads(report_path.read_text())
    check = report["gpu_check"]
    assert check["exit_status"] == 2 and check["environment"]["cuda_available"] is False
    assert check["environment"]["command"] == f"python3 bench/gpu_check.py --json {report_path}"
    rendered = {(e["model"], e["direction"]) for e in check["kernels"]}
    assert rendered == {(m, d) for m in gpu_check.SYNC_MODELS for d in ("forward", "backward")}
    assert all(e["status"] in ("ok", "error") for e in check["kernels"])
    # Nothing that needs CUDA ran.
    assert "stages" not in check and report["results"] == []
    assert (tmp_path / "report-summary.txt").read_text().rstrip().endswith(gpu_check.NO_CUDA_MESSAGE)


def _case(system, model="rgcn", mode="infer", status="ok", median_ms=None, check="ok", error=None):
    result = {"system": system, "model": model, "dataset": "aifb", "mode": mode, "dim": 64, "heads": 1,
              "scale": 1.0, "seed": 0, "device": "cuda", "status": status, "error": error,
              "graph": {"nodes": 7262, "edges": 48810, "etypes": 104, "ntypes": 1, "synthetic": True}}
    if status == "ok":
        seconds = median_ms / 1e3
        result.update(median_s=seconds, min_s=0.9 * seconds, max_s=1.2 * seconds, first_call_s=0.5,
                      peak_mib=123.4)
    if check == "n/a":
        result["check"] = {"status": "n/a"}
    elif check is not None:
        result["check"] = {"status": check, "rel_err": 3e-7 if check == "ok" else 0.4, "worst": "grad x",
                           "max_rel_err": 5e-7 if check == "ok" else 0.5}
    return result


def _report(results, **sections):
    machine = {"cpu": "Intel Xeon", "usable_cores": 16, "memory_gib": 128.0, "gpu": "NVIDIA H100 80GB HBM3",
               "versions": {"torch": "2.11.0", "triton": "3.6.0", "torch_geometric": "2.8.0", "dgl": None,
                            "pigeon": "0.1.0", "pigeon_commit": "abc123"}}
    config = {"models": ["rgcn", "rgat"], "datasets": ["aifb"], "modes": ["infer", "train"],
              "systems": list(gpu_check.SYSTEMS), "dim": 64, "heads": 1, "scale": 1.0, "seed": 0, "device": "cuda",
              "threads": None, "repeat": "do_bench 100 ms", "warmup": "25 ms", "warmup_ms": 25.0, "rep_ms": 100.0,
              "check_tolerance": 1e-4}
    from pigeon.bench.harness import SCHEMA

    check = {"environment": {"command": "python3 bench/gpu_check.py"}, **sections}
    return {"schema": SCHEMA, "created": "2026-12-01T00:00:00+00:00", "command": "python3 bench/gpu_check.py",
            "machine": machine, "config": config, "results": results, "gpu_check": check}


FABRICATED = [
    _case("pigeon-triton", median_ms=1.0),
    _case("pigeon-torch", median_ms=2.0),
    _case("pyg", median_ms=3.0),
    _case("pigeon-triton", mode="train", status="error", check=None, error="RuntimeError: triton launch failed"),
    _case("pigeon-torch", mode="train", median_ms=5.0, check="mismatch"),
    _case("pyg", mode="train", status="skipped", check=None, error="time budget"),
    _case("pigeon-triton", model="rgat", median_ms=4.0),
    _case("pyg", model="rgat", median_ms=2.0, check="n/a"),
    _case("pigeon-triton", model="hgt", status="not run", check=None, error="stage killed at its deadline"),
    _case("pyg", model="hgt", status="not run", check=None, error="stage killed at its deadline"),
]


def _stage(status, seconds, budget, runs=1):
    return {"status": status, "seconds": seconds, "budget_s": budget, "granted_s": budget,
            "runs": [{"returncode": 0, "killed": None}] * runs}


def test_table_has_speedups_over_pyg_and_pigeon_torch_and_every_status():
    results = [dict(r) for r in FABRICATED]
    tests = {**_stage("failed", 80.2, 150), "mode": "subset", "passed": 12, "failed": 1, "errors": 0, "skipped": 1,
             "timeout_s": 150, "files": list(gpu_check.TEST_FILES), "stalled": ["tests/a.py::test_hangs"],
             "short_summary": ["FAILED tests/a.py::test_x - AssertionError: 2 != 3"]}
    stages = {"timing": _stage("timeout", 200.0, 200, runs=2), "sync": _stage("done", 31.0, 60), "tests": tests}
    sync = [{"model": "rgcn", "status": "ok"},
            {"model": "hgt", "status": "sync", "phase": "train",
             "error": "RuntimeError: called a synchronizing CUDA operation"},
            {"model": "nbfnet", "status": "not run", "error": "stage killed at its deadline"}]
    kernels = [{"model": "rgcn", "direction": "forward", "status": "ok", "kernels": 4}]
    report = _report(results, stages=stages, sync=sync, kernels=kernels)
    report["gpu_check"]["problems"] = gpu_check.verdict(report)
    text = gpu_check.format_summary(report)
    lines = text.splitlines()

    triton_infer = next(line for line in lines if line.startswith("aifb     rgcn   infer  pigeon-triton"))
    # 3 ms (pyg) and 2 ms (pigeon-torch) over 1 ms; the check's error beside it.
    assert "1 (0.9-1.2)" in triton_infer and "3x" in triton_infer and "2x" in triton_infer
    assert triton_infer.rstrip().endswith("ok 3.0e-07")
    rgat = next(line for line in lines if line.startswith("aifb ") and " rgat " in line)
    assert "0.5x" in rgat   # slower than PyG's (different-maths) RGAT, and said so
    assert any("MISMATCH 4.0e-01 (grad x)" in line and "pigeon-torch" in line for line in lines)
    assert any(line.endswith("  n/a") and "pyg" in line for line in lines)
    assert any(" hgt " in line and "pigeon-triton" in line and "not run" in line for line in lines)
    # Failures one per line; what did not run counted by reason.
    assert "  pigeon-triton rgcn aifb train: error: RuntimeError: triton launch failed" in lines
    assert "  1 case(s) skipped: time budget" in lines
    assert "  2 case(s) not run: stage killed at its deadline" in lines
    assert "stages: timing timeout in 200 s (budget 200 s, had 200 s, 2 processes); sync done in 31 s" in text
    assert "tests: FAILED: 12 passed, 1 failed, 0 errors, 1 skipped, 1 killed over --test-limit-s" in text
    assert "  FAILED tests/a.py::test_x - AssertionError: 2 != 3" in lines
    assert "  HUNG tests/a.py::test_hangs (killed over --test-limit-s)" in lines
    assert ("sync: rgcn ok; hgt SYNC (train: RuntimeError: called a synchronizing CUDA operation); "
            "nbfnet not run (stage killed at its deadline)") in text
    assert lines[-1].startswith("gpu_check: FAILED: timing stage timeout; tests failed; sync check: hgt sync; "
                                "reference check mismatch; 1 pigeon-triton case(s) failed")


def test_verdict_passes_a_clean_run_with_skipped_and_unreached_cases():
    results = [_case("pigeon-triton", median_ms=1.0), _case("pyg", median_ms=2.0),
               _case("pigeon-triton", mode="train", status="skipped", check=None, error="time budget"),
               _case("pigeon-triton", model="hgt", status="not run", check=None, error="not reached")]
    stages = {"timing": _stage("done", 100, 200), "sync": _stage("done", 20, 60),
              "tests": {**_stage("passed", 90, 150), "files": []}}
    report = _report(results, stages=stages, sync=[{"model": "rgcn", "status": "ok"}],
                     kernels=[{"model": "rgcn", "direction": "forward", "status": "ok", "kernels": 3}])
    assert gpu_check.verdict(report) == []
    report["gpu_check"]["problems"] = []
    assert gpu_check.format_summary(report).splitlines()[-1].startswith("gpu_check: all passed")


def test_report_is_a_pigeon_bench_results_file(tmp_path):
    from pigeon.bench.report import format_table, load_report

    path = tmp_path / "out" / "gpu_check.json"
    gpu_check.save(_report([dict(r) for r in FABRICATED]), path)
    table = format_table(load_report(path))
    assert "aifb (synthetic profile): 7,262 nodes" in table
    assert "3.00x vs pyg" in table


# ---- stages in processes of their own ----------------------------------------------------
def _sleeper(folder, seconds, kill_after_s=60.0):
    """A stage of the script's own ``sleep`` kind, with its files in ``folder``: each
    item sleeps its seconds."""
    items = [gpu_check.placeholder(seconds=s) for s in seconds]
    stage = gpu_check.ItemStage("sleep", items, kill_after_s=kill_after_s, step_key="step",
                                report=folder / "report.json", min_start_s=0.5)
    return stage, items


def _runner(stage):
    return lambda deadline, record: gpu_check.run_item_stage(stage, deadline, record, argv=[], device="cpu")


def test_a_hung_stage_is_killed_at_its_deadline_keeps_what_it_finished_and_the_next_stage_runs(tmp_path):
    hung, hung_items = _sleeper(tmp_path / "hangs", [0.1, 3600, 0.1])
    after, after_items = _sleeper(tmp_path / "after", [0.1, 0.1])
    records, saves = {}, []
    begin = time.monotonic()
    gpu_check.run_stages([gpu_check.Stage("hangs", 3.0, _runner(hung)), gpu_check.Stage("after", 20.0, _runner(after))],
                         run_deadline=begin + 60, records=records, on_change=lambda: saves.append(1))
    # The first stage got its 3 s and no more; the second ran to the end.
    assert 2.9 <= records["hangs"]["seconds"] < 6.0
    assert records["hangs"]["status"] == "timeout" and records["hangs"]["runs"][0]["killed"] == "deadline"
    assert records["after"]["status"] == "done" and time.monotonic() - begin < 15
    # What the killed process finished is merged; the rest says why it has no result.
    assert hung_items[0]["status"] == "ok"
    assert hung_items[1]["status"] == "not run"
    assert re.fullmatch(r"stage killed at its deadline after \d+ s at start", hung_items[1]["error"])
    assert hung_items[2] == {"seconds": 0.1, "status": "not run", "error": "stage killed at its deadline"}
    assert [item["status"] for item in after_items] == ["ok", "ok"]
    assert saves and "sleep: item 1: 3600 s ..." in (tmp_path / "hangs" / "report-sleep.log").read_text()
    summary = gpu_check._stages_line(records)
    assert summary.startswith("stages: hangs timeout in 3 s (budget 3 s, had 3 s); after done in")


def test_an_item_that_stops_answering_is_killed_and_a_fresh_process_runs_the_rest(tmp_path):
    stage, items = _sleeper(tmp_path, [0.1, 3600, 0.1], kill_after_s=1.0)
    record = {"status": "running"}
    gpu_check.run_item_stage(stage, time.monotonic() + 30, record, argv=[], device="cpu")
    assert [item["status"] for item in items] == ["ok", "timeout", "ok"]
    assert re.fullmatch(r"killed after \d+ s at start: no result within 1 s", items[1]["error"])
    assert [run["killed"] for run in record["runs"]] == ["stall", None] and record["status"] == "done"


def test_a_stage_with_no_time_left_skips_its_items(tmp_path):
    stage, items = _sleeper(tmp_path, [0.1])
    record = {"status": "running"}
    gpu_check.run_item_stage(stage, time.monotonic() + 0.1, record, argv=[], device="cpu")
    assert record["status"] == "skipped" and record["runs"] == []
    assert items == [{"seconds": 0.1, "status": "skipped", "error": "time budget"}]


def test_the_whole_session_of_a_stage_is_killed(tmp_path):
    pids = []
    run = gpu_check.run_process(["bash", "-c", "sleep 600 & echo $!; wait"], log=tmp_path / "x.log",
                                deadline=time.monotonic() + 1.0, on_output=lambda text: pids.extend(text.split()))
    assert run["killed"] == "deadline" and run["seconds"] < 5
    grandchild = Path(f"/proc/{int(pids[0])}/stat")

    def dead():   # gone, or a zombie waiting for whoever adopted it
        try:
            return grandchild.read_text().split(")")[-1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    give_up = time.monotonic() + 5   # SIGKILL is delivered at once, but exiting takes a moment
    while not dead() and time.monotonic() < give_up:
        time.sleep(0.05)
    assert dead()


# ---- tests -------------------------------------------------------------------------------
def test_pytest_outcomes_and_the_running_test_come_from_the_verbose_lines():
    outcomes = {}
    watcher = gpu_check.PytestWatcher(outcomes)
    watcher.feed("tests/a.py::test_x[1-b] PASSED    [ 33%]\ntests/a.py::test_y ")
    assert watcher.current == "tests/a.py::test_y" and watcher.running_over(60.0) is None
    assert watcher.running_over(0.0) == "tests/a.py::test_y ran over --test-limit-s (0 s)"
    watcher.feed("FAILED   [ 66%]\ntests/b.py::test_z SKIPPED (no GPU) [100%]\n")
    watcher.feed("FAILED tests/a.py::test_y - assert 1 == 2\n")   # -rfE's summary line counts nothing
    assert watcher.current is None
    assert outcomes == {"tests/a.py::test_x[1-b]": ["PASSED"], "tests/a.py::test_y": ["FAILED"],
                        "tests/b.py::test_z": ["SKIPPED"]}
    counts = gpu_check.count_outcomes(outcomes)
    assert (counts["passed"], counts["failed"], counts["skipped"], counts["errors"]) == (1, 1, 1, 0)


def test_a_hung_test_is_killed_and_pytest_runs_the_others(tmp_path):
    (tmp_path / "test_fake.py").write_text(
        "import time\n\n"
        "def test_a():\n    pass\n\n"
        "def test_b_hangs():\n    time.sleep(600)\n\n"
        "def test_c_fails():\n    assert 1 == 2\n")
    args = argparse.Namespace(tests="all", test_limit_s=2.0)
    record = {"granted_s": 60}
    gpu_check.run_tests(args, time.monotonic() + 60, record, tmp_path / "tests.log", files={"test_fake.py": None},
                        rootdir=tmp_path)
    assert record["stalled"] == ["test_fake.py::test_b_hangs"] and len(record["runs"]) == 2
    assert (record["passed"], record["failed"], record["status"]) == (1, 1, "failed")
    assert record["short_summary"] == ["FAILED test_fake.py::test_c_fails - assert 1 == 2"]


def test_the_default_tests_are_a_subset_of_the_layer_file_and_the_whole_gemm_file():
    args = gpu_check.parse_args([])
    command = gpu_check.pytest_command(args, gpu_check.TEST_FILES)
    assert command[command.index("-k") + 1] == gpu_check.subset_expression(gpu_check.TEST_FILES)
    assert {"-v", "-rfE", "--tb=line"} <= set(command) and "-x" not in command
    assert "-k" not in gpu_check.pytest_command(gpu_check.parse_args(["--tests", "all"]), gpu_check.TEST_FILES)
    collected = subprocess.run([*command[:command.index("-v")], "--collect-only", "-q"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120).stdout.splitlines()
    chosen = {line.split("::")[0] for line in collected if "::" in line}
    per_file = {path: sum(line.startswith(path + "::") for line in collected) for path in gpu_check.TEST_FILES}
    assert chosen == set(gpu_check.TEST_FILES) and all(per_file.values())
    assert any("test_single_node_graph" in line for line in collected)
    assert not any("reorder=True,compact=True" in line and "test_triton_backend" in line for line in collected)


# ---- arguments and order -----------------------------------------------------------------
def test_every_model_and_mode_is_timed_on_aifb_before_any_other_graph():
    args = gpu_check.parse_args([])
    items = gpu_check.timing_items(args, "cuda")
    datasets = [item["dataset"] for item in items]
    assert datasets == sorted(datasets, key=gpu_check.DATASETS.index) and datasets[0] == "aifb"
    aifb = {(item["model"], item["mode"], item["system"]) for item in items if item["dataset"] == "aifb"}
    assert len(aifb) == len(gpu_check.MODELS) * len(gpu_check.MODES) * len(gpu_check.SYSTEMS)
    assert all(item["status"] == "not run" for item in items)


def test_stages_run_timing_first_within_their_budgets(tmp_path):
    args = gpu_check.parse_args(["--smoke"])
    args.check_tolerance = 1e-4
    report = {"results": [], "gpu_check": {}}
    stages = gpu_check.plan_stages(args, ["--smoke"], "cpu", report, tmp_path / "r.json", lambda: None)
    assert [(s.name, s.budget_s) for s in stages] == [("timing", 200.0), ("sync", 60.0), ("tests", 150.0)]
    assert sum(s.budget_s for s in stages) <= args.budget_s
    assert [e["model"] for e in report["gpu_check"]["sync"]] == ["rgcn", "nbfnet"]


@pytest.mark.parametrize("argv, out, expected", [
    ([], None, "bench/results/gpu-check.json"),
    (["--smoke"], None, "bench/results/gpu-check-smoke.json"),
    ([], "/tmp/device-out", "/tmp/device-out/gpu_check.json"),
    (["--json", "/tmp/x/r.json"], "/tmp/device-out", "/tmp/x/r.json"),
])
def test_report_path_and_smoke_defaults(monkeypatch, argv, out, expected):
    if out is None:
        monkeypatch.delenv("OUT", raising=False)
    else:
        monkeypatch.setenv("OUT", out)
    args = gpu_check.parse_args(argv)
    path = gpu_check.report_paths(args)["report"]
    assert str(path) == expected or path == ROOT / expected
    assert gpu_check.stage_file(path, "timing", ".log") == path.with_name(path.stem + "-timing.log")
    if "--smoke" in argv:
        assert (args.models, args.datasets, args.scale, args.dim, args.tests) == (("rgcn",), ("aifb",), 0.01, 16,
                                                                                  "collect")
    else:
        assert (args.models, args.datasets, args.dim, args.tests) == (gpu_check.MODELS, gpu_check.DATASETS, 64,
                                                                      "subset")
