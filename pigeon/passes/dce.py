"""Dead-code elimination."""

from __future__ import annotations

from pigeon.ir.builder import Builder
from pigeon.ir.graph_ir import Op, Program
from pigeon.ir.rewrite import copy_node
from pigeon.passes.base import Pass, PassContext


class DeadCodeElimination(Pass):
    """Drop every node no output depends on.

    Requires: a verified program. Guarantees: the same outputs; every remaining node
    reaches an output; inputs and parameters are kept (they are the program's signature).
    """

    name = "dce"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        live = {n.id for n in program.nodes if n.op in (Op.OUTPUT, Op.INPUT, Op.PARAM)}
        for node in reversed(program.nodes):
            if node.id in live:
                live.update(node.inputs)
        b = Builder(program.maps)
        remap: dict[int, int] = {}
        for node in program.nodes:
            if node.id in live:
                remap[node.id] = copy_node(b, node, tuple(remap[i] for i in node.inputs))
        return b.build()


def keep_outputs(program: Program, names) -> Program:
    """``program`` with only the outputs named in ``names``, and what they depend on."""
    nodes = tuple(n for n in program.nodes if n.op is not Op.OUTPUT or n.attr("name") in names)
    return DeadCodeElimination().apply(Program(nodes, program.maps), PassContext())
