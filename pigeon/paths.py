"""Where Pigeon keeps what it builds: one cache root, read from the environment.

A leaf module (it imports nothing of Pigeon), so every cache (compiled C libraries,
generated Triton modules, the tuning cache, generated operator data) agrees on the root.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$PIGEON_CACHE_DIR/<parts>`` (default root ``~/.cache/pigeon``), created if missing."""
    root = os.environ.get("PIGEON_CACHE_DIR")
    path = (Path(root) if root else Path.home() / ".cache" / "pigeon").joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
