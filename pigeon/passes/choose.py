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
from pigeon.passes.lower import lower
from pigeon.passes.pipeline import Options, optimize

__all__ = ["decide", "variants", "SMALL"]

#: Below this many rows in every space the choice cannot matter: every rewrite stays off
#: without timing anything (the hypothesis graphs of the tests, tiny toy graphs).
SMALL = 64


def variants(options: Options) -> list[Options]:
    """Every setting of the decisions ``options`` leaves open (None), the others as given."""
    reorders = [options.reorder] if options.reorder is not None else [False, True]
    compacts = [options.compact] if options.compact is not None else [False, True]
    return [replace(options, reorder=r, compact=c) for r, c in itertools.product(reorders, compacts)]


def _rows(ctx: PassContext, compact: bool) -> RowCounts:
    """The buckets of the counts the variants can depend on, read (and recorded) through
    the context; the compact counts only when compaction is among the variants (they
    cost a sort on every new graph)."""
    names = ("node", "dst_node", "edge", "etype", "ntype", "ntype_etype")
    counts = {name: ctx.count(name) for name in names}
    for name in ("compact_src", "compact_dst"):
        counts[name] = ctx.count(name) if compact else 1
    return RowCounts(**counts)


def decide(program: Program, ctx: PassContext, options: Options, target: Target, training: bool,
           layout: str | None = None, elem: int = 4) -> Options:
    """``options`` with every open decision settled by the cost model (see the module
    docstring), for values of ``elem`` bytes (the storage dtype's). Requires row counts in
    ``ctx`` to decide anything: without them, or on a graph whose spaces all have fewer
    than :data:`SMALL` rows, open decisions are off."""
    candidates = variants(options)
    if len(candidates) == 1:
        return candidates[0]
    off = replace(options, reorder=options.reorder or False, compact=options.compact or False)
    if not ctx.has_counts or max(ctx.count(s) for s in ("node", "edge")) < SMALL:
        return off
    rows = _rows(ctx, any(c.compact for c in candidates))
    timed = []
    for candidate in candidates:
        scratch = PassContext(rows=rows)
        forward = optimize(program, scratch, candidate)
        seconds = program_seconds(lower(forward, layout), rows, target, elem)
        if training:
            written = frozenset()   # the estimate recomputes what the backward needs: an upper bound
            backward = optimize(backward_program(forward, written), scratch, candidate)
            seconds += program_seconds(lower(backward, layout), rows, target, elem)
        timed.append((seconds, candidate))
    best_seconds, best = min(timed, key=lambda item: item[0])
    table = ", ".join(f"reorder={c.reorder} compact={c.compact}: {s * 1e3:.3g} ms" for s, c in timed)
    ctx.note(f"cost model ({'train' if training else 'infer'}): reorder={best.reorder} compact={best.compact} "
             f"({table})")
    return best
