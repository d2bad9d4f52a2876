"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def _pigeon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pigeon", *args], capture_output=True, text=True, timeout=300)


def test_demo_prints_a_row_per_layer():
    result = _pigeon("demo", "--dim", "8", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.endswith(" yes")]
    assert [row.split()[0] for row in rows] == ["RGCN", "RGAT", "HGT", "NBFNet"]
    assert "umls (real)" in result.stdout and "aifb (synthetic)" in result.stdout


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
