"""Data-parallel training runs on ``torch.distributed``: starting ranks, the process group,
equal shards, reductions.

Two ways to start a run with N processes, the same code in each rank:

* ``pigeon train MODEL --nproc N``: :func:`launch` spawns N processes on this machine
  (``torch.multiprocessing``, start method ``spawn``), with ``MASTER_ADDR=127.0.0.1`` and
  a free ``MASTER_PORT``. When one rank raises, the others are terminated and the run
  ends with that rank's traceback (a non-zero exit from the command line).
* ``torchrun --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT] -m pigeon train
  MODEL ...``: torchrun starts the processes, one or several machines, and sets
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT``; :func:`launch` sees them and runs the worker in this process. A
  failing rank ends the job through torchrun's elastic agent.

Either way :func:`init_distributed` joins the process group with a timeout (gloo on
CPU, NCCL on CUDA), so a rank whose peers are gone fails instead of waiting forever.
"""

from __future__ import annotations

import datetime
import gc
import os
import pickle
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

__all__ = ["DistContext", "launch", "init_distributed", "under_torchrun", "equal_shard", "threads_per_rank",
           "free_port"]

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DistContext:
    """Where this process stands in the run (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks (float64)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def gather_objects(self, value) -> list:
        """``value`` of every rank, in rank order."""
        if not self.distributed:
            return [value]
        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def under_torchrun() -> bool:
    """Whether torchrun (or anything that sets its variables) started this process."""
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"Expected the environment variable {name} (torchrun sets it)")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"Expected the environment variable {name} to be an int (got {value!r})") from None


def init_distributed(*, device: str = "cpu", timeout_s: float = 300.0) -> DistContext:
    """Join the process group the environment describes, or none for a single process.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (default 0) and ``LOCAL_WORLD_SIZE``
    (default ``WORLD_SIZE``) as torchrun sets them; ``init_process_group`` rendezvous
    through ``MASTER_ADDR``/``MASTER_PORT`` with ``timeout_s``. CUDA ranks use NCCL and the
    GPU ``LOCAL_RANK``; CPU ranks use gloo.
    """
    if not under_torchrun():
        return DistContext(device=torch.device(device))
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"Expected RANK in [0, WORLD_SIZE={world_size}) (got {rank})")
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        where, backend = torch.device("cuda", local_rank), "nccl"
    else:
        where, backend = torch.device(device), "gloo"
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world_size, local_rank, local_world_size, where)


def close_distributed() -> None:
    """Leave the process group. DDP wrappers sit in reference cycles: collected first, so
    that none outlives the group it holds (a gloo reducer destroyed after its group can
    abort the process at exit)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def equal_shard(items: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's share of ``items`` as ``DistributedSampler`` deals them: the list is
    padded by repeating its start to a multiple of the world size, and rank ``r`` takes
    every ``world_size``-th entry from ``r``; every rank gets as many."""
    if not ctx.distributed or items.numel() == 0:
        return items
    per_rank = -(-items.numel() // ctx.world_size)
    padded = torch.cat([items, items[: per_rank * ctx.world_size - items.numel()]])
    return padded[ctx.rank::ctx.world_size]


def threads_per_rank(local_world_size: int, sampler_workers: int = 0, requested: int | None = None) -> int:
    """Compute threads for each rank: the cores this process may use shared among the
    ranks on this machine, less one per sampler worker (each worker samples with one
    thread), at least 1; ``requested`` overrides."""
    if requested is not None:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(local_world_size, 1) - sampler_workers)


def _spawned(index: int, worker: Callable, nproc: int, port: int, payload: Any, result_path: str) -> None:
    os.environ.update({"RANK": str(index), "LOCAL_RANK": str(index), "WORLD_SIZE": str(nproc),
                       "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    result = worker(payload)
    if index == 0:
        with open(result_path, "wb") as handle:
            pickle.dump(result, handle)


def launch(worker: Callable[[Any], Any], payload: Any, nproc: int) -> Any:
    """Run ``worker(payload)`` on ``nproc`` ranks and return rank 0's result.

    Under torchrun (its variables set) this process is one rank: ``nproc`` must be 1
    (torchrun decides the count) and the worker runs here; its result is returned on
    every rank. Otherwise ``nproc == 1`` runs it here with no process group, and
    ``nproc > 1`` spawns the ranks on 127.0.0.1; if any raises, the others are ended
    and ``torch.multiprocessing.ProcessRaisedException`` carries its traceback.
    ``worker`` must be a module-level function (spawned processes import it).
    """
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"Expected `nproc` to be a positive int (got {nproc!r})")
    if under_torchrun():
        if nproc != 1:
            raise ValueError(f"Expected `nproc` to be 1 under torchrun, which starts the processes itself "
                             f"(got nproc={nproc}; use torchrun's --nproc-per-node)")
        return worker(payload)
    if nproc == 1:
        return worker(payload)
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="pigeon-ranks-") as folder:
        result_path = str(Path(folder) / "result.pkl")
        mp.start_processes(_spawned, args=(worker, nproc, free_port(), payload, result_path), nprocs=nproc,
                           join=True, start_method="spawn")
        with open(result_path, "rb") as handle:
            return pickle.load(handle)
