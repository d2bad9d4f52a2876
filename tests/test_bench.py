"""``pigeon bench``: the systems against the reference, the worker's failure handling,
the reports, and the command line run as a user runs it (in a subprocess).

Sizes are tiny (aifb at 2 %, the 4-node-type mag profile at 0.2 %, hidden 8) so the
file stays fast on 2 cores; speed itself is measured by ``pigeon bench``, not here.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import pigeon.runtime.compiled
from pigeon.bench import Case, Config, harness, run_cases
from pigeon.bench.harness import SCHEMA, classify_exit
from pigeon.bench.provenance import tuning_state
from pigeon.bench.report import (best_baselines, format_markdown, format_table, headline, load_report, other_maths,
                                 save_report, speedup, structure_table)
from pigeon.bench.systems import MODELS, MODES, all_systems, available_systems, default_systems
from pigeon.bench.worker import check_against_reference, load_graph, prepare
from pigeon.data.profiles import structure_stats
from pigeon.cli import build_parser, main
from pigeon.data import load

TINY = ("--datasets", "aifb", "--scale", "0.02", "--dim", "8", "--heads", "2",
        "--repeat", "2", "--warmup", "0", "--no-progress")


def _pigeon(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pigeon", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


# ---- every system computes what the reference computes ---------------------------------
# Systems this machine can run (pigeon-triton needs CUDA: tests/test_triton_backend.py
# covers it on the CPU through the interpreter).
RUNNABLE = [name for name, s in available_systems().items() if s.device != "cuda" or torch.cuda.is_available()]


@pytest.mark.parametrize("system_name", RUNNABLE)
def test_every_system_runs_each_model_and_matches_the_reference_where_the_maths_is_the_same(system_name):
    system = available_systems()[system_name]
    for model in MODELS:
        for mode in MODES:
            case = Case(system_name, model, "mag", mode, dim=8, heads=2, scale=0.002, seed=3,
                        device=system.device or "cpu")
            system, workload, runner, synthetic = prepare(case)
            assert synthetic
            check = check_against_reference(system, runner, workload, mode == "train",
                                            torch.Generator().manual_seed(4))
            expected = "ok" if model in system.same_maths else "n/a"
            assert check["status"] == expected, (model, mode, check)
            if expected == "ok":
                assert check["max_rel_err"] <= 1e-4, (model, mode, check)
            # Every system runs, checked or not: forward and backward, one row per node.
            x = workload.x.detach().clone().requires_grad_()
            out, rows = runner.to_global(runner.forward(runner.to_native(x)))
            assert out.shape == (workload.graph.num_nodes, 8) and torch.isfinite(out).all()
            selected = out if rows is None else out[rows]
            selected.square().sum().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("system_name,model,tamper", [
    ("pigeon-torch", "rgcn", lambda module: module.bias.add_(0.5)),
    ("pyg", "hgt", lambda module: module.skip["n0"].add_(1.0)),
])
def test_the_check_reports_a_layer_that_computes_something_else(system_name, model, tamper):
    system, workload, runner, _ = prepare(Case(system_name, model, "mag", "train", dim=8, heads=2, scale=0.002))
    with torch.no_grad():
        tamper(runner.module)
    check = check_against_reference(system, runner, workload, True, torch.Generator().manual_seed(0))
    assert check["status"] == "mismatch" and check["max_rel_err"] > check["tolerance"], check


def test_systems_follow_the_compiled_backends(monkeypatch):
    systems = available_systems()
    baselines = ["dgl", "dgl-ops", "pyg", "ref", "inductor"]
    assert list(systems) == ["pigeon-torch", "pigeon-cpu", "pigeon-triton", *baselines]
    assert systems["pigeon-triton"].device == "cuda" and systems["pigeon-torch"].device is None
    assert default_systems("cpu") == ["pigeon-torch", "pigeon-cpu", "dgl", "pyg"]
    assert default_systems("cuda") == ["pigeon-torch", "pigeon-triton", "dgl", "pyg"]
    assert all_systems("cpu") == ["pigeon-torch", "pigeon-cpu", *baselines]
    assert [name for name, s in systems.items() if s.is_baseline] == baselines
    # Other maths: DGL's RGAT and HGT layers, PyG's RGAT.
    assert {name: sorted(set(MODELS) - s.same_maths) for name, s in systems.items() if s.is_baseline} == {
        "dgl": ["hgt", "rgat"], "dgl-ops": [], "pyg": ["rgat"], "ref": [], "inductor": []}
    # A backend list that differs (torch and triton gone, a new backend for any device,
    # the selector kept): the systems and the defaults follow it, with no change to the bench.
    monkeypatch.setattr(pigeon.runtime.compiled, "BACKENDS", ("cpu", "vulkan", "auto"))
    systems = available_systems()
    assert list(systems) == ["pigeon-cpu", "pigeon-vulkan", *baselines]
    assert systems["pigeon-cpu"].device == "cpu" and systems["pigeon-vulkan"].device is None
    assert default_systems("cpu") == ["pigeon-cpu", "pigeon-vulkan", "dgl", "pyg"]
    assert default_systems("cuda") == ["pigeon-vulkan", "dgl", "pyg"]


# ---- failures are results -------------------------------------------------------------
def test_a_baseline_out_of_memory_and_a_hang_are_recorded_and_the_run_goes_on():
    starved = Case("pyg", "rgcn", "aifb", "infer", dim=32, scale=0.3, repeat=1, memory_gb=0.3)
    hung = Case("dgl", "rgcn", "aifb", "infer", dim=8, scale=0.02, repeat=1, timeout_s=0.5)
    fine = Case("pigeon-torch", "rgcn", "aifb", "infer", dim=8, scale=0.02, repeat=2)
    seen = []
    results = run_cases([starved, hung, fine], progress=False, on_result=seen.append)
    assert seen == results
    oom, timeout, ok = results
    assert oom["status"] == "OOM" and ("allocate" in oom["error"] or "MemoryError" in oom["error"]), oom
    assert oom["stage"] == "done" and oom["import_vm_mib"] > 300  # the cap was below what imports mapped
    assert timeout["status"] == "timeout" and "0.5 s" in timeout["error"], timeout
    assert ok["status"] == "ok" and ok["check"]["status"] == "ok", ok
    assert len(ok["times_s"]) == 2 and ok["min_s"] <= ok["median_s"] <= ok["max_s"]


@pytest.mark.parametrize("returncode,output,status,words", [
    (-9, "", "OOM", "SIGKILL"),
    (-6, "terminate called after throwing an instance of 'std::bad_alloc'\n", "OOM", "SIGABRT"),
    (-11, "", "error", "killed by SIGSEGV"),
    (-6, "python: libxsmm_main.c:2404: Assertion `registry' failed.\nUptime: 0.002 s\n", "error", "Assertion"),
    (1, "Traceback (most recent call last):\nValueError: boom\n", "error", "exit status 1: ValueError: boom"),
    (1, "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB\n", "OOM", "8 GB"),
])
def test_a_worker_that_died_is_classified_from_its_exit(returncode, output, status, words):
    got_status, error = classify_exit(returncode, output)
    assert got_status == status and words in error, error


# ---- the command line -----------------------------------------------------------------
def test_bench_command_writes_results_markdown_chart_and_provenance(tmp_path, capsys):
    # One real run through the command line (RGCN training, 2 systems), checked four
    # ways: its results and files, their provenance, the floors, and --compare against
    # it. A baseline of other maths (DGL's RGAT) is checked through the worker above and
    # in the report below (test_the_headline_is_over_same_maths_baselines...).
    out = tmp_path
    result = _pigeon("bench", "--models", "rgcn", "--modes", "train", "--systems", "pigeon-torch,dgl",
                     *TINY, "--json", out / "run.json", "--markdown", out / "run.md", "--plot", out / "run.png")
    assert result.returncode == 0, result.stderr
    report = load_report(out / "run.json")
    assert report["schema"] == SCHEMA
    assert report["command"].startswith("pigeon bench --models rgcn --datasets aifb --modes train "
                                         "--systems pigeon-torch,dgl --dim 8 --heads 2 --scale 0.02")
    machine = report["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1 and machine["memory_gib"] > 0
    assert machine["versions"]["torch"] == torch.__version__ and machine["versions"]["dgl"]
    assert report["config"]["dim"] == 8 and report["config"]["repeat"] == 2

    nodes = load("aifb", scale=0.02).graph.num_nodes
    checks = {}
    for r in report["results"]:
        assert r["status"] == "ok" and r["error"] is None and r["stage"] == "done", r
        assert len(r["times_s"]) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["first_call_s"] > 0 and r["peak_mib"] > 100 and r["peak_source"] == "VmHWM"
        assert r["graph"]["nodes"] == nodes and r["graph"]["synthetic"] and r["other_cores_busy"] >= 0
        checks[r["system"], r["model"]] = r["check"]["status"]
    assert checks == {("pigeon-torch", "rgcn"): "ok", ("dgl", "rgcn"): "ok"}
    assert {(r["system"], r["model"]): r["same_maths"] for r in report["results"]} == {
        ("pigeon-torch", "rgcn"): True, ("dgl", "rgcn"): True}

    table = result.stdout
    assert "x vs dgl" in table and "best baseline" in table
    assert f"{nodes:,} nodes" in table
    markdown = (out / "run.md").read_text()
    assert report["command"] in markdown and "| model | mode | system |" in markdown
    assert markdown.count("| rgcn | train |") == 2
    assert (out / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # tqdm draws on stderr only when asked; --no-progress keeps it quiet.
    assert "case/s" not in result.stderr
    assert "x floor" in table
    _check_provenance(out)
    _check_floors(report)
    _check_compare(out, capsys)


def _check_provenance(out):
    report = load_report(out / "run.json")
    p = report["provenance"]
    assert len(p["commit"]) == 40 and isinstance(p["clean"], bool)
    assert p["versions"] == {"torch": torch.__version__, "dgl": report["machine"]["versions"]["dgl"],
                             "torch_geometric": report["machine"]["versions"]["torch_geometric"]}
    assert p["versions"]["dgl"] and p["versions"]["torch_geometric"]
    assert p["threads"]["per_case"] >= 1 and "OMP_NUM_THREADS" in p["threads"]
    assert p["tuning_cache"]["state"] == "fresh-empty" and "PIGEON_AUTOTUNE=0" in p["tuning_cache"]["how"]
    assert p["cost_model_rates"]["matmul_gflops"] > 0 and p["cost_model_rates"]["bandwidth_gbs"] > 0
    for busy in (p["load_at_start"], p["load_at_end"]):
        assert busy["loadavg_1min"] >= 0 and busy["other_cores_busy"] >= 0 and isinstance(busy["busiest"], list)
    assert p["max_other_cores_busy_in_timed_runs"] >= 0
    for r in report["results"]:
        assert r["threads"] >= 1 and r["autotune"] is False and r["other_cores_busy"] >= 0
    markdown = (out / "run.md").read_text()
    assert f"commit {p['commit']}" in markdown and "tuning cache: fresh and empty" in markdown


def _check_floors(report):
    """The measured machine, and one floor per case: the same work for every system of a
    case, and what the worker's own counting gives in this process."""
    from pigeon.bench.worker import case_work

    measured = report["machine"]["measured"]
    assert measured["matmul_gflops"] > 0 and measured["bandwidth_gbs"] > 0
    for r in report["results"]:
        assert "floor_error" not in r, r
        assert r["floor_bound"] in ("compute", "memory") and r["machine_floor_bound"] in ("compute", "memory")
        expected = max(r["flops"] / (measured["matmul_gflops"] * 1e9), r["bytes"] / (measured["bandwidth_gbs"] * 1e9))
        assert r["floor_s"] == pytest.approx(expected)
        assert 0 < r["machine_floor_s"] <= r["floor_s"]
    # The machine floor is the same for every system of a case; the plan floor is the
    # work of the plan of the system's backend (a baseline's: pigeon-cpu's).
    by_model = {}
    for r in report["results"]:
        by_model.setdefault(r["model"], {})[r["system"]] = r
    for model, rows in by_model.items():
        for key in ("machine_flops", "machine_bytes"):
            assert rows["pigeon-torch"][key] == rows["dgl"][key], (model, key)
    # What the worker counted for DGL is what a pigeon-cpu layer built for the case gives here.
    case = Case("dgl", "rgcn", "aifb", "train", dim=8, heads=2, scale=0.02)
    _, workload, runner, _ = prepare(case)
    work, machine = case_work(case, workload, runner)
    counted = by_model["rgcn"]["dgl"]
    assert (work.flops, work.bytes) == (counted["flops"], counted["bytes"])
    assert (machine.flops, machine.bytes) == (counted["machine_flops"], counted["machine_bytes"])


def test_tuned_runs_record_the_cache_they_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / "a.json").write_text("{}")
    state = tuning_state(True)
    assert state["state"] == "tuned" and state["entries"] == 1 and state["cache"] == str(tmp_path / "tune")
    (tmp_path / "tune" / "a.json").write_text('{"changed": 1}')
    assert tuning_state(True)["digest"] != state["digest"]
    assert tuning_state(False)["state"] == "fresh-empty"


def _check_compare(out, capsys):
    """--compare prints the ratio of each case of a run to another's."""
    old = load_report(out / "run.json")
    new = copy.deepcopy(old)
    for r in new["results"]:
        r["median_s"] *= 2
    new["results"].pop()
    save_report(new, out / "new.json")
    assert main(["bench", "--from-json", str(out / "new.json"), "--compare", str(out / "run.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("2.00x (slower)") == len(new["results"]) == 1
    assert "compared with" in printed and "pigeon-torch rgcn aifb train" in printed


def test_unknown_names_fail_at_once_with_the_valid_ones(capsys):
    result = _pigeon("bench", "--models", "rgcn,gcn")
    assert result.returncode == 2
    assert "unknown model 'gcn'; valid: rgcn, rgat, hgt" in result.stderr
    for option, bad, listed in [("--datasets", "cora", "aifb"), ("--modes", "eval", "infer, train"),
                                ("--systems", "pigeon-nonexistent", "pigeon.runtime.compiled.BACKENDS"),
                                ("--systems", "jax", "inductor")]:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["bench", option, bad])
        assert exit_info.value.code == 2
        message = capsys.readouterr().err
        assert f"unknown {option[2:-1]} {bad!r}" in message and listed in message, message


def test_settings_that_cannot_run_fail_before_any_case(tmp_path, capsys):
    assert main(["bench", "--dim", "10", "--heads", "3", "--json", str(tmp_path / "x.json")]) == 2
    assert "--dim must be divisible by --heads (got dim 10, heads 3)" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "other.json").write_text(json.dumps({"results": []}))
    assert main(["bench", "--compare", str(tmp_path / "other.json")]) == 2
    assert f"to have schema {SCHEMA!r} (got None)" in capsys.readouterr().err


# A worker that takes ``first`` seconds to its first call, then ``rest`` seconds more:
# what a real one does on a machine that other work slows down, without the machine.
_SLOWED_WORKER = textwrap.dedent("""
    import json, os, sys, time

    out, first, rest = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])

    def write(result):
        with open(out + ".tmp", "w") as handle:
            json.dump(result, handle)
        os.replace(out + ".tmp", out)

    time.sleep(first)
    write({"stage": "check", "status": "error", "error": None, "first_call_s": first})
    time.sleep(rest)
    write({"stage": "done", "status": "ok", "error": None, "first_call_s": first})
""")


def _slowed(monkeypatch, first: float, rest: float) -> None:
    monkeypatch.setattr(harness, "worker_command",
                        lambda case, out: [sys.executable, "-c", _SLOWED_WORKER, str(out), str(first), str(rest)])


def test_a_case_slowed_after_its_first_call_gets_the_time_the_first_call_predicts(monkeypatch):
    # 0.4 s to the first call fits the 2 s limit; the whole case (about 3 s) does not.
    # The rest may take 2 x 0.4 s x (3 check calls + 1 warm-up + 1 timed run) = 4 s.
    _slowed(monkeypatch, first=0.4, rest=2.5)
    result = harness.run_case(Case("pigeon-cpu", "rgcn", "aifb", "train", repeat=1, warmup=1, timeout_s=2.0))
    assert result["status"] == "ok", result
    assert result["wall_s"] > 2.0
    assert harness.rest_of_case_s(Case("x", "rgcn", "aifb", "train", repeat=1, warmup=1), 0.4) == pytest.approx(4.0)


def test_a_case_that_hangs_after_its_first_call_still_times_out(monkeypatch):
    _slowed(monkeypatch, first=0.2, rest=600)
    result = harness.run_case(Case("pigeon-cpu", "rgcn", "aifb", "train", repeat=1, warmup=1, timeout_s=2.0))
    assert result["status"] == "timeout" and result["wall_s"] < 30, result
    assert "the first call (0.2 s)" in result["error"] and "(stage: check)" in result["error"], result
    assert "other processes kept" in result["error"]


def test_a_timeout_says_plainly_when_the_machine_was_busy():
    assert harness.busy_note(1.6, 2).startswith("; other processes kept 1.6 of 2 cores busy meanwhile: the machine "
                                                "was busy, so this timeout says little about the system")
    assert harness.busy_note(0.1, 2) == "; other processes kept 0.1 of 2 cores busy meanwhile"
    assert harness.busy_note(None, 2) == ""


# ---- the report -------------------------------------------------------------------------
def _result(system: str, status: str = "ok", median: float | None = None, mode: str = "infer") -> dict:
    result = {"system": system, "model": "rgcn", "dataset": "aifb", "mode": mode, "dim": 8, "heads": 1,
              "scale": 1.0, "device": "cpu", "status": status, "error": None if status == "ok" else "x",
              "check": {"status": "ok"}}
    if median is not None:
        result.update(median_s=median, min_s=median, max_s=median, peak_mib=500.0, first_call_s=median)
    return result


def test_the_headline_is_over_same_maths_baselines_and_other_maths_is_shown_apart():
    def result(system, model, median, same=True, status="ok"):
        r = _result(system, status, median)
        r.update(model=model, same_maths=same)
        return r

    results = [
        result("pigeon-cpu", "rgcn", 0.010), result("ref", "rgcn", 0.040), result("inductor", "rgcn", 0.020),
        result("dgl", "rgcn", 0.030),
        # DGL's RGAT is other maths: faster, but in no speedup and not in the headline.
        result("pigeon-cpu", "rgat", 0.010), result("dgl", "rgat", 0.001, same=False),
        result("dgl-ops", "rgat", 0.080), result("pyg", "rgat", 0.002, same=False),
        # No same-maths baseline finished: the case is out of the headline, and said so.
        result("pigeon-cpu", "hgt", 0.010), result("dgl-ops", "hgt", None, status="OOM"),
    ]
    best = best_baselines(results)
    assert speedup(results[0], best) == pytest.approx((2.0, "inductor"))
    assert speedup(results[4], best) == pytest.approx((8.0, "dgl-ops"))
    entry = headline(results)["pigeon-cpu"]
    assert entry["cases"] == 2 and entry["geomean"] == pytest.approx(4.0)
    assert entry["min"][:2] == (pytest.approx(2.0), "rgcn aifb infer") and entry["uncovered"] == ["hgt aifb infer"]
    assert [(case, system) for case, system, _, _ in other_maths(results)] == [("rgat aifb infer", "dgl"),
                                                                             ("rgat aifb infer", "pyg")]
    assert other_maths(results)[0][3] == "pigeon-cpu 0.10x"
    report = {"results": results, "created": "now", "command": "pigeon bench",
              "config": {"dim": 8, "heads": 1, "scale": 1.0, "device": "cpu", "repeat": 1, "warmup": 1, "threads": None},
              "machine": {"cpu": "cpu", "usable_cores": 2, "memory_gib": 1, "gpu": None,
                          "versions": {"torch": "t", "dgl": "d", "torch_geometric": "p", "pigeon": "0"}}}
    table = format_table(report)
    assert "pigeon-cpu: 4.00x geometric mean over 2 cases" in table and "other maths" in table
    headline_part = table.split("headline (same maths")[1]
    assert "dgl)" not in headline_part and "pyg" not in headline_part
    markdown = format_markdown(report)
    assert "## Headline (same maths, against the best of every baseline)" in markdown
    assert "## Other maths (not in any speedup or the headline)" in markdown


def test_speedup_is_over_the_fastest_baseline_that_finished():
    results = [_result("pigeon-torch", median=0.010), _result("dgl", "OOM"), _result("pyg", median=0.030),
               _result("pigeon-torch", median=0.040, mode="train"), _result("dgl", median=0.020, mode="train"),
               _result("pyg", median=0.025, mode="train"), _result("reference", median=0.050, mode="train")]
    best = best_baselines(results)
    assert speedup(results[0], best) == pytest.approx((3.0, "pyg"))
    assert speedup(results[3], best) == pytest.approx((0.5, "dgl"))
    assert speedup(results[2], best) is None and speedup(results[6], best) is None
    report = {"results": results, "config": {"dim": 8, "heads": 1, "scale": 1.0, "device": "cpu", "repeat": 1,
                                             "warmup": 1, "threads": None},
              "machine": {"cpu": "cpu", "usable_cores": 2, "memory_gib": 1, "gpu": None,
                          "versions": {"torch": "t", "dgl": "d", "torch_geometric": "p", "pigeon": "0"}}}
    table = format_table(report)
    assert "3.00x vs pyg" in table and "0.50x vs dgl" in table and "OOM" in table
    assert "dgl rgcn aifb infer: OOM: x" in table


# ---- the structure sweep --------------------------------------------------------------------
def test_the_structure_sweep_makes_one_case_per_point_with_the_requested_structure():
    config = Config(models=("rgcn",), datasets=("aifb",), modes=("infer",), systems=("pigeon-torch", "ref"),
                    scale=0.5, repeats=(1.0, 2.0, 8.0), skews=(0.0, 1.5))
    cases = config.cases()
    points = [(r, s) for r in (1.0, 2.0, 8.0) for s in (0.0, 1.5)]
    assert [(c.repeats, c.skew) for c in cases] == [p for p in points for _ in range(2)]
    assert Config(models=("rgcn",), datasets=("aifb",), modes=("infer",), systems=("ref",)).structures() == [(None, None)]
    shares = {}
    for case in cases[::2]:
        graph, synthetic = load_graph(case)
        stats = structure_stats(graph)
        # Measured on the generated graph: within 15 % of the requested mean repeats.
        assert synthetic and stats["repeats"] == pytest.approx(case.repeats, rel=0.15), (case, stats)
        shares[case.repeats, case.skew] = stats["top_decile_share"]
    for repeats in (2.0, 8.0):
        assert shares[repeats, 0.0] == pytest.approx(0.1, rel=0.15), "no skew: every pair as busy"
        assert shares[repeats, 1.5] > 1.5 * shares[repeats, 0.0], "skewed: the busiest pairs hold more"


def test_a_structure_run_reports_the_speedup_at_each_point(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert main(["bench", "--models", "rgcn", "--modes", "infer", "--systems", "pigeon-torch,ref",
                 "--datasets", "aifb", "--scale", "0.05", "--dim", "8", "--repeat", "1", "--warmup", "0",
                 "--no-progress", "--structure", "--repeats", "1,4", "--skews", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = load_report(out)
    assert "--structure --repeats 1,4 --skews 1" in report["command"]
    got = {(r["system"], r["repeats"]): r for r in report["results"]}
    assert set(got) == {(s, r) for s in ("pigeon-torch", "ref") for r in (1.0, 4.0)}
    for (_, repeats), r in got.items():
        assert r["status"] == "ok" and r["skew"] == 1.0, r
        assert r["graph"]["repeats"] == pytest.approx(repeats, rel=0.15)
    header, rows = structure_table(report["results"])
    assert header[3:] == ["aifb[repeats 1, skew 1]", "aifb[repeats 4, skew 1]"]
    assert rows[1][:3] == ["pigeon-torch", "rgcn", "infer"] and all(c.endswith("x") for c in rows[1][3:])
    assert "structure sweep" in printed and "aifb[repeats 4, skew 1] (synthetic profile)" in printed


def test_the_structure_sweep_takes_profiles_only(capsys):
    assert main(["bench", "--datasets", "umls", "--structure"]) == 2
    assert "--structure generates synthetic profiles, and umls is not one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--structure", "--repeats", "0.5"])
    assert "expected repeats of at least 1" in capsys.readouterr().err
