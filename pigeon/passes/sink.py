"""Aggregate before the product: sum each (destination, edge type) pair's scaled source
rows, then multiply once per pair."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pigeon.ir.builder import Builder
from pigeon.ir.graph_ir import (
    COMPACT_DST_OF_EDGE, DST, EDGE, ETYPE_OF_COMPACT_DST, ETYPE_OF_EDGE, GLOBAL, NODE_OF_COMPACT_DST, SRC, Binary,
    Node, Op, Program, Reduce,
)
from pigeon.ir.rewrite import copy_node
from pigeon.passes.base import Pass, PassContext


@dataclass(frozen=True)
class _Message:
    """A message the pass rewrites: ``scale (*|/) product``, the product read as
    ``[heads, d]`` when ``heads`` is set, its weight batched per head when ``batched``."""

    linear: Node
    scale: int | None
    divide: bool
    heads: int | None
    batched: bool


@dataclass
class AggregateBeforeProduct(Pass):
    """``aggregate[dst](s * typed_linear(gather[src](x), W)[etype])`` becomes
    ``aggregate[compact_dst_node](typed_linear(p, W)[compact_dst_etype])`` with
    ``p = aggregate[edge_to_compact_dst](s * gather[src](x))``: the edges of each unique
    (destination, edge type) pair add up their scaled source rows first, and the product
    runs once per pair instead of once per edge or per unique (source, edge type) pair.

    ``s`` is a per-edge (or global) factor, the same across the product's output
    features, or absent; ``m / s`` is handled like ``m * s`` (RGCN's normalisation,
    RGAT's and HGT's attention weights). With heads (the product's ``[heads * d]``
    output read as ``[heads, d]`` and ``s`` as ``[heads, 1]``), each head sums its own
    scaled rows, ``[heads, in]`` per pair, and multiplies them by its own columns of
    ``W`` (a batched product over a ``[heads, in, d]`` copy of ``W``); a weight batched
    per head already (HGT's ``[heads, d, d']``) is used as it is.

    A sampled block's first layer is the case: its destinations draw a fanout of edges
    over a few relations while its sources hardly repeat, so it has several times fewer
    (destination, edge type) pairs than (source, edge type) pairs. The product may have
    other readers (RGAT's attention scores, which linear reordering then folds away): it
    is left to them. ``enabled``: apply it (True) or not; whether it pays is the cost
    model's decision (:func:`pigeon.passes.choose.decide`).

    Requires: a verified program. Guarantees: the same outputs up to floating-point
    reassociation; the old message is left dead (run DCE).
    """

    name = "sink"
    enabled: bool = True

    def apply(self, program: Program, ctx: PassContext) -> Program:
        if not self.enabled:
            return program
        b = Builder(program.maps)
        remap: dict[int, int] = {}
        for node in program.nodes:
            inputs = tuple(remap[i] for i in node.inputs)
            message = _match(program, node)
            if message is None:
                remap[node.id] = copy_node(b, node, inputs)
            else:
                remap[node.id] = _emit(program, b, node, message, remap)
                ctx.note(f"sink: %{node.id} aggregate[dst] of a typed linear summed per unique (dst, etype) pair "
                         "before the product")
        return b.build()


def applies(program: Program) -> bool:
    """Whether the pass has anything to rewrite in ``program``."""
    return any(_match(program, node) is not None for node in program.nodes)


def _match(program: Program, node: Node) -> _Message | None:
    """The message ``node`` sums, when ``node`` is a sum along ``dst`` the pass rewrites."""
    if node.op is not Op.AGGREGATE or node.attr("reduce") is not Reduce.SUM or len(node.inputs) != 1 \
            or node.attr("index") != DST:
        return None
    value = program.nodes[node.inputs[0]]
    if value.op is Op.BINARY and value.attr("fn") in (Binary.MUL, Binary.DIV):
        a, c = value.inputs
        pairs = [(a, c)] if value.attr("fn") is Binary.DIV else [(a, c), (c, a)]
        for product, scale in pairs:
            found = _product(program, product)
            if found is not None and _scales(program.nodes[scale], program.nodes[product], found):
                linear, heads, batched = found
                return _Message(linear, scale, value.attr("fn") is Binary.DIV, heads, batched)
        return None
    found = _product(program, value.id)
    if found is None or (found[1] or 1) > 1:
        return None   # without a factor, several heads would need their rows copied per head
    return _Message(found[0], None, False, found[1], found[2])


def _product(program: Program, i: int) -> tuple[Node, int | None, bool] | None:
    """``(typed linear, heads or None, batched)`` when node ``i`` is a typed linear of
    ``gather[src]`` rows along the edge type, or a ``[heads, d]`` reshape of one."""
    node, heads = program.nodes[i], None
    if node.op is Op.RESHAPE:
        source = program.nodes[node.inputs[0]]
        if len(node.type.shape) != 2 or len(source.type.shape) != 1:
            return None
        heads, node = node.type.shape[0], source
    if node.op is not Op.TYPED_LINEAR or node.attr("index") != ETYPE_OF_EDGE or node.attr("transpose_w"):
        return None
    rows = program.nodes[node.inputs[0]]
    if rows.op is not Op.GATHER or rows.attr("index") != SRC:
        return None
    w = program.nodes[node.inputs[1]].type
    batched = len(w.shape) == 3
    if batched and (heads is not None or len(rows.type.shape) != 2):
        return None
    if not batched and (len(w.shape) != 2 or len(rows.type.shape) != 1):
        return None
    return node, heads, batched


def _scales(scale: Node, product: Node, found: tuple[Node, int | None, bool]) -> bool:
    """Whether ``scale`` multiplies each of ``product``'s rows (per head) by one number."""
    if scale.type.space not in (EDGE, GLOBAL):
        return False
    out, s = product.type.shape, scale.type.shape
    if len(s) > len(out):
        return False
    padded = (1,) * (len(out) - len(s)) + s
    if padded[-1] != 1 or any(p not in (1, o) for p, o in zip(padded, out)):
        return False
    _, heads, batched = found
    if heads is not None and heads > 1 and padded[0] != heads:
        return False   # one number for every head: each head's rows would be the same copy
    return batched or heads is not None or len(out) == 1


def _emit(program: Program, b: Builder, node: Node, m: _Message, remap: dict[int, int]) -> int:
    """The replacement of the sum ``node`` (see :class:`AggregateBeforeProduct`); ``remap``
    gives the new id of every node before it."""
    loc = node.loc
    x = remap[program.nodes[m.linear.inputs[0]].inputs[0]]
    weight = remap[m.linear.inputs[1]]
    rows = b.add(Op.GATHER, (x,), loc=loc, index=SRC)
    heads = m.heads or 1
    if heads > 1:   # [heads, in, d]: head h's columns of W, one after the other
        in_dim, width = b.type_of(weight).shape
        d = width // heads
        parts = tuple(b.add(Op.RESHAPE, (b.add(Op.SLICE_LAST, (weight,), loc=loc, start=h * d, stop=(h + 1) * d),),
                            loc=loc, shape=(in_dim * d,)) for h in range(heads))
        weight = b.add(Op.RESHAPE, (b.add(Op.CONCAT, parts, loc=loc),), loc=loc, shape=(heads, in_dim, d))
    if m.scale is not None:
        factor = remap[m.scale]
        shape = b.type_of(factor).shape
        want = (heads, 1) if heads > 1 else ((1,) if not m.batched else None)
        if want is not None and shape != want and math.prod(shape) == math.prod(want):
            factor = b.add(Op.RESHAPE, (factor,), loc=loc, shape=want)
        rows = b.add(Op.BINARY, (rows, factor), loc=loc, fn=Binary.DIV if m.divide else Binary.MUL)
    pairs = b.add(Op.AGGREGATE, (rows,), loc=loc, index=COMPACT_DST_OF_EDGE, reduce=Reduce.SUM)
    product = b.add(Op.TYPED_LINEAR, (pairs, weight), loc=loc, index=ETYPE_OF_COMPACT_DST)
    out = b.add(Op.AGGREGATE, (product,), loc=loc, index=NODE_OF_COMPACT_DST, reduce=Reduce.SUM)
    if b.type_of(out).shape != node.type.shape:
        out = b.add(Op.RESHAPE, (out,), loc=loc, shape=node.type.shape)
    return out

