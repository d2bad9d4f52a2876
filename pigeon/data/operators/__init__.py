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

The modules, one job each: :mod:`~pigeon.data.operators.fields` (the Gaussian random
fields), :mod:`~pigeon.data.operators.burgers`, :mod:`~pigeon.data.operators.darcy` and
:mod:`~pigeon.data.operators.integral` (each problem's solver, generator and grid),
:mod:`~pigeon.data.operators.cache` (the files) and :mod:`~pigeon.data.operators.problems`
(the problems by name and :func:`load_operator_problem`).
"""

from pigeon.data.operators.burgers import solve_burgers
from pigeon.data.operators.cache import default_cache_dir
from pigeon.data.operators.darcy import solve_darcy
from pigeon.data.operators.fields import grf_neumann_2d, grf_periodic_1d, grf_squared_exponential_1d
from pigeon.data.operators.integral import antiderivative
from pigeon.data.operators.problems import OperatorProblem, load_operator_problem, operator_problem_names

__all__ = [
    "OperatorProblem", "load_operator_problem", "operator_problem_names", "default_cache_dir",
    "grf_periodic_1d", "grf_neumann_2d", "grf_squared_exponential_1d",
    "solve_burgers", "solve_darcy", "antiderivative",
]
