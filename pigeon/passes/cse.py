"""Common-subexpression elimination."""

from __future__ import annotations

from pigeon.ir.graph_ir import Op, Program
from pigeon.ir.rewrite import copy_node, rewrite
from pigeon.passes.base import Pass, PassContext


class CommonSubexpressionElimination(Pass):
    """Compute each distinct (op, operands, attributes) once.

    Requires: a verified program. Guarantees: the same outputs; no two nodes with equal
    op, operands and attributes, except inputs, parameters and outputs, which are never
    merged (equal constants are). Nothing dead is left behind: later uses read the first copy.
    """

    name = "cse"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        canonical: dict[tuple, int] = {}

        def merge(node, b, inputs):
            if node.op in (Op.INPUT, Op.PARAM, Op.OUTPUT):
                return None
            key = (node.op, inputs, node.attrs, node.type if node.op is Op.CONST else None)
            if key not in canonical:
                canonical[key] = copy_node(b, node, inputs)
            return canonical[key]

        return rewrite(program, merge)
