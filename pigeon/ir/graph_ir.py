"""Level 1: the graph-level dataflow IR.

A :class:`Program` is an SSA list of :class:`Node` s. Every value lives in a *row
space*: one row per node, per destination node, per edge, per unique (node, edge type)
pair, per edge type, per node type, per (source node type, edge type) pair, or a single
row (``GLOBAL``, for untyped parameters and constants). A value's type is its space, the
shape of one row, and a dtype.

``NODE`` rows are every node that may be a source; ``DST_NODE`` rows the destinations,
the first ``num_dst_nodes`` nodes (all of them in a plain graph, fewer in a sampled
block). Layer inputs live on ``NODE`` rows, aggregations land on ``DST_NODE`` rows, and
``GATHER`` along :data:`NODE_OF_DST` restricts a node value to the destinations (a
prefix of its rows); its adjoint, a sum along the same map, pads with zero rows.

Typed parameters are ordinary values in a type space: a per-edge-type weight
``W`` is a value in ``ETYPE`` space with row shape ``(in, out)``. Moving values
between spaces is always an :class:`IndexMap`: ``GATHER`` along ``SRC`` reads
node rows for every edge, ``GATHER`` along ``ETYPE_OF_EDGE`` reads the edge's
typed vector, and ``AGGREGATE`` along ``DST`` reduces edge rows into node rows.
``TYPED_LINEAR`` multiplies each row by the weight of its type, the type being
given by an index map too, so the same op serves edge types, node types and any
segment map a program declares (Fourier modes, for instance).

Nodes are frozen; change one with :func:`replace`, which rejects unknown fields.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Space", "IndexMap", "Op", "Unary", "Binary", "Reduce", "TensorType", "SourceLoc",
    "Node", "Program", "replace", "NODE", "EDGE", "COMPACT_SRC", "COMPACT_DST", "ETYPE",
    "NTYPE", "GLOBAL", "SRC", "DST", "ETYPE_OF_EDGE", "NTYPE_OF_NODE", "BUILTIN_MAPS",
    "COMPACT_SRC_OF_EDGE", "COMPACT_DST_OF_EDGE", "map_between", "NTYPE_ETYPE", "DST_NODE", "NODE_OF_DST",
    "NTYPE_OF_DST_NODE",
    "NTYPE_ETYPE_OF_EDGE", "NTYPE_ETYPE_OF_COMPACT_SRC", "NTYPE_OF_NTYPE_ETYPE", "ETYPE_OF_NTYPE_ETYPE",
]


@dataclass(frozen=True)
class Space:
    """A row space. Graph spaces are built in; a program may declare others."""

    name: str

    def __str__(self) -> str:
        return self.name


NODE = Space("node")
DST_NODE = Space("dst_node")         # destination nodes: a prefix of the node rows
EDGE = Space("edge")
COMPACT_SRC = Space("compact_src")   # unique (src node, edge type) pairs
COMPACT_DST = Space("compact_dst")   # unique (dst node, edge type) pairs
ETYPE = Space("etype")               # one row per edge type (typed parameters)
NTYPE = Space("ntype")               # one row per node type
NTYPE_ETYPE = Space("ntype_etype")   # (source node type, edge type) pairs present (folded weights)
GLOBAL = Space("global")             # a single row: untyped parameters, constants


@dataclass(frozen=True)
class IndexMap:
    """A map from each row of ``source`` to one row of ``target``.

    ``GATHER`` along it reads ``target`` rows for every ``source`` row;
    ``AGGREGATE`` along it reduces ``source`` rows into ``target`` rows.
    """

    name: str
    source: Space
    target: Space

    def __str__(self) -> str:
        return self.name


SRC = IndexMap("src", EDGE, NODE)
DST = IndexMap("dst", EDGE, DST_NODE)
ETYPE_OF_EDGE = IndexMap("etype", EDGE, ETYPE)
NTYPE_OF_NODE = IndexMap("ntype", NODE, NTYPE)
NODE_OF_DST = IndexMap("node_of_dst", DST_NODE, NODE)       # destination i is node i
NTYPE_OF_DST_NODE = IndexMap("dst_ntype", DST_NODE, NTYPE)
COMPACT_SRC_OF_EDGE = IndexMap("edge_to_compact_src", EDGE, COMPACT_SRC)
COMPACT_DST_OF_EDGE = IndexMap("edge_to_compact_dst", EDGE, COMPACT_DST)
NODE_OF_COMPACT_SRC = IndexMap("compact_src_node", COMPACT_SRC, NODE)
NODE_OF_COMPACT_DST = IndexMap("compact_dst_node", COMPACT_DST, DST_NODE)
ETYPE_OF_COMPACT_SRC = IndexMap("compact_src_etype", COMPACT_SRC, ETYPE)
ETYPE_OF_COMPACT_DST = IndexMap("compact_dst_etype", COMPACT_DST, ETYPE)
NTYPE_ETYPE_OF_EDGE = IndexMap("edge_to_ntype_etype", EDGE, NTYPE_ETYPE)
NTYPE_ETYPE_OF_COMPACT_SRC = IndexMap("compact_src_to_ntype_etype", COMPACT_SRC, NTYPE_ETYPE)
NTYPE_OF_NTYPE_ETYPE = IndexMap("ntype_etype_ntype", NTYPE_ETYPE, NTYPE)
ETYPE_OF_NTYPE_ETYPE = IndexMap("ntype_etype_etype", NTYPE_ETYPE, ETYPE)

BUILTIN_MAPS = {
    m.name: m
    for m in (
        SRC, DST, ETYPE_OF_EDGE, NTYPE_OF_NODE, NODE_OF_DST, NTYPE_OF_DST_NODE, COMPACT_SRC_OF_EDGE,
        COMPACT_DST_OF_EDGE,
        NODE_OF_COMPACT_SRC, NODE_OF_COMPACT_DST, ETYPE_OF_COMPACT_SRC, ETYPE_OF_COMPACT_DST,
        NTYPE_ETYPE_OF_EDGE, NTYPE_ETYPE_OF_COMPACT_SRC, NTYPE_OF_NTYPE_ETYPE, ETYPE_OF_NTYPE_ETYPE,
    )
}


def map_between(source: Space, target: Space) -> IndexMap | None:
    """The built-in map from ``source`` rows to ``target`` rows, if there is one."""
    for index in BUILTIN_MAPS.values():
        if index.source == source and index.target == target:
            return index
    return None


class Op(enum.Enum):
    """Every level-1 operation. ``attrs`` per op are listed beside it."""

    INPUT = "input"                # name: a runtime tensor
    PARAM = "param"                # name: a learned parameter
    CONST = "const"                # value: a scalar, broadcast to the result type
    GATHER = "gather"              # index: IndexMap; x in index.target -> index.source
    AGGREGATE = "aggregate"        # index, reduce: Reduce; x in index.source -> index.target;
                                   # an optional 2nd operand in index.target joins each reduction
                                   # as one more row (a self message: NBFNet's boundary)
    SEGMENT_SOFTMAX = "softmax"    # index; softmax of x over the rows that share a target
    DEGREE = "degree"              # index; number of source rows per target row
    LINEAR = "linear"              # transpose_w; x [.., in] @ w [in, out], w in GLOBAL
    TYPED_LINEAR = "typed_linear"  # index, transpose_w; x row r @ w[index(r)], w in index.target
    TYPED_OUTER = "typed_outer"    # index (or None: all rows -> GLOBAL), batched;
                                   # sum over rows of type t of x_r^T dy_r -> [in, out] per t
    UNARY = "unary"                # fn: Unary (+ alpha for LEAKY_RELU)
    BINARY = "binary"              # fn: Binary; broadcasting over row shapes
    DOT = "dot"                    # dot product over the last dim of two operands
    SUM_LAST = "sum_last"          # sum over the last dim
    SUM_DIMS = "sum_dims"          # dims: sum over these row dims, keeping them as size 1
    EXPAND_LAST = "expand_last"    # size: append a last dim of ``size`` (broadcast)
    RESHAPE = "reshape"            # shape: new row shape with the same element count
    CONCAT = "concat"              # join operands along the last dim
    SLICE_LAST = "slice_last"      # start, stop: a slice of the last dim
    PAD_LAST = "pad_last"          # before, after: zeros around the last dim
    SUM_ROWS = "sum_rows"          # sum over all rows into GLOBAL (weight gradients)
    MEAN_ROWS = "mean_rows"        # mean over all rows into GLOBAL
    BROADCAST_ROWS = "broadcast_rows"  # space: a GLOBAL value repeated for every row of space
    LAYER_NORM = "layer_norm"      # eps: normalise over the last dim (no affine part)
    OUTPUT = "output"              # name: a program result


class Unary(enum.Enum):
    NEG = "neg"
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    RECIP = "recip"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    GELU = "gelu"
    STEP = "step"        # 1 where x > 0 else 0 (derivative of relu)
    GELU_GRAD = "gelu_grad"  # derivative of the exact (erf) GELU
    SQUARE = "square"


class Binary(enum.Enum):
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MAX = "max"
    MIN = "min"
    EQ = "eq"            # 1.0 where equal else 0.0 (routes max/min gradients)


class Reduce(enum.Enum):
    SUM = "sum"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"


@dataclass(frozen=True)
class TensorType:
    """A value's type: its row space, the shape of one row, and the dtype name."""

    space: Space
    shape: tuple[int, ...]
    dtype: str = "float"

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.space}[{dims}]"

    @property
    def numel(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count


@dataclass(frozen=True)
class SourceLoc:
    """Where a node came from in the user's layer function."""

    file: str
    line: int
    code: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Node:
    """One SSA value. ``id`` is its index in the program."""

    id: int
    op: Op
    inputs: tuple[int, ...]
    type: TensorType
    attrs: tuple[tuple[str, Any], ...] = ()
    loc: SourceLoc | None = field(default=None, compare=False)

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default


def replace(node: Node, **changes) -> Node:
    """A copy of ``node`` with ``changes``; unknown field names are an error."""
    names = {f.name for f in dataclasses.fields(Node)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"Expected fields of Node {sorted(names)} (got unknown {unknown})")
    return dataclasses.replace(node, **changes)


@dataclass(frozen=True)
class Program:
    """An SSA program: ``nodes[i].id == i`` and inputs refer to earlier nodes.

    ``maps`` lists the index maps the program uses beyond the built-in graph maps
    (a declared segment map, for instance), by name.
    """

    nodes: tuple[Node, ...]
    maps: tuple[IndexMap, ...] = ()

    def outputs(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op is Op.OUTPUT)

    def inputs(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op is Op.INPUT)

    def params(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op is Op.PARAM)

    def index_map(self, name: str) -> IndexMap:
        for m in self.maps:
            if m.name == name:
                return m
        return BUILTIN_MAPS[name]

    def users(self) -> dict[int, list[int]]:
        """For each node id, the ids of the nodes that read it."""
        users: dict[int, list[int]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                users[i].append(n.id)
        return users
