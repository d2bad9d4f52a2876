"""Pigeon's two IR levels. Level 1 (``graph_ir``) is the graph-level dataflow IR."""

from pigeon.ir.builder import Builder, IRError, format_program, verify
from pigeon.ir.graph_ir import (
    COMPACT_DST, COMPACT_SRC, DST, DST_NODE, EDGE, ETYPE, ETYPE_OF_EDGE, GLOBAL, NODE, NODE_OF_DST, NTYPE,
    NTYPE_OF_NODE, SRC, Binary, IndexMap, Node, Op, Program, Reduce, SourceLoc, Space,
    TensorType, Unary, replace,
)
from pigeon.ir.types import IRTypeError

__all__ = [
    "Builder", "IRError", "IRTypeError", "format_program", "verify", "Binary", "IndexMap",
    "Node", "Op", "Program", "Reduce", "SourceLoc", "Space", "TensorType", "Unary", "replace",
    "COMPACT_DST", "COMPACT_SRC", "DST", "DST_NODE", "EDGE", "ETYPE", "ETYPE_OF_EDGE", "GLOBAL", "NODE", "NODE_OF_DST",
    "NTYPE", "NTYPE_OF_NODE", "SRC",
]
