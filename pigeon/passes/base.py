"""What every pass shares: the context it runs in and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pigeon.ir.graph_ir import Program


@dataclass(frozen=True)
class RowCounts:
    """Rows per space of the graph a program is compiled for: what cost models read."""

    node: int
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
        return cls(
            node=graph.num_nodes, edge=graph.num_edges, etype=graph.num_etypes, ntype=graph.num_ntypes,
            compact_src=graph.compact_src.num_rows, compact_dst=graph.compact_dst.num_rows,
            ntype_etype=graph.ntype_etype.num_rows,
        )


@dataclass
class PassContext:
    """Per-compilation facts and a log of the decisions passes took (with their costs)."""

    rows: RowCounts | None = None
    decisions: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.decisions.append(message)


class Pass:
    """A program-to-program rewrite. Subclasses set ``name`` and implement ``apply``;
    their docstring says what they require and what they guarantee."""

    name: ClassVar[str] = "pass"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        raise TypeError(f"{type(self).__name__} does not implement apply")
