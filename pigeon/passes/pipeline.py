"""The pass pipeline: one function, read top to bottom."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from pigeon.ir.builder import verify
from pigeon.ir.graph_ir import Program
from pigeon.passes.base import Pass, PassContext
from pigeon.passes.compact import CompactMaterialization
from pigeon.passes.cse import CommonSubexpressionElimination
from pigeon.passes.dce import DeadCodeElimination
from pigeon.passes.distribute import AggregateDistribution
from pigeon.passes.reorder import LinearReordering
from pigeon.passes.reorder_chain import ChainReordering
from pigeon.passes.restrict import DestinationRestriction
from pigeon.passes.simplify import Simplify
from pigeon.passes.sink import AggregateBeforeProduct

Hook = Callable[[str, Program], None]

PASS_NAMES = ("cse", "restrict", "sink", "reorder", "dce", "compact", "reorder_chain", "simplify", "distribute")


def _verify_default() -> bool:
    """The test suite sets PIGEON_VERIFY=1 so every pass is verified on every compile."""
    return os.environ.get("PIGEON_VERIFY", "") not in ("", "0")


@dataclass(frozen=True)
class Options:
    """Compiler decisions a caller (or the autotuner) may force; None = the cost model's
    (:func:`pigeon.passes.choose.decide` settles them; :func:`optimize` applies no
    rewrite whose decision is still None).

    ``reorder`` decides both halves of linear reordering (``reorder``: attention vectors
    into weights; ``reorder_chain``: per-node-type into per-edge-type weights); ``sink``
    sums messages per (destination, edge type) pair before their product
    (:class:`~pigeon.passes.sink.AggregateBeforeProduct`).
    ``disable`` names passes to skip (any of :data:`PASS_NAMES`); ``verify`` checks the
    IR after every pass.
    """

    reorder: bool | None = None
    compact: bool | None = None
    sink: bool | None = None
    verify: bool = field(default_factory=_verify_default)
    disable: frozenset = frozenset()

    def __post_init__(self):
        unknown = sorted(set(self.disable) - set(PASS_NAMES))
        if unknown:
            raise ValueError(f"Expected `disable` to name passes from {list(PASS_NAMES)} (got {unknown})")




def optimize(program: Program, ctx: PassContext, options: Options = Options(), hook: Hook | None = None) -> Program:
    """Run the level-1 passes. ``hook(pass_name, program)`` sees the IR after each step."""

    def step(p: Pass, current: Program) -> Program:
        result = current if p.name in options.disable else p.apply(current, ctx)
        if options.verify:
            verify(result)
        if hook is not None:
            hook(p.name, result)
        return result

    program = step(CommonSubexpressionElimination(), program)        # one copy of each value
    program = step(DestinationRestriction(), program)                # node work read on dst only
    program = step(AggregateBeforeProduct(bool(options.sink)), program)  # sum per (dst, etype), then multiply
    program = step(DeadCodeElimination(), program)                   # the messages it replaced
    program = step(LinearReordering(bool(options.reorder)), program) # dot(xW, a) -> x(Wa)
    program = step(DeadCodeElimination(), program)                   # drop the products it replaced
    program = step(CompactMaterialization(bool(options.compact)), program)  # per unique (node, etype)
    program = step(ChainReordering(bool(options.reorder)), program)         # (x K)W -> x(KW) per type pair
    program = step(Simplify(), program)                              # fold reshapes of reshapes
    program = step(AggregateDistribution(), program)                 # scatter each product itself
    program = step(CommonSubexpressionElimination(), program)        # merge what rewrites duplicated
    program = step(DeadCodeElimination(), program)                   # drop what is now unread
    return program
