"""Destination restriction: node-wise work that only destinations read runs on them alone."""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.ir.graph_ir import (
    DST_NODE, GLOBAL, NODE, NODE_OF_DST, NTYPE_OF_DST_NODE, NTYPE_OF_NODE, Node, Op, Program,
)
from pigeon.ir.rewrite import rewrite
from pigeon.passes.base import Pass, PassContext

# Ops that compute each row from the same row of their operands (or from a global value,
# or from the row's node type): restricting the result restricts the operands.
_ROW_LOCAL = (
    Op.UNARY, Op.BINARY, Op.DOT, Op.LINEAR, Op.TYPED_LINEAR, Op.SUM_LAST, Op.SUM_DIMS, Op.EXPAND_LAST,
    Op.RESHAPE, Op.CONCAT, Op.SLICE_LAST, Op.PAD_LAST, Op.LAYER_NORM, Op.GATHER, Op.BROADCAST_ROWS,
)


def _movable(node: Node) -> bool:
    """Whether ``node`` is a node-space value that the destinations' restriction can move
    above (a row-local op, a per-node-type lookup, a broadcast of a global value)."""
    if node.type.space != NODE or node.op not in _ROW_LOCAL:
        return False
    if node.op in (Op.GATHER, Op.TYPED_LINEAR):
        return node.attr("index") == NTYPE_OF_NODE
    return True


@dataclass
class DestinationRestriction(Pass):
    """``gather[node_of_dst](f(x, ...))``, with ``f`` row-local over node rows and read
    only on the destinations, becomes ``f(gather[node_of_dst](x), ...)``: the work of
    ``f`` runs on the destination rows only. Per-node-type lookups and typed linears
    follow the destinations' node types. Repeated until nothing moves, so a chain
    (HGT's query projection ``x Q_tau + b_tau``, RGCN's self-loop ``x W``) is computed
    on ``num_dst_nodes`` rows instead of every node of a sampled block.

    Requires: a verified program. Guarantees: the same outputs (each row's value is
    computed by the same ops from the same operand rows; a matrix product over fewer rows
    may round differently); the node-wise values it replaced are left dead (run DCE).
    """

    name = "restrict"

    def apply(self, program: Program, ctx: PassContext) -> Program:
        while True:
            moved = self._once(program)
            if moved is program:
                return program
            program = moved

    def _once(self, program: Program) -> Program:
        # Readers that some output depends on: a round leaves the old node-wise values
        # behind, and their dead readers must not keep the next round from moving.
        live = {n.id for n in program.nodes if n.op is Op.OUTPUT}
        for n in reversed(program.nodes):
            if n.id in live:
                live.update(n.inputs)
        users = {i: [u for u in readers if u in live] for i, readers in program.users().items()}
        changed = False

        def only_restricted(i: int) -> bool:
            readers = [program.nodes[u] for u in users[i]]
            return bool(readers) and all(r.op is Op.GATHER and r.attr("index") == NODE_OF_DST for r in readers)

        def rule(node, b, inputs):
            nonlocal changed
            if node.op is not Op.GATHER or node.attr("index") != NODE_OF_DST:
                return None
            inner = program.nodes[node.inputs[0]]
            if not _movable(inner) or not only_restricted(inner.id):
                return None
            changed = True
            source = b.nodes[inputs[0]]
            attrs = dict(inner.attrs)
            if inner.op in (Op.GATHER, Op.TYPED_LINEAR):
                attrs["index"] = NTYPE_OF_DST_NODE
            if inner.op is Op.BROADCAST_ROWS:
                attrs["space"] = DST_NODE
            operands = []
            for old in source.inputs:
                if b.nodes[old].type.space == NODE:
                    old = b.add(Op.GATHER, (old,), loc=node.loc, index=NODE_OF_DST)
                operands.append(old)
            return b.add(inner.op, tuple(operands), loc=inner.loc, **attrs)

        result = rewrite(program, rule)
        return result if changed else program
