"""Appending typed nodes to a level-1 program, and checking a whole program."""

from __future__ import annotations

import enum

from pigeon.ir.graph_ir import IndexMap, Node, Op, Program, SourceLoc, TensorType
from pigeon.ir.types import IRTypeError, infer


class IRError(ValueError):
    """A type error in a program, with the layer line it came from when known."""

    def __init__(self, message: str, loc: SourceLoc | None = None):
        self.loc = loc
        where = f"{loc}: " if loc else ""
        code = f"\n    {loc.code.strip()}" if loc and loc.code else ""
        super().__init__(f"{where}{message}{code}")


_TYPED_LEAVES = (Op.INPUT, Op.PARAM, Op.CONST)


def _infer_node(op: Op, types: tuple[TensorType, ...], attrs: dict, declared: TensorType | None) -> TensorType:
    if op in _TYPED_LEAVES:
        attrs = {**attrs, "type": declared}
    return infer(op, types, attrs)


class Builder:
    """Builds a :class:`Program` node by node, inferring and checking each type."""

    def __init__(self, maps: tuple[IndexMap, ...] = ()):
        self.nodes: list[Node] = []
        self.maps = list(maps)

    def add(self, op: Op, inputs: tuple[int, ...] = (), *, loc: SourceLoc | None = None,
            type: TensorType | None = None, **attrs) -> int:
        # Canonical attributes: flags that are off and absent options are not stored, so
        # equal nodes compare equal (CSE) and print the same.
        attrs = {k: v for k, v in attrs.items() if v is not None and v is not False}
        types = tuple(self.nodes[i].type for i in inputs)
        try:
            result = _infer_node(op, types, attrs, type)
        except IRTypeError as err:
            raise IRError(str(err), loc) from None
        node = Node(len(self.nodes), op, tuple(inputs), result, tuple(sorted(attrs.items())), loc)
        self.nodes.append(node)
        return node.id

    def type_of(self, node_id: int) -> TensorType:
        return self.nodes[node_id].type

    def build(self) -> Program:
        program = Program(tuple(self.nodes), tuple(self.maps))
        verify(program)
        return program


def verify(program: Program) -> None:
    """Check SSA order, ids, names and every node's type; raise :class:`IRError`."""
    names: dict[tuple[Op, str], int] = {}
    for position, node in enumerate(program.nodes):
        if node.id != position:
            raise IRError(f"node %{node.id} stands at position {position}", node.loc)
        if any(not 0 <= i < node.id for i in node.inputs):
            raise IRError(f"%{node.id} ({node.op.value}) reads {list(node.inputs)}: not earlier nodes", node.loc)
        attrs = dict(node.attrs)
        for value in attrs.values():
            if isinstance(value, IndexMap) and value not in program.maps and program.index_map(value.name) != value:
                raise IRError(f"%{node.id} uses index map {value.name!r}, which the program does not declare", node.loc)
        types = tuple(program.nodes[i].type for i in node.inputs)
        try:
            expected = _infer_node(node.op, types, attrs, node.type)
        except IRTypeError as err:
            raise IRError(f"%{node.id}: {err}", node.loc) from None
        if expected != node.type:
            raise IRError(f"%{node.id} ({node.op.value}) is typed {node.type} but its operands give {expected}", node.loc)
        if node.op in (Op.INPUT, Op.PARAM, Op.OUTPUT):
            key = (node.op, attrs.get("name"))
            if key in names:
                raise IRError(f"{node.op.value} name {key[1]!r} is used by %{names[key]} and %{node.id}", node.loc)
            names[key] = node.id


def _format_attr(value) -> str:
    if isinstance(value, (IndexMap, enum.Enum)):
        return str(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def format_node(node: Node) -> str:
    attrs = dict(node.attrs)
    name = attrs.pop("name", None)
    head = node.op.value
    fn = attrs.pop("fn", None) or attrs.pop("reduce", None)
    if fn is not None:
        head += f".{fn.value}"
    index = attrs.pop("index", None)
    if index is not None:
        head += f"[{index}]"
    parts = [head]
    if name is not None:
        parts.append(f'"{name}"')
    if node.inputs:
        parts.append(", ".join(f"%{i}" for i in node.inputs))
    if attrs:
        parts.append("{" + ", ".join(f"{k}={_format_attr(v)}" for k, v in attrs.items()) + "}")
    return f"%{node.id} = {' '.join(parts)} : {node.type}"


def format_program(program: Program) -> str:
    """The stable text form tests compare against: one node a line."""
    return "\n".join(format_node(n) for n in program.nodes)
