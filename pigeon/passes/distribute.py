"""Sums of products scattered one by one: ``aggregate(a W + b V)`` as ``aggregate(a W) + aggregate(b V)``."""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.ir.graph_ir import Binary, Op, Program, Reduce
from pigeon.ir.rewrite import rewrite
from pigeon.passes.base import Pass, PassContext

_PRODUCTS = (Op.LINEAR, Op.TYPED_LINEAR)


@dataclass
class AggregateDistribution(Pass):
    """A sum-aggregate of a sum of matrix products, each read by nothing else, becomes the
    sum of the products' aggregates: ``aggregate[m](x W + y V)`` ->
    ``aggregate[m](x W) + aggregate[m](y V)``. The lowering then scatter-adds each
    product from its GEMM, so neither is written as a buffer of one row per edge. The
    backward of HGT's key and value chains is the case: the gradients they send to the
    source rows are two per-edge products added before one scatter.

    Requires: a verified program. Guarantees: the same outputs up to floating-point
    reassociation (each target row sums the same terms in another order); the sum it
    replaced is left dead (run DCE).
    """

    name = "distribute"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        users = program.users()

        def private_product(i: int, reader: int) -> bool:
            node = program.nodes[i]
            return node.op in _PRODUCTS and users[i] == [reader]

        def rule(node, b, inputs):
            if node.op is not Op.AGGREGATE or node.attr("reduce") is not Reduce.SUM or len(node.inputs) != 1:
                return None
            total = program.nodes[node.inputs[0]]
            if total.op is not Op.BINARY or total.attr("fn") is not Binary.ADD or users[total.id] != [node.id]:
                return None
            if total.inputs[0] == total.inputs[1] or not all(private_product(i, total.id) for i in total.inputs):
                return None
            if any(program.nodes[i].type != total.type for i in total.inputs):
                return None   # a broadcast operand: its rows are not the sum's rows
            parts = [b.add(Op.AGGREGATE, (b.nodes[inputs[0]].inputs[k],), loc=node.loc, index=node.attr("index"),
                           reduce=Reduce.SUM) for k in (0, 1)]
            ctx.note(f"distribute: %{node.id} aggregate of a sum of products as a sum of two scatters")
            return b.add(Op.BINARY, tuple(parts), loc=node.loc, fn=Binary.ADD)

        return rewrite(program, rule)
