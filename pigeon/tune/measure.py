"""Measuring one candidate: run it, check it against the default candidate, time it.

A timer takes a zero-argument ``run`` and returns its median time in seconds after a
warm-up: :func:`cuda_timer` is Triton's ``do_bench`` (median mode), :func:`cpu_timer`
the same semantics with ``time.perf_counter`` on the CPU. Before a candidate is timed,
its outputs (the forward output; in training also the gradient of every input and
parameter) must agree with the default candidate's within the dtype's tolerance
(:data:`TOLERANCE`); one that does not, or that fails to compile, scores ``inf``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from pigeon.codegen.templates import CodegenError
from pigeon.data.graph import HeteroGraph
from pigeon.runtime.choice import Choice
from pigeon.runtime.compiled import Compiled
from pigeon.clib import CompilerError

Timer = Callable[[Callable[[], object]], float]

#: (rtol, atol relative to the largest reference value) per dtype. Candidates differ
#: from the default by the order of floating-point sums (reordered products, compact
#: rows, another chunking of a reduction), so agreement is to a few ulps times the
#: longest sum, not bitwise: fp64 keeps ~1e-9, fp32 ~1e-4 over sums of thousands of terms.
TOLERANCE = {torch.float64: (1e-9, 1e-9), torch.float32: (1e-4, 1e-4),
             torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}


class CandidateFailed(Exception):
    """A candidate that cannot be built (its kernels do not compile) or disagrees with the
    default: it scores ``inf``, and the tuner goes on."""


def cpu_timer(run: Callable[[], object], warmup: int = 1, repeat: int = 5) -> float:
    """Median wall time of ``repeat`` calls of ``run`` after ``warmup`` untimed calls, in
    seconds. One warm-up is enough: the tuner has already run the candidate once to
    check it, so libraries are built and caches are warm."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cuda_timer(run: Callable[[], object]) -> float:
    """Triton's ``do_bench`` (25 ms warm-up, 100 ms of repeats, median), in seconds."""
    import triton.testing

    return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median") / 1e3


def default_timer(device: torch.device) -> Timer:
    return cuda_timer if device.type == "cuda" else cpu_timer


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this config does not build": the generators', the C compiler's
    and Triton's (a tile too large for shared memory is Triton's OutOfResources)."""
    errors: list[type[BaseException]] = [CodegenError, CompilerError]
    try:
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import OutOfResources

        errors += [CompilationError, OutOfResources]
    except ImportError:
        pass
    return tuple(errors)


@dataclass
class Workload:
    """One compiled layer on one graph with its tensors, in ``mode`` ``"infer"`` (forward
    under ``no_grad``) or ``"train"`` (forward, then the gradients of every floating
    tensor for a fixed random upstream gradient)."""

    compiled: Compiled
    graph: HeteroGraph
    tensors: dict[str, torch.Tensor]
    mode: str

    def __post_init__(self):
        if self.mode not in ("train", "infer"):
            raise ValueError(f"Expected `mode` to be 'train' or 'infer' (got {self.mode!r})")
        # Fresh leaves, so tuning neither reads nor accumulates into a module's .grad.
        self.tensors = {k: v.detach().clone().requires_grad_(self.mode == "train" and v.is_floating_point())
                        for k, v in self.tensors.items()}
        self._seed: list[torch.Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return next(v.dtype for v in self.tensors.values() if v.is_floating_point())

    def step(self, choice: Choice) -> list[torch.Tensor]:
        """Run ``choice`` once; its outputs (and gradients in training), in a fixed order."""
        if self.mode == "infer":
            with torch.no_grad():
                out = self.compiled.call(self.graph, self.tensors, choice)
            return [out] if isinstance(out, torch.Tensor) else list(out.values())
        out = self.compiled.call(self.graph, self.tensors, choice)
        outs = [out] if isinstance(out, torch.Tensor) else list(out.values())
        if self._seed is None:
            gen = torch.Generator().manual_seed(0)
            self._seed = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device) for o in outs]
        leaves = [v for v in self.tensors.values() if v.requires_grad]
        grads = torch.autograd.grad(outs, leaves, self._seed, allow_unused=True)
        return [o.detach() for o in outs] + [g for g in grads if g is not None]

    def check(self, got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
        """Raise :class:`CandidateFailed` unless ``got`` agrees with ``want``."""
        rtol, atol = TOLERANCE.get(self.dtype, (1e-4, 1e-4))
        if len(got) != len(want):
            raise CandidateFailed(f"disagrees: {len(got)} outputs and gradients, the default has {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            scale = float(w.abs().max()) if w.numel() else 0.0
            if g.shape != w.shape or not torch.allclose(g, w, rtol=rtol, atol=atol * max(scale, 1e-30)):
                diff = float((g - w).abs().max()) if g.shape == w.shape else math.nan
                what = "output" if i == 0 else f"output/gradient {i}"
                raise CandidateFailed(f"disagrees with the default: {what} off by {diff:.3g} "
                                      f"(max |default| {scale:.3g}, rtol {rtol:g})")

    def measure(self, choice: Choice, timer: Timer, reference: list[torch.Tensor] | None) -> tuple[float, list]:
        """Median seconds of ``choice`` (after checking it against ``reference``) and its
        outputs. Raises :class:`CandidateFailed` for a build failure or a disagreement;
        any other error is re-raised naming the candidate."""
        try:
            outputs = self.step(choice)
        except _compile_errors() as err:
            raise CandidateFailed(f"does not compile: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from err
        except Exception as err:
            raise RuntimeError(f"tuning candidate `{choice.describe()}` failed: {type(err).__name__}: {err}") from err
        if reference is not None:
            self.check(outputs, reference)
        try:
            seconds = timer(lambda: self.step(choice))
        except Exception as err:
            raise RuntimeError(f"timing candidate `{choice.describe()}` failed: {type(err).__name__}: {err}") from err
        return seconds, outputs
