"""Pigeon's version, and the git state of the checkout it runs from: a leaf module, so that
code keyed on them (caches, generated sources, reports) imports no package root."""

from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.1.0"


def git_state() -> dict | None:
    """``{"commit": sha, "clean": bool}`` of the Pigeon checkout (clean: no uncommitted
    change to a tracked file), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "clean": not dirty}
