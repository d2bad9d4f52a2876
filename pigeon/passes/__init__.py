"""Level-1 passes. Each is a small class in its own file; ``pipeline.optimize`` runs them."""

from pigeon.passes.base import Pass, PassContext, RowCounts
from pigeon.passes.compact import CompactMaterialization
from pigeon.passes.cost import Cost, program_cost
from pigeon.passes.cse import CommonSubexpressionElimination
from pigeon.passes.dce import DeadCodeElimination
from pigeon.passes.distribute import AggregateDistribution
from pigeon.passes.pipeline import PASS_NAMES, Options, optimize
from pigeon.passes.reorder import LinearReordering
from pigeon.passes.restrict import DestinationRestriction
from pigeon.passes.simplify import Simplify

__all__ = [
    "Pass", "PassContext", "RowCounts", "CompactMaterialization", "Cost", "program_cost",
    "CommonSubexpressionElimination", "DeadCodeElimination", "LinearReordering", "Options",
    "optimize", "PASS_NAMES", "Simplify", "DestinationRestriction", "AggregateDistribution",
]
