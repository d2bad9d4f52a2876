"""``pigeon.tune``: measure the search space on one graph, pick, and remember.

The search is greedy and starts from what the cost model would do:

1. the default candidate (the cost model's decisions, every kernel's default config) is
   measured first, always, and is the reference every other candidate is checked
   against;
2. each whole-program variant (reordering, compaction, layout) with default configs;
   the fastest becomes the incumbent;
3. kernel by kernel (forward, then backward in training), each of the incumbent's
   kernel configs; a config that is faster replaces the kernel's.

A candidate replaces the incumbent only when it is faster by more than ``min_gain``
(timer noise must not pick configs). The budget stops the search between candidates.
At the end, a winner other than the default is timed again against the default,
alternately, and kept only if it is still faster by ``min_gain``: on a shared machine
one median can be off by more than any config gains.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.runtime.choice import Choice
from pigeon.runtime.compiled import Compiled, resolve_backend
from pigeon.tune.cache import TuneCache, tune_key
from pigeon.tune.measure import CandidateFailed, Timer, Workload, default_timer
from pigeon.tune.space import Keep, KernelSpace, kernel_spaces, program_variants


@dataclass(frozen=True)
class Measurement:
    """One candidate's result: median seconds (``inf`` when it failed) and its status
    (``"ok"``, or why it failed)."""

    choice: Choice
    seconds: float
    status: str = "ok"


def with_config(choice: Choice, space: KernelSpace, config: Any) -> Choice:
    """``choice`` with ``space``'s kernel launched with ``config``."""
    pairs = [(n, c) for n, c in getattr(choice, space.half) if n != space.name] + [(space.name, config)]
    return replace(choice, **{space.half: tuple(pairs)})


@dataclass
class SearchOutcome:
    """``confirmed``: the re-timing of the winner against the default, (default seconds,
    winner seconds, kept), or None when the default won or no ``confirm`` was given."""

    measured: list[Measurement]
    chosen: Choice
    stopped_by_budget: bool
    confirmed: tuple[float, float, bool] | None = None


def search(variants: list[Choice], spaces_of: Callable[[Choice], list[KernelSpace]],
           score: Callable[[Choice], float], budget_s: float, min_gain: float = 0.02,
           clock: Callable[[], float] = time.monotonic, progress=None,
           confirm: Callable[[Choice, Choice], tuple[float, float]] | None = None) -> SearchOutcome:
    """The greedy search of the module docstring. ``variants[0]`` is the default;
    ``score(choice)`` gives its median seconds or raises :class:`CandidateFailed` (it
    then scores ``inf``); ``clock`` is read against ``budget_s``, counted from the end of
    the default's measurement, before every other candidate. ``progress`` (a tqdm bar, optional) is advanced per candidate.
    ``confirm(default, winner)`` (optional) re-times both: (default seconds, winner seconds)."""
    measured: dict[Choice, Measurement] = {}

    def run(choice: Choice) -> float:
        if choice not in measured:
            try:
                measured[choice] = Measurement(choice, score(choice))
            except CandidateFailed as err:
                measured[choice] = Measurement(choice, math.inf, str(err))
            if progress is not None:
                progress.update(1)
        return measured[choice].seconds

    default = variants[0]
    best_s = run(default)
    if not math.isfinite(best_s):
        raise RuntimeError(f"the default candidate failed, so there is nothing to compare against: "
                           f"{measured[default].status}")
    best = default
    # The budget starts after the default, whose first run builds its kernels.
    start = clock()

    def better(seconds: float) -> bool:
        return seconds < best_s * (1 - min_gain)

    stopped = False
    for variant in variants[1:]:
        if clock() - start > budget_s:
            stopped = True
            break
        seconds = run(variant)
        if better(seconds):
            best, best_s = variant, seconds
    if not stopped:
        spaces = spaces_of(best)
        if progress is not None:
            progress.total = progress.n + sum(len(s.candidates) - 1 for s in spaces)
            progress.refresh()
        for space in spaces:
            for config in space.candidates[1:]:
                if clock() - start > budget_s:
                    stopped = True
                    break
                candidate = with_config(best, space, config)
                seconds = run(candidate)
                if better(seconds):
                    best, best_s = candidate, seconds
            if stopped:
                break
    confirmed = None
    if best != default and confirm is not None:
        again_default, again_best = confirm(default, best)
        kept = again_best < again_default * (1 - min_gain)
        confirmed = (again_default, again_best, kept)
        best = best if kept else default
    ranked = sorted(measured.values(), key=lambda m: m.seconds)
    return SearchOutcome(ranked, best, stopped, confirmed)


@dataclass
class TuneResult:
    """What :func:`tune` measured and chose.

    ``measured``: every candidate, fastest first (failed ones last, ``inf``);
    ``chosen``: the choice stored in the cache (the default when nothing was faster by
    more than the threshold, first in the search and then again when re-timed against
    the default); ``default_s``/``chosen_s``: their medians (from the re-timing when
    there was one); ``confirmed``: that re-timing (default s, winner s, kept), if any;
    ``decisions``: the compiler's log for the chosen plan; ``path``: the cache file
    written (None with ``store=False``).
    """

    measured: list[Measurement]
    chosen: Choice
    default_s: float
    chosen_s: float
    mode: str
    backend: str
    stopped_by_budget: bool
    decisions: list[str]
    key: dict[str, dict[str, Any]]
    confirmed: tuple[float, float, bool] | None = None
    path: Any = None
    elapsed_s: float = 0.0

    @property
    def speedup(self) -> float:
        """Default time over the chosen candidate's time (1.0: nothing faster was found)."""
        return self.default_s / self.chosen_s

    def rows(self) -> list[dict[str, Any]]:
        """The ranked table as records: candidate, median ms, speedup over the default, status."""
        return [{"rank": i + 1, "candidate": m.choice.describe(), "chosen": m.choice == self.chosen,
                 "median_ms": m.seconds * 1e3, "speedup": self.default_s / m.seconds if m.seconds else math.inf,
                 "status": m.status} for i, m in enumerate(self.measured)]

    def table(self, limit: int | None = 20) -> str:
        """The ranked table as text (the ``limit`` fastest, then every failed one)."""
        rows = self.rows()
        shown = rows if limit is None else rows[:limit] + [r for r in rows[limit:] if r["status"] != "ok"]
        lines = [f"{'rank':>4}  {'median ms':>10}  {'speedup':>7}  {'status':<10}  candidate"]
        for r in shown:
            ms = f"{r['median_ms']:.3f}" if math.isfinite(r["median_ms"]) else "inf"
            speed = f"{r['speedup']:.2f}x" if math.isfinite(r["median_ms"]) else "-"
            mark = "*" if r["chosen"] else " "
            lines.append(f"{r['rank']:>3}{mark}  {ms:>10}  {speed:>7}  {r['status'][:60]:<10}  {r['candidate']}")
        if limit is not None and len(rows) > len(shown):
            lines.append(f"  ... {len(rows) - len(shown)} more")
        verdict = (f"chosen: {self.chosen.describe()} ({self.speedup:.2f}x over the default)"
                   if self.chosen != Choice() else
                   "chosen: default (no candidate beat the cost model's defaults)")
        if self.confirmed is not None:
            d, w, kept = self.confirmed
            lines.append(f"re-timed against the default: {w * 1e3:.3f} ms vs {d * 1e3:.3f} ms, "
                         f"{'kept' if kept else 'not faster: the default is kept'}")
        lines.append(verdict + (" [stopped by the budget]" if self.stopped_by_budget else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _target(target, x) -> tuple[Compiled, dict[str, torch.Tensor]]:
    """The compiled layer and its tensors for a ``pigeon.nn`` module (a module whose
    ``compiled`` attribute is a compiled layer taking ``x`` and its parameters) or a
    compiled layer."""
    if isinstance(target, torch.nn.Module) and isinstance(getattr(target, "compiled", None), Compiled):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Expected `x` to be the node features, a tensor (got {type(x).__name__})")
        return target.compiled, {"x": x, **dict(target.named_parameters())}
    if isinstance(target, Compiled):
        if not isinstance(x, dict) or not all(isinstance(v, torch.Tensor) for v in x.values()):
            raise TypeError(f"Expected `x` to be a dict of every input and parameter by name for a compiled "
                            f"layer (got {type(x).__name__})")
        return target, dict(x)
    raise TypeError(f"Expected `module_or_layer` to be a pigeon.nn.RGCN/RGAT/HGT module or a layer from "
                    f"pigeon.compile (got {type(target).__name__})")


def tune(module_or_layer, graph: HeteroGraph, x, *, mode: str = "train", budget_s: float = 60.0,
         backend: str | None = None, keep: Keep | None = None, timer: Timer | None = None,
         min_gain: float = 0.02, store: bool = True, progress: bool = True, verbose: bool = True) -> TuneResult:
    """Search compiler decisions and kernel configs for one layer on one graph; store the
    fastest in the tuning cache, where compiled layers with the same program find it.

    The objective is the median time of one call: the forward pass (``mode="infer"``,
    under ``no_grad``) or forward and backward (``mode="train"``). Every candidate must
    reproduce the default candidate's output (and gradients) before it is timed.

    Args:
        module_or_layer: a ``pigeon.nn.RGCN``, ``RGAT`` or ``HGT`` module, or a layer
            from :func:`pigeon.compile`.
        graph (HeteroGraph): the graph to tune on (a graph in the same statistics
            buckets reuses the result).
        x: the node features (a module), or a dict of every input and parameter by name
            (a compiled layer).
        mode (str): ``"train"`` or ``"infer"``. Default ``"train"``.
        budget_s (float): seconds, counted after the default candidate (always
            measured), after which no new candidate is started. Default 60.
        backend (str, optional): the backend to tune; None: the layer's own. Default None.
        keep (callable, optional): ``keep(config) -> bool`` filters every kernel's configs
            (the default config is always kept). Default: keep all.
        timer (callable, optional): ``timer(run) -> seconds``; default Triton's
            ``do_bench`` on CUDA, :func:`~pigeon.tune.measure.cpu_timer` on CPU.
        min_gain (float): how much faster (fraction) a candidate must be to replace the
            incumbent. Default 0.02.
        store (bool): write the choice to the cache. Default True.
        progress (bool): show a progress bar (tqdm). Default True.
        verbose (bool): print the ranked table at the end. Default True.

    Returns a :class:`TuneResult`.
    """
    if mode not in ("train", "infer"):
        raise ValueError(f"Expected `mode` to be 'train' or 'infer' (got {mode!r})")
    if not isinstance(budget_s, (int, float)) or budget_s < 0:
        raise ValueError(f"Expected `budget_s` to be a non-negative number of seconds (got {budget_s!r})")
    if not isinstance(graph, HeteroGraph):
        raise TypeError(f"Expected `graph` to be a pigeon.HeteroGraph (got {type(graph).__name__})")
    target, tensors = _target(module_or_layer, x)
    backend = resolve_backend(backend or target.backend, graph.device)
    compiled = target
    if backend != target.backend:
        compiled = target.with_backend(backend)
    started = time.monotonic()
    work = Workload(compiled, graph, tensors, mode)
    timer = timer or default_timer(graph.device)
    variants = program_variants(compiled, graph, work.tensors, mode)
    reference: list[torch.Tensor] = []

    def score(choice: Choice) -> float:
        seconds, outputs = work.measure(choice, timer, reference or None)
        if not reference:
            reference.extend(outputs)
        return seconds

    def spaces_of(choice: Choice) -> list[KernelSpace]:
        plan = compiled.plan(graph, work.tensors, choice)
        spaces = kernel_spaces(plan.forward_kernels, "forward", backend, graph, work.dtype, keep)
        if mode == "train":
            spaces += kernel_spaces(plan.backward_kernels, "backward", backend, graph, work.dtype, keep)
        # Kernels over more rows first: where a budget cuts the search, it cuts the small ones.
        return sorted(spaces, key=lambda s: -s.rows)

    def confirm(default: Choice, winner: Choice, rounds: int = 3) -> tuple[float, float]:
        # Alternate the two, so load on a shared machine falls on both alike.
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(rounds):
            for choice, out in ((default, times[0]), (winner, times[1])):
                out.append(timer(lambda: work.step(choice)))
        return statistics.median(times[0]), statistics.median(times[1])

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(variants), desc=f"pigeon tune {compiled.layer.name} ({backend}, {mode})",
                       unit="candidate", leave=False)
        except ImportError:
            print(f"pigeon tune: tqdm is not installed, so no progress bar; measuring {len(variants)} "
                  f"variants, then kernel configs (budget {budget_s:g} s)")
    try:
        outcome = search(variants, spaces_of, score, budget_s, min_gain, progress=bar, confirm=confirm)
    finally:
        if bar is not None:
            bar.close()
    default_s = next(m.seconds for m in outcome.measured if m.choice == variants[0])
    chosen_s = next(m.seconds for m in outcome.measured if m.choice == outcome.chosen)
    if outcome.confirmed is not None:
        default_s = outcome.confirmed[0]
        chosen_s = outcome.confirmed[1] if outcome.confirmed[2] else default_s
    traced, _ = compiled.trace(graph, tensors)
    key = tune_key(compiled, traced, compiled.plan(graph, work.tensors, Choice()), graph, backend, work.dtype, mode)
    result = TuneResult(outcome.measured, outcome.chosen, default_s, chosen_s, mode, backend,
                        outcome.stopped_by_budget, compiled.plan(graph, work.tensors, outcome.chosen).decisions, key,
                        outcome.confirmed, elapsed_s=time.monotonic() - started)
    if store:
        summary = {"default_s": default_s, "chosen_s": chosen_s, "speedup": result.speedup,
                   "candidates": len(outcome.measured), "stopped_by_budget": outcome.stopped_by_budget,
                   "chosen": outcome.chosen.describe(), "confirmed": outcome.confirmed,
                   "table": result.rows()[:20]}
        result.path = TuneCache().store(key, outcome.chosen, summary)
        target.forget_tuned()
    if verbose:
        print(result.table())
    return result
