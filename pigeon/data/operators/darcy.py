"""The Darcy problem: :math:`-\\nabla \\cdot (a \\nabla u) = 1` on :math:`(0, 1)^2`,
:math:`u = 0` on the boundary, for a thresholded Gaussian random field :math:`a`, solved
by five-point finite differences and a sparse LU (SciPy, imported when it is solved)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from pigeon.data.operators.fields import grf_neumann_2d

__all__ = ["solve_darcy", "generate", "grid"]

HIGH, LOW = 12.0, 3.0


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


def generate(rng: np.random.Generator, n: int, resolution: int):
    """``(a, u, settings)`` of ``n`` coefficients drawn from ``rng`` on the ``resolution`` x
    ``resolution`` node grid."""
    field = grf_neumann_2d(rng, n, resolution)
    a = np.where(field >= 0.0, HIGH, LOW)
    u = solve_darcy(a)
    meta = {"coefficient": f"{HIGH:g} where g >= 0, {LOW:g} where g < 0, "
                           "g ~ N(0, (-Laplacian + 9 I)^-2), Neumann", "forcing": 1.0}
    return a, u, meta


def grid(resolution: int) -> torch.Tensor:
    """float32 coordinates of the ``resolution`` grid points."""
    line = torch.linspace(0.0, 1.0, resolution, dtype=torch.float64)
    return torch.stack(torch.meshgrid(line, line, indexing="ij"), dim=-1).float()
