"""Rank functions for tests/test_distributed.py.

Spawned ranks import the module their function lives in; this one imports only torch
and Pigeon's launcher at the top, so a rank starts quickly.
"""

from __future__ import annotations

import torch

from pigeon.train.distributed import close_distributed, init_distributed


def failing_worker(payload):
    """Rank 1 raises at once; rank 0 waits for it in a barrier that never completes."""
    ctx = init_distributed(timeout_s=300)
    if ctx.rank == 1:
        raise ValueError("rank 1 fails on purpose")
    torch.distributed.barrier()
    return "unreachable"


def runs_worker(runs):
    """Several training runs in one process group: ``runs`` is a list of ``(name,
    config, payload)`` with an ``EntityConfig`` or an ``NBFNetConfig``; returns rank 0's
    reports by name."""
    from pigeon.train.entity import EntityConfig, train_rank
    from pigeon.train.nbfnet import train_nbfnet_rank

    ctx = init_distributed(timeout_s=120)
    quiet = {"log": lambda *a: None, "show_progress": False, "checkpoint": None, "resume": None, "json_path": None}
    try:
        return {name: (train_rank if isinstance(config, EntityConfig) else train_nbfnet_rank)(
                    config, ctx, {**quiet, **payload})
                for name, config, payload in runs}
    finally:
        close_distributed()
