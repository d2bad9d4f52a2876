"""Linear reordering: ``dot(x W_t, a_t)`` becomes ``x (W_t a_t)``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pigeon.ir.graph_ir import GLOBAL, Op, Program
from pigeon.ir.rewrite import rewrite
from pigeon.passes.base import Pass, PassContext


@dataclass
class LinearReordering(Pass):
    """Fold a vector into the weight before it: ``dot(typed_linear(v, W), a)``, with ``a``
    typed like ``W`` (read per row) or global, becomes ``typed_linear(v, W·a)`` where
    ``W·a`` is computed once per type. A head reshape between the linear and the dot is
    allowed (multi-head attention vectors ``a[heads, d]``).

    This is the RGAT attention term: per edge it replaces an ``in x out`` product and an
    ``out`` dot by an ``in x heads`` product. It applies where the dot is the product's
    only reader (elsewhere folding adds a product and removes none: RGAT's source side,
    whose product the messages read too). ``enabled``: apply it (True) or not; whether it
    pays is the cost model's decision (:func:`pigeon.passes.choose.decide`).

    Requires: a verified program. Guarantees: the same outputs up to floating-point
    reassociation; the old product is left dead when nothing else reads it (run DCE).
    """

    name = "reorder"
    enabled: bool = True

    def apply(self, program: Program, ctx: PassContext) -> Program:
        if not self.enabled:
            return program
        users = program.users()

        def replaces_product(lhs: int) -> bool:
            """Whether the dot is the only reader of its product (through a head reshape),
            so folding removes the product instead of adding a second one beside it."""
            node = program.nodes[lhs]
            return len(users[lhs]) == 1 and (node.op is not Op.RESHAPE or len(users[node.inputs[0]]) == 1)

        def rule(node, b, inputs):
            if node.op is not Op.DOT:
                return None
            for side in (0, 1):
                if not replaces_product(node.inputs[side]):
                    continue
                rewritten = self._try(node, b, inputs[side], inputs[1 - side], ctx)
                if rewritten is not None:
                    return rewritten
            return None

        return rewrite(program, rule)

    def _try(self, dot, b, lhs_id, vec_id, ctx):
        lhs, vec = b.nodes[lhs_id], b.nodes[vec_id]
        reshape = lhs if lhs.op is Op.RESHAPE else None
        linear = b.nodes[lhs.inputs[0]] if reshape else lhs
        if linear.op is not Op.TYPED_LINEAR or linear.attr("transpose_w"):
            return None
        index = linear.attr("index")
        v_id, w_id = linear.inputs
        w = b.nodes[w_id]
        if len(w.type.shape) != 2:
            return None
        if vec.op is Op.GATHER and vec.attr("index") == index:
            typed_vec = vec.inputs[0]
        elif vec.type.space == GLOBAL:
            typed_vec = vec_id
        else:
            return None
        if b.nodes[typed_vec].type.shape != lhs.type.shape[-len(b.nodes[typed_vec].type.shape):]:
            return None  # the vector must match the trailing dims of the product (no broadcast of rows)
        in_dim = w.type.shape[0]
        lead = lhs.type.shape[:-1]
        width = math.prod(lead)
        weights = b.add(Op.RESHAPE, (w_id,), shape=(in_dim, *lhs.type.shape)) if reshape else w_id
        folded = b.add(Op.DOT, (weights, typed_vec), loc=dot.loc)          # [types, in, *lead]
        folded = b.add(Op.RESHAPE, (folded,), shape=(in_dim, width))
        scores = b.add(Op.TYPED_LINEAR, (v_id, folded), loc=dot.loc, index=index)
        ctx.note(f"reorder: %{dot.id} dot(typed_linear(..), a) folded into a per-type [{in_dim} x {width}] weight")
        return b.add(Op.RESHAPE, (scores,), shape=lead)
