"""What every pass shares: the context it runs in and the interface it implements."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from pigeon.ir.graph_ir import Program


@dataclass(frozen=True)
class RowCounts:
    """Rows per space of the graph a program is compiled for: what cost models read."""

    node: int
    dst_node: int
    edge: int
    etype: int
    ntype: int
    compact_src: int
    compact_dst: int
    ntype_etype: int   # (source node type, edge type) pairs present: where folded weights live

    def of(self, space_name: str) -> int:
        return getattr(self, space_name, 1)

    @classmethod
    def from_graph(cls, graph) -> "RowCounts":
        return cls(**{name: cls.count_of(graph, name) for name in _COUNTS})

    @staticmethod
    def count_of(graph, space_name: str) -> int:
        """One count of ``graph`` without computing the others (the compact maps cost a
        sort each); 1 for spaces without rows, as :meth:`of`."""
        getter = _COUNTS.get(space_name)
        return 1 if getter is None else getter(graph)


_COUNTS = {
    "node": lambda g: g.num_nodes,
    "dst_node": lambda g: g.num_dst_nodes,
    "edge": lambda g: g.num_edges,
    "etype": lambda g: g.num_etypes,
    "ntype": lambda g: g.num_ntypes,
    "compact_src": lambda g: g.compact_src.num_rows,
    "compact_dst": lambda g: g.compact_dst.num_rows,
    "ntype_etype": lambda g: g.ntype_etype.num_rows,
}


def bucket(count: int) -> int:
    """The representative of ``count``'s bucket: exact below 16, else the largest
    ``2 ** (k / 4)`` (rounded down) not above it. Buckets are a quarter octave wide
    (counts within 19% share one), so a decision read from them flips only where a count
    crosses a boundary, and a plan serves every graph of the same buckets (the sampled
    blocks of a mini-batch run, whose counts differ batch to batch)."""
    if count < 16:
        return count
    return int(2 ** (math.floor(4 * math.log2(count)) / 4))


#: Counts that cost a pass over the edges and a sort or count of keys to know (unique
#: (node, relation) and (node type, relation) pairs): read when a plan is built, but not
#: part of its reuse key (see :class:`PassContext`).
STATISTICS = frozenset({"compact_src", "compact_dst", "ntype_etype"})


@dataclass
class PassContext:
    """Per-compilation facts and a log of the decisions passes took (with their costs).

    Passes read row counts through :meth:`count`, which gives their bucket
    (:func:`bucket`) and records it. A plan is reused for any graph whose buckets agree on
    the sizes in ``read`` (node, destination, edge and type counts: known without work);
    the :data:`STATISTICS` a decision also read (how often pairs repeat) are taken from the
    graph the plan was built for and recorded in ``statistics``, not checked again: the
    sampled blocks of one graph repeat pairs alike, and checking would cost a sort per
    batch. (For every graph when the options force every decision and nothing was read.)
    The counts come from ``rows``, or from ``graph`` one at a time when asked.
    """

    rows: RowCounts | None = None
    decisions: list[str] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)
    graph: object = None
    statistics: dict[str, int] = field(default_factory=dict)

    def note(self, message: str) -> None:
        self.decisions.append(message)

    @property
    def has_counts(self) -> bool:
        """Whether row counts are known (cost models decide nothing without them)."""
        return self.rows is not None or self.graph is not None

    def count(self, space_name: str) -> int:
        """The bucket of the rows of space ``space_name`` (1 for spaces without rows, e.g.
        ``global``), recorded in ``read`` (or ``statistics``). Requires ``rows`` or ``graph``."""
        if self.rows is not None:
            value = self.rows.of(space_name)
        elif self.graph is not None:
            value = RowCounts.count_of(self.graph, space_name)
        else:
            raise ValueError("PassContext.count needs the row counts: `rows` and `graph` are None")
        recorded = self.statistics if space_name in STATISTICS else self.read
        recorded[space_name] = bucket(value)
        return recorded[space_name]


class Pass:
    """A program-to-program rewrite. Subclasses set ``name`` and implement ``apply``;
    their docstring says what they require and what they guarantee."""

    name: ClassVar[str] = "pass"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        raise TypeError(f"{type(self).__name__} does not implement apply")
