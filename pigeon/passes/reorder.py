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
    ``out`` dot by an ``in x heads`` product. ``enabled``: True/False forces the choice;
    None applies it when the cost model says the FLOPs drop (counting the product as
    saved only when the dot is its only user).

    Requires: a verified program. Guarantees: the same outputs up to floating-point
    reassociation; the old product is left dead when nothing else reads it (run DCE).
    """

    name = "reorder"
    enabled: bool | None = None

    def apply(self, program: Program, ctx: PassContext) -> Program:
        users = program.users()

        def only_user(node_id: int) -> bool:
            return len(users[node_id]) == 1

        def rule(node, b, inputs):
            if node.op is not Op.DOT:
                return None
            for side in (0, 1):
                rewritten = self._try(node, b, inputs[side], inputs[1 - side],
                                      program.nodes[node.inputs[side]], only_user, ctx)
                if rewritten is not None:
                    return rewritten
            return None

        return rewrite(program, rule)

    def _try(self, dot, b, lhs_id, vec_id, old_lhs, only_user, ctx):
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
        if not self._pays(dot, old_lhs, only_user, in_dim, w.type.shape[1], width, index.target.name, ctx):
            return None
        weights = b.add(Op.RESHAPE, (w_id,), shape=(in_dim, *lhs.type.shape)) if reshape else w_id
        folded = b.add(Op.DOT, (weights, typed_vec), loc=dot.loc)          # [types, in, *lead]
        folded = b.add(Op.RESHAPE, (folded,), shape=(in_dim, width))
        scores = b.add(Op.TYPED_LINEAR, (v_id, folded), loc=dot.loc, index=index)
        ctx.note(f"reorder: %{dot.id} dot(typed_linear(..), a) folded into a per-type [{in_dim} x {width}] weight")
        return b.add(Op.RESHAPE, (scores,), shape=lead)

    def _pays(self, dot, old_lhs, only_user, in_dim, out_dim, width, type_space, ctx) -> bool:
        if self.enabled is not None:
            return self.enabled
        if not ctx.has_counts:
            return False
        rows = ctx.count(dot.type.space.name)
        types = ctx.count(type_space)
        saved_product = only_user(old_lhs.id) and (old_lhs.op is not Op.RESHAPE or only_user(old_lhs.inputs[0]))
        before = rows * out_dim + (2 * rows * in_dim * out_dim if saved_product else 0)
        after = 2 * types * in_dim * out_dim + 2 * rows * in_dim * width
        return after < before
