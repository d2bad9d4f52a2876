"""Chain reordering: ``(x K_ntype) W_etype`` becomes ``x (K W)`` per (node type, edge type) pair."""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.ir.graph_ir import (
    ETYPE_OF_COMPACT_SRC, ETYPE_OF_EDGE, ETYPE_OF_NTYPE_ETYPE, NODE_OF_COMPACT_SRC, NTYPE_ETYPE_OF_COMPACT_SRC,
    NTYPE_ETYPE_OF_EDGE, NTYPE_OF_NODE, NTYPE_OF_NTYPE_ETYPE, SRC, Binary, Node, Op, Program,
)
from pigeon.ir.rewrite import rewrite
from pigeon.passes.base import Pass, PassContext

# The edge-type map of the outer product's rows -> (the gather that brings source node
# rows there, the map from those rows to their (source node type, edge type) pair).
_ROWS = {
    ETYPE_OF_EDGE: (SRC, NTYPE_ETYPE_OF_EDGE),
    ETYPE_OF_COMPACT_SRC: (NODE_OF_COMPACT_SRC, NTYPE_ETYPE_OF_COMPACT_SRC),
}


@dataclass(frozen=True)
class _Chain:
    """``typed_linear[etype](gather(reshape?(typed_linear[ntype](x, K) + gather[ntype](b)?)), W)``
    as node ids of one program; ``links`` run from the per-node product to the gather."""

    x: int
    k: int
    bias: int | None
    w: int
    links: tuple[int, ...]


def _match(nodes, gathered: int, w: int, gather_map) -> _Chain | None:
    """The chain that ends in a typed linear of ``gathered`` by ``w``, or None."""
    links = [gathered]
    g = nodes[gathered]
    if g.op is not Op.GATHER or g.attr("index") != gather_map:
        return None
    value = nodes[g.inputs[0]]
    if value.op is Op.RESHAPE:
        links.append(value.id)
        value = nodes[value.inputs[0]]
    bias = None
    if value.op is Op.BINARY and value.attr("fn") is Binary.ADD:
        links.append(value.id)
        value, bias = _product_plus_bias(nodes, value)
        if value is None:
            return None
    if value.op is not Op.TYPED_LINEAR or value.attr("index") != NTYPE_OF_NODE or value.attr("transpose_w"):
        return None
    links.append(value.id)
    x, k = (nodes[i] for i in value.inputs)
    if len(x.type.shape) != 1 or len(k.type.shape) != 2:
        return None  # rows of one vector by a plain [in, out] matrix per node type
    w_shape = nodes[w].type.shape
    per_head = len(w_shape) == 3 and g.type.shape == w_shape[:2]   # heads [h, d] by [h, d, e]
    if not (per_head or (len(w_shape) == 2 and len(g.type.shape) == 1)):
        return None
    return _Chain(x.id, k.id, bias, w, tuple(reversed(links)))


def _product_plus_bias(nodes, add: Node) -> tuple[Node | None, int | None]:
    """``typed_linear[ntype](x, K) + gather[ntype](b)`` (either order) -> (the product, ``b``)."""
    for first, second in (add.inputs, reversed(add.inputs)):
        product, bias = nodes[first], nodes[second]
        if (product.op is Op.TYPED_LINEAR and bias.op is Op.GATHER and bias.attr("index") == NTYPE_OF_NODE
                and bias.type.shape == product.type.shape == add.type.shape):
            return product, bias.inputs[0]
    return None, None


def _live_readers(program: Program) -> dict[int, list[int]]:
    """For each node, the nodes that read it and that some output depends on."""
    live = {n.id for n in program.nodes if n.op is Op.OUTPUT}
    for node in reversed(program.nodes):
        if node.id in live:
            live.update(node.inputs)
    return {i: [u for u in readers if u in live] for i, readers in program.users().items()}


@dataclass
class ChainReordering(Pass):
    """Multiply the per-node-type and the per-edge-type weight of a chain first:
    ``typed_linear[etype](gather[src](x K_ntype + b_ntype), W)``, with an optional head
    split (``W`` per head ``[h, d, e]``), becomes ``x_src (K_tau W_r) + b_tau W_r`` where
    ``K_tau W_r`` and ``b_tau W_r`` are computed once per (source node type, edge type)
    pair present (the ``ntype_etype`` space). Rows may be edges or, after compact
    materialization, ``compact_src`` rows.

    This is HGT's attention key ``(x_s K_tau(s) + b_tau(s)) W_att,r`` (and its message
    ``V W_msg``, the same chain): it removes the per-node ``in x out`` product when the key
    has no other reader, and turns the per-row products (``h`` of ``d x e``) into one
    ``in x (h * e)``, which pays when ``in_dim`` is small or the graph has few (node type,
    edge type) pairs. It applies to chains whose links nothing else reads (elsewhere the
    per-node product stays and folding only adds work). ``enabled``: apply it (True) or
    not; whether it pays is the cost model's decision (:func:`pigeon.passes.choose.decide`).

    Requires: a verified program. Guarantees: the same outputs up to floating-point
    reassociation; the per-node product is left dead when nothing else reads it (run DCE).
    """

    name = "reorder_chain"
    enabled: bool = True

    def apply(self, program: Program, ctx: PassContext) -> Program:
        if not self.enabled:
            return program
        readers = _live_readers(program)

        def rule(node, b, inputs):
            if node.op is not Op.TYPED_LINEAR or node.attr("transpose_w") or node.attr("index") not in _ROWS:
                return None
            gather_map, pair_map = _ROWS[node.attr("index")]
            old = _match(program.nodes, node.inputs[0], node.inputs[1], gather_map)
            new = _match(b.nodes, inputs[0], inputs[1], gather_map)
            if old is None or new is None:
                return None
            # Only a private chain: a per-node product something else reads stays anyway.
            next_links = old.links[1:] + (node.id,)
            if not all(readers[link] == [reader] for link, reader in zip(old.links, next_links)):
                return None
            out, folded = self._emit(b, new, node, gather_map, pair_map)
            ctx.note(f"reorder_chain: %{node.id} (x K[ntype]) W[etype] folded into a per-(ntype, etype) "
                     f"[{' x '.join(map(str, b.type_of(folded).shape))}] weight")
            return out

        return rewrite(program, rule)

    def _emit(self, b, chain: _Chain, y: Node, gather_map, pair_map) -> tuple[int, int]:
        """The replacement of ``y``, and the folded weight it reads."""
        w_shape = b.type_of(chain.w).shape
        rows = b.add(Op.GATHER, (chain.x,), loc=y.loc, index=gather_map)
        folded = self._fold_weight(b, chain, y)
        out = b.add(Op.TYPED_LINEAR, (rows, folded), loc=y.loc, index=pair_map)
        if len(w_shape) == 3:
            out = b.add(Op.RESHAPE, (out,), loc=y.loc, shape=y.type.shape)
        if chain.bias is not None:
            bias = chain.bias
            if len(w_shape) == 3:
                bias = b.add(Op.RESHAPE, (bias,), loc=y.loc, shape=w_shape[:2])
            bias = b.add(Op.GATHER, (bias,), loc=y.loc, index=NTYPE_OF_NTYPE_ETYPE)
            bias = b.add(Op.TYPED_LINEAR, (bias, chain.w), loc=y.loc, index=ETYPE_OF_NTYPE_ETYPE)
            out = b.add(Op.BINARY, (out, b.add(Op.GATHER, (bias,), loc=y.loc, index=pair_map)),
                        loc=y.loc, fn=Binary.ADD)
        return out, folded

    def _fold_weight(self, b, chain: _Chain, y: Node) -> int:
        """``K_tau W_r`` per pair: ``[in, e]``, or ``[in, h * e]`` with heads side by side."""
        w_shape = b.type_of(chain.w).shape
        if len(w_shape) == 2:
            k_rows = b.add(Op.GATHER, (chain.k,), loc=y.loc, index=NTYPE_OF_NTYPE_ETYPE)
            return b.add(Op.TYPED_LINEAR, (k_rows, chain.w), loc=y.loc, index=ETYPE_OF_NTYPE_ETYPE)
        # Head h multiplies columns h*d:(h+1)*d of K by W[h]: one [in x d] by [d x e] product per head.
        heads, d, e = w_shape
        flat = b.add(Op.RESHAPE, (chain.w,), loc=y.loc, shape=(heads * d * e,))
        parts = []
        for h in range(heads):
            k_head, w_head = chain.k, flat
            if heads > 1:
                k_head = b.add(Op.SLICE_LAST, (chain.k,), loc=y.loc, start=h * d, stop=(h + 1) * d)
                w_head = b.add(Op.SLICE_LAST, (flat,), loc=y.loc, start=h * d * e, stop=(h + 1) * d * e)
            w_head = b.add(Op.RESHAPE, (w_head,), loc=y.loc, shape=(d, e))
            k_rows = b.add(Op.GATHER, (k_head,), loc=y.loc, index=NTYPE_OF_NTYPE_ETYPE)
            parts.append(b.add(Op.TYPED_LINEAR, (k_rows, w_head), loc=y.loc, index=ETYPE_OF_NTYPE_ETYPE))
        return parts[0] if heads == 1 else b.add(Op.CONCAT, tuple(parts), loc=y.loc)
