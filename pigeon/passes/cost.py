"""A first-order cost model: floating-point operations and bytes moved per level-1 node.

Costs are per row of the node's space times the row counts of the graph: a typed
linear over edge rows costs ``2 * edges * in * out`` FLOPs whatever the weight's
type, which is exactly what compact materialization and linear reordering trade.
Bytes count each operand read once and the result written once (8-byte elements are
not assumed: ``elem`` is a parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.ir.graph_ir import GLOBAL, Node, Op, Program
from pigeon.passes.base import RowCounts


@dataclass(frozen=True)
class Cost:
    flops: int
    bytes: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.bytes + other.bytes)

    def __str__(self) -> str:
        return f"{self.flops:,} FLOPs, {self.bytes:,} bytes"


def _rows(node: Node, rows: RowCounts) -> int:
    return 1 if node.type.space == GLOBAL else rows.of(node.type.space.name)


def node_cost(program: Program, node: Node, rows: RowCounts, elem: int = 4) -> Cost:
    """The cost of computing ``node`` once."""
    if node.op in (Op.INPUT, Op.PARAM, Op.CONST, Op.OUTPUT, Op.RESHAPE):
        return Cost(0, 0)
    out_rows = _rows(node, rows)
    operands = [program.nodes[i] for i in node.inputs]
    moved = sum(_rows(o, rows) * o.type.numel for o in operands) + out_rows * node.type.numel
    if node.op in (Op.LINEAR, Op.TYPED_LINEAR):
        x, w = operands
        in_dim = w.type.shape[-1] if node.attr("transpose_w") else w.type.shape[-2]
        flops = 2 * out_rows * node.type.numel * in_dim
        # A typed weight is read once per type, not once per row.
        moved = _rows(x, rows) * x.type.numel + _rows(w, rows) * w.type.numel + out_rows * node.type.numel
    elif node.op is Op.TYPED_OUTER:
        x = operands[0]
        flops = 2 * _rows(x, rows) * x.type.numel * operands[1].type.shape[-1]
    elif node.op in (Op.DOT, Op.BINARY, Op.UNARY, Op.AGGREGATE, Op.SEGMENT_SOFTMAX, Op.LAYER_NORM):
        widest = max([_rows(o, rows) * o.type.numel for o in operands] + [out_rows * node.type.numel])
        flops = widest * (5 if node.op in (Op.SEGMENT_SOFTMAX, Op.LAYER_NORM) else 1)
    else:
        flops = out_rows * node.type.numel
    return Cost(flops, moved * elem)


def program_cost(program: Program, rows: RowCounts, elem: int = 4) -> Cost:
    total = Cost(0, 0)
    for node in program.nodes:
        total = total + node_cost(program, node, rows, elem)
    return total
