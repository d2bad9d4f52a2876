"""Gaussian random fields: the random input functions of the operator problems.

Each sampler draws from a NumPy generator it is given, never from global state, and
draws sample by sample, so the first samples do not depend on how many are drawn.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["grf_periodic_1d", "grf_neumann_2d", "grf_squared_exponential_1d"]


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
