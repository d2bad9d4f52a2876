"""The on-disk cache of generated operator data: one file per set of arguments, named by
their hash, written through a temporary file and a rename so a reader never sees half a
file; a file that cannot be read, or holds other arguments, is reported once and ignored."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from pigeon.paths import cache_dir as pigeon_cache_dir

__all__ = ["FIELDS", "default_cache_dir", "cache_path", "read_cache", "write_cache"]

FIELDS = ("x_train", "y_train", "x_test", "y_test", "grid")


def default_cache_dir() -> Path:
    """``$PIGEON_CACHE_DIR/operators``, or ``~/.cache/pigeon/operators`` when the variable
    is unset (the root the compiled-kernel caches use)."""
    return pigeon_cache_dir("operators")


def cache_path(folder: Path, key: dict) -> Path:
    """``folder/<name>-<hash of key>.pt``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return folder / f"{key['name']}-{digest}.pt"


def read_cache(path: Path, key: dict) -> tuple[dict, dict] | None:
    """``(tensors by field, meta)`` stored at ``path`` for ``key``, or ``None`` when there is
    none; a file that cannot be read or does not hold what ``key`` asks for is reported
    once and ignored."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored["key"] != key:
            raise ValueError("its key does not match the arguments")
        tensors = {field: stored[field] for field in FIELDS}
        if not all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in tensors.values()):
            raise ValueError("it holds something other than float32 tensors")
        meta = dict(stored["meta"])
    except Exception as error:  # noqa: BLE001 - any unreadable file is regenerated
        # stacklevel 3: the caller of load_operator_problem.
        warnings.warn(f"Ignoring the unreadable operator-data cache file {str(path)!r} ({type(error).__name__}: "
                      f"{error}); regenerating it", RuntimeWarning, stacklevel=3)
        return None
    return tensors, meta


def write_cache(path: Path, key: dict, tensors: dict, meta: dict) -> None:
    """Store ``tensors`` (by field) and ``meta`` for ``key`` at ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"key": key, "meta": meta, **tensors}, temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
