"""Reverse-mode autodiff at level 1: every op's vector-Jacobian product in level-1 ops.

:func:`backward_program` returns one program that recomputes the forward values it
needs and then the adjoints, so the backward pass goes through the same passes and
lowering as the forward one. The adjoint pairs mirror each other: a gather's
adjoint is a sum-aggregate along the same map and vice versa; a typed linear's is
a typed linear with transposed weights plus a per-type outer-product reduction.
"""

from __future__ import annotations

from pigeon.ir.builder import Builder, IRError
from pigeon.ir.rewrite import copy_node
from pigeon.ir.graph_ir import GLOBAL, Binary, Node, Op, Program, Reduce, TensorType, Unary

_NO_GRADIENT = (Op.INPUT, Op.PARAM, Op.CONST, Op.DEGREE, Op.OUTPUT)


class _Adjoints:
    """Emits backward nodes into ``b`` and accumulates adjoints per forward node."""

    def __init__(self, builder: Builder, forward: Program, remap: dict[int, int]):
        self.b = builder
        self.forward = forward
        self.remap = remap  # forward node id -> its recomputed id in the backward program
        self.grads: dict[int, int] = {}
        # Only values that depend on an input or a parameter carry gradients.
        self.needs_grad: set[int] = set()
        for node in forward.nodes:
            if node.op in (Op.INPUT, Op.PARAM) or any(i in self.needs_grad for i in node.inputs):
                self.needs_grad.add(node.id)

    # -- small emitters ------------------------------------------------------------
    def const(self, value: float) -> int:
        return self.b.add(Op.CONST, type=TensorType(GLOBAL, ()), value=float(value))

    def binary(self, fn: Binary, a: int, c: int) -> int:
        return self.b.add(Op.BINARY, (a, c), fn=fn)

    def unary(self, fn: Unary, x: int, **attrs) -> int:
        return self.b.add(Op.UNARY, (x,), fn=fn, **attrs)

    def mul(self, a: int, c: int) -> int:
        return self.binary(Binary.MUL, a, c)

    def reduce_to(self, grad: int, target: TensorType) -> int:
        """Undo NumPy broadcasting of row shapes, then of rows if ``target`` is GLOBAL."""
        shape = self.b.type_of(grad).shape
        lead = len(shape) - len(target.shape)
        dims = tuple(range(lead)) + tuple(
            lead + i for i, n in enumerate(target.shape) if n == 1 and shape[lead + i] != 1
        )
        if dims:
            grad = self.b.add(Op.SUM_DIMS, (grad,), dims=dims)
        if self.b.type_of(grad).shape != target.shape:
            grad = self.b.add(Op.RESHAPE, (grad,), shape=target.shape)
        if target.space == GLOBAL and self.b.type_of(grad).space != GLOBAL:
            grad = self.b.add(Op.SUM_ROWS, (grad,))
        return grad

    def accumulate(self, node_id: int, grad: int) -> None:
        if node_id not in self.needs_grad:
            return
        grad = self.reduce_to(grad, self.forward.nodes[node_id].type)
        if node_id in self.grads:
            grad = self.binary(Binary.ADD, self.grads[node_id], grad)
        self.grads[node_id] = grad

    # -- rules ---------------------------------------------------------------------
    def visit(self, node: Node, y: int, g: int) -> None:
        """Accumulate into ``node``'s operands the adjoints of upstream gradient ``g``."""
        op, ins = node.op, node.inputs
        index = node.attr("index")
        if op is Op.GATHER:
            self.accumulate(ins[0], self.b.add(Op.AGGREGATE, (g,), index=index, reduce=Reduce.SUM))
        elif op is Op.AGGREGATE:
            self._aggregate(node, y, g)
        elif op is Op.SEGMENT_SOFTMAX:
            weighted = self.b.add(Op.AGGREGATE, (self.mul(g, y),), index=index, reduce=Reduce.SUM)
            centred = self.binary(Binary.SUB, g, self.b.add(Op.GATHER, (weighted,), index=index))
            self.accumulate(ins[0], self.mul(y, centred))
        elif op in (Op.LINEAR, Op.TYPED_LINEAR):
            self._linear(node, g)
        elif op is Op.UNARY:
            self._unary(node, y, g)
        elif op is Op.BINARY:
            self._binary(node, y, g)
        elif op is Op.DOT:
            a, c = ins
            size = self.forward.nodes[a].type.shape[-1]
            g_wide = self.b.add(Op.EXPAND_LAST, (g,), size=size)
            self.accumulate(a, self.mul(g_wide, c))
            self.accumulate(c, self.mul(g_wide, a))
        elif op is Op.SUM_LAST:
            self.accumulate(ins[0], self.b.add(Op.EXPAND_LAST, (g,), size=self.forward.nodes[ins[0]].type.shape[-1]))
        elif op is Op.EXPAND_LAST:
            self.accumulate(ins[0], self.b.add(Op.SUM_LAST, (g,)))
        elif op is Op.RESHAPE:
            self.accumulate(ins[0], self.b.add(Op.RESHAPE, (g,), shape=self.forward.nodes[ins[0]].type.shape))
        elif op is Op.CONCAT:
            start = 0
            for i in ins:
                width = self.forward.nodes[i].type.shape[-1]
                self.accumulate(i, self.b.add(Op.SLICE_LAST, (g,), start=start, stop=start + width))
                start += width
        elif op is Op.SLICE_LAST:
            total = self.forward.nodes[ins[0]].type.shape[-1]
            pad = dict(before=node.attr("start"), after=total - node.attr("stop"))
            self.accumulate(ins[0], self.b.add(Op.PAD_LAST, (g,), **pad))
        elif op is Op.LAYER_NORM:
            self._layer_norm(node, y, g)
        elif op in (Op.SUM_ROWS, Op.MEAN_ROWS):
            space = self.forward.nodes[ins[0]].type.space
            spread = self.b.add(Op.BROADCAST_ROWS, (g,), space=space)
            if op is Op.MEAN_ROWS:
                ones = self.b.add(Op.BROADCAST_ROWS, (self.const(1.0),), space=space)
                count = self.binary(Binary.MAX, self.b.add(Op.SUM_ROWS, (ones,)), self.const(1.0))
                spread = self.binary(Binary.DIV, spread, count)
            self.accumulate(ins[0], spread)
        elif op is Op.BROADCAST_ROWS:
            self.accumulate(ins[0], self.b.add(Op.SUM_ROWS, (g,)))
        else:
            raise IRError(f"autodiff: no vector-Jacobian rule for {op.value}", node.loc)

    def _aggregate(self, node: Node, y: int, g: int) -> None:
        index, how = node.attr("index"), node.attr("reduce")
        x, init = node.inputs[0], (node.inputs[1] if len(node.inputs) > 1 else None)
        if how is Reduce.SUM:
            self.accumulate(x, self.b.add(Op.GATHER, (g,), index=index))
            if init is not None:
                self.accumulate(init, g)
            return
        if how is Reduce.MEAN:
            count = self.b.add(Op.DEGREE, index=index)
            if init is not None:  # the self message is one more row of every mean
                count = self.binary(Binary.ADD, count, self.const(1.0))
            share = self.binary(Binary.DIV, g, self.binary(Binary.MAX, count, self.const(1.0)))
            self.accumulate(x, self.b.add(Op.GATHER, (share,), index=index))
            if init is not None:
                self.accumulate(init, share)
            return
        # max / min: the gradient goes to the rows that attain the extremum, split among ties.
        hit = self.binary(Binary.EQ, self.remap[x], self.b.add(Op.GATHER, (y,), index=index))
        ties = self.b.add(Op.AGGREGATE, (hit,), index=index, reduce=Reduce.SUM)
        if init is not None:
            hit_init = self.binary(Binary.EQ, self.remap[init], y)
            ties = self.binary(Binary.ADD, ties, hit_init)
        share = self.binary(Binary.DIV, g, self.binary(Binary.MAX, ties, self.const(1.0)))
        self.accumulate(x, self.mul(hit, self.b.add(Op.GATHER, (share,), index=index)))
        if init is not None:
            self.accumulate(init, self.mul(hit_init, share))

    def _linear(self, node: Node, g: int) -> None:
        x, w = node.inputs
        transposed = bool(node.attr("transpose_w"))
        index = node.attr("index")
        batched = len(self.forward.nodes[w].type.shape) > 2
        extra = {} if node.op is Op.LINEAR else {"index": index}
        self.accumulate(x, self.b.add(node.op, (g, self.remap[w]), transpose_w=not transposed, **extra))
        a, c = (g, self.remap[x]) if transposed else (self.remap[x], g)
        self.accumulate(w, self.b.add(Op.TYPED_OUTER, (a, c), index=index, batched=batched))

    def _unary(self, node: Node, y: int, g: int) -> None:
        fn, x = node.attr("fn"), self.remap[node.inputs[0]]
        one = self.const(1.0)
        if fn is Unary.NEG:
            local = self.const(-1.0)
        elif fn is Unary.RELU:
            local = self.unary(Unary.STEP, x)
        elif fn is Unary.LEAKY_RELU:
            slope = node.attr("alpha")
            local = self.binary(Binary.ADD, self.mul(self.unary(Unary.STEP, x), self.const(1.0 - slope)),
                                self.const(slope))
        elif fn is Unary.EXP:
            local = y
        elif fn is Unary.LOG:
            local = self.unary(Unary.RECIP, x)
        elif fn is Unary.SQRT:
            local = self.mul(self.unary(Unary.RECIP, y), self.const(0.5))
        elif fn is Unary.RSQRT:
            local = self.mul(self.mul(y, self.mul(y, y)), self.const(-0.5))
        elif fn is Unary.RECIP:
            local = self.mul(self.mul(y, y), self.const(-1.0))
        elif fn is Unary.SIGMOID:
            local = self.mul(y, self.binary(Binary.SUB, one, y))
        elif fn is Unary.TANH:
            local = self.binary(Binary.SUB, one, self.mul(y, y))
        elif fn is Unary.GELU:
            local = self.unary(Unary.GELU_GRAD, x)
        elif fn is Unary.SQUARE:
            local = self.mul(x, self.const(2.0))
        else:
            raise IRError(f"autodiff: {fn.value} has no useful derivative", node.loc)
        self.accumulate(node.inputs[0], self.mul(g, local))

    def _binary(self, node: Node, y: int, g: int) -> None:
        fn = node.attr("fn")
        a, c = node.inputs
        va, vc = self.remap[a], self.remap[c]
        if fn is Binary.ADD:
            self.accumulate(a, g)
            self.accumulate(c, g)
        elif fn is Binary.SUB:
            self.accumulate(a, g)
            self.accumulate(c, self.mul(g, self.const(-1.0)))
        elif fn is Binary.MUL:
            self.accumulate(a, self.mul(g, vc))
            self.accumulate(c, self.mul(g, va))
        elif fn is Binary.DIV:
            self.accumulate(a, self.binary(Binary.DIV, g, vc))
            quotient = self.binary(Binary.DIV, y, vc)
            self.accumulate(c, self.mul(self.mul(g, quotient), self.const(-1.0)))
        elif fn in (Binary.MAX, Binary.MIN):
            # Ties split the gradient evenly, as torch.maximum / torch.minimum do.
            hit_a, hit_c = self.binary(Binary.EQ, va, y), self.binary(Binary.EQ, vc, y)
            share = self.binary(Binary.DIV, g, self.binary(Binary.ADD, hit_a, hit_c))
            self.accumulate(a, self.mul(share, hit_a))
            self.accumulate(c, self.mul(share, hit_c))
        else:
            raise IRError(f"autodiff: {fn.value} has no useful derivative", node.loc)

    def _layer_norm(self, node: Node, y: int, g: int) -> None:
        # dx = rstd * (g - mean(g) - y * mean(g * y)), rstd recomputed from x.
        x = self.remap[node.inputs[0]]
        size = self.forward.nodes[node.inputs[0]].type.shape[-1]
        inv_size = self.const(1.0 / size)

        def mean_last(v: int) -> int:
            return self.b.add(Op.EXPAND_LAST, (self.mul(self.b.add(Op.SUM_LAST, (v,)), inv_size),), size=size)

        centred = self.binary(Binary.SUB, x, mean_last(x))
        variance = mean_last(self.mul(centred, centred))
        rstd = self.unary(Unary.RSQRT, self.binary(Binary.ADD, variance, self.const(node.attr("eps"))))
        inner = self.binary(Binary.SUB, self.binary(Binary.SUB, g, mean_last(g)), self.mul(y, mean_last(self.mul(g, y))))
        self.accumulate(node.inputs[0], self.mul(rstd, inner))


def saved_name(node_id: int) -> str:
    """The backward input that carries forward value ``%node_id`` when it is saved."""
    return f"saved_{node_id}"


def backward_program(forward: Program, saved: frozenset[int] = frozenset()) -> Program:
    """The program computing the gradient of every input and parameter of ``forward``.

    Its inputs are the forward inputs, the forward parameters, one ``grad_<name>`` per
    forward output (the upstream gradient) and, for every forward node id in ``saved``,
    an input :func:`saved_name` holding that value as the forward pass computed it; the
    other forward values it needs are recomputed. Its outputs are ``grad_<name>`` for
    every forward input and parameter that the outputs depend on (others get none).
    """
    b = Builder(forward.maps)
    remap: dict[int, int] = {}
    for node in forward.nodes:  # recompute the forward values (DCE drops what is unused)
        if node.op is Op.OUTPUT:
            continue
        if node.id in saved and node.op not in (Op.INPUT, Op.PARAM, Op.CONST):
            remap[node.id] = b.add(Op.INPUT, loc=node.loc, type=node.type, name=saved_name(node.id))
            continue
        remap[node.id] = copy_node(b, node, tuple(remap[i] for i in node.inputs))
    adjoints = _Adjoints(b, forward, remap)
    for out in forward.outputs():
        seed = b.add(Op.INPUT, type=out.type, name=f"grad_{out.attr('name')}")
        adjoints.accumulate(out.inputs[0], seed)
    for node in reversed(forward.nodes):
        if node.id in adjoints.grads and node.op not in _NO_GRADIENT:
            adjoints.visit(node, remap[node.id], adjoints.grads[node.id])
    for node in forward.nodes:
        if node.op in (Op.INPUT, Op.PARAM) and node.id in adjoints.grads:
            b.add(Op.OUTPUT, (adjoints.grads[node.id],), name=f"grad_{node.attr('name')}")
    return b.build()
