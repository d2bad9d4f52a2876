"""``bench/gpu_check.sh``, the GPU check, without a GPU: without CUDA it renders the
kernels, writes its report and stops with status 2; a stage past its deadline is killed
with its whole process tree, keeps what it finished and the next stage runs; a test that
hangs or crashes pytest is recorded and the other tests still run; the verdict and the
summary read right on a report made up here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def _git(*args):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_without_cuda_it_renders_the_kernels_writes_the_report_and_stops_with_status_2(tmp_path):
    from pigeon.nn.examples import EXAMPLE_LAYERS

    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TRITON_INTERPRET")}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, PIGEON_CACHE_DIR=str(tmp_path / "cache"))
    path = tmp_path / "out" / "report.json"
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--json", str(path)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == gpu_check.NO_CUDA_EXIT, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == gpu_check.NO_CUDA_MESSAGE
    report = json.loads(path.read_text())
    assert report["schema"] == "pigeon-gpu-check/2" and report["exit_status"] == 2 and report["problems"] == []
    env = report["environment"]
    assert env["device"] == "cpu" and env["gpu"] is None and env["command"] == f"bash bench/gpu_check.sh --json {path}"
    assert env["git"] == {"commit": _git("rev-parse", "HEAD"),
                          "clean": not _git("status", "--porcelain", "--untracked-files=no")}
    versions = env["machine"]["versions"]
    assert all(versions[name] for name in ("torch", "triton", "torch_geometric", "pigeon"))
    # Every kernel rendered without a GPU, and nothing that needs one ran.
    assert [(e["model"], e["direction"], e["status"]) for e in report["kernels"]] == [
        (model, direction, "ok") for model in EXAMPLE_LAYERS for direction in ("forward", "backward")]
    assert all(e["kernels"] > 0 for e in report["kernels"])
    kernels = (tmp_path / "out" / "report-kernels.txt").read_text()
    assert kernels.count("@triton.jit") == sum(e["kernels"] for e in report["kernels"])
    assert report["stages"] == {} and not (tmp_path / "out" / "report-bench.json").exists()
    assert (tmp_path / "out" / "report-summary.txt").read_text().rstrip().endswith(gpu_check.NO_CUDA_MESSAGE)


# ---- stages and their deadlines ------------------------------------------------------------
def test_a_stage_past_its_deadline_is_killed_and_the_next_stage_runs(tmp_path):
    log = tmp_path / "stages.log"

    def command(text):
        return lambda deadline, record: record.update(
            run=gpu_check.run_command(["bash", "-c", text], log, deadline), status="done")

    records, saves = {}, []
    begin = time.monotonic()
    gpu_check.run_stages([("quick", 2.0, command("echo zero")), ("hangs", 2.0, command("echo one; sleep 600")),
                          ("after", 30.0, command("echo two; sleep 600")), ("late", 30.0, command("echo three"))],
                         run_deadline=begin + 7.0, records=records, save=lambda: saves.append(1), min_start_s=1.0)
    runs = {name: record.get("run") for name, record in records.items()}
    assert not runs["quick"]["killed_at_deadline"] and runs["quick"]["returncode"] == 0
    # Its own budget and what the stage before it left unused; then it is killed.
    assert runs["hangs"]["killed_at_deadline"] and 3.5 <= runs["hangs"]["seconds"] < 5.5
    # The next stage runs, until the whole run's deadline; a stage with no time left is not started.
    assert runs["after"]["killed_at_deadline"] and time.monotonic() - begin < 9.5
    assert records["late"]["status"] == "not run" and records["late"]["reason"] == "time budget"
    assert records["late"]["granted_s"] < 1.0 and len(saves) == 4
    assert log.read_text().split() == ["$", "bash", "-c", "'echo", "zero'", "zero", "$", "bash", "-c", "'echo", "one;",
                                       "sleep", "600'", "one", "$", "bash", "-c", "'echo", "two;", "sleep", "600'",
                                       "two"]


def test_the_whole_tree_is_killed_workers_in_sessions_of_their_own_too(tmp_path):
    # pigeon bench starts each case's worker with a session of its own, as setsid does.
    pid_file = tmp_path / "worker.pid"
    run = gpu_check.run_command(["bash", "-c", f"setsid sleep 600 & echo $! > {pid_file}; sleep 600"],
                                tmp_path / "log", time.monotonic() + 1.5)
    assert run["killed_at_deadline"]
    worker = Path(f"/proc/{int(pid_file.read_text())}/stat")

    def gone():   # or a zombie waiting for whoever adopted it
        try:
            return worker.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    give_up = time.monotonic() + 5
    while not gone() and time.monotonic() < give_up:
        time.sleep(0.05)
    assert gone()


def test_a_killed_bench_keeps_the_cases_it_finished(tmp_path):
    from pigeon.bench.harness import SCHEMA

    results = tmp_path / "bench.json"
    case = {"system": "pigeon-triton", "model": "rgcn", "dataset": "aifb", "mode": "infer", "status": "ok",
            "median_s": 0.001, "check": {"status": "ok"}}
    # What pigeon bench does: the results file rewritten after each case, then the next case hangs.
    writer = (f"import json, time; json.dump({{'schema': {SCHEMA!r}, 'results': [{case!r}]}}, "
              f"open({str(results)!r}, 'w')); time.sleep(600)")
    record = {}
    gpu_check.run_bench([sys.executable, "-c", writer], results, 3, time.monotonic() + 3.0, record, tmp_path / "log")
    assert record["status"] == "timeout" and record["run"]["killed_at_deadline"]
    assert (record["planned"], record["finished"], record["results"]) == (3, 1, [case])


# ---- pytest ----------------------------------------------------------------------------------
FAKE_TESTS = """
import os, signal, time

def test_a():
    pass

def test_b_hangs():
    time.sleep(600)

def test_c_fails():
    assert 1 == 2

def test_d_crashes():
    os.kill(os.getpid(), signal.SIGSEGV)

def test_e():
    pass
"""


def test_a_hung_or_crashing_test_is_recorded_and_pytest_runs_the_others(tmp_path):
    (tmp_path / "test_fake.py").write_text(FAKE_TESTS)
    (tmp_path / "test_needs_dgl.py").write_text("import not_a_package_here\n")
    record = {}
    selection = ["test_fake.py", "test_needs_dgl.py", "--continue-on-collection-errors"]
    gpu_check.run_tests([selection], 2.0, time.monotonic() + 120, record, tmp_path / "log", cwd=tmp_path)
    tests = record["tests"]
    assert {nodeid: e["outcome"] for nodeid, e in tests.items()} == {
        "test_fake.py::test_a": "passed", "test_fake.py::test_b_hangs": "timeout",
        "test_fake.py::test_c_fails": "failed", "test_fake.py::test_d_crashes": "crashed",
        "test_fake.py::test_e": "passed"}
    # Where it hung, from faulthandler; what failed, from pytest; one pytest per hang or crash.
    assert "test_b_hangs" in tests["test_fake.py::test_b_hangs"]["message"]
    assert tests["test_fake.py::test_c_fails"]["message"] == "assert 1 == 2"
    assert len(record["runs"]) == 3 and record["runs"][-1]["returncode"] == 1
    assert list(record["collection_errors"]) == ["test_needs_dgl.py"]
    assert record["status"] == "failed" and record["counts"] == {"passed": 2, "timeout": 1, "failed": 1, "crashed": 1}


def test_a_module_that_needs_a_missing_package_is_listed_not_failed(tmp_path):
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    pass\n")
    (tmp_path / "test_needs_dgl.py").write_text("import not_a_package_here\n")
    (tmp_path / "test_broken.py").write_text("def test_x(:\n")
    record = {}
    selection = ["test_ok.py", "test_needs_dgl.py", "--continue-on-collection-errors"]
    gpu_check.run_tests([selection], 60.0, time.monotonic() + 120, record, tmp_path / "log", cwd=tmp_path)
    assert record["status"] == "passed" and len(record["collection_errors"]) == 1
    broken = {}
    gpu_check.run_tests([["test_ok.py", "test_broken.py", "--continue-on-collection-errors"]], 60.0,
                        time.monotonic() + 120, broken, tmp_path / "log", cwd=tmp_path)
    assert broken["status"] == "failed" and "SyntaxError" in broken["collection_errors"]["test_broken.py"]


def test_the_default_selections_pick_gpu_tests_and_part_of_each_triton_file():
    selections = gpu_check.test_selections(gpu_check.parse_args([]))
    assert selections[0][:3] == ["tests", "-m", "gpu"] and f"--ignore={gpu_check.SYNC_TESTS}" in selections[0]
    triton = selections[1]
    collected = subprocess.run([sys.executable, "-m", "pytest", *triton, "--collect-only", "-q", "-p",
                                "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120).stdout.splitlines()
    per_file = {path: sum(line.startswith(path + "::") for line in collected) for path in gpu_check.TRITON_TESTS}
    assert all(per_file.values()), per_file
    assert any("test_single_node_graph" in line for line in collected)
    assert not any("reorder=True,compact=True" in line and "test_triton_backend" in line for line in collected)
    every = gpu_check.test_selections(gpu_check.parse_args(["--tests", "all"]))[1]
    assert "-k" not in every and set(gpu_check.TRITON_TESTS) <= set(every)


# ---- pigeon bench ------------------------------------------------------------------------------
def test_bench_runs_the_systems_pigeon_bench_has_on_the_device_with_a_command_it_accepts(tmp_path):
    from pigeon.bench import available_systems
    from pigeon.cli import build_parser

    systems, left_out = gpu_check.bench_systems(gpu_check.BENCH_SYSTEMS, "cpu")
    assert left_out["pigeon-triton"] == "runs on cuda only"
    assert systems == [s for s in gpu_check.BENCH_SYSTEMS if s in available_systems() and s != "pigeon-triton"]
    assert all(left_out[s] == "not in this pigeon bench" for s in gpu_check.BENCH_SYSTEMS
               if s not in available_systems())
    args = gpu_check.parse_args(["--smoke"])
    command = gpu_check.bench_command(args, "cuda", ["pigeon-triton", "pyg"], tmp_path / "b.json")
    assert command[:4] == [sys.executable, "-m", "pigeon", "bench"]
    parsed = build_parser().parse_args(command[3:])
    assert (parsed.device, parsed.systems, parsed.models, parsed.repeat, parsed.json) == (
        "cuda", ("pigeon-triton", "pyg"), ("rgcn",), 1, str(tmp_path / "b.json"))


def test_the_precision_stage_runs_bench_precision_and_keeps_its_rows(tmp_path, capsys):
    # The command as the stage makes it is one bench/precision.py takes ...
    spec = importlib.util.spec_from_file_location("precision", ROOT / "bench" / "precision.py")
    precision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(precision)
    command = gpu_check.precision_command(gpu_check.parse_args(["--smoke"]), "cuda", tmp_path / "p")
    assert command[:2] == [sys.executable, str(ROOT / "bench" / "precision.py")]
    parsed = precision.build_parser().parse_args(command[2:])
    assert (parsed.device, parsed.models, parsed.scale, parsed.out) == ("cuda", "rgcn", 0.01, str(tmp_path / "p"))
    if not torch.cuda.is_available():   # asked for a GPU it does not have, it says so at once
        with pytest.raises(SystemExit) as exit_info:
            precision.main(command[2:])
        assert exit_info.value.code == 2
        assert "Expected a CUDA device for --device cuda" in capsys.readouterr().err
    # ... and the stage reads the rows it wrote (a stand-in here: bench/precision.py on a
    # GPU is the stage's job), failing on a case that did not run.
    rows = [{"model": "rgcn", "dtype": d, "status": s} for d, s in (("float32", "ok"), ("bfloat16", "oom"))]
    fake = tmp_path / "fake.py"
    fake.write_text(f"import json, sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
                    f"rows = {rows!r}[:int(sys.argv[1])]\n"
                    f"open(out + '.json', 'w').write(json.dumps({{'rows': rows}}))\n"
                    f"open(out + '.md', 'w').write('| rgcn |')\n")
    for written, status in ((1, "passed"), (2, "failed")):
        record = {}
        gpu_check.run_precision([sys.executable, str(fake), str(written), "--out", str(tmp_path / "p")],
                                tmp_path / "p", 1 if written == 1 else 2, time.monotonic() + 60, record,
                                tmp_path / "log")
        assert record["status"] == status and record["finished"] == written and record["rows"] == rows[:written]
    record = {}
    gpu_check.run_precision([sys.executable, str(fake), "1", "--out", str(tmp_path / "p")], tmp_path / "p", 2,
                            time.monotonic() + 60, record, tmp_path / "log")
    assert record["status"] == "error"   # it ended without every case


# ---- verdict and summary ---------------------------------------------------------------------
def _report(device, **stages):
    versions = {"torch": "2.11.0", "triton": "3.6.0", "torch_geometric": "2.8.0", "pigeon": "0.1.0"}
    return {"environment": {"device": device, "gpu": {"name": "NVIDIA H200"} if device == "cuda" else None,
                            "git": {"commit": "abc123", "clean": True}, "machine": {"versions": versions}},
            "kernels": [{"model": "rgcn", "direction": "forward", "status": "ok", "kernels": 5}],
            "stages": stages, "seconds": 300.0}


def test_the_verdict_and_the_summary_say_what_failed_and_where(tmp_path):
    tests = {"status": "failed", "seconds": 80.0, "counts": {"passed": 12, "timeout": 1, "failed": 1},
             "tests": {"tests/a.py::test_x": {"outcome": "failed", "message": "assert 2 == 3"},
                       "tests/a.py::test_y": {"outcome": "timeout", "message": "Timeout (0:01:30)!\nThread 0x1"},
                       "tests/a.py::test_z": {"outcome": "passed", "message": None}},
             "collection_errors": {"tests/test_interop.py": "E   ModuleNotFoundError: No module named 'dgl'"}}
    sync = {"status": "skipped", "seconds": 1.0, "counts": {"skipped": 4}}
    bench = {"status": "timeout", "seconds": 180.0, "planned": 18, "finished": 0,
             "left_out": {"inductor": "not in this pigeon bench"}}
    (tmp_path / "p.md").write_text("| rgcn | bgs | bfloat16 | 3 (3-3) | 40 | 2.0e-03 | 0.9x | 0.5x |\n")
    precision = {"status": "passed", "seconds": 50.0, "planned": 2, "finished": 2,
                 "results_file": str(tmp_path / "p.json")}
    report = _report("cuda", tests=tests, sync=sync, bench=bench, precision=precision)
    report["problems"] = gpu_check.problems(report)
    assert report["problems"] == ["tests failed", "sync skipped", "bench timeout"]
    lines = gpu_check.format_summary(report).splitlines()
    assert lines[0] == ("gpu_check on NVIDIA H200: commit abc123 (clean); torch 2.11.0, triton 3.6.0, "
                        "torch_geometric 2.8.0")
    assert "tests: failed in 80 s; 1 failed, 12 passed, 1 timeout" in lines
    assert "  FAILED tests/a.py::test_x: assert 2 == 3" in lines
    assert "  TIMEOUT tests/a.py::test_y: Timeout (0:01:30)!" in lines
    assert "  not collected: tests/test_interop.py: E   ModuleNotFoundError: No module named 'dgl'" in lines
    assert "bench: timeout in 180 s; 0 of 18 cases" in lines
    assert "precision: passed in 50 s; 2 of 2 cases" in lines and "| rgcn | bgs | bfloat16 |" in lines[-2]
    assert lines[-1] == "gpu_check: FAILED: tests failed; sync skipped; bench timeout (300 s)"
    # GPU tests skip on the CPU (--smoke): there, that is no failure.
    smoke = _report("cpu", sync=sync)
    assert gpu_check.problems(smoke) == []


@pytest.mark.parametrize("argv, out, expected", [
    ([], None, ROOT / "bench/results/gpu-check.json"),
    (["--smoke"], None, ROOT / "bench/results/gpu-check-smoke.json"),
    ([], "/tmp/device-out", Path("/tmp/device-out/gpu_check.json")),
    (["--json", "/tmp/x/r.json"], "/tmp/device-out", Path("/tmp/x/r.json")),
])
def test_the_report_and_the_files_beside_it(monkeypatch, argv, out, expected):
    if out is None:
        monkeypatch.delenv("OUT", raising=False)
    else:
        monkeypatch.setenv("OUT", out)
    files = gpu_check.report_files(gpu_check.parse_args(argv))
    assert files["report"] == expected
    # At most 8 files come back from a lent machine: these 5, and precision's .json and .md.
    assert {name: path.name for name, path in files.items() if name != "report"} == {
        "summary": f"{expected.stem}-summary.txt", "kernels": f"{expected.stem}-kernels.txt",
        "log": f"{expected.stem}.log", "bench": f"{expected.stem}-bench.json",
        "precision": f"{expected.stem}-precision"}
