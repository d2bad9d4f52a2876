"""Training and evaluation loops behind ``pigeon train MODEL``.

Each module named in :data:`TRAIN_MODULES` exposes ``add_parsers(subparsers)``, which
adds its ``pigeon train <model>`` sub-commands (each with ``set_defaults(func=...)``),
plus a Python API that the command calls.
"""

from __future__ import annotations

import importlib

TRAIN_MODULES = ("pigeon.train.entity", "pigeon.train.nbfnet", "pigeon.train.fno", "pigeon.train.deeponet")


def add_train_parsers(subparsers) -> None:
    """Add every ``pigeon train <model>`` sub-command to ``subparsers``."""
    for name in TRAIN_MODULES:
        importlib.import_module(name).add_parsers(subparsers)
