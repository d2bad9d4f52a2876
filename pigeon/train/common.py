"""What every training command shares: seeding, progress bars, checkpoints, the JSON
report, and the numeric precision a run trains in (:class:`Precision`)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from pigeon.arguments import existing_file, non_negative_int, output_file, positive_int
from pigeon.version import git_state

__all__ = ["seed_everything", "start_run", "progress", "write_json", "write_report", "save_checkpoint", "load_checkpoint",
           "CheckpointError", "resume_from", "add_common_arguments", "operator_report", "PRECISIONS", "Precision",
           "add_precision_argument"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, torch's global generators and return a fresh ``torch.Generator``
    seeded with ``seed``, for the sampling a training loop does itself (batch order,
    negatives). Two runs with one seed and one thread count then draw the same numbers."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"Expected `seed` to be a non-negative int (got {seed!r})")
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def start_run(config) -> torch.Generator:
    """The start of every training run: torch's thread count from ``config.threads``
    (None leaves it) and the seeds from ``config.seed`` (:func:`seed_everything`)."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return seed_everything(config.seed)


def progress(iterable: Iterable, *, desc: str, total: int | None = None, enabled: bool = True):
    """``iterable`` wrapped in a tqdm progress bar on stderr when ``enabled`` and tqdm is
    installed; the bare iterable otherwise."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a reader never
    sees half a file, and a crash leaves the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    # mkstemp makes the file private (0600); the result should have the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_json(path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
    _atomic_write(Path(path), write)


def write_report(path, result: dict[str, Any]) -> None:
    """Write a training run's final metrics to ``path`` (as :func:`write_json`) with what
    they came from: the checkout's commit and whether its tree was clean, the command,
    torch's version and the date (``result["provenance"]``)."""
    record = {**(git_state() or {"commit": None, "clean": None}), "command": ["pigeon", *sys.argv[1:]],
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    write_json(path, {**result, "provenance": record})


def save_checkpoint(path, **state: Any) -> None:
    """``torch.save`` of ``state`` (state dicts, epoch, metrics, arguments) to ``path``, atomically."""
    _atomic_write(Path(path), lambda temporary: torch.save(state, temporary))


def load_checkpoint(path) -> dict[str, Any]:
    """The dict :func:`save_checkpoint` wrote to ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected `checkpoint` to be a file written by a training run (got {str(path)!r}, "
                                f"which does not exist)")
    return torch.load(path, map_location="cpu", weights_only=False)


class CheckpointError(ValueError):
    """A file to resume from that is not a checkpoint this run can continue."""


def resume_from(path, generator: torch.Generator, entries: tuple[str, ...], **stateful) -> dict[str, Any]:
    """The checkpoint at ``path``, with ``generator``'s state and the state dicts of
    ``stateful`` (``model=``, ``optimizer=``, ...) loaded from its entries of those names.

    Raises:
        CheckpointError: the file is not a checkpoint torch can read, lacks one of
            ``entries``, or holds the state of another model (another size, dataset or
            optimizer).
    """
    try:
        state = load_checkpoint(path)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        # What torch.load raises for a file that is not, or no longer all, one of its archives.
        raise CheckpointError(f"Expected `resume` to be a checkpoint written by a training run (got {str(path)!r}, "
                              f"which torch cannot read: {str(error).splitlines()[0]})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"Expected `resume` to be a checkpoint written by a training run (got {str(path)!r}, "
                              f"which holds a {type(state).__name__})")
    missing = [name for name in (*stateful, "generator", *entries) if name not in state]
    if missing:
        raise CheckpointError(f"Expected `resume` to be a checkpoint of this command (got {str(path)!r}, which "
                              f"has no {', '.join(missing)})")
    for name, target in stateful.items():
        try:
            target.load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"Expected `resume` to be a checkpoint of this run's {name} (got {str(path)!r}, "
                                  f"saved with other settings: {str(error).strip().splitlines()[0]})") from error
    generator.set_state(state["generator"])
    return state


def add_common_arguments(parser) -> None:
    """The options every ``pigeon train`` command takes: seed, threads, checkpoints,
    resuming, the JSON report and progress bars."""
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch and OpenMP threads (default: torch's default, the core count)")
    parser.add_argument("--checkpoint", type=output_file, default=None,
                        help="file to save the model, optimizer and metrics to after every epoch (default: none)")
    parser.add_argument("--resume", type=existing_file, default=None,
                        help="checkpoint file to continue training from (default: none)")
    parser.add_argument("--json", type=output_file, default=None, dest="json_path",
                        help="write the final metrics to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


#: ``--precision`` of the training commands: the dtype of the forward pass (None: float32 throughout).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The numeric precision a training run computes in.

    ``"fp32"``: float32 throughout. ``"bf16"`` and ``"fp16"``: mixed precision. The
    model's parameters stay float32 (the master weights the optimizer updates); the
    forward pass, and the evaluation, run under ``torch.autocast`` in the 16-bit dtype,
    where Pigeon's layers store activations in it and sum in float32
    (:mod:`pigeon.runtime.precision`); gradients arrive in float32. float16's narrow
    range would flush small gradients to zero, so ``"fp16"`` scales the loss
    (``torch.amp.GradScaler``): each step's gradients are unscaled before the
    optimizer sees them, a step whose gradients overflowed is skipped, and the scale
    adapts. A training loop needs three lines::

        with precision.autocast():
            loss = ...
        precision.step(loss, optimizer)   # backward, unscale, step, update the scale

    Args:
        name (str): one of :data:`PRECISIONS`. Default: ``"fp32"``.
        device (str or torch.device): where the model runs (autocast and the scaler are
            per device type). Default: ``"cpu"``.
    """

    def __init__(self, name: str = "fp32", device="cpu"):
        if name not in PRECISIONS:
            raise ValueError(f"Expected `precision` to be one of {list(PRECISIONS)} (got {name!r})")
        self.name, self.dtype = name, PRECISIONS[name]
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=name == "fp16")

    def autocast(self):
        """The context the forward pass (and evaluation) runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()`` and ``optimizer.step()``, through the loss scale for fp16."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The loss scale's state, for checkpoints (empty unless fp16)."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)


def add_precision_argument(parser) -> None:
    """``--precision`` (the ``precision`` field of a run's config; see :class:`Precision`)."""
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                        help="fp32, or mixed precision: the forward pass under torch.autocast in bfloat16 or "
                             "float16 with float32 master weights, the loss scaled for fp16 (default: fp32)")


def operator_report(config, history: list, test: dict, train: dict, seconds: float, json_path=None,
                    log=print) -> dict[str, Any]:
    """The result of a neural-operator run (``pigeon train fno|deeponet``): logged, written
    to ``json_path`` when given, and returned. ``config`` is the run's dataclass (with a
    ``problem`` field); ``test`` and ``train`` hold ``rel_l2``, ``max_rel_l2`` and
    ``functions``."""
    from dataclasses import asdict

    result = {"test": test, "train": train, "seconds": seconds, "epochs": len(history), "history": history,
              "config": asdict(config), "threads": torch.get_num_threads()}
    log(f"{config.problem}: test relative L2 {test['rel_l2']:.4f} (max {test['max_rel_l2']:.4f}, "
        f"{test['functions']} functions), train {train['rel_l2']:.4f}; {len(history)} epochs in {seconds:.0f} s")
    if json_path is not None:
        write_report(json_path, result)
    return result
