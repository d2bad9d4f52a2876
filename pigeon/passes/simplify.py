"""Algebraic clean-up of reshapes that rewrites and tracing leave behind."""

from __future__ import annotations

from pigeon.ir.graph_ir import Op, Program
from pigeon.ir.rewrite import rewrite
from pigeon.passes.base import Pass, PassContext


class Simplify(Pass):
    """A reshape to its operand's own shape is the operand; a reshape of a reshape reads
    the original value.

    Requires: a verified program. Guarantees: the same outputs, bit for bit; the
    skipped reshapes are left dead (run DCE).
    """

    name = "simplify"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        def rule(node, b, inputs):
            if node.op is not Op.RESHAPE:
                return None
            source = b.nodes[inputs[0]]
            if source.type.shape == node.type.shape:
                return inputs[0]
            if source.op is Op.RESHAPE:
                origin = source.inputs[0]
                if b.nodes[origin].type.shape == node.type.shape:
                    return origin
                return b.add(Op.RESHAPE, (origin,), loc=node.loc, shape=node.type.shape)
            return None

        return rewrite(program, rule)
