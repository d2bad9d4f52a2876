"""Neural-operator learning problems generated locally: 1-D Burgers, 2-D Darcy flow, antiderivative.

Nothing is downloaded. Each problem draws random input functions from a Gaussian
random field (GRF), solves the equation numerically and returns input/output pairs
sampled on a grid, split into a train and a test set:

``burgers``
    :math:`u_t + u u_x = \\nu u_{xx}` on the periodic interval :math:`[0, 1)`, viscosity
    :math:`\\nu = 0.1`; the operator maps :math:`u_0 = u(\\cdot, 0)` to :math:`u(\\cdot, 1)`.
    :math:`u_0 \\sim \\mathcal N(0, 625(-\\Delta + 25 I)^{-2})` (the FNO paper's field),
    drawn on a 1024-point grid and solved there by a Fourier pseudo-spectral method
    (2/3-rule dealiasing, ETDRK4 time stepping with 200 steps); both functions are then
    subsampled to ``resolution`` points (default 256). ``x`` is ``[n, s]`` (:math:`u_0`),
    ``y`` is ``[n, s]`` (:math:`u(\\cdot, 1)`), ``grid`` is ``[s]`` with ``grid[i] = i / s``.
``darcy``
    :math:`-\\nabla \\cdot (a \\nabla u) = 1` on :math:`(0, 1)^2`, :math:`u = 0` on the
    boundary. The coefficient is a thresholded GRF: :math:`a = 12` where
    :math:`g \\ge 0`, :math:`a = 3` where :math:`g < 0`, with
    :math:`g \\sim \\mathcal N(0, (-\\Delta + 9 I)^{-2})` (zero-Neumann cosine basis).
    Solved by five-point finite differences on the ``resolution`` × ``resolution`` node
    grid (default 85 × 85, boundary nodes included; face coefficients are the mean of
    the two nodes) with a sparse direct solver. ``x`` is ``a``, ``y`` is ``u``, both
    ``[n, s, s]`` indexed ``[i, j]`` at :math:`(x_i, y_j) = (i, j) / (s - 1)`; ``grid`` is
    ``[s, s, 2]``.
``antiderivative``
    :math:`s(x) = \\int_0^x u(\\xi)\\, d\\xi` on :math:`[0, 1]` (DeepONet's first example).
    :math:`u` is a GRF with the squared-exponential kernel
    :math:`k(x, x') = \\exp(-(x - x')^2 / (2 \\cdot 0.2^2))`, drawn on a grid four times
    finer than the sensors; :math:`s` is the exact integral of the cubic spline through
    those values. ``x`` is :math:`u` at the ``resolution`` (default 100) equispaced
    sensors ``grid = linspace(0, 1, m)``, ``y`` is :math:`s` at the same points, both ``[n, m]``.

Default sizes: 1000 train / 200 test functions for ``burgers`` and ``darcy``, 10000 /
1000 for ``antiderivative``. Every draw comes from a NumPy generator seeded by
``(seed, problem name, split)``, never from global state, so one seed gives the same
tensors on every call, and the train set does not depend on ``n_test``. Results are cached
on disk (see :func:`load_operator_problem`). ``darcy`` and ``antiderivative`` need SciPy
(sparse LU, cubic splines), imported when they are generated.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
import os
import time
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pigeon.paths import cache_dir as pigeon_cache_dir

__all__ = [
    "OperatorProblem", "load_operator_problem", "operator_problem_names", "default_cache_dir",
    "grf_periodic_1d", "grf_neumann_2d", "grf_squared_exponential_1d",
    "solve_burgers", "solve_darcy", "antiderivative",
]

# Bump when a generator changes what it produces, so stale cache files are not read.
_FORMAT_VERSION = 1

BURGERS_VISCOSITY = 0.1
BURGERS_FINE_GRID = 1024
BURGERS_STEPS = 200
DARCY_HIGH, DARCY_LOW = 12.0, 3.0
ANTIDERIVATIVE_LENGTH_SCALE = 0.2
ANTIDERIVATIVE_REFINEMENT = 4

_DEFAULTS = {
    # name: (n_train, n_test, resolution)
    "burgers": (1000, 200, 256),
    "darcy": (1000, 200, 85),
    "antiderivative": (10000, 1000, 100),
}
_MIN_RESOLUTION = {"burgers": 4, "darcy": 3, "antiderivative": 2}


class OperatorProblem(NamedTuple):
    """One operator-learning data set.

    Attributes:
        name (str): ``"burgers"``, ``"darcy"`` or ``"antiderivative"``.
        x_train, y_train (Tensor): float32 input and output functions of the training
            split on the grid (shapes in the module docstring).
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
    return tuple(_DEFAULTS)


# ---------------------------------------------------------------------------------------
# Gaussian random fields
# ---------------------------------------------------------------------------------------

def grf_periodic_1d(rng: np.random.Generator, n: int, size: int, *, scale: float = 625.0,
                    shift: float = 25.0, power: float = 2.0) -> np.ndarray:
    """Samples of :math:`\\mathcal N(0, \\sigma (-\\Delta + \\tau I)^{-p})` on the periodic
    interval :math:`[0, 1)`.

    The covariance is diagonal in the Fourier basis :math:`e^{2\\pi i k x}` with
    eigenvalues :math:`\\lambda_k = \\sigma (4\\pi^2 k^2 + \\tau)^{-p}`; a sample is
    :math:`\\sum_k \\sqrt{\\lambda_k} \\xi_k e^{2\\pi i k x}` with complex Gaussian
    :math:`\\xi_k = \\overline{\\xi_{-k}}` for a real field, truncated at the grid's Nyquist
    mode (which is dropped). The pointwise variance is :math:`\\sum_{|k| < size/2} \\lambda_k`.

    Args:
        rng (numpy.random.Generator): the source of randomness.
        n (int): number of samples.
        size (int): grid points ``x_i = i / size``.
        scale (float): :math:`\\sigma`. Default ``625``.
        shift (float): :math:`\\tau`. Default ``25``.
        power (float): :math:`p`. Default ``2``.

    Returns:
        numpy.ndarray: float64 ``[n, size]``.
    """
    k = np.arange(size // 2 + 1)
    eigenvalues = scale * (4.0 * math.pi**2 * k**2 + shift) ** (-power)
    # One draw per sample, real and imaginary parts together, so that the first samples
    # do not depend on how many are drawn.
    real, imag = rng.standard_normal((n, 2, k.size)).transpose(1, 0, 2)
    coefficients = (real + 1j * imag) * np.sqrt(eigenvalues / 2.0)
    # The mean (k = 0) is real with the full variance; the Nyquist mode of an even grid
    # has no conjugate partner, so it is left out rather than given half a variance.
    coefficients[:, 0] = real[:, 0] * math.sqrt(eigenvalues[0])
    if size % 2 == 0:
        coefficients[:, -1] = 0.0
    return np.fft.irfft(coefficients, n=size, axis=-1) * size


def grf_neumann_2d(rng: np.random.Generator, n: int, size: int, *, shift: float = 9.0,
                   power: float = 2.0) -> np.ndarray:
    """Samples of :math:`\\mathcal N(0, (-\\Delta + \\tau I)^{-p})` on :math:`[0, 1]^2` with
    zero-Neumann boundary conditions, on the ``size`` × ``size`` node grid.

    The eigenfunctions are :math:`\\phi_{k}(x) \\phi_{l}(y)` with :math:`\\phi_0 = 1`,
    :math:`\\phi_k = \\sqrt 2 \\cos(\\pi k x)`, eigenvalues
    :math:`(\\pi^2 (k^2 + l^2) + \\tau)^{-p}`; the series is truncated at
    ``k, l < size``.

    Args:
        rng (numpy.random.Generator): the source of randomness.
        n (int): number of samples.
        size (int): nodes per side, ``x_i = i / (size - 1)``.
        shift (float): :math:`\\tau`. Default ``9``.
        power (float): :math:`p`. Default ``2``.

    Returns:
        numpy.ndarray: float64 ``[n, size, size]`` indexed ``[sample, i, j]``.
    """
    k = np.arange(size)
    x = np.linspace(0.0, 1.0, size)
    basis = np.cos(math.pi * x[:, None] * k[None, :])
    basis[:, 1:] *= math.sqrt(2.0)
    eigenvalues = (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + shift) ** (-power)
    xi = rng.standard_normal((n, size, size)) * np.sqrt(eigenvalues)
    return np.einsum("ik,nkl,jl->nij", basis, xi, basis, optimize=True)


def grf_squared_exponential_1d(rng: np.random.Generator, n: int, points: np.ndarray, *,
                               length_scale: float = 0.2, rtol: float = 1e-12) -> np.ndarray:
    """Samples of the zero-mean GRF with kernel :math:`\\exp(-(x - x')^2 / (2 \\ell^2))`
    at ``points``.

    Drawn as :math:`V \\sqrt{\\Lambda} \\xi` from the eigendecomposition
    :math:`K = V \\Lambda V^T` of the kernel matrix, keeping the eigenvalues above
    ``rtol`` times the largest: the matrix is numerically singular, so a Cholesky factor
    would need jitter, and the discarded part carries less than ``rtol * len(points)`` of
    the variance. Eigenvector signs are fixed (largest entry positive) so that a seed
    gives the same functions whatever LAPACK returns.

    Args:
        rng (numpy.random.Generator): the source of randomness.
        n (int): number of samples.
        points (numpy.ndarray): 1-D sample locations.
        length_scale (float): :math:`\\ell`. Default ``0.2``.
        rtol (float): relative eigenvalue cut-off. Default ``1e-12``.

    Returns:
        numpy.ndarray: float64 ``[n, len(points)]``.
    """
    factor = _squared_exponential_factor(tuple(np.asarray(points, dtype=np.float64).tolist()),
                                         float(length_scale), float(rtol))
    return rng.standard_normal((n, factor.shape[1])) @ factor.T


@functools.lru_cache(maxsize=4)
def _squared_exponential_factor(points: tuple[float, ...], length_scale: float, rtol: float) -> np.ndarray:
    """``V sqrt(Lambda)`` over the kept eigenpairs, memoized: the train and test splits
    share one eigendecomposition."""
    points = np.asarray(points)
    kernel = np.exp(-((points[:, None] - points[None, :]) ** 2) / (2.0 * length_scale**2))
    eigenvalues, vectors = np.linalg.eigh(kernel)
    keep = eigenvalues > rtol * eigenvalues[-1]
    eigenvalues, vectors = eigenvalues[keep][::-1], vectors[:, keep][:, ::-1]
    largest = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
    factor = vectors * np.sign(largest) * np.sqrt(eigenvalues)
    factor.setflags(write=False)
    return factor


# ---------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------

def _etdrk4_coefficients(linear: np.ndarray, step: float, contour_points: int = 32):
    """ETDRK4 weights for a diagonal linear part (Cox & Matthews' scheme), with the
    phi-functions evaluated as means over a circle of radius 1 around ``step * linear``
    in the complex plane (Kassam & Trefethen): the direct formulas cancel catastrophically
    for small ``|step * linear|`` and divide by zero at the mean mode."""
    roots = np.exp(1j * math.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
    z = step * linear[:, None] + roots[None, :]
    ez = np.exp(z)
    half = step * np.real(np.mean((np.exp(z / 2.0) - 1.0) / z, axis=1))
    f1 = step * np.real(np.mean((-4.0 - z + ez * (4.0 - 3.0 * z + z**2)) / z**3, axis=1))
    f2 = step * np.real(np.mean((2.0 + z + ez * (z - 2.0)) / z**3, axis=1))
    f3 = step * np.real(np.mean((-4.0 - 3.0 * z - z**2 + ez * (4.0 - z)) / z**3, axis=1))
    return np.exp(step * linear), np.exp(step * linear / 2.0), half, f1, f2, f3


def solve_burgers(u0: np.ndarray, *, viscosity: float = BURGERS_VISCOSITY, t_end: float = 1.0,
                  steps: int = BURGERS_STEPS, chunk: int = 256) -> np.ndarray:
    """Solve the viscous Burgers equation :math:`u_t + (u^2/2)_x = \\nu u_{xx}` on the
    periodic interval :math:`[0, 1)` from ``u0`` to time ``t_end``.

    Fourier pseudo-spectral in space (the product :math:`u^2` formed on the grid, its
    modes above two thirds of the Nyquist mode zeroed against aliasing) and ETDRK4 in
    time with ``steps`` equal steps: the stiff diffusion is integrated exactly, so the
    step is limited by the advection of the low modes only. Fourth order in time; a
    Cole–Hopf exact solution is matched to ~1e-9 with the defaults.

    Args:
        u0 (numpy.ndarray): ``[n, s]`` initial values at ``x_i = i / s``.
        viscosity (float): :math:`\\nu`. Default ``0.1``.
        t_end (float): final time. Default ``1``.
        steps (int): time steps. Default ``200``.
        chunk (int): samples integrated at once (bounds memory). Default ``256``.

    Returns:
        numpy.ndarray: float64 ``[n, s]``, :math:`u(\\cdot, t_{end})`.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim != 2:
        raise ValueError(f"Expected `u0` to be a 2-D array [samples, points] (got shape {list(u0.shape)})")
    size = u0.shape[1]
    k = np.fft.rfftfreq(size, d=1.0 / size)
    e, e_half, half, f1, f2, f3 = _etdrk4_coefficients(-viscosity * (2.0 * math.pi * k) ** 2, t_end / steps)
    # d/dx of -u^2/2 in Fourier space, restricted to the modes the 2/3 rule keeps.
    advection = -0.5j * (2.0 * math.pi * k) * (k < size / 3.0)

    def nonlinear(v):
        u = np.fft.irfft(v, n=size, axis=-1)
        return advection * np.fft.rfft(u * u, axis=-1)

    out = np.empty_like(u0)
    for start in range(0, u0.shape[0], chunk):
        v = np.fft.rfft(u0[start:start + chunk], axis=-1)
        for _ in range(steps):
            nv = nonlinear(v)
            a = e_half * v + half * nv
            na = nonlinear(a)
            b = e_half * v + half * na
            nb = nonlinear(b)
            c = e_half * a + half * (2.0 * nb - nv)
            nc = nonlinear(c)
            v = e * v + f1 * nv + 2.0 * f2 * (na + nb) + f3 * nc
        out[start:start + chunk] = np.fft.irfft(v, n=size, axis=-1)
    return out


@functools.lru_cache(maxsize=8)
def _darcy_pattern(s: int):
    """Row and column indices of the five-point matrix over the ``(s - 2)^2`` interior
    nodes (row-major over ``(i, j)``): the diagonal, then the east, west, north and south
    neighbours that are interior (boundary values are zero, so they have no column)."""
    m = s - 2
    index = np.arange(m * m).reshape(m, m)
    i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    rows, cols, masks = [index.ravel()], [index.ravel()], []
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        inside = (i + di >= 0) & (i + di < m) & (j + dj >= 0) & (j + dj < m)
        rows.append(index[inside])
        cols.append(index[i[inside] + di, j[inside] + dj])
        masks.append(inside)
    return np.concatenate(rows), np.concatenate(cols), tuple(masks)


def _darcy_matrix(a: np.ndarray):
    """The five-point matrix of :math:`-\\nabla \\cdot (a \\nabla u)` over the interior
    nodes of the ``[s, s]`` grid, Dirichlet zero on the boundary, face coefficients the
    mean of the two adjacent nodes."""
    import scipy.sparse as sparse

    s = a.shape[0]
    h2 = (1.0 / (s - 1)) ** 2
    centre = a[1:-1, 1:-1]
    faces = (0.5 * (centre + a[2:, 1:-1]) / h2,    # (i + 1/2, j)
             0.5 * (centre + a[:-2, 1:-1]) / h2,   # (i - 1/2, j)
             0.5 * (centre + a[1:-1, 2:]) / h2,    # (i, j + 1/2)
             0.5 * (centre + a[1:-1, :-2]) / h2)   # (i, j - 1/2)
    rows, cols, masks = _darcy_pattern(s)
    values = [sum(faces).ravel()] + [-face[mask] for face, mask in zip(faces, masks)]
    size = (s - 2) ** 2
    return sparse.csc_matrix((np.concatenate(values), (rows, cols)), shape=(size, size))


def solve_darcy(a: np.ndarray, forcing: float | np.ndarray = 1.0) -> np.ndarray:
    """Solve :math:`-\\nabla \\cdot (a \\nabla u) = f` on :math:`(0, 1)^2`, :math:`u = 0` on
    the boundary, by five-point finite differences on the node grid of ``a``.

    At interior node :math:`(i, j)`, with :math:`h = 1/(s-1)` and face coefficients
    :math:`a_{i+1/2, j} = (a_{i,j} + a_{i+1,j}) / 2`:
    :math:`h^{-2} \\sum_{\\text{faces}} a_{\\text{face}} (u_{i,j} - u_{\\text{neighbour}}) = f_{i,j}`.
    Second order for smooth :math:`a`. Each sample is one sparse LU solve
    (``scipy.sparse.linalg.spsolve``).

    Args:
        a (numpy.ndarray): ``[n, s, s]`` or ``[s, s]`` positive coefficients at the nodes
            ``(i, j) / (s - 1)``.
        forcing (float or numpy.ndarray): :math:`f`, a constant or values of the shape of
            ``a``; only interior nodes are used. Default ``1``.

    Returns:
        numpy.ndarray: float64 :math:`u` of the shape of ``a``, zero on the boundary.
    """
    import scipy.sparse.linalg as sparse_linalg

    a = np.asarray(a, dtype=np.float64)
    single = a.ndim == 2
    batch = a[None] if single else a
    if batch.ndim != 3 or batch.shape[1] != batch.shape[2] or batch.shape[1] < 3:
        raise ValueError(f"Expected `a` to be [s, s] or [n, s, s] with s >= 3 (got shape {list(a.shape)})")
    if not np.all(batch > 0):
        raise ValueError("Expected `a` to be positive everywhere (got a non-positive coefficient)")
    forcing = np.broadcast_to(np.asarray(forcing, dtype=np.float64), a.shape)
    forcing = forcing[None] if single else forcing
    s = batch.shape[1]
    u = np.zeros_like(batch)
    for sample in range(batch.shape[0]):
        rhs = np.ascontiguousarray(forcing[sample, 1:-1, 1:-1]).ravel()
        # Minimum degree on A^T + A suits the symmetric five-point matrix (fill-in ~20 %
        # lower than the default COLAMD ordering).
        solution = sparse_linalg.spsolve(_darcy_matrix(batch[sample]), rhs, permc_spec="MMD_AT_PLUS_A")
        u[sample, 1:-1, 1:-1] = solution.reshape(s - 2, s - 2)
    return u[0] if single else u


def antiderivative(u: np.ndarray, points: np.ndarray) -> np.ndarray:
    """:math:`s(x_i) = \\int_{x_0}^{x_i} u`, where :math:`u` is the not-a-knot cubic spline
    through ``(points, u)``, integrated exactly (fourth order in the spacing for smooth
    :math:`u`).

    Args:
        u (numpy.ndarray): ``[n, p]`` values at ``points``.
        points (numpy.ndarray): ``[p]`` increasing locations, ``p >= 4``.

    Returns:
        numpy.ndarray: float64 ``[n, p]``, zero in the first column.
    """
    from scipy.interpolate import CubicSpline

    spline = CubicSpline(np.asarray(points, dtype=np.float64), np.asarray(u, dtype=np.float64), axis=1)
    values = spline.antiderivative()(points)
    return values - values[:, :1]


# ---------------------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------------------

def _generate_burgers(rng, n, resolution):
    fine = resolution * max(1, -(-BURGERS_FINE_GRID // resolution))
    u0 = grf_periodic_1d(rng, n, fine)
    u1 = solve_burgers(u0)
    stride = fine // resolution
    meta = {"viscosity": BURGERS_VISCOSITY, "t_end": 1.0, "solver_grid": fine, "time_steps": BURGERS_STEPS,
            "initial_condition": "N(0, 625(-Laplacian + 25 I)^-2), periodic"}
    return u0[:, ::stride], u1[:, ::stride], meta


def _generate_darcy(rng, n, resolution):
    field = grf_neumann_2d(rng, n, resolution)
    a = np.where(field >= 0.0, DARCY_HIGH, DARCY_LOW)
    u = solve_darcy(a)
    meta = {"coefficient": f"{DARCY_HIGH:g} where g >= 0, {DARCY_LOW:g} where g < 0, "
                           "g ~ N(0, (-Laplacian + 9 I)^-2), Neumann", "forcing": 1.0}
    return a, u, meta


def _generate_antiderivative(rng, n, resolution):
    fine = (resolution - 1) * ANTIDERIVATIVE_REFINEMENT + 1
    points = np.linspace(0.0, 1.0, fine)
    u = grf_squared_exponential_1d(rng, n, points, length_scale=ANTIDERIVATIVE_LENGTH_SCALE)
    s = antiderivative(u, points)
    stride = ANTIDERIVATIVE_REFINEMENT
    meta = {"length_scale": ANTIDERIVATIVE_LENGTH_SCALE, "integration_grid": fine,
            "integration": "exact integral of the cubic spline through the fine grid"}
    return u[:, ::stride], s[:, ::stride], meta


_GENERATORS = {"burgers": _generate_burgers, "darcy": _generate_darcy, "antiderivative": _generate_antiderivative}


def _grid(name: str, resolution: int) -> torch.Tensor:
    if name == "burgers":
        return torch.arange(resolution, dtype=torch.float64).div(resolution).float()
    line = torch.linspace(0.0, 1.0, resolution, dtype=torch.float64)
    if name == "antiderivative":
        return line.float()
    return torch.stack(torch.meshgrid(line, line, indexing="ij"), dim=-1).float()


def _rng(seed: int, name: str, split: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), split])


# ---------------------------------------------------------------------------------------
# Arguments and cache
# ---------------------------------------------------------------------------------------

def _check_positive_int(value, argument: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected `{argument}` to be an int >= {minimum} (got {type(value).__name__}: {value!r})")
    return int(value)


def default_cache_dir() -> Path:
    """``$PIGEON_CACHE_DIR/operators``, or ``~/.cache/pigeon/operators`` when the variable
    is unset (the root the compiled-kernel caches use)."""
    return pigeon_cache_dir("operators")


def _cache_path(folder: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return folder / f"{key['name']}-{digest}.pt"


_FIELDS = ("x_train", "y_train", "x_test", "y_test", "grid")


def _read_cache(path: Path, key: dict) -> OperatorProblem | None:
    """The problem stored at ``path``, or ``None`` when there is none; a file that cannot
    be read or does not hold what ``key`` asks for is reported once and ignored."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored["key"] != key:
            raise ValueError("its key does not match the arguments")
        tensors = {field: stored[field] for field in _FIELDS}
        if not all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in tensors.values()):
            raise ValueError("it holds something other than float32 tensors")
        meta = dict(stored["meta"])
    except Exception as error:  # noqa: BLE001 - any unreadable file is regenerated
        warnings.warn(f"Ignoring the unreadable operator-data cache file {str(path)!r} ({type(error).__name__}: "
                      f"{error}); regenerating it", RuntimeWarning, stacklevel=3)
        return None
    meta["from_cache"] = True
    return OperatorProblem(key["name"], meta=meta, **tensors)


def _write_cache(path: Path, key: dict, problem: OperatorProblem) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    stored = {"key": key, "meta": {k: v for k, v in problem.meta.items() if k != "from_cache"},
              **{field: getattr(problem, field) for field in _FIELDS}}
    try:
        torch.save(stored, temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def load_operator_problem(name: str, *, n_train: int | None = None, n_test: int | None = None,
                          resolution: int | None = None, seed: int = 0,
                          cache_dir: str | os.PathLike | None = None) -> OperatorProblem:
    """Generate (or read from the cache) the operator-learning problem ``name``.

    The problems, their equations and defaults are described in the module docstring
    of :mod:`pigeon.data.operators`. The result is written to
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
    if not isinstance(name, str) or name not in _DEFAULTS:
        raise ValueError(f"Expected `name` to be one of {list(_DEFAULTS)} (got {name!r})")
    default_train, default_test, default_resolution = _DEFAULTS[name]
    n_train = _check_positive_int(default_train if n_train is None else n_train, "n_train")
    n_test = _check_positive_int(default_test if n_test is None else n_test, "n_test")
    resolution = _check_positive_int(default_resolution if resolution is None else resolution, "resolution",
                                     _MIN_RESOLUTION[name])
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"Expected `seed` to be a non-negative int (got {type(seed).__name__}: {seed!r})")
    seed = int(seed)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise ValueError(f"Expected `cache_dir` to be a path or None (got {type(cache_dir).__name__})")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    key = {"name": name, "n_train": n_train, "n_test": n_test, "resolution": resolution, "seed": seed,
           "version": _FORMAT_VERSION}
    path = _cache_path(folder, key)
    cached = _read_cache(path, key)
    if cached is not None:
        return cached

    started = time.perf_counter()
    generate = _GENERATORS[name]
    x_train, y_train, settings = generate(_rng(seed, name, 0), n_train, resolution)
    x_test, y_test, _ = generate(_rng(seed, name, 1), n_test, resolution)
    meta = {"name": name, "n_train": n_train, "n_test": n_test, "resolution": resolution, "seed": seed,
            **settings, "generation_seconds": time.perf_counter() - started}

    def tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array)).float()

    problem = OperatorProblem(name, tensor(x_train), tensor(y_train), tensor(x_test), tensor(y_test),
                              _grid(name, resolution), meta)
    _write_cache(path, key, problem)
    return problem._replace(meta={**meta, "from_cache": False})
