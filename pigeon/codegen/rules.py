"""What the C and Triton generators share, described once; each generator only spells it.

- :data:`REDUCTIONS` and :func:`finish`: a reduction's start value, how a row joins it,
  and how a group's result is finished (a mean divides by the rows it saw, a self message
  being one more; a maximum or minimum over no rows is 0).
- :data:`ONLINE_SOFTMAX`: a softmax's running maximum and sum over a group's rows,
  updated in one sweep, and the normalised value read by a later sweep.
- :class:`ArgKind`, :class:`OutputKind` and :class:`KernelArg`: the kernel-argument ABI,
  what a generated kernel takes and so what its launcher passes.
- :func:`strides`: the row-major strides of a row shape.

Which sweep computes which value is planned in :mod:`pigeon.codegen.sweeps`. Expressions
here are small trees of level-1 :class:`Unary` and :class:`Binary` ops over named
operands (:func:`spell`), so a backend writes them with the same op tables it uses for a
kernel body.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Mapping, Union

from pigeon.ir.graph_ir import Binary, IndexMap, Reduce, Space, Unary

# ---- expressions ------------------------------------------------------------------------

#: An operand's name, or ``(Unary, operand)``, or ``(Binary, left, right)``.
Expr = Union[str, tuple]


def spell(expr: Expr, unary: Mapping[Unary, str], binary: Mapping[Binary, str], names: Mapping[str, str]) -> str:
    """``expr`` in a backend's syntax: ``unary`` and ``binary`` are its op tables
    (``{x}``; ``{a}``, ``{b}``), ``names`` its spelling of each operand."""
    if isinstance(expr, str):
        return names[expr]
    op, *operands = expr
    parts = [spell(e, unary, binary, names) for e in operands]
    if isinstance(op, Unary):
        return unary[op].format(x=parts[0])
    return binary[op].format(a=parts[0], b=parts[1])


# ---- reductions -------------------------------------------------------------------------

@dataclass(frozen=True)
class ReductionRule:
    """How one kind of reduction runs over a group's rows.

    ``start`` is the value before any row (the identity of ``combine``, the op a row
    joins the running value with); ``mean`` says the result is divided by the rows it
    saw; ``empty`` is the result of a group with no rows where ``start`` is not it.
    """

    how: Reduce
    start: float
    combine: Binary
    mean: bool = False
    empty: float | None = None

    @property
    def scatters(self) -> bool:
        """Whether rows may be added from many programs in any order (atomics): a sum,
        or a mean whose count is known before the rows are."""
        return self.combine is Binary.ADD


REDUCTIONS: dict[Reduce, ReductionRule] = {
    Reduce.SUM: ReductionRule(Reduce.SUM, 0.0, Binary.ADD),
    Reduce.MEAN: ReductionRule(Reduce.MEAN, 0.0, Binary.ADD, mean=True),
    Reduce.MAX: ReductionRule(Reduce.MAX, -math.inf, Binary.MAX, empty=0.0),
    Reduce.MIN: ReductionRule(Reduce.MIN, math.inf, Binary.MIN, empty=0.0),
}


@dataclass(frozen=True)
class Finish:
    """What ends a group's reduction after its last row.

    ``divide``: a mean, divided by ``count + extra`` rows, where ``count`` is the group's
    own rows and ``extra`` is 1 for a self message (the reduction starts from it);
    a group with no rows at all keeps its start value (0), never divided by zero.
    ``empty``: the result of a group with no rows at all (None: what was accumulated).
    """

    divide: bool
    extra: int
    empty: float | None

    @property
    def needed(self) -> bool:
        return self.divide or self.empty is not None


def finish(how: Reduce, self_message: bool) -> Finish:
    """The finishing rule of a ``how`` reduction, started from a self message or not
    (with one, every group has a row)."""
    rule = REDUCTIONS[how]
    return Finish(rule.mean, 1 if self_message else 0, None if self_message else rule.empty)


# ---- online softmax ----------------------------------------------------------------------

@dataclass(frozen=True)
class OnlineSoftmax:
    """A softmax over a group's rows, ``y_r = exp(x_r - m) / s`` with ``m`` the rows'
    maximum and ``s`` the sum of ``exp(x_r - m)``, both found in one sweep.

    ``m`` and ``s`` run as the reductions ``maximum`` and ``total`` (so they start from
    -inf and 0). A step over rows ``x`` (a block of them, or one) takes the new maximum
    ``t = max(m, max x)``, then ``s = rescale + sum of term`` and ``m = t``: the sum so
    far is rescaled whenever the maximum grows, so no exponential overflows. A later
    sweep reads ``normalise``.
    """

    maximum: ReductionRule = REDUCTIONS[Reduce.MAX]
    total: ReductionRule = REDUCTIONS[Reduce.SUM]
    rescale: Expr = (Binary.MUL, "s", (Unary.EXP, (Binary.SUB, "m", "t")))
    term: Expr = (Unary.EXP, (Binary.SUB, "x", "t"))
    normalise: Expr = (Binary.DIV, (Unary.EXP, (Binary.SUB, "x", "m")), "s")


ONLINE_SOFTMAX = OnlineSoftmax()


# ---- kernel arguments ----------------------------------------------------------------------

class ArgKind(enum.Enum):
    """What one argument of a generated kernel holds, so what its launcher passes."""

    ROWPTR = "rowptr"              # the group map's CSR: where each group's rows begin (int64)
    PERM = "perm"                  # the group map's CSR: the domain rows in group order (int64)
    BLOCKS = "blocks"              # (group, begin, end) per block of a group's rows (int64)
    INDEX = "index"                # an index map's target, per domain row (int64)
    INDEX_SORTED = "index_sorted"  # the same, in the order of the group's CSR (int64)
    COUNT = "count"                # an index map's rows per target (int64)
    BUFFER = "buffer"              # a buffer the kernel reads
    OUTPUT = "output"              # a buffer the kernel writes (:class:`OutputKind`)
    PARTIAL = "partial"            # zeroed floats: threads x groups x width
    SCRATCH = "scratch"            # floats: threads x largest group x width

    @property
    def graph_array(self) -> bool:
        """An int64 array of the graph's (from the per-graph index cache)."""
        return self in (ArgKind.ROWPTR, ArgKind.PERM, ArgKind.BLOCKS, ArgKind.INDEX, ArgKind.INDEX_SORTED,
                        ArgKind.COUNT)


class OutputKind(enum.Enum):
    """How a kernel writes an output buffer, so how the launcher allocates it."""

    ROW = "row"          # one row per row of its space, each written once
    GROUP = "group"      # one row per group of the traversal, each written once
    ATOMIC = "atomic"    # rows of its space scatter-added into zeros


@dataclass(frozen=True)
class KernelArg:
    """One argument of a generated kernel.

    ``key``: the index map (graph arrays), the buffer's name (buffers and outputs) or
    the floats per row (partial and scratch). An output also says how it is written
    (``output``), the space of its rows (``rows``; GLOBAL: no row dimension) and a
    row's shape.
    """

    kind: ArgKind
    key: IndexMap | str | int
    output: OutputKind | None = None
    rows: Space | None = None
    shape: tuple[int, ...] = ()


def strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides of ``shape``, in elements."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))
