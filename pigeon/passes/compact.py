"""Compact materialization: a typed linear of gathered node rows, once per unique pair."""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.ir.graph_ir import (
    COMPACT_DST_OF_EDGE, COMPACT_SRC_OF_EDGE, DST, ETYPE_OF_EDGE, SRC, Op, Program, BUILTIN_MAPS,
)
from pigeon.ir.rewrite import rewrite
from pigeon.passes.base import Pass, PassContext

_COMPACT = {
    SRC: (BUILTIN_MAPS["compact_src_node"], BUILTIN_MAPS["compact_src_etype"], COMPACT_SRC_OF_EDGE),
    DST: (BUILTIN_MAPS["compact_dst_node"], BUILTIN_MAPS["compact_dst_etype"], COMPACT_DST_OF_EDGE),
}


@dataclass
class CompactMaterialization(Pass):
    """``typed_linear(gather[src](x), W)[etype]`` becomes
    ``gather[edge_to_compact_src](typed_linear(gather[compact_src_node](x), W)[compact_src_etype])``:
    the product is computed once per unique (source node, edge type) pair and read per
    edge (likewise for destinations).

    ``enabled``: apply it (True) or not; whether it pays is the cost model's decision
    (:func:`pigeon.passes.choose.decide`).

    Requires: a verified program. Guarantees: the same outputs, up to floating-point
    reassociation (none: each product is computed once instead of several times).
    """

    name = "compact"
    enabled: bool = True

    def apply(self, program: Program, ctx: PassContext) -> Program:
        if not self.enabled:
            return program

        def rule(node, b, inputs):
            if node.op is not Op.TYPED_LINEAR or node.attr("index") != ETYPE_OF_EDGE:
                return None
            gathered = b.nodes[inputs[0]]
            end = gathered.attr("index") if gathered.op is Op.GATHER else None
            if end not in _COMPACT:
                return None
            node_map, etype_map, edge_map = _COMPACT[end]
            rows = b.add(Op.GATHER, gathered.inputs, loc=node.loc, index=node_map)
            product = b.add(Op.TYPED_LINEAR, (rows, inputs[1]), loc=node.loc, index=etype_map,
                            transpose_w=node.attr("transpose_w"))
            ctx.note(f"compact: %{node.id} typed_linear of gather[{end}] computed per unique ({end}, etype) pair")
            return b.add(Op.GATHER, (product,), loc=node.loc, index=edge_map)

        return rewrite(program, rule)
