"""``pigeon train fno``: the command end to end in a subprocess on tiny generated problems,
the JSON it writes, resuming from a checkpoint, the schedule and the argument checks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pigeon.train.fno import FNOConfig, learning_rate, relative_l2, train_fno

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, *args):
    env = {**os.environ, "PIGEON_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "pigeon", "train", "fno", *args, "--no-progress", "--threads", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("problem,extra", [
    ("burgers", ["--resolution", "32", "--width", "8", "--modes", "4"]),
    ("darcy", ["--resolution", "15", "--width", "6", "--modes", "3", "--padding", "3", "--coarse-fraction", "0.5"]),
    ("darcy", ["--resolution", "15", "--width", "6", "--modes", "3", "--padding", "3", "--coarse-fraction", "0.5",
               "--precision", "bf16"]),
], ids=["burgers", "darcy", "darcy-bf16"])
def test_command_writes_metrics(tmp_path, problem, extra):
    report = tmp_path / "metrics.json"
    done = _run(tmp_path, "--problem", problem, "--epochs", "4", "--eval-every", "2", "--n-train", "12",
                "--n-test", "6", "--batch-size", "4", "--lr", "3e-3", "--json", str(report), *extra)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert 0.0 < result["test"]["rel_l2"] < 10.0 and result["test"]["functions"] == 6
    assert result["seconds"] > 0 and result["epochs"] == 4
    assert result["config"]["problem"] == problem and result["config"]["n_train"] == 12
    # Every report names the code it came from (the suite runs in a git checkout).
    provenance = result["provenance"]
    assert len(provenance["commit"]) == 40 and isinstance(provenance["clean"], bool)
    assert provenance["command"][:3] == ["pigeon", "train", "fno"] and provenance["torch"] == torch.__version__
    assert [("test_rel_l2" in h) for h in result["history"]] == [False, True, False, True]
    assert result["history"][-1]["test_rel_l2"] == pytest.approx(result["test"]["rel_l2"])
    assert f"{problem}: test relative L2 {result['test']['rel_l2']:.4f}" in done.stdout
    if problem == "darcy":  # half the run on every second point of the 15 x 15 grid
        assert [h["grid"] for h in result["history"]] == ["8x8", "8x8", "15x15", "15x15"]
    assert result["config"]["precision"] == ("bf16" if "bf16" in extra else "fp32")
    assert (", bf16," in done.stdout) == ("bf16" in extra)


class _Stop(Exception):
    pass


def test_resume_continues_the_run(tmp_path):
    from pigeon.data.operators import load_operator_problem

    data = load_operator_problem("burgers", n_train=8, n_test=4, resolution=16, cache_dir=tmp_path)
    options = dict(problem="burgers", width=4, modes=3, batch_size=4, epochs=3, eval_every=1, time_budget_s=None,
                   threads=1, show_progress=False)
    full = train_fno(data=data, log=lambda line: None, **options)

    def stop_at_third_epoch(line):
        if line.startswith("epoch 3"):
            raise _Stop

    checkpoint = tmp_path / "run.pt"
    with pytest.raises(_Stop):
        train_fno(data=data, log=stop_at_third_epoch, checkpoint=checkpoint, **options)
    state = torch.load(checkpoint, weights_only=False)
    assert state["epoch"] == 2 and state["step"] == 4
    resumed = train_fno(data=data, log=lambda line: None, resume=checkpoint, **options)
    assert resumed["epochs"] == 3
    # Same thread count, same seed: the resumed run retraces the uninterrupted one.
    assert resumed["test"]["rel_l2"] == pytest.approx(full["test"]["rel_l2"], rel=1e-6)


def test_learning_rate_schedules():
    cosine = FNOConfig(problem="darcy", lr=1e-3).resolved()
    assert learning_rate(cosine, 0.0) == pytest.approx(1e-3)
    assert learning_rate(cosine, 0.5) == pytest.approx(5e-4)
    assert learning_rate(cosine, 1.0) == pytest.approx(0.0, abs=1e-12)
    step = FNOConfig(problem="darcy", lr=1e-3, schedule="step").resolved()
    assert learning_rate(step, 0.05) == pytest.approx(1e-3)
    assert learning_rate(step, 0.25) == pytest.approx(2.5e-4)


def test_relative_l2():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(3, 5, 4, generator=gen)
    noise = torch.randn(3, 5, 4, generator=gen)
    want = torch.stack([(noise[i]).norm() / y[i].norm() for i in range(3)])
    torch.testing.assert_close(relative_l2(y + noise, y), want, rtol=1e-6, atol=1e-7)
    assert math.isclose(float(relative_l2(y, y).max()), 0.0)


@pytest.mark.parametrize("overrides,message", [
    (dict(problem="heat"), r"Expected `problem` to be one of \['burgers', 'darcy'\] \(got 'heat'\)"),
    (dict(width=0), r"Expected `width` to be a positive int \(got 0\)"),
    (dict(lr=-1.0), r"Expected `lr` to be a positive number \(got -1.0\)"),
    (dict(coarse_fraction=1.0), r"Expected `coarse_fraction` to be a number in \[0, 1\) \(got 1.0\)"),
    (dict(problem="darcy", padding=4), r"Expected `padding` to be odd or 0 with a coarse-grid phase"),
    (dict(path="fast"), r"Expected `path` to be one of \['auto', 'fft', 'dft'\] \(got 'fast'\)"),
    (dict(precision="half"), r"Expected `precision` to be one of \['fp32', 'bf16', 'fp16'\] \(got 'half'\)"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        FNOConfig(**overrides).resolved()


def test_float16_steps_through_the_loss_scale():
    from pigeon.train.common import Precision

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision("fp16")
    x = torch.randn(4, 3)
    start = model.weight.detach().clone()
    scales = [precision.state_dict()["scale"]]
    for _ in range(20):   # steps whose scaled gradients overflow float16 are skipped, the scale halves
        optimizer.zero_grad()
        with precision.autocast():
            out = model(x)
        assert out.dtype == torch.float16
        precision.step(out.float().pow(2).mean(), optimizer)
        scales.append(precision.state_dict()["scale"])
    assert not torch.equal(model.weight, start) and model.weight.grad.dtype == torch.float32
    assert scales[-1] < scales[0]
    optimizer.zero_grad()
    before = model.weight.detach().clone()
    with precision.autocast():
        out = model(torch.full((1, 3), float("inf")))
    precision.step(out.float().sum(), optimizer)
    assert torch.equal(model.weight, before) and precision.state_dict()["scale"] < scales[-1]
    assert Precision("bf16").state_dict() == {} and not Precision("fp32").scaler.is_enabled()
