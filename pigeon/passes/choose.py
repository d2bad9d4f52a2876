"""The compiler's decisions from one cost model: every variant lowered and timed on paper.

The rewrites that trade work for memory or fusion (linear reordering with HGT's chain
folding, compact materialization) are pure rewrites; whether to apply them is decided
here, once per program and graph buckets: every combination the caller left open is
optimised, lowered to level 2 (and, for training, differentiated and lowered again), and
charged by :func:`pigeon.passes.cost.program_seconds` on the backend's
:class:`~pigeon.passes.cost.Target`. The cheapest wins; the estimate of each is noted in
the context's decisions, so ``pigeon show-ir`` and the plan say why.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from pigeon.ir.autodiff import backward_program
from pigeon.ir.graph_ir import Program
from pigeon.passes.base import PassContext, RowCounts
from pigeon.passes.cost import Target, program_seconds
from pigeon.passes.dce import keep_outputs
from pigeon.passes.lower import lower
from pigeon.passes.pipeline import Options, optimize
from pigeon.passes.sink import applies as sink_applies

__all__ = ["decide", "variants", "Variants", "SMALL"]

#: Below this many rows in every space the choice cannot matter: every rewrite stays off
#: without timing anything (the hypothesis graphs of the tests, tiny toy graphs).
SMALL = 64


def variants(options: Options) -> list[Options]:
    """Every setting of the decisions ``options`` leaves open (None), the others as given;
    with the messages summed per pair (``sink``), an open compaction stays off: the
    products it would compact are gone, but for folded attention weights a few columns wide."""
    reorders = [options.reorder] if options.reorder is not None else [False, True]
    compacts = [options.compact] if options.compact is not None else [False, True]
    sinks = [options.sink] if options.sink is not None else [False, True]
    return [replace(options, reorder=r, compact=c, sink=s) for r, c, s in itertools.product(reorders, compacts, sinks)
            if not (s and c and options.compact is None)]


def _rows(ctx: PassContext, compact: bool) -> RowCounts:
    """The buckets of the counts the variants can depend on, read (and recorded) through
    the context; the compact counts only when compaction is among the variants (they
    cost a sort on every new graph)."""
    names = ("node", "dst_node", "edge", "etype", "ntype", "ntype_etype")
    counts = {name: ctx.count(name) for name in names}
    for name in ("compact_src", "compact_dst"):
        counts[name] = ctx.count(name) if compact else 1
    return RowCounts(**counts)


class Variants:
    """The variants of one traced program the cost model chooses among: each optimised and
    lowered once, on first use (the programs do not depend on the graph), then costed for
    every graph the caller asks about. A mini-batch run's blocks of new sizes cost the
    model a sum over a few lowered programs, not a compilation of each variant.

    Args:
        program: the traced level-1 program.
        options: the decisions; those left None are chosen.
        layout: the lowering's traversal layout.
        training: whether the backward program counts too.
        grads: the names of the inputs and parameters whose gradients that backward
            computes (the rest are dead code there, as in the plan's backward for the
            call); None: all of them.
    """

    def __init__(self, program: Program, options: Options, layout: str | None, training: bool,
                 grads: frozenset[str] | None = None):
        if options.sink is None and not sink_applies(program):
            options = replace(options, sink=False)   # no variant to weigh: nothing to rewrite
        self.program, self.options, self.layout, self.training = program, options, layout, training
        self.grads = grads
        self.candidates = variants(options)
        self._lowered: dict[Options, tuple] = {}

    def lowered(self, candidate: Options):
        """``(forward program, its kernels, the kernels of a backward that recomputes every
        forward value or None when not training)`` for ``candidate``."""
        if candidate not in self._lowered:
            scratch = PassContext()
            forward = optimize(self.program, scratch, candidate)
            notes = tuple(scratch.decisions)
            backward = None
            if self.training:
                full = backward_program(forward)
                if self.grads is not None:
                    full = keep_outputs(full, {f"grad_{name}" for name in self.grads})
                backward = lower(optimize(full, PassContext(), candidate), self.layout)
            self._lowered[candidate] = (forward, lower(forward, self.layout), backward, notes)
        return self._lowered[candidate][:3]

    def notes(self, candidate: Options) -> tuple[str, ...]:
        """What the passes noted while optimising ``candidate``'s forward program."""
        self.lowered(candidate)
        return self._lowered[candidate][3]

    def estimates(self, ctx: PassContext, target: Target, elem: int = 4) -> list[tuple[float, Options]]:
        """``(seconds, candidate)`` for every candidate: what the cost model charges it on
        ``ctx``'s graph for values of ``elem`` bytes (the storage dtype's): forward, and in
        training the backward that recomputes what it needs. Needs the context's counts."""
        rows = _rows(ctx, any(c.compact or c.sink for c in self.candidates))
        timed = []
        for candidate in self.candidates:
            _, forward, backward = self.lowered(candidate)
            seconds = program_seconds(forward, rows, target, elem)
            if backward is not None:
                seconds += program_seconds(backward, rows, target, elem)
            timed.append((seconds, candidate))
        return timed

    def decide(self, ctx: PassContext, target: Target, elem: int = 4) -> Options:
        """The candidate the cost model finds cheapest on ``ctx``'s graph (module
        docstring); every open decision off without counts or on a small graph."""
        if len(self.candidates) == 1:
            return self.candidates[0]
        options = self.options
        off = replace(options, reorder=options.reorder or False, compact=options.compact or False,
                      sink=options.sink or False)
        if not ctx.has_counts or max(ctx.count(s) for s in ("node", "edge")) < SMALL:
            return off
        timed = self.estimates(ctx, target, elem)
        best = min(timed, key=lambda item: item[0])[1]
        table = ", ".join(f"{_named(c)}: {s * 1e3:.3g} ms" for s, c in timed)
        ctx.note(f"cost model ({'train' if self.training else 'infer'}): {_named(best)} ({table})")
        return best


def _named(options: Options) -> str:
    return f"reorder={options.reorder} compact={options.compact} sink={options.sink}"


def decide(program: Program, ctx: PassContext, options: Options, target: Target, training: bool,
           layout: str | None = None, elem: int = 4) -> Options:
    """``options`` with every open decision settled by the cost model (see the module
    docstring), for values of ``elem`` bytes (the storage dtype's). Requires row counts in
    ``ctx`` to decide anything: without them, or on a graph whose spaces all have fewer
    than :data:`SMALL` rows, open decisions are off."""
    return Variants(program, options, layout, training).decide(ctx, target, elem)
