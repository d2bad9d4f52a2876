"""The antiderivative problem (DeepONet's first example): :math:`s(x) = \\int_0^x u` on
:math:`[0, 1]` for Gaussian random fields :math:`u`, integrated exactly through a cubic
spline (SciPy, imported when it is integrated)."""

from __future__ import annotations

import numpy as np
import torch

from pigeon.data.operators.fields import grf_squared_exponential_1d

__all__ = ["antiderivative", "generate", "grid"]

LENGTH_SCALE = 0.2
REFINEMENT = 4


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


def generate(rng: np.random.Generator, n: int, resolution: int):
    """``(u, s, settings)`` of ``n`` functions drawn from ``rng`` on a grid four times finer
    than the ``resolution`` sensors, integrated there and subsampled to the sensors."""
    fine = (resolution - 1) * REFINEMENT + 1
    points = np.linspace(0.0, 1.0, fine)
    u = grf_squared_exponential_1d(rng, n, points, length_scale=LENGTH_SCALE)
    s = antiderivative(u, points)
    stride = REFINEMENT
    meta = {"length_scale": LENGTH_SCALE, "integration_grid": fine,
            "integration": "exact integral of the cubic spline through the fine grid"}
    return u[:, ::stride], s[:, ::stride], meta


def grid(resolution: int) -> torch.Tensor:
    """float32 coordinates of the ``resolution`` grid points."""
    return torch.linspace(0.0, 1.0, resolution, dtype=torch.float64).float()
