"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from pigeon.cli import main


def _pigeon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pigeon", *args], capture_output=True, text=True, timeout=300)


def test_demo_benchmarks_pigeon_against_a_baseline_and_writes_a_report(tmp_path, capsys):
    # One Pigeon backend and one baseline: every system's own run is tests/test_bench.py's
    # (and the command line in a subprocess is its test_bench_command_...).
    out = tmp_path / "demo"
    assert main(["demo", "--models", "rgcn", "--scale", "0.02", "--dim", "8", "--repeat", "1", "--out", str(out),
                 "--systems", "pigeon-cpu,ref"]) == 0
    printed = capsys.readouterr().out
    systems = {line.split()[2] if line.split()[0] == "rgcn" else line.split()[0]
               for line in printed.splitlines() if line.strip() and line.split()[0] in ("rgcn", "pigeon-cpu", "ref")}
    assert {"pigeon-cpu", "ref"} <= systems, printed
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "speedups.png"]
    report = json.loads((out / "report.json").read_text())
    assert {(r["system"], r["mode"]) for r in report["results"]} == {
        (s, m) for s in ("pigeon-cpu", "ref") for m in ("infer", "train")}
    assert all(r["status"] == "ok" for r in report["results"]), report["results"]


def test_unknown_command_fails_with_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench-everything"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "invalid choice" in err and "demo" in err


def test_show_ir_level_2_prints_the_fused_rgat_program():
    result = _pigeon("show-ir", "rgat", "--level", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Which rewrites apply is the cost model's call on this machine; the program is fused
    # either way: typed GEMMs, and one softmax traversal over the destinations' CSR.
    assert "gemm" in out and "segment=" in out
    traversals = [line for line in out.splitlines() if "traversal over edge grouped by dst" in line]
    assert len(traversals) == 1 and "softmax" in traversals[0] and "layout=csr_dst" in traversals[0]
    assert "# cost model (train): reorder=" in out


def test_show_ir_level_1_after_a_pass_and_backward():
    # On mag's profile (papers cite papers many times), at hidden 64, the cost model
    # compacts RGCN's messages (at the suite's fixed rates, tests/conftest.py); on the RDF
    # profiles' rarely repeated pairs it does not.
    traced = _pigeon("show-ir", "rgcn", "--dataset", "mag", "--dim", "64")
    after = _pigeon("show-ir", "rgcn", "--after", "compact", "--dataset", "mag", "--dim", "64")
    backward = _pigeon("show-ir", "rgcn", "--backward")
    assert traced.returncode == after.returncode == backward.returncode == 0
    assert "compact_src" not in traced.stdout and "typed_linear[compact_src_etype]" in after.stdout
    assert 'input "grad_out"' in backward.stdout and 'output "grad_weight"' in backward.stdout


def test_show_kernels_cpu_prints_the_openmp_c_file_forward_and_backward():
    forward = _pigeon("show-kernels", "rgcn", "--backend", "cpu")
    backward = _pigeon("show-kernels", "rgcn", "--backend", "cpu", "--backward", "--dtype", "float64")
    assert forward.returncode == backward.returncode == 0, forward.stderr + backward.stderr
    assert forward.stdout.startswith("// rgcn on aifb x0.02:") and "forward kernels, float32" in forward.stdout
    assert "#pragma omp" in forward.stdout and "typedef float real;" in forward.stdout
    assert "backward kernels, float64" in backward.stdout
    assert "#pragma omp" in backward.stdout and "typedef double real;" in backward.stdout


def test_show_kernels_triton_prints_jit_kernels_without_a_gpu():
    # Planning renders the Triton module; nothing is compiled or launched, so no GPU.
    forward = _pigeon("show-kernels", "rgat", "--backend", "triton")
    assert forward.returncode == 0, forward.stderr
    assert forward.stdout.startswith("# rgat on aifb x0.02:") and "triton backend, forward kernels" in forward.stdout
    assert "import triton" in forward.stdout and "@triton.jit" in forward.stdout
    backward = _pigeon("show-kernels", "rgat", "--backend", "triton", "--backward")
    assert backward.returncode == 0, backward.stderr
    assert "@triton.jit" in backward.stdout


# ---- a user's mistake is one line naming the argument, and status 2 ----------------------
def _one_line_error(stderr: str) -> str:
    """The error line of a usage error: the last line, the only one saying "error:",
    after nothing but the command's usage."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert lines[0].startswith("usage: pigeon") and "Traceback" not in stderr, stderr
    assert all(line.startswith((" ", "usage:")) for line in lines[:-1]), stderr
    return errors[0]


@pytest.fixture
def files(tmp_path, monkeypatch):
    """An isolated cache, a text file that is no checkpoint, a checkpoint of another
    model (an empty one), a folder, and a path that does not exist."""
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "generator": torch.Generator().get_state(),
                "epoch": 1, "step": 1, "history": [], "best": None, "seconds": 1.0}, tmp_path / "other.pt")
    (tmp_path / "folder").mkdir()
    return {"TEXT": str(tmp_path / "notes.txt"), "OTHER": str(tmp_path / "other.pt"),
            "FOLDER": str(tmp_path / "folder"), "MISSING": str(tmp_path / "missing.pt")}


# Each command and train sub-command: unknown names, bad numbers, numbers wrong beside
# another, files that are missing or are not what the argument needs. (argv, what the
# error line must name, a piece of the message.)
MISTAKES = [
    ("demo --models gcn", "argument --models", "unknown model 'gcn'"),
    ("demo --dim 0", "argument --dim", "expected a positive int (got '0')"),
    ("demo --timeout-s nan", "argument --timeout-s", "expected a positive number"),
    ("demo --out TEXT", "argument --out", "a file"),
    ("show-ir rgcn --dataset nope", "argument --dataset", "unknown dataset 'nope'; valid: kinships"),
    ("show-ir rgcn --scale 2", "argument --scale", "expected a number in (0, 1]"),
    ("show-ir rgat --dim 10 --heads 3", "--dim must be divisible by --heads", "heads 3"),
    ("show-ir rgcn --dataset umls --scale 0.5", "argument --scale", "'umls' is a real dataset"),
    ("show-ir rgcn --level 2 --after cse", "argument --after", "level-1"),
    ("show-ir rgcn --after fusion", "argument --after", "invalid choice: 'fusion'"),
    ("show-kernels rgcn --backend torch", "argument --backend", "invalid choice: 'torch'"),
    ("show-kernels rgcn --dataset ogbl-biokg", "argument --dataset", "--root"),
    ("show-kernels rgcn --heads x", "argument --heads", "expected a positive int (got 'x')"),
    ("bench --datasets nope", "argument --datasets", "unknown dataset 'nope'"),
    ("bench --repeat 0", "argument --repeat", "expected a positive int"),
    ("bench --datasets umls --scale 0.5", "--scale applies to synthetic profiles only", "umls"),
    ("bench --from-json MISSING", "argument --from-json", "does not exist"),
    ("bench --compare TEXT", "argument --compare", "results file"),
    ("bench --json FOLDER", "argument --json", "a folder"),
    ("tune", "argument model", "rgcn, rgat, hgt"),
    ("tune rgcn --dataset nope", "argument --dataset", "unknown dataset 'nope'"),
    ("tune rgcn --budget-s 0", "argument --budget-s", "expected a positive number"),
    ("train nbfnet --dataset nope", "argument --dataset", "unknown link dataset 'nope'; valid: kinships"),
    ("train nbfnet --dataset aifb", "argument --dataset", "no train/valid/test triples"),
    ("train nbfnet --dataset ogbl-biokg", "argument --root", "never downloaded"),
    ("train nbfnet --root MISSING", "argument --root", "expected an existing folder"),
    ("train nbfnet --epochs 0", "argument --epochs", "expected a positive int"),
    ("train nbfnet --lr 0", "argument --lr", "expected a positive number"),
    ("train nbfnet --seed -1", "argument --seed", "expected a non-negative int"),
    ("train nbfnet --resume MISSING", "argument --resume", "does not exist"),
    ("train nbfnet --dim 4 --num-layers 1 --resume TEXT", "--resume", "torch cannot read"),
    ("train nbfnet --dim 4 --num-layers 1 --resume OTHER", "--resume", "this run's model"),
    ("train nbfnet --checkpoint FOLDER", "argument --checkpoint", "a folder"),
    ("train fno --problem nope", "argument --problem", "invalid choice: 'nope'"),
    ("train fno --width 0", "argument --width", "expected a positive int"),
    ("train fno --coarse-fraction 1", "argument --coarse-fraction", "expected a number in [0, 1)"),
    ("train fno --problem darcy --padding 10", "--padding", "odd or 0"),
    ("train fno --resolution 2 --n-train 2 --n-test 1", "--resolution", "int >= 4"),
    ("train fno --resume MISSING", "argument --resume", "does not exist"),
    ("train fno --threads 0", "argument --threads", "expected a positive int"),
    ("train deeponet --problem nope", "argument --problem", "invalid choice: 'nope'"),
    ("train deeponet --n-train 0", "argument --n-train", "expected a positive int"),
    ("train deeponet --time-budget-s -5", "argument --time-budget-s", "expected a positive number"),
    ("train deeponet --resume MISSING", "argument --resume", "does not exist"),
    ("train deeponet --width 4 --n-train 4 --n-test 2 --resume TEXT", "--resume", "torch cannot read"),
    ("train deeponet --width 4 --n-train 4 --n-test 2 --resume OTHER", "--resume", "this run's model"),
]


@pytest.mark.parametrize("command, names, says", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_line_naming_the_argument_and_status_2(command, names, says, files, capsys):
    argv = [files.get(word, word) for word in command.split()]
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    assert status == 2, captured.err
    line = _one_line_error(captured.err)
    prog = " ".join(["pigeon", *argv[:2 if argv[0] == "train" else 1]])
    assert line.startswith(f"{prog}: error: "), line
    assert names in line and says in line, line


def test_train_nbfnet_with_an_unknown_dataset_is_one_line_from_the_shell():
    # The report that started this: a traceback where argparse gives one line.
    result = _pigeon("train", "nbfnet", "--dataset", "nope")
    assert result.returncode == 2
    assert _one_line_error(result.stderr).startswith("pigeon train nbfnet: error: argument --dataset: unknown")


def test_a_mistake_found_after_parsing_is_one_line_from_the_shell():
    result = _pigeon("tune", "rgat", "--dim", "10", "--heads", "3")
    assert result.returncode == 2
    assert _one_line_error(result.stderr) == "pigeon tune: error: --dim must be divisible by --heads for rgat (got dim 10, heads 3)"


_BUG = textwrap.dedent("""
    import sys
    import pigeon.train.nbfnet as nbfnet
    from pigeon.cli import main

    def broken(*args, **kwargs):
        raise ValueError("Expected `dim` to agree with the weights (a bug, not the user's dim)")

    nbfnet.train_nbfnet = broken
    sys.exit(main(["train", "nbfnet", "--dim", "4"]))
""")


def test_a_bug_keeps_its_traceback():
    # Raised during the run, the error names an argument and is still a bug: only the
    # checks of the settings become one-line usage errors.
    result = subprocess.run([sys.executable, "-c", _BUG], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "in broken" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ValueError: Expected `dim` to agree")
