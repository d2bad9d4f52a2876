"""Fourier neural operator training on the generated operator problems (``pigeon train fno``).

The recipe is the FNO paper's (Li et al. 2021), sized for a 2-core CPU: the model is
:class:`pigeon.nn.FNO` (its spectral contractions compiled by Pigeon), the loss is the
relative L2 error of each function averaged over the batch, Adam with weight decay
1e-4 and a cosine learning-rate decay over all steps. Darcy flow, whose boundary is
not periodic, pads the grid by a few points before the spectral blocks, and both of
its functions are normalised point by point with the training set's mean and
standard deviation (the prediction is mapped back before the loss), as the paper does.
The reported metric is the mean relative L2 error over the held-out functions.

Two things fit the runs into 20 minutes on a shared 2-core CPU. The learning rate
follows the further of the step count and the clock through its decay, so a run that
is slower than planned still anneals fully within ``time_budget_s``. And Darcy trains
the first ``coarse_fraction`` of the run on every second grid point (43 x 43, a
quarter of the work per function), which the FNO's resolution-independent weights
carry over to the 85 x 85 grid it finishes and is tested on.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from pigeon.arguments import fraction, named_by, non_negative_int, positive_float, positive_int, usage_error
from pigeon.train.common import (
    PRECISIONS, CheckpointError, Precision, add_common_arguments, add_precision_argument, operator_report, progress,
    resume_from, save_checkpoint, start_run,
)

__all__ = ["FNOConfig", "PROBLEM_DEFAULTS", "relative_l2", "PointwiseNormalizer", "build_model", "evaluate",
           "train_fno", "add_parsers"]

BACKENDS = ("torch", "cpu", "triton", "auto")
PATHS = ("auto", "fft", "dft")
PROBLEMS = ("burgers", "darcy")
SCHEDULES = ("cosine", "step")

#: Per-problem defaults: what reaches the accuracy targets on a 2-core CPU in under 20 minutes.
PROBLEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "burgers": {"width": 64, "modes": 16, "epochs": 150, "batch_size": 20, "lr": 1e-3, "padding": 0,
                "normalize": False, "coarse_fraction": 0.0, "time_budget_s": 1080.0},
    "darcy": {"width": 32, "modes": 12, "epochs": 100, "batch_size": 10, "lr": 2e-3, "padding": 11,
              "normalize": True, "coarse_fraction": 0.75, "time_budget_s": 1080.0},
}


@dataclass
class FNOConfig:
    """Everything that decides a training run (saved in checkpoints and the JSON report).
    Fields left None take the value of :data:`PROBLEM_DEFAULTS` for the problem."""

    problem: str = "burgers"
    width: int | None = None
    modes: int | None = None
    num_layers: int = 4
    padding: int | None = None
    normalize: bool | None = None
    coarse_fraction: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    n_train: int | None = None
    n_test: int | None = None
    resolution: int | None = None
    time_budget_s: float | None = None
    eval_every: int = 5
    backend: str = "auto"
    path: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    threads: int | None = None
    extra: dict = field(default_factory=dict)

    def resolved(self) -> "FNOConfig":
        """A copy with the problem's defaults filled in, checked."""
        if self.problem not in PROBLEMS:
            raise ValueError(f"Expected `problem` to be one of {list(PROBLEMS)} (got {self.problem!r})")
        values = asdict(self)
        for name, value in PROBLEM_DEFAULTS[self.problem].items():
            if values[name] is None:
                values[name] = value
        config = FNOConfig(**values)
        positive = {"width": config.width, "modes": config.modes, "num_layers": config.num_layers,
                    "epochs": config.epochs, "batch_size": config.batch_size, "eval_every": config.eval_every}
        for name in ("n_train", "n_test", "resolution", "threads"):
            if values[name] is not None:
                positive[name] = values[name]
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int (got {value!r})")
        if not isinstance(config.padding, int) or isinstance(config.padding, bool) or config.padding < 0:
            raise ValueError(f"Expected `padding` to be a non-negative int (got {config.padding!r})")
        if not isinstance(config.lr, (int, float)) or not math.isfinite(config.lr) or config.lr <= 0:
            raise ValueError(f"Expected `lr` to be a positive number (got {config.lr!r})")
        decay = config.weight_decay
        if not isinstance(decay, (int, float)) or not math.isfinite(decay) or decay < 0:
            raise ValueError(f"Expected `weight_decay` to be a non-negative number (got {decay!r})")
        fraction = config.coarse_fraction
        if not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
            raise ValueError(f"Expected `coarse_fraction` to be a number in [0, 1) (got {fraction!r})")
        if fraction > 0 and config.padding % 2 == 0 and config.padding:
            raise ValueError(f"Expected `padding` to be odd or 0 with a coarse-grid phase, so that the coarse grid "
                             f"pads the same physical length (got {config.padding})")
        if config.time_budget_s is not None and not config.time_budget_s > 0:
            raise ValueError(f"Expected `time_budget_s` to be a positive number of seconds or None "
                             f"(got {config.time_budget_s!r})")
        for name, value, choices in (("backend", config.backend, BACKENDS), ("path", config.path, PATHS),
                                     ("schedule", config.schedule, SCHEDULES),
                                     ("precision", config.precision, tuple(PRECISIONS))):
            if value not in choices:
                raise ValueError(f"Expected `{name}` to be one of {list(choices)} (got {value!r})")
        return config


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Per function :math:`\lVert \hat{y} - y \rVert_2 / \lVert y \rVert_2`, ``[batch]``
    (every dim after the first is one function's values)."""
    diff = (prediction - target).flatten(1).norm(dim=1)
    return diff / target.flatten(1).norm(dim=1)


class PointwiseNormalizer:
    r"""``(v - mean) / (std + eps)`` with the mean and standard deviation of every grid
    point over the training functions; :meth:`decode` inverts it."""

    def __init__(self, train: torch.Tensor, eps: float = 1e-5):
        self.mean, self.std, self.eps = train.mean(0), train.std(0), eps

    def encode(self, value: torch.Tensor) -> torch.Tensor:
        return (value - self.mean) / (self.std + self.eps)

    def decode(self, value: torch.Tensor) -> torch.Tensor:
        return value * (self.std + self.eps) + self.mean


class _Identity:
    def encode(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def decode(self, value: torch.Tensor) -> torch.Tensor:
        return value


def build_model(config: FNOConfig, dim: int):
    """The compiled :class:`pigeon.nn.FNO` for ``config`` (one input and one output channel)."""
    from pigeon.nn import FNO

    return FNO(1, 1, width=config.width, modes=config.modes, num_layers=config.num_layers, dim=dim,
               padding=config.padding, backend=config.backend, path=config.path)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, x_norm, y_norm, batch_size: int,
             precision: Precision | None = None) -> dict[str, float]:
    """Mean and max relative L2 error of ``model`` over ``(x, y)``, the model run under
    ``precision``'s autocast (default: float32) and the error measured in float32."""
    precision = precision or Precision()
    model.eval()
    errors = []
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with precision.autocast():
            output = model(x_norm.encode(xb).unsqueeze(1))
        prediction = y_norm.decode(output.float().squeeze(1))
        errors.append(relative_l2(prediction, yb))
    errors = torch.cat(errors)
    return {"rel_l2": float(errors.mean()), "max_rel_l2": float(errors.max()), "functions": int(errors.numel())}


def learning_rate(config: FNOConfig, done: float) -> float:
    """The learning rate at fraction ``done`` of the run: cosine from ``lr`` to 0, or
    halved every tenth of the run (``schedule="step"``, the FNO paper's)."""
    done = min(max(done, 0.0), 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * done))
    return config.lr * 0.5 ** math.floor(10 * done)


def _coarse(x: torch.Tensor, y: torch.Tensor, x_norm, y_norm):
    """Every second grid point on every axis (``(s - 1) / 2 + 1`` points, the same
    endpoints), with the normalisers read at those points."""
    index = (slice(None), *(slice(None, None, 2),) * (x.dim() - 1))
    point = index[1:]
    scale = [n if isinstance(n, _Identity) else _Subsampled(n, point) for n in (x_norm, y_norm)]
    return x[index], y[index], scale[0], scale[1]


def _coarse_padding(padding: int) -> int:
    """Padding that keeps the padded period in physical units on the coarse grid:
    ``(s + p) h = (s_c + p_c) 2h`` with ``s = 2 s_c - 1`` gives ``p_c = (p - 1) / 2``."""
    return (padding - 1) // 2 if padding else 0


class _Subsampled(PointwiseNormalizer):
    def __init__(self, full: PointwiseNormalizer, point):
        self.mean, self.std, self.eps = full.mean[point], full.std[point], full.eps


def _check_grid(config: FNOConfig, x_train: torch.Tensor) -> None:
    if config.coarse_fraction > 0 and any(size % 2 == 0 for size in x_train.shape[1:]):
        raise ValueError(f"Expected an odd grid size on every axis for a coarse-grid phase (every second point, "
                         f"both ends kept), got a {list(x_train.shape[1:])} grid; set `coarse_fraction` to 0 or "
                         f"an odd `resolution`")


def _load(config: FNOConfig):
    from pigeon.data.operators import load_operator_problem

    return load_operator_problem(config.problem, n_train=config.n_train, n_test=config.n_test,
                                 resolution=config.resolution, seed=config.seed)


def train_fno(config: FNOConfig | None = None, *, data=None, checkpoint=None, resume=None, json_path=None,
              show_progress: bool = True, log=print, **overrides) -> dict[str, Any]:
    """Train an FNO on an operator problem and report the held-out relative L2 error.

    Args:
        config (FNOConfig, optional): the run's settings; keyword ``overrides`` replace
            its fields (``train_fno(problem="darcy", epochs=3)``).
        data (OperatorProblem, optional): the problem's data, instead of generating or
            loading ``config.problem`` with :func:`pigeon.data.operators.load_operator_problem`.
        checkpoint (path, optional): saved after every epoch (model, optimizer, history).
        resume (path, optional): a checkpoint to continue from.
        json_path (path, optional): where to write the final metrics.
        show_progress (bool): progress bars on stderr. Default: True.
        log (callable): where the per-epoch lines go. Default: ``print``.

    Returns ``{"test": {"rel_l2", "max_rel_l2", "functions"}, "train": {...}, "seconds",
    "epochs", "history", "config", "threads"}``.
    """
    config = FNOConfig(**{**asdict(config or FNOConfig()), **overrides}).resolved()
    generator = start_run(config)
    data = data if data is not None else _load(config)
    x_train, y_train, x_test, y_test = (t.float() for t in (data.x_train, data.y_train, data.x_test, data.y_test))
    dim = x_train.dim() - 1
    _check_grid(config, x_train)
    if config.normalize:
        x_norm, y_norm = PointwiseNormalizer(x_train), PointwiseNormalizer(y_train)
    else:
        x_norm = y_norm = _Identity()
    model = build_model(config, dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    precision = Precision(config.precision, next(model.parameters()).device)
    total_steps = math.ceil(x_train.shape[0] / config.batch_size) * config.epochs

    first_epoch, step, history, elapsed = 0, 0, [], 0.0
    if resume is not None:
        state = resume_from(resume, generator, ("epoch", "step", "history", "seconds"), model=model,
                            optimizer=optimizer)
        precision.load_state_dict(state.get("scaler", {}))
        first_epoch, step, history, elapsed = state["epoch"], state["step"], state["history"], state["seconds"]
        log(f"resumed from {resume} after epoch {first_epoch}")

    grid = "x".join(str(s) for s in x_train.shape[1:])
    log(f"FNO on {config.problem}: {x_train.shape[0]} / {x_test.shape[0]} functions on a {grid} grid; width "
        f"{config.width}, modes {config.modes}, {config.num_layers} layers, {config.backend} backend, "
        f"{config.path} path, {config.precision}, {torch.get_num_threads()} threads")
    started = time.perf_counter() - elapsed

    def run_progress() -> float:
        """How far through the run: steps done, or time spent of the budget if further."""
        done = step / total_steps
        if config.time_budget_s is not None:
            done = max(done, (time.perf_counter() - started) / config.time_budget_s)
        return done

    for epoch in range(first_epoch, config.epochs):
        model.train()
        coarse = run_progress() < config.coarse_fraction
        xs, ys, x_scale, y_scale = (x_train, y_train, x_norm, y_norm) if not coarse else _coarse(
            x_train, y_train, x_norm, y_norm)
        model.padding = _coarse_padding(config.padding) if coarse else config.padding
        order = torch.randperm(xs.shape[0], generator=generator)
        total, count = 0.0, 0
        bar = progress(range(0, order.numel(), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}",
                       enabled=show_progress)
        for start in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, run_progress())
            index = order[start:start + config.batch_size]
            xb, yb = x_scale.encode(xs[index]).unsqueeze(1), ys[index]
            with precision.autocast():
                output = model(xb)
            errors = relative_l2(y_scale.decode(output.float().squeeze(1)), yb)
            optimizer.zero_grad()
            precision.step(errors.mean(), optimizer)
            step += 1
            total, count = total + float(errors.detach().sum()), count + index.numel()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(rel_l2=f"{total / count:.4f}")
            if run_progress() >= 1.0:
                break
        model.padding = config.padding
        seconds = time.perf_counter() - started
        record = {"epoch": epoch + 1, "grid": "x".join(str(s) for s in xs.shape[1:]),
                  "train_rel_l2": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"], "seconds": seconds}
        line = f"epoch {epoch + 1}{' (coarse grid)' if coarse else ''}: train rel L2 {record['train_rel_l2']:.4f}"
        # The held-out error is the curve to report, but costs a tenth of an epoch: every few epochs.
        if (epoch + 1) % config.eval_every == 0:
            record["test_rel_l2"] = evaluate(model, x_test, y_test, x_norm, y_norm, config.batch_size,
                                             precision)["rel_l2"]
            line += f", test rel L2 {record['test_rel_l2']:.4f}"
        history.append(record)
        log(f"{line} ({seconds:.0f} s)")
        if checkpoint is not None:
            save_checkpoint(checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            generator=generator.get_state(), epoch=epoch + 1, step=step, history=history,
                            seconds=time.perf_counter() - started, config=asdict(config),
                            scaler=precision.state_dict())
        if run_progress() >= 1.0:
            if step < total_steps:
                log(f"time budget of {config.time_budget_s:.0f} s reached during epoch {epoch + 1}")
            break

    if not history:
        raise ValueError(f"Expected at least one epoch to train (got epochs={config.epochs} and a checkpoint "
                         f"that had finished them)")
    seconds = time.perf_counter() - started
    test = evaluate(model, x_test, y_test, x_norm, y_norm, config.batch_size, precision)
    # As many training functions as test functions: the same cost, enough to show overfitting.
    train = evaluate(model, x_train[:x_test.shape[0]], y_train[:x_test.shape[0]], x_norm, y_norm, config.batch_size,
                     precision)
    return operator_report(config, history, test, train, seconds, json_path, log)


# -- command line -------------------------------------------------------------------------

def add_parsers(subparsers) -> None:
    """``pigeon train fno``."""
    parser = subparsers.add_parser(
        "fno",
        help="train a Fourier neural operator (Burgers 1-D, Darcy flow 2-D)",
        description="Train pigeon.nn.FNO on a generated operator problem and report the relative L2 error "
                    "on held-out functions. The data are generated on first use and cached "
                    "(pigeon.data.operators). Options left out take the problem's defaults: "
                    + "; ".join(f"{p}: " + ", ".join(f"{k}={v}" for k, v in d.items())
                                for p, d in PROBLEM_DEFAULTS.items()),
        epilog="example:\n  pigeon train fno --problem burgers --json burgers.json\n"
               "  pigeon train fno --problem darcy --epochs 10 --checkpoint darcy.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--problem", default="burgers", choices=PROBLEMS, help="(default: burgers)")
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate")
    parser.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                        help="learning-rate decay over the run (default: cosine)")
    parser.add_argument("--width", type=positive_int, default=None)
    parser.add_argument("--modes", type=positive_int, default=None, help="Fourier modes kept per axis")
    parser.add_argument("--num-layers", type=positive_int, default=4, help="spectral blocks (default: 4)")
    parser.add_argument("--padding", type=non_negative_int, default=None, help="grid points of zero padding per axis")
    parser.add_argument("--n-train", type=positive_int, default=None, help="training functions (default: the data's)")
    parser.add_argument("--n-test", type=positive_int, default=None, help="held-out functions (default: the data's)")
    parser.add_argument("--resolution", type=positive_int, default=None,
                        help="grid points per axis (default: the data's)")
    parser.add_argument("--coarse-fraction", type=fraction, default=None,
                        help="fraction of the run trained on every second grid point (default: the problem's)")
    parser.add_argument("--time-budget-s", type=positive_float, default=None,
                        help="seconds of training; the learning-rate decay follows the further of the step count "
                             "and the clock, so it completes within the budget (default: the problem's)")
    parser.add_argument("--eval-every", type=positive_int, default=5, help="epochs between test evaluations (default: 5)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="Pigeon backend of the spectral contractions (default: auto)")
    parser.add_argument("--path", default="auto", choices=PATHS,
                        help="spectral path: FFT, truncated DFT as GEMMs, or by size (default: auto)")
    add_precision_argument(parser)
    add_common_arguments(parser)
    parser.set_defaults(func=_command, command_parser=parser)


def _command(args: argparse.Namespace) -> int:
    fields = {name for name in FNOConfig.__dataclass_fields__ if name != "extra"}
    with named_by(args):
        config = FNOConfig(**{name: getattr(args, name) for name in fields if hasattr(args, name)}).resolved()
        data = _load(config)
        _check_grid(config, data.x_train)
    try:
        train_fno(config, data=data, checkpoint=args.checkpoint, resume=args.resume, json_path=args.json_path,
                  show_progress=not args.no_progress)
    except CheckpointError as error:
        raise usage_error(error, args) from None
    return 0
