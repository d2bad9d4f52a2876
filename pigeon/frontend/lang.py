"""The layer language: write a relational layer as a Python function, trace it to level 1.

Tracing, not parsing: :meth:`Layer.trace` calls the function once with symbolic
values (:class:`Sym`), and every operation on them appends a node to a
:class:`~pigeon.ir.Builder`. Ordinary Python (helpers, loops over heads,
conditionals on static configuration) runs as Python.

A layer's parameters are the arguments annotated with :data:`PerEtype`,
:data:`PerNtype` or :data:`Shared`; the other positional arguments after the
graph are node inputs; keyword-only arguments are static configuration::

    @pigeon.layer
    def rgcn(g, h, W: PerEtype, *, norm="right"):
        return aggregate(g, linear(g.src(h), W) * g.norm(norm), "sum")

Typed values meet edge or node rows implicitly: ``dot(z, a)`` with ``z`` on edges
and ``a`` per edge type reads each edge's own ``a``. A mistake raises
:class:`~pigeon.ir.IRError` naming the line of the layer function.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pigeon.ir.builder import Builder, IRError
from pigeon.ir.graph_ir import (
    COMPACT_DST_OF_EDGE, DST, DST_NODE, EDGE, ETYPE, GLOBAL, NODE, NODE_OF_DST, NTYPE, SRC, Binary, Op,
    Program, Reduce, SourceLoc, Space, TensorType, Unary, map_between,
)

__all__ = [
    "PerEtype", "PerNtype", "Shared", "EtypeInput", "equal", "chunk", "mean_rows", "Layer", "layer", "Sym", "GraphSym", "linear", "dot",
    "relu", "leaky_relu", "exp", "log", "sqrt", "sigmoid", "tanh", "gelu", "maximum", "minimum",
    "edge_softmax", "aggregate", "concat", "split_heads", "merge_heads", "reshape", "layer_norm", "sum_last",
]


@dataclass(frozen=True)
class _ParamKind:
    space: Space
    label: str

    def __repr__(self) -> str:
        return self.label


PerEtype = _ParamKind(ETYPE, "PerEtype")   #: a parameter with one entry per edge type
PerNtype = _ParamKind(NTYPE, "PerNtype")   #: a parameter with one entry per node type
Shared = _ParamKind(GLOBAL, "Shared")      #: an untyped parameter


@dataclass(frozen=True)
class _InputKind:
    space: Space
    label: str

    def __repr__(self) -> str:
        return self.label


#: an input with one row per edge type (NBFNet's query-dependent relation vectors);
#: unannotated inputs have one row per node.
EtypeInput = _InputKind(ETYPE, "EtypeInput")

_HERE = os.path.dirname(os.path.abspath(__file__))


def _caller_loc() -> SourceLoc | None:
    """The first frame outside the frontend: the line of the layer function."""
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _HERE:
        frame = frame.f_back
    if frame is None:
        return None
    info = inspect.getframeinfo(frame, context=1)
    code = info.code_context[0] if info.code_context else ""
    return SourceLoc(os.path.basename(info.filename), info.lineno, code)


class Sym:
    """A symbolic value during tracing: a node of the program being built."""

    __slots__ = ("tracer", "id")

    def __init__(self, tracer: "_Tracer", node_id: int):
        self.tracer, self.id = tracer, node_id

    @property
    def type(self) -> TensorType:
        return self.tracer.builder.type_of(self.id)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def space(self) -> Space:
        return self.type.space

    def __repr__(self) -> str:
        return f"Sym(%{self.id}: {self.type})"

    def _binary(self, fn: Binary, other, swap: bool = False) -> "Sym":
        other = self.tracer.lift(other, like=self)
        a, b = (other, self) if swap else (self, other)
        return self.tracer.binary(fn, a, b)

    def __add__(self, other):
        return self._binary(Binary.ADD, other)

    def __radd__(self, other):
        return self._binary(Binary.ADD, other, swap=True)

    def __sub__(self, other):
        return self._binary(Binary.SUB, other)

    def __rsub__(self, other):
        return self._binary(Binary.SUB, other, swap=True)

    def __mul__(self, other):
        return self._binary(Binary.MUL, other)

    def __rmul__(self, other):
        return self._binary(Binary.MUL, other, swap=True)

    def __truediv__(self, other):
        return self._binary(Binary.DIV, other)

    def __rtruediv__(self, other):
        return self._binary(Binary.DIV, other, swap=True)

    def __neg__(self):
        return self.tracer.unary(Unary.NEG, self)

    def __bool__(self):
        raise IRError("a traced value has no truth value: branch on static configuration, "
                      "not on tensor data", _caller_loc())


class _Tracer:
    """Owns the builder while one layer function runs."""

    def __init__(self):
        self.builder = Builder()

    def add(self, op: Op, inputs=(), **attrs) -> Sym:
        return Sym(self, self.builder.add(op, tuple(s.id for s in inputs), loc=_caller_loc(), **attrs))

    def lift(self, value, like: Sym) -> Sym:
        if isinstance(value, Sym):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.add(Op.CONST, type=TensorType(GLOBAL, ()), value=float(value))
        raise IRError(f"expected a traced value or a Python number, got {type(value).__name__}", _caller_loc())

    def to_space(self, value: Sym, space: Space) -> Sym:
        """Read a typed value for each row of ``space`` (implicit typed lookup)."""
        if value.space in (space, GLOBAL):
            return value
        index = map_between(space, value.space)
        if index is not None:
            return self.add(Op.GATHER, (value,), index=index)
        raise IRError(
            f"expected a value in {space} space, or one typed so that each {space} row has one entry, "
            f"got {value.type}", _caller_loc(),
        )

    def common(self, *values: Sym) -> tuple[Sym, ...]:
        """Bring operands into one space, looking typed values up per row. Node values
        meeting destination values are read on the destinations (a block's outputs have
        no rows for source-only nodes)."""
        rows = [v.space for v in values if v.space not in (GLOBAL, ETYPE, NTYPE)]
        if not rows:
            return values
        space = DST_NODE if DST_NODE in rows and set(rows) <= {NODE, DST_NODE} else rows[0]
        return tuple(self.to_space(v, space) for v in values)

    def rows_broadcast(self, a: Sym, b: Sym) -> tuple[Sym, Sym]:
        """Two row values whose shapes differ, the shorter a prefix of the longer: the
        shorter scales the leading dims (``alpha[heads] * z[heads, dim]``). Global values
        broadcast from the right, as in NumPy."""
        a, b = self.common(a, b)
        if GLOBAL in (a.space, b.space) or a.shape == b.shape:
            return a, b
        short, long_ = sorted((a, b), key=lambda v: len(v.shape))
        if short.shape and long_.shape[: len(short.shape)] == short.shape:
            pad = (1,) * (len(long_.shape) - len(short.shape))
            widened = self.add(Op.RESHAPE, (short,), shape=short.shape + pad)
            return (widened, long_) if short is a else (long_, widened)
        return a, b

    def binary(self, fn: Binary, a: Sym, b: Sym) -> Sym:
        a, b = self.rows_broadcast(a, b)
        return self.add(Op.BINARY, (a, b), fn=fn)

    def unary(self, fn: Unary, x: Sym, **attrs) -> Sym:
        return self.add(Op.UNARY, (x,), fn=fn, **attrs)


class GraphSym:
    """The graph argument of a layer: moves values between node and edge rows.

    Node inputs have a row per node that may be a source; aggregations give a row per
    destination (all nodes of a plain graph, the first ``num_dst_nodes`` of a block).
    A node value combined with a destination value is read on the destinations.
    """

    def __init__(self, tracer: _Tracer):
        self._tracer = tracer

    def src(self, x: Sym) -> Sym:
        """Each edge's source-node row of ``x``."""
        if isinstance(x, Sym) and x.space == DST_NODE:
            raise IRError("g.src: expected a value with a row per node (a layer input, or computed from "
                          f"one), got {x.type}, a value per destination: in a block, source-only nodes "
                          "have no row of it", _caller_loc())
        return self._tracer.add(Op.GATHER, (_expect_space(x, NODE, "g.src"),), index=SRC)

    def dst(self, x: Sym) -> Sym:
        """Each edge's destination-node row of ``x``."""
        return self._tracer.add(Op.GATHER, (self.at_dst(x, "g.dst"),), index=DST)

    def at_dst(self, x: Sym, what: str = "g.at_dst") -> Sym:
        """``x`` on the destination rows (the first rows of a node value)."""
        if isinstance(x, Sym) and x.space == DST_NODE:
            return x
        return self._tracer.add(Op.GATHER, (_expect_space(x, NODE, what),), index=NODE_OF_DST)

    def in_degree(self) -> Sym:
        """In-degree of every destination over all relations (a float per destination)."""
        return self._tracer.add(Op.DEGREE, index=DST)

    def relation_in_degree(self) -> Sym:
        """For every edge, the number of edges of its relation entering its destination."""
        counts = self._tracer.add(Op.DEGREE, index=COMPACT_DST_OF_EDGE)
        return self._tracer.add(Op.GATHER, (counts,), index=COMPACT_DST_OF_EDGE)

    def node_type(self, value: Sym) -> Sym:
        """Each node's own row of a per-node-type ``value``."""
        return self._tracer.to_space(value, NODE)

    def edge_type(self, value: Sym) -> Sym:
        """Each edge's own row of a per-edge-type ``value``."""
        return self._tracer.to_space(value, EDGE)


def _expect_space(x, space: Space, what: str) -> Sym:
    if not isinstance(x, Sym):
        raise IRError(f"{what}: expected a traced value, got {type(x).__name__}", _caller_loc())
    if x.space != space:
        raise IRError(f"{what}: expected a value in {space} space, got {x.type}", _caller_loc())
    return x


# ---- operations ---------------------------------------------------------------------

def linear(x: Sym, w: Sym, *, transpose: bool = False) -> Sym:
    """``x @ w`` (``x @ w.T`` with ``transpose``, for ``nn.Linear``-shaped weights);
    a typed ``w`` multiplies each row by the weight of the row's type."""
    tracer = x.tracer
    if w.space == GLOBAL:
        return tracer.add(Op.LINEAR, (x, w), transpose_w=transpose)
    index = map_between(x.space, w.space)
    if index is not None:
        return tracer.add(Op.TYPED_LINEAR, (x, w), index=index, transpose_w=transpose)
    raise IRError(
        f"linear: a weight typed per {w.space} needs rows that have a {w.space} "
        f"(edge rows for per-etype, node rows for per-ntype), got rows in {x.space} space",
        _caller_loc(),
    )


def dot(a: Sym, b: Sym) -> Sym:
    """Dot product over the last dim (per head when rows are ``[heads, dim]``)."""
    a, b = a.tracer.rows_broadcast(a, b)
    return a.tracer.add(Op.DOT, (a, b))


def equal(a: Sym, b) -> Sym:
    """1.0 where ``a == b``, else 0.0 (no gradient)."""
    return a._binary(Binary.EQ, b)


def chunk(x: Sym, parts: int) -> tuple[Sym, ...]:
    """Split the last dim into ``parts`` equal pieces."""
    width = x.shape[-1] // parts
    if width * parts != x.shape[-1]:
        raise IRError(f"chunk: expected a last dim divisible by {parts}, got {x.type}", _caller_loc())
    return tuple(x.tracer.add(Op.SLICE_LAST, (x,), start=i * width, stop=(i + 1) * width) for i in range(parts))


def mean_rows(x: Sym) -> Sym:
    """The mean over all rows (a global value)."""
    return x.tracer.add(Op.MEAN_ROWS, (x,))


def sum_last(x: Sym) -> Sym:
    return x.tracer.add(Op.SUM_LAST, (x,))


def relu(x: Sym) -> Sym:
    return x.tracer.unary(Unary.RELU, x)


def leaky_relu(x: Sym, negative_slope: float = 0.01) -> Sym:
    return x.tracer.unary(Unary.LEAKY_RELU, x, alpha=float(negative_slope))


def exp(x: Sym) -> Sym:
    return x.tracer.unary(Unary.EXP, x)


def log(x: Sym) -> Sym:
    return x.tracer.unary(Unary.LOG, x)


def sqrt(x: Sym) -> Sym:
    return x.tracer.unary(Unary.SQRT, x)


def sigmoid(x: Sym) -> Sym:
    return x.tracer.unary(Unary.SIGMOID, x)


def tanh(x: Sym) -> Sym:
    return x.tracer.unary(Unary.TANH, x)


def gelu(x: Sym) -> Sym:
    return x.tracer.unary(Unary.GELU, x)


def maximum(a: Sym, b) -> Sym:
    return a._binary(Binary.MAX, b)


def minimum(a: Sym, b) -> Sym:
    return a._binary(Binary.MIN, b)


def edge_softmax(g: GraphSym, scores: Sym) -> Sym:
    """Softmax of per-edge ``scores`` over the incoming edges of each destination."""
    return g._tracer.add(Op.SEGMENT_SOFTMAX, (_expect_space(scores, EDGE, "edge_softmax"),), index=DST)


def aggregate(g: GraphSym, messages: Sym, reduce: str = "sum", *, self_message: Sym | None = None) -> Sym:
    """Reduce per-edge ``messages`` into their destination nodes: sum, mean, max or min.

    The result has a row per destination; nodes with no incoming edge get zeros.
    ``self_message`` (node rows, read on the destinations) joins every destination's
    reduction as one more message, as NBFNet's boundary condition does.
    """
    try:
        how = Reduce(reduce)
    except ValueError:
        raise IRError(
            f"aggregate: expected `reduce` to be one of {[r.value for r in Reduce]}, got {reduce!r}",
            _caller_loc(),
        ) from None
    operands = (_expect_space(messages, EDGE, "aggregate"),)
    if self_message is not None:
        operands += (g.at_dst(self_message, "aggregate self_message"),)
    return g._tracer.add(Op.AGGREGATE, operands, index=DST, reduce=how)


def concat(*values: Sym) -> Sym:
    """Join values along the last dim."""
    values = values[0].tracer.common(*values)
    return values[0].tracer.add(Op.CONCAT, values)


def split_heads(x: Sym, heads: int) -> Sym:
    """``[heads * d]`` rows as ``[heads, d]``."""
    *lead, last = x.shape
    if last % heads:
        raise IRError(f"split_heads: expected a last dim divisible by heads={heads}, got {x.type}", _caller_loc())
    return x.tracer.add(Op.RESHAPE, (x,), shape=(*lead, heads, last // heads))


def reshape(x: Sym, *shape: int) -> Sym:
    """The same rows with a new row shape of the same size."""
    return x.tracer.add(Op.RESHAPE, (x,), shape=tuple(int(d) for d in shape))


def merge_heads(x: Sym) -> Sym:
    """``[heads, d]`` rows as ``[heads * d]``."""
    *lead, heads, d = x.shape
    return x.tracer.add(Op.RESHAPE, (x,), shape=(*lead, heads * d))


def layer_norm(x: Sym, eps: float = 1e-5) -> Sym:
    """Normalise each row over its last dim (no affine part: multiply and add after)."""
    return x.tracer.add(Op.LAYER_NORM, (x,), eps=float(eps))


# ---- layers -------------------------------------------------------------------------

class Layer:
    """A traced-on-demand layer function; see the module docstring."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.name = fn.__name__
        # eval_str: annotations are strings in modules that use `from __future__ import annotations`.
        signature = inspect.signature(fn, eval_str=True)
        params = list(signature.parameters.values())
        if not params or params[0].kind is inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"layer {self.name}: expected the graph as the first argument")
        self.param_kinds: dict[str, _ParamKind] = {}
        self.input_names: list[str] = []
        self.input_spaces: dict[str, Space] = {}
        self.config_names: list[str] = []
        self.optional_params: set[str] = set()
        for p in params[1:]:
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                self.config_names.append(p.name)
            elif isinstance(p.annotation, _ParamKind):
                self.param_kinds[p.name] = p.annotation
                if p.default is None:
                    self.optional_params.add(p.name)
            else:
                self.input_names.append(p.name)
                self.input_spaces[p.name] = p.annotation.space if isinstance(p.annotation, _InputKind) else NODE
        functools.update_wrapper(self, fn)

    def trace(self, inputs: Mapping[str, tuple[int, ...]], params: Mapping[str, tuple[int, ...]],
              **config: Any) -> Program:
        """Trace to a level-1 program.

        Args:
            inputs: row shape of each input, e.g. ``{"h": (64,)}`` (without the type dim
                for an ``EtypeInput``).
            params: shape of each parameter without its type dim, e.g. ``{"W": (64, 64)}``
                for a ``[num_etypes, 64, 64]`` weight. A parameter declared with default
                ``None`` may be left out; the function then receives ``None``.
            config: values for the keyword-only arguments.
        """
        _expect_names("inputs", inputs, self.input_names, self.name)
        _expect_names("params", params, list(self.param_kinds), self.name, self.optional_params)
        unknown = sorted(set(config) - set(self.config_names))
        if unknown:
            raise TypeError(f"layer {self.name}: unknown configuration {unknown}; it takes {self.config_names}")
        tracer = _Tracer()
        args = [GraphSym(tracer)]
        for name in self.input_names:
            args.append(tracer.add(Op.INPUT, type=TensorType(self.input_spaces[name], tuple(inputs[name])), name=name))
        for name, kind in self.param_kinds.items():
            if name not in params:  # an optional parameter the module does not have
                args.append(None)
                continue
            args.append(tracer.add(Op.PARAM, type=TensorType(kind.space, tuple(params[name])), name=name))
        result = self.fn(*args, **config)
        outputs = result if isinstance(result, dict) else {"out": result}
        for name, value in outputs.items():
            if not isinstance(value, Sym):
                raise IRError(f"layer {self.name}: expected it to return traced values, got {type(value).__name__}")
            tracer.add(Op.OUTPUT, (value,), name=name)
        return tracer.builder.build()

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _expect_names(what: str, given: Mapping, expected: list[str], layer_name: str,
                  optional: set[str] = frozenset()) -> None:
    missing = set(expected) - set(given) - set(optional)
    if missing or set(given) - set(expected):
        raise TypeError(f"layer {layer_name}: expected `{what}` for {sorted(expected)}, got {sorted(given)}"
                        + (f" (optional: {sorted(optional)})" if optional else ""))


def layer(fn: Callable) -> Layer:
    """Decorator: make ``fn`` a traceable Pigeon layer."""
    return Layer(fn)

