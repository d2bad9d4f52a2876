"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys


def _pigeon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pigeon", *args], capture_output=True, text=True, timeout=300)


def test_demo_benchmarks_pigeon_against_dgl_and_pyg_and_writes_a_report(tmp_path):
    out = tmp_path / "demo"
    result = _pigeon("demo", "--models", "rgcn", "--scale", "0.02", "--dim", "8", "--repeat", "1", "--out", str(out),
                     "--systems", "pigeon-cpu,pigeon-torch,dgl,pyg")
    assert result.returncode == 0, result.stderr
    systems = {line.split()[2] if line.split()[0] == "rgcn" else line.split()[0]
               for line in result.stdout.splitlines() if line.strip() and line.split()[0] in
               ("rgcn", "pigeon-cpu", "pigeon-torch", "dgl", "pyg")}
    assert {"pigeon-cpu", "pigeon-torch", "dgl", "pyg"} <= systems, result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "speedups.png"]
    report = json.loads((out / "report.json").read_text())
    assert {(r["system"], r["mode"]) for r in report["results"]} == {
        (s, m) for s in ("pigeon-cpu", "pigeon-torch", "dgl", "pyg") for m in ("infer", "train")}
    assert all(r["status"] == "ok" for r in report["results"]), report["results"]


def test_unknown_command_fails_with_the_valid_ones():
    result = _pigeon("bench-everything")
    assert result.returncode != 0
    assert "invalid choice" in result.stderr and "demo" in result.stderr


def test_show_ir_level_2_prints_the_fused_rgat_program():
    result = _pigeon("show-ir", "rgat", "--level", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gemm" in out and "segment=compact_src_etype" in out
    traversals = [line for line in out.splitlines() if "traversal over edge grouped by dst" in line]
    assert len(traversals) == 1 and "softmax" in traversals[0] and "layout=csr_dst" in traversals[0]
    assert "# reorder:" in out and "# compact:" in out


def test_show_ir_level_1_after_a_pass_and_backward():
    traced = _pigeon("show-ir", "rgcn")
    after = _pigeon("show-ir", "rgcn", "--after", "compact")
    backward = _pigeon("show-ir", "rgcn", "--backward")
    assert traced.returncode == after.returncode == backward.returncode == 0
    assert "compact_src" not in traced.stdout and "typed_linear[compact_src_etype]" in after.stdout
    assert 'input "grad_out"' in backward.stdout and 'output "grad_weight"' in backward.stdout
    bad = _pigeon("show-ir", "rgcn", "--after", "fusion")
    assert bad.returncode != 0 and "--after must be one of" in bad.stderr


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


def test_show_kernels_rejects_a_backend_without_generated_source():
    result = _pigeon("show-kernels", "rgcn", "--backend", "torch")
    assert result.returncode != 0
    assert "invalid choice: 'torch'" in result.stderr and "triton" in result.stderr
