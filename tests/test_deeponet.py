"""DeepONet: the compiled module against the plain-PyTorch reference, forward and
gradients, on every backend; the kernels it compiles to; argument checks."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from pigeon import reference
from pigeon.ir.graph_ir import GLOBAL, NODE
from pigeon.ir.kernel_ir import GemmKernel
from pigeon.nn import DeepONet

# fp64 throughout: the compiled and reference paths sum in different orders, ~1e-15 apart.
TOL = dict(rtol=1e-10, atol=1e-10)


def _pair(branch_sizes, trunk_sizes, *, backend="torch", seed=0, **kwargs):
    """A compiled module and a reference with the same random (non-zero) parameters."""
    torch.manual_seed(seed)
    ref = reference.DeepONet(branch_sizes, trunk_sizes, dtype=torch.float64, **kwargs)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in ref.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.5)
    compiled = DeepONet(branch_sizes, trunk_sizes, backend=backend, dtype=torch.float64, **kwargs)
    compiled.load_state_dict(ref.state_dict())
    return compiled, ref


def _inputs(batch, sensors, points, dim, seed=2):
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, sensors, generator=generator, dtype=torch.float64)
    y = torch.rand(points, dim, generator=generator, dtype=torch.float64)
    return u, y


def _check_forward_and_gradients(compiled, ref, u, y):
    u_c, u_r = u.clone().requires_grad_(), u.clone().requires_grad_()
    out, expected = compiled(u_c, y), ref(u_r, y)
    assert out.shape == expected.shape == (u.shape[0], y.shape[0])
    torch.testing.assert_close(out, expected, **TOL)
    weight = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    names = [name for name, _ in ref.named_parameters()]
    grads = torch.autograd.grad((out * weight).sum(), [u_c, *compiled.parameters()])
    expected_grads = torch.autograd.grad((expected * weight).sum(), [u_r, *ref.parameters()])
    for name, got, want in zip(["u", *names], grads, expected_grads):
        assert want.abs().max() > 0, name
        torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"gradient of {name}: {m}")


CASES = [
    # branch sizes, trunk sizes: hidden layers on both sides; none in the branch; a 2-D trunk
    ([7, 9, 5], [1, 6, 5]),
    ([6, 4], [2, 8, 8, 4]),
]


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("sizes", CASES, ids=["deep-branch", "shallow-branch"])
def test_compiled_matches_reference(backend, stacked, activation, sizes):
    branch_sizes, trunk_sizes = sizes
    compiled, ref = _pair(branch_sizes, trunk_sizes, backend=backend, stacked=stacked, activation=activation)
    u, y = _inputs(5, branch_sizes[0], 6, trunk_sizes[0])
    _check_forward_and_gradients(compiled, ref, u, y)


@pytest.mark.parametrize("stacked", [False, True])
def test_compiled_matches_reference_on_triton(stacked):
    compiled, ref = _pair([5, 6, 3], [1, 4, 3], backend="triton", stacked=stacked)
    u, y = _inputs(3, 5, 4, 1)
    _check_forward_and_gradients(compiled, ref, u, y)


@pytest.mark.parametrize("stacked", [False, True])
def test_without_biases(stacked):
    compiled, ref = _pair([6, 5, 3], [1, 5, 3], stacked=stacked, bias=False)
    assert not any("bias" in name for name, _ in compiled.named_parameters())
    u, y = _inputs(4, 6, 5, 1)
    _check_forward_and_gradients(compiled, ref, u, y)


def test_same_seed_same_parameters_and_state_dict_keys():
    torch.manual_seed(5)
    ref = reference.DeepONet([8, 6, 4], [1, 6, 4], stacked=True)
    torch.manual_seed(5)
    compiled = DeepONet([8, 6, 4], [1, 6, 4], stacked=True)
    assert list(ref.state_dict()) == list(compiled.state_dict()) == [
        "branch_weight_0", "branch_bias_0", "branch_weight_1", "branch_bias_1",
        "trunk_weight_0", "trunk_bias_0", "trunk_weight_1", "trunk_bias_1", "bias"]
    for name, value in ref.state_dict().items():
        assert torch.equal(value, compiled.state_dict()[name]), name
    assert compiled.branch_weight_0.shape == (8, 4, 6) and compiled.branch_weight_1.shape == (4, 6, 1)
    assert compiled.branch_weight_0.std() > 0 and torch.all(compiled.bias == 0)


def test_one_dimensional_points_may_be_a_vector():
    compiled, ref = _pair([5, 4, 3], [1, 4, 3])
    u, y = _inputs(2, 5, 7, 1)
    torch.testing.assert_close(compiled(u, y[:, 0]), ref(u, y), **TOL)


def test_reference_stacked_is_p_separate_networks():
    """The reference's batched einsums against p explicit MLPs, one per basis function."""
    _, ref = _pair([6, 5, 4, 3], [1, 4, 3], stacked=True, activation="tanh")
    u, y = _inputs(4, 6, 5, 1)
    columns = []
    for k in range(3):
        h = torch.tanh(u @ ref.branch_weight_0[:, k] + ref.branch_bias_0[k])
        h = torch.tanh(h @ ref.branch_weight_1[k] + ref.branch_bias_1[k])
        columns.append(h @ ref.branch_weight_2[k] + ref.branch_bias_2[k])
    branch = torch.cat(columns, dim=1)
    torch.testing.assert_close(ref.branch(u), branch, **TOL)
    trunk = torch.tanh(torch.tanh(y @ ref.trunk_weight_0 + ref.trunk_bias_0) @ ref.trunk_weight_1 + ref.trunk_bias_1)
    torch.testing.assert_close(ref(u, y), branch @ trunk.T + ref.bias, **TOL)


@pytest.mark.parametrize("stacked", [False, True])
def test_kernels_merge_is_one_gemm_and_stacked_nets_are_batched(stacked):
    compiled, _ = _pair([6, 5, 4], [1, 5, 4], stacked=stacked)
    u, y = _inputs(3, 6, 7, 1)
    graph = compiled.function_graph(3, u.device)
    plan = compiled.compiled.plan(graph, {"u": u, "y": y, **dict(compiled.named_parameters())})
    kernels = plan.forward_kernels
    gemms = [k for k in kernels.kernels if isinstance(k, GemmKernel)]
    merges = [k for k in gemms if kernels.buffer(k.w).type.space == GLOBAL and kernels.buffer(k.w).type.shape == (7, 4)]
    assert len(merges) == 1
    merge = merges[0]
    assert merge.transpose_w and merge.segment is None
    assert kernels.buffer(merge.out).type.space == NODE and kernels.buffer(merge.out).type.shape == (7,)
    # Branch: one GEMM per layer (the p stacked nets together), trunk: one per layer, merge: one.
    assert len(gemms) == 2 + 2 + 1
    assert any(k.batched for k in gemms) == stacked


@pytest.mark.parametrize("kwargs, message", [
    (dict(branch_sizes=[5, 4], trunk_sizes=[1, 3]),
     "Expected `branch_sizes` and `trunk_sizes` to end in the same width p (got 4 and 3)"),
    (dict(branch_sizes=[5], trunk_sizes=[1, 3]),
     "Expected `branch_sizes` to be a sequence of at least two positive ints"),
    (dict(branch_sizes=[5, 4], trunk_sizes=[0, 4]),
     "Expected `trunk_sizes` to be a sequence of at least two positive ints"),
    (dict(branch_sizes=[5, 4], trunk_sizes=[1, 4], activation="gelu"),
     "Expected `activation` to be one of ['relu', 'tanh'] (got 'gelu')"),
    (dict(branch_sizes=[5, 4], trunk_sizes=[1, 4], stacked=1), "Expected `stacked` to be a bool (got int: 1)"),
    (dict(branch_sizes=[5, 4], trunk_sizes=[1, 4], backend="gpu"), "Expected `backend` to be one of"),
])
def test_bad_constructor_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DeepONet(**kwargs)


def test_bad_inputs_are_named():
    model = DeepONet([5, 4], [2, 4])
    with pytest.raises(ValueError, match=r"Expected `u` to be a tensor of shape \[batch, 5\] \(got \[3, 4\]\)"):
        model(torch.randn(3, 4), torch.rand(6, 2))
    with pytest.raises(ValueError, match=r"Expected `y` to be a tensor of shape \[points, 2\] \(got \[6\]\)"):
        model(torch.randn(3, 5), torch.rand(6))
    with pytest.raises(ValueError, match="Expected `u` in the parameters' dtype and device"):
        model(torch.randn(3, 5, dtype=torch.float64), torch.rand(6, 2))


# --- training -------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread (and a shared 2-core machine makes two
    threads spin); the suite's setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_command_end_to_end_then_resume(tmp_path, one_thread):
    from pigeon.data.operators import load_operator_problem
    from pigeon.train.deeponet import train_deeponet

    # Generated here once; the command reads it from the cache.
    data = load_operator_problem("antiderivative", n_train=64, n_test=16, cache_dir=tmp_path / "cache" / "operators")
    env = {**os.environ, "PIGEON_CACHE_DIR": str(tmp_path / "cache")}
    report, checkpoint = tmp_path / "report.json", tmp_path / "model.pt"
    command = [sys.executable, "-m", "pigeon", "train", "deeponet", "--problem", "antiderivative", "--n-train", "64",
               "--n-test", "16", "--batch-size", "32", "--width", "16", "--epochs", "2", "--backend", "torch",
               "--threads", "1", "--no-progress", "--json", str(report), "--checkpoint", str(checkpoint)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "antiderivative: test relative L2" in done.stdout
    result = json.loads(report.read_text())
    assert 0 < result["test"]["rel_l2"] < 10 and result["test"]["functions"] == 16
    assert result["seconds"] > 0 and result["epochs"] == 2
    assert result["config"]["problem"] == "antiderivative" and result["config"]["width"] == 16

    lines = []
    resumed = train_deeponet(data=data, width=16, batch_size=32, epochs=3, backend="torch", resume=checkpoint,
                             show_progress=False, log=lines.append)
    assert lines[0] == f"resumed from {checkpoint} after epoch 2"
    assert resumed["epochs"] == 3 and [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == result["history"][:2]


def test_training_reduces_the_test_error(tmp_path, one_thread):
    from pigeon.data.operators import load_operator_problem
    from pigeon.train.deeponet import train_deeponet

    data = load_operator_problem("antiderivative", n_train=256, n_test=64, cache_dir=tmp_path)
    result = train_deeponet(data=data, width=32, epochs=25, batch_size=32, lr=3e-3, backend="torch",
                            show_progress=False, log=lambda line: None)
    history = result["history"]
    assert history[-1]["test_rel_l2"] < 0.5 * history[0]["test_rel_l2"]
    assert result["test"]["rel_l2"] == pytest.approx(history[-1]["test_rel_l2"])


def test_train_config_errors_are_named():
    from pigeon.train.deeponet import train_deeponet

    expected = "Expected `problem` to be one of ['antiderivative', 'burgers', 'darcy'] (got 'heat')"
    with pytest.raises(ValueError, match=re.escape(expected)):
        train_deeponet(problem="heat")
    with pytest.raises(ValueError, match=r"Expected `width` to be a positive int \(got 0\)"):
        train_deeponet(width=0)
