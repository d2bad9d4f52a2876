"""What every pass shares: the context it runs in and the interface it implements."""

from __future__ import annotations

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


@dataclass
class PassContext:
    """Per-compilation facts and a log of the decisions passes took (with their costs).

    Passes read row counts through :meth:`count`, which records each one read: a
    compiled program depends on the graph only through the counts in ``read``, so a
    plan is reused for any graph that agrees on them (and for every graph when the
    options force every decision and nothing was read).
    """

    rows: RowCounts | None = None
    decisions: list[str] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)

    def note(self, message: str) -> None:
        self.decisions.append(message)

    def count(self, space_name: str) -> int:
        """The rows of space ``space_name`` (1 for spaces without rows, e.g. ``global``),
        recorded in ``read``. Requires ``rows``."""
        if self.rows is None:
            raise ValueError("PassContext.count needs the row counts: `rows` is None")
        value = self.rows.of(space_name)
        self.read[space_name] = value
        return value


class Pass:
    """A program-to-program rewrite. Subclasses set ``name`` and implement ``apply``;
    their docstring says what they require and what they guarantee."""

    name: ClassVar[str] = "pass"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        raise TypeError(f"{type(self).__name__} does not implement apply")
