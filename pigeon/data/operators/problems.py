"""The operator problems by name, and :func:`load_operator_problem`: the arguments
checked, the cache read, or the data generated from seeded draws and cached."""

from __future__ import annotations

import numbers
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

import pigeon.data.operators.burgers as burgers
import pigeon.data.operators.darcy as darcy
import pigeon.data.operators.integral as integral
from pigeon.data.operators.cache import FIELDS, cache_path, default_cache_dir, read_cache, write_cache

__all__ = ["OperatorProblem", "Problem", "PROBLEMS", "load_operator_problem", "operator_problem_names"]

# Bump when a generator changes what it produces, so stale cache files are not read.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Problem:
    """How one problem is made, and its default sizes.

    Attributes:
        generate: ``generate(rng, n, resolution) -> (x, y, settings)``, float64 arrays and
            the solver settings recorded in ``meta``.
        grid: ``grid(resolution)``, the float32 coordinates of the grid points.
        n_train, n_test, resolution: the defaults of :func:`load_operator_problem`.
        min_resolution: the least ``resolution`` the problem is defined for.
    """

    generate: Callable
    grid: Callable[[int], torch.Tensor]
    n_train: int
    n_test: int
    resolution: int
    min_resolution: int


PROBLEMS = {
    "burgers": Problem(burgers.generate, burgers.grid, 1000, 200, 256, 4),
    "darcy": Problem(darcy.generate, darcy.grid, 1000, 200, 85, 3),
    "antiderivative": Problem(integral.generate, integral.grid, 10000, 1000, 100, 2),
}


class OperatorProblem(NamedTuple):
    """One operator-learning data set.

    Attributes:
        name (str): ``"burgers"``, ``"darcy"`` or ``"antiderivative"``.
        x_train, y_train (Tensor): float32 input and output functions of the training
            split on the grid (shapes in the docstring of :mod:`pigeon.data.operators`).
        x_test, y_test (Tensor): the same for the held-out split.
        grid (Tensor): float32 coordinates of the grid points: ``[s]`` in 1-D,
            ``[s, s, 2]`` in 2-D.
        meta (dict): the arguments, the solver settings, ``generation_seconds`` and
            ``from_cache`` (whether this call read the cache instead of generating).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    grid: torch.Tensor
    meta: dict


def operator_problem_names() -> tuple[str, ...]:
    """Every name :func:`load_operator_problem` accepts."""
    return tuple(PROBLEMS)


def _rng(seed: int, name: str, split: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), split])


def _check_positive_int(value, argument: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected `{argument}` to be an int >= {minimum} (got {type(value).__name__}: {value!r})")
    return int(value)


def load_operator_problem(name: str, *, n_train: int | None = None, n_test: int | None = None,
                          resolution: int | None = None, seed: int = 0,
                          cache_dir: str | os.PathLike | None = None) -> OperatorProblem:
    """Generate (or read from the cache) the operator-learning problem ``name``.

    The problems, their equations and defaults are described in the docstring of
    :mod:`pigeon.data.operators`. The result is written to
    ``cache_dir/<name>-<hash>.pt`` after the first generation, the hash covering every
    argument and the generator version; the write goes through a temporary file and a
    rename, so a reader never sees half a file, and a file that cannot be read is
    regenerated with one warning.

    Args:
        name (str): ``"burgers"``, ``"darcy"`` or ``"antiderivative"``.
        n_train (int, optional): training functions. Default 1000 (burgers, darcy) or
            10000 (antiderivative).
        n_test (int, optional): held-out functions. Default 200 (burgers, darcy) or 1000
            (antiderivative).
        resolution (int, optional): grid points per dimension: burgers ``s >= 4``
            (default 256; values dividing 1024 share the 1024-point solver grid, so one
            seed gives the same functions at every such resolution), darcy ``s >= 3``
            (default 85), antiderivative sensors ``m >= 2`` (default 100).
        seed (int): seed of every random draw. Default ``0``.
        cache_dir (str or PathLike, optional): the cache folder. Default
            ``$PIGEON_CACHE_DIR/operators`` or ``~/.cache/pigeon/operators``.

    Returns:
        OperatorProblem: float32 tensors and ``meta``.

    Raises:
        ValueError: an unknown ``name`` or an argument out of range.
    """
    if not isinstance(name, str) or name not in PROBLEMS:
        raise ValueError(f"Expected `name` to be one of {list(PROBLEMS)} (got {name!r})")
    problem = PROBLEMS[name]
    n_train = _check_positive_int(problem.n_train if n_train is None else n_train, "n_train")
    n_test = _check_positive_int(problem.n_test if n_test is None else n_test, "n_test")
    resolution = _check_positive_int(problem.resolution if resolution is None else resolution, "resolution",
                                     problem.min_resolution)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"Expected `seed` to be a non-negative int (got {type(seed).__name__}: {seed!r})")
    seed = int(seed)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise ValueError(f"Expected `cache_dir` to be a path or None (got {type(cache_dir).__name__})")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    key = {"name": name, "n_train": n_train, "n_test": n_test, "resolution": resolution, "seed": seed,
           "version": FORMAT_VERSION}
    path = cache_path(folder, key)
    cached = read_cache(path, key)
    if cached is not None:
        tensors, meta = cached
        return OperatorProblem(name, meta={**meta, "from_cache": True}, **tensors)

    started = time.perf_counter()
    x_train, y_train, settings = problem.generate(_rng(seed, name, 0), n_train, resolution)
    x_test, y_test, _ = problem.generate(_rng(seed, name, 1), n_test, resolution)
    meta = {"name": name, "n_train": n_train, "n_test": n_test, "resolution": resolution, "seed": seed,
            **settings, "generation_seconds": time.perf_counter() - started}

    def tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array)).float()

    tensors = dict(zip(FIELDS, (tensor(x_train), tensor(y_train), tensor(x_test), tensor(y_test),
                                problem.grid(resolution))))
    write_cache(path, key, tensors, meta)
    return OperatorProblem(name, meta={**meta, "from_cache": False}, **tensors)
