"""Type rules of the level-1 IR: one function, used by the builder and the verifier.

Elementwise operands are in the same space, or one is in ``GLOBAL`` (one row for
all rows). Row shapes broadcast as in NumPy: aligned from the right, a dim of size 1
stretches. (The frontend turns ``alpha[heads] * z[heads, dim]`` into
``alpha[heads, 1] * z[heads, dim]`` explicitly.)
"""

from __future__ import annotations

from pigeon.ir.graph_ir import GLOBAL, IndexMap, Op, Space, TensorType


class IRTypeError(ValueError):
    """An op applied to operands of the wrong space, shape or arity."""


def _space_of(op: Op, *types: TensorType) -> Space:
    spaces = {t.space for t in types} - {GLOBAL}
    if len(spaces) > 1:
        got = ", ".join(str(t) for t in types)
        raise IRTypeError(
            f"{op.value}: expected operands in one row space (or global), got {got}; "
            "move values between spaces with a gather or an aggregate"
        )
    return spaces.pop() if spaces else GLOBAL


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """NumPy broadcasting of row shapes, or None when they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    result = []
    for dims in zip(*(((1,) * (rank - len(s))) + tuple(s) for s in shapes)):
        sizes = set(dims) - {1}
        if len(sizes) > 1:
            return None
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def broadcast_shape(op: Op, a: TensorType, b: TensorType) -> tuple[int, ...]:
    shape = broadcast_shapes(a.shape, b.shape)
    if shape is None:
        raise IRTypeError(f"{op.value}: expected row shapes that broadcast (NumPy rules), got {a} and {b}")
    return shape


def _expect_index(op: Op, index, x: TensorType, role: str) -> IndexMap:
    if not isinstance(index, IndexMap):
        raise IRTypeError(f"{op.value}: expected an index map, got {index!r}")
    space = index.source if role == "source" else index.target
    if x.space != space:
        raise IRTypeError(
            f"{op.value} along {index}: expected its operand in {space} space "
            f"(the map goes {index.source} -> {index.target}), got {x}"
        )
    return index


def _matmul_shape(op: Op, x: TensorType, w: TensorType, transpose: bool) -> tuple[int, ...]:
    if len(w.shape) < 2 or not x.shape:
        raise IRTypeError(f"{op.value}: expected a weight of shape [..., in, out] and rows [..., in], got {x} and {w}")
    batch, (w_in, w_out) = w.shape[:-2], w.shape[-2:]
    if transpose:
        w_in, w_out = w_out, w_in
    lead, x_in = x.shape[:-1], x.shape[-1]
    if x_in != w_in:
        raise IRTypeError(f"{op.value}: expected rows with last dim {w_in} to match the weight {w}, got {x}")
    if batch and batch != lead:
        raise IRTypeError(
            f"{op.value}: a batched weight {w} needs rows of shape {list(batch) + [w_in]}, got {x}"
        )
    return lead + (w_out,)


def infer(op: Op, inputs: tuple[TensorType, ...], attrs: dict) -> TensorType:
    """The result type of ``op`` on operands of ``inputs`` types, or :class:`IRTypeError`."""
    def arity(n: int) -> None:
        if len(inputs) != n:
            raise IRTypeError(f"{op.value}: expected {n} operand(s), got {len(inputs)}")

    if op in (Op.INPUT, Op.PARAM, Op.CONST):
        arity(0)
        return attrs["type"]
    if op is Op.DEGREE:
        arity(0)
        return TensorType(attrs["index"].target, ())
    if op is Op.GATHER:
        arity(1)
        index = _expect_index(op, attrs["index"], inputs[0], "target")
        return TensorType(index.source, inputs[0].shape)
    if op is Op.AGGREGATE:
        if len(inputs) not in (1, 2):
            raise IRTypeError(f"aggregate: expected 1 or 2 operands, got {len(inputs)}")
        index = _expect_index(op, attrs["index"], inputs[0], "source")
        result = TensorType(index.target, inputs[0].shape)
        if len(inputs) == 2 and inputs[1] != result:
            raise IRTypeError(f"aggregate along {index}: expected the self message typed {result}, got {inputs[1]}")
        return result
    if op is Op.SEGMENT_SOFTMAX:
        arity(1)
        _expect_index(op, attrs["index"], inputs[0], "source")
        return inputs[0]
    if op is Op.LINEAR:
        arity(2)
        x, w = inputs
        if w.space != GLOBAL:
            raise IRTypeError(f"linear: expected an untyped (global) weight, got {w}; use a typed linear")
        return TensorType(x.space, _matmul_shape(op, x, w, attrs.get("transpose_w", False)))
    if op is Op.TYPED_LINEAR:
        arity(2)
        x, w = inputs
        index = _expect_index(op, attrs["index"], x, "source")
        if w.space != index.target:
            raise IRTypeError(
                f"typed_linear along {index}: expected a weight typed by {index.target}, got {w}"
            )
        return TensorType(x.space, _matmul_shape(op, x, w, attrs.get("transpose_w", False)))
    if op is Op.TYPED_OUTER:
        arity(2)
        x, dy = inputs
        index = attrs.get("index")
        if index is None:
            target = GLOBAL
            if x.space != dy.space:
                raise IRTypeError(f"typed_outer: expected operands in one space, got {x} and {dy}")
        else:
            _expect_index(op, index, x, "source")
            _expect_index(op, index, dy, "source")
            target = index.target
        if not x.shape or not dy.shape or x.shape[:-1] != dy.shape[:-1]:
            raise IRTypeError(f"typed_outer: expected operands with equal leading dims, got {x} and {dy}")
        lead = x.shape[:-1] if attrs.get("batched") else ()
        return TensorType(target, lead + (x.shape[-1], dy.shape[-1]))
    if op in (Op.UNARY, Op.LAYER_NORM, Op.OUTPUT):
        arity(1)
        if op is Op.LAYER_NORM and not inputs[0].shape:
            raise IRTypeError(f"layer_norm: expected rows with a feature dim, got {inputs[0]}")
        return inputs[0]
    if op is Op.BINARY:
        arity(2)
        return TensorType(_space_of(op, *inputs), broadcast_shape(op, *inputs))
    if op is Op.DOT:
        arity(2)
        a, b = inputs
        if not a.shape or not b.shape or a.shape[-1] != b.shape[-1]:
            raise IRTypeError(f"dot: expected operands with the same last dim, got {a} and {b}")
        return TensorType(_space_of(op, a, b), broadcast_shape(op, a, b)[:-1])
    if op is Op.SUM_LAST:
        arity(1)
        if not inputs[0].shape:
            raise IRTypeError(f"sum_last: expected rows with a feature dim, got {inputs[0]}")
        return TensorType(inputs[0].space, inputs[0].shape[:-1])
    if op is Op.SUM_DIMS:
        arity(1)
        dims = tuple(attrs["dims"])
        if any(not 0 <= d < len(inputs[0].shape) for d in dims):
            raise IRTypeError(f"sum_dims: expected dims within the row shape of {inputs[0]}, got {list(dims)}")
        return TensorType(inputs[0].space, tuple(1 if i in dims else n for i, n in enumerate(inputs[0].shape)))
    if op is Op.EXPAND_LAST:
        arity(1)
        return TensorType(inputs[0].space, inputs[0].shape + (int(attrs["size"]),))
    if op is Op.RESHAPE:
        arity(1)
        new = TensorType(inputs[0].space, tuple(attrs["shape"]))
        if new.numel != inputs[0].numel:
            raise IRTypeError(f"reshape: expected {inputs[0].numel} elements per row, got shape {list(new.shape)}")
        return new
    if op is Op.CONCAT:
        if not inputs:
            raise IRTypeError("concat: expected at least one operand")
        space = _space_of(op, *inputs)
        if any(t.space != space for t in inputs) or any(not t.shape for t in inputs):
            raise IRTypeError(f"concat: expected operands in one space with a feature dim, got {list(map(str, inputs))}")
        lead = {t.shape[:-1] for t in inputs}
        if len(lead) != 1:
            raise IRTypeError(f"concat: expected equal leading dims, got {list(map(str, inputs))}")
        return TensorType(space, lead.pop() + (sum(t.shape[-1] for t in inputs),))
    if op is Op.SLICE_LAST:
        arity(1)
        start, stop = attrs["start"], attrs["stop"]
        if not inputs[0].shape or not 0 <= start < stop <= inputs[0].shape[-1]:
            raise IRTypeError(f"slice_last: expected 0 <= start < stop <= last dim, got [{start}:{stop}] of {inputs[0]}")
        return TensorType(inputs[0].space, inputs[0].shape[:-1] + (stop - start,))
    if op is Op.PAD_LAST:
        arity(1)
        if not inputs[0].shape or attrs["before"] < 0 or attrs["after"] < 0:
            raise IRTypeError(f"pad_last: expected a feature dim and non-negative padding, got {inputs[0]}")
        return TensorType(inputs[0].space, inputs[0].shape[:-1] + (inputs[0].shape[-1] + attrs["before"] + attrs["after"],))
    if op in (Op.SUM_ROWS, Op.MEAN_ROWS):
        arity(1)
        return TensorType(GLOBAL, inputs[0].shape)
    if op is Op.BROADCAST_ROWS:
        arity(1)
        if inputs[0].space != GLOBAL:
            raise IRTypeError(f"broadcast_rows: expected a global value, got {inputs[0]}")
        return TensorType(attrs["space"], inputs[0].shape)
    raise IRTypeError(f"no type rule for {op}")
