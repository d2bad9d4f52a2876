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
