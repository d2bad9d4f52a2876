"""Operator-learning data: the solvers against exact solutions, the random fields'
statistics, determinism per seed and the on-disk cache."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from pigeon.data.operators import (
    antiderivative,
    grf_neumann_2d,
    grf_periodic_1d,
    grf_squared_exponential_1d,
    load_operator_problem,
    solve_burgers,
    solve_darcy,
)
from pigeon.data.operators.problems import PROBLEMS

# Sizes small enough that every problem generates in well under a second.
SMALL = {
    "burgers": dict(n_train=4, n_test=2, resolution=64),
    "darcy": dict(n_train=3, n_test=2, resolution=17),
    "antiderivative": dict(n_train=5, n_test=3, resolution=20),
}
SHAPES = {
    "burgers": ((4, 64), (2, 64), (64,)),
    "darcy": ((3, 17, 17), (2, 17, 17), (17, 17, 2)),
    "antiderivative": ((5, 20), (3, 20), (20,)),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_dtypes_and_determinism_per_seed(name, tmp_path):
    first = load_operator_problem(name, seed=3, cache_dir=tmp_path / "a", **SMALL[name])
    again = load_operator_problem(name, seed=3, cache_dir=tmp_path / "b", **SMALL[name])
    other = load_operator_problem(name, seed=4, cache_dir=tmp_path / "a", **SMALL[name])
    train_shape, test_shape, grid_shape = SHAPES[name]
    assert first.name == name
    for field in ("x_train", "y_train", "x_test", "y_test", "grid"):
        tensor = getattr(first, field)
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()
        assert torch.equal(tensor, getattr(again, field)), field
    assert first.x_train.shape == first.y_train.shape == train_shape
    assert first.x_test.shape == first.y_test.shape == test_shape
    assert first.grid.shape == grid_shape
    assert not first.meta["from_cache"] and not again.meta["from_cache"]
    assert first.meta["seed"] == 3 and first.meta["generation_seconds"] > 0
    assert not torch.allclose(first.x_train, other.x_train)
    assert not torch.allclose(first.x_train, first.x_test[:1].expand_as(first.x_train))


def test_train_split_does_not_depend_on_n_test(tmp_path):
    small = load_operator_problem("burgers", n_train=3, n_test=1, resolution=32, cache_dir=tmp_path)
    large = load_operator_problem("burgers", n_train=3, n_test=2, resolution=32, cache_dir=tmp_path)
    assert not large.meta["from_cache"]
    assert torch.equal(small.x_train, large.x_train) and torch.equal(small.y_train, large.y_train)
    assert torch.equal(small.x_test, large.x_test[:1])


def test_burgers_resolutions_dividing_the_solver_grid_are_subsamples_of_one_solution(tmp_path):
    coarse = load_operator_problem("burgers", n_train=2, n_test=1, resolution=64, cache_dir=tmp_path)
    fine = load_operator_problem("burgers", n_train=2, n_test=1, resolution=128, cache_dir=tmp_path)
    assert torch.equal(coarse.x_train, fine.x_train[:, ::2])
    assert torch.equal(coarse.y_train, fine.y_train[:, ::2])
    assert torch.equal(coarse.grid, fine.grid[::2])


def test_cache_hit_returns_the_stored_tensors_without_generating(tmp_path, monkeypatch):
    first = load_operator_problem("darcy", cache_dir=tmp_path, **SMALL["darcy"])

    def refuse(*args):
        raise AssertionError("generated although a cache file exists")

    monkeypatch.setitem(PROBLEMS, "darcy", dataclasses.replace(PROBLEMS["darcy"], generate=refuse))
    second = load_operator_problem("darcy", cache_dir=tmp_path, **SMALL["darcy"])
    assert second.meta["from_cache"] and not first.meta["from_cache"]
    for field in ("x_train", "y_train", "x_test", "y_test", "grid"):
        assert torch.equal(getattr(first, field), getattr(second, field))
    assert second.meta["generation_seconds"] == first.meta["generation_seconds"]
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.iterdir()).name]  # no temporary left


def test_cache_dir_defaults_under_pigeon_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    load_operator_problem("antiderivative", **SMALL["antiderivative"])
    files = list((tmp_path / "operators").glob("antiderivative-*.pt"))
    assert len(files) == 1


def test_corrupt_cache_file_is_regenerated_with_one_warning(tmp_path):
    first = load_operator_problem("antiderivative", cache_dir=tmp_path, **SMALL["antiderivative"])
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="unreadable operator-data cache file") as record:
        second = load_operator_problem("antiderivative", cache_dir=tmp_path, **SMALL["antiderivative"])
    assert len(record) == 1
    assert not second.meta["from_cache"]
    assert torch.equal(first.y_train, second.y_train)
    assert load_operator_problem("antiderivative", cache_dir=tmp_path, **SMALL["antiderivative"]).meta["from_cache"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="heat"), "Expected `name` to be one of"),
    (dict(name="burgers", n_train=0), "Expected `n_train` to be an int >= 1 (got int: 0)"),
    (dict(name="burgers", n_test=2.5), "Expected `n_test` to be an int >= 1 (got float: 2.5)"),
    (dict(name="darcy", resolution=2), "Expected `resolution` to be an int >= 3 (got int: 2)"),
    (dict(name="antiderivative", seed=-1), "Expected `seed` to be a non-negative int (got int: -1)"),
    (dict(name="antiderivative", seed=True), "Expected `seed` to be a non-negative int (got bool: True)"),
    (dict(name="darcy", cache_dir=3), "Expected `cache_dir` to be a path or None (got int)"),
])
def test_bad_arguments_are_named(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_operator_problem(name, **kwargs)


# --- Burgers --------------------------------------------------------------------------

def _cole_hopf(x, t, viscosity, a=1.0, b=0.8):
    """u = -2 nu phi_x / phi with phi = a + b exp(-4 pi^2 nu t) cos(2 pi x), a solution of
    the heat equation, is an exact periodic solution of viscous Burgers."""
    decay = b * np.exp(-4.0 * math.pi**2 * viscosity * t)
    return 4.0 * math.pi * viscosity * decay * np.sin(2 * math.pi * x) / (a + decay * np.cos(2 * math.pi * x))


@pytest.mark.parametrize("viscosity, t_end", [(0.1, 0.5), (0.02, 1.0)])
def test_burgers_matches_the_cole_hopf_exact_solution(viscosity, t_end):
    x = np.arange(128) / 128
    u0 = np.stack([_cole_hopf(x, 0.0, viscosity), _cole_hopf(x, 0.0, viscosity, b=-0.5)])
    u1 = solve_burgers(u0, viscosity=viscosity, t_end=t_end)
    exact = np.stack([_cole_hopf(x, t_end, viscosity), _cole_hopf(x, t_end, viscosity, b=-0.5)])
    # ETDRK4 with 200 steps: the error is ~1e-10 here (fourth order in time, spectral in
    # space), against solutions of size ~0.1 at t_end.
    np.testing.assert_allclose(u1, exact, atol=1e-8)
    assert np.abs(exact).max() > 0.05


def test_burgers_time_stepping_converges_at_fourth_order():
    rng = np.random.default_rng(0)
    u0 = grf_periodic_1d(rng, 2, 256)
    reference = solve_burgers(u0, steps=400)
    errors = [np.abs(solve_burgers(u0, steps=steps) - reference).max() for steps in (25, 50)]
    assert errors[1] < 1e-5
    assert errors[0] / errors[1] > 10  # 16 for a fourth-order method, ~2 or 4 for a bug


def test_burgers_conserves_the_mean():
    u0 = grf_periodic_1d(np.random.default_rng(1), 3, 256)
    np.testing.assert_allclose(solve_burgers(u0).mean(axis=1), u0.mean(axis=1), atol=1e-12)


# --- Darcy ----------------------------------------------------------------------------

def _darcy_residual(a, u, forcing):
    """-div(a grad u) - f at interior nodes, written out face by face (not with the solver's matrix)."""
    h2 = (1.0 / (a.shape[0] - 1)) ** 2
    c = u[1:-1, 1:-1]
    flux = (0.5 * (a[1:-1, 1:-1] + a[2:, 1:-1]) * (c - u[2:, 1:-1])
            + 0.5 * (a[1:-1, 1:-1] + a[:-2, 1:-1]) * (c - u[:-2, 1:-1])
            + 0.5 * (a[1:-1, 1:-1] + a[1:-1, 2:]) * (c - u[1:-1, 2:])
            + 0.5 * (a[1:-1, 1:-1] + a[1:-1, :-2]) * (c - u[1:-1, :-2]))
    return flux / h2 - forcing


def test_darcy_solution_satisfies_the_discrete_equation(tmp_path):
    problem = load_operator_problem("darcy", n_train=2, n_test=1, resolution=29, cache_dir=tmp_path)
    a = problem.x_train.double().numpy()
    assert set(np.unique(a)) == {3.0, 12.0}
    u = solve_darcy(a)
    np.testing.assert_allclose(u, problem.y_train.double().numpy(), rtol=1e-6, atol=1e-9)  # float32 storage
    for sample in range(2):
        residual = _darcy_residual(a[sample], u[sample], 1.0)
        assert np.abs(residual).max() < 1e-9  # LU solve in float64 of an O(1e4)-scaled system
        assert np.all(u[sample, 0, :] == 0) and np.all(u[sample, :, -1] == 0)
        assert u[sample, 1:-1, 1:-1].min() > 0  # maximum principle: positive forcing, zero boundary


@pytest.mark.parametrize("coefficient", ["constant", "variable"])
def test_darcy_converges_to_a_manufactured_solution_at_second_order(coefficient):
    errors = []
    for s in (17, 33):
        x, y = np.meshgrid(np.linspace(0, 1, s), np.linspace(0, 1, s), indexing="ij")
        exact = np.sin(math.pi * x) * np.sin(math.pi * y)
        laplacian = -2 * math.pi**2 * exact
        if coefficient == "constant":
            a = np.full_like(x, 3.0)
            forcing = -3.0 * laplacian
        else:
            a = 1.0 + x * y
            u_x = math.pi * np.cos(math.pi * x) * np.sin(math.pi * y)
            u_y = math.pi * np.sin(math.pi * x) * np.cos(math.pi * y)
            forcing = -(a * laplacian + y * u_x + x * u_y)
        errors.append(np.abs(solve_darcy(a, forcing) - exact).max())
    assert errors[1] < 2e-3
    assert 3.5 < errors[0] / errors[1] < 4.5  # h^2


def test_darcy_rejects_bad_coefficients():
    expected = r"Expected `a` to be \[s, s\] or \[n, s, s\] with s >= 3 \(got shape \[4, 5\]\)"
    with pytest.raises(ValueError, match=expected):
        solve_darcy(np.ones((4, 5)))
    with pytest.raises(ValueError, match="Expected `a` to be positive everywhere"):
        solve_darcy(-np.ones((5, 5)))


# --- antiderivative -------------------------------------------------------------------

def test_antiderivative_is_exact_on_cubics_and_accurate_on_smooth_functions():
    x = np.linspace(0.0, 1.0, 41)
    cubic = antiderivative((2 * x**3 - x + 0.5)[None], x)[0]
    np.testing.assert_allclose(cubic, x**4 / 2 - x**2 / 2 + 0.5 * x, atol=1e-14)
    x = np.linspace(0.0, 1.0, 201)
    wave = antiderivative(np.cos(2 * math.pi * x)[None], x)[0]
    np.testing.assert_allclose(wave, np.sin(2 * math.pi * x) / (2 * math.pi), atol=1e-8)


def test_antiderivative_problem_derivative_of_y_is_x(tmp_path):
    problem = load_operator_problem("antiderivative", n_train=8, n_test=1, cache_dir=tmp_path)
    u, s = problem.x_train.double(), problem.y_train.double()
    h = 1.0 / (u.shape[1] - 1)
    torch.testing.assert_close(problem.grid, torch.linspace(0, 1, 100), rtol=0, atol=1e-7)
    assert torch.all(s[:, 0] == 0)
    # Fourth-order central differences: error ~ h^4 |u^(5)| / 30 ~ 1e-5 for length scale 0.2,
    # above the float32 rounding of s divided by h (~1e-5 as well).
    derivative = (s[:, :-4] - 8 * s[:, 1:-3] + 8 * s[:, 3:-1] - s[:, 4:]) / (12 * h)
    torch.testing.assert_close(derivative, u[:, 2:-2], atol=2e-4, rtol=0)


# --- random fields --------------------------------------------------------------------

def test_periodic_grf_has_zero_mean_and_the_spectral_variance():
    fields = grf_periodic_1d(np.random.default_rng(0), 4000, 64)
    k = np.arange(1, 32)
    variance = 625 * 25.0**-2 + 2 * np.sum(625 * (4 * math.pi**2 * k**2 + 25) ** -2.0)
    # 4000 samples: the standard error of the mean is sqrt(variance / 4000) ~ 0.02.
    assert np.abs(fields.mean(axis=0)).max() < 5 * math.sqrt(variance / 4000)
    np.testing.assert_allclose(fields.var(axis=0).mean(), variance, rtol=0.05)


def test_neumann_grf_is_centred_and_not_degenerate():
    fields = grf_neumann_2d(np.random.default_rng(0), 500, 21)
    assert np.isfinite(fields).all()
    variance = fields.var(axis=0)
    assert variance.min() > 1e-4 and variance.max() < 1.0
    assert np.abs(fields.mean(axis=0)).max() < 5 * math.sqrt(variance.max() / 500)
    # A thresholded field takes both values in most samples.
    both = ((fields >= 0).any(axis=(1, 2)) & (fields < 0).any(axis=(1, 2))).mean()
    assert both > 0.5


def test_squared_exponential_grf_matches_its_kernel():
    points = np.linspace(0.0, 1.0, 51)
    fields = grf_squared_exponential_1d(np.random.default_rng(0), 20000, points, length_scale=0.2)
    covariance = fields.T @ fields / fields.shape[0]
    kernel = np.exp(-((points[:, None] - points[None, :]) ** 2) / (2 * 0.2**2))
    # 20000 samples: the standard error of a covariance entry is at most sqrt(2 / 20000) = 0.01.
    np.testing.assert_allclose(covariance, kernel, atol=0.05)
    assert np.abs(fields.mean(axis=0)).max() < 5 * math.sqrt(1 / 20000)
