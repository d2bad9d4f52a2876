"""Rebuilding a program node by node: the one loop every pass uses.

A rule sees each node with its operands already rebuilt and either returns ``None``
(copy the node as it is) or emits replacement nodes into the builder and returns the
id that stands for the old node from then on. Types are re-inferred and checked on the
way, so a rule that breaks typing fails at the pass, not later.
"""

from __future__ import annotations

from typing import Callable

from pigeon.ir.builder import Builder
from pigeon.ir.graph_ir import Node, Op, Program

_LEAVES = (Op.INPUT, Op.PARAM, Op.CONST)

Rule = Callable[[Node, Builder, tuple[int, ...]], "int | None"]


def copy_node(b: Builder, node: Node, inputs: tuple[int, ...]) -> int:
    """Append ``node`` to ``b`` with new operand ids."""
    return b.add(node.op, inputs, loc=node.loc, type=node.type if node.op in _LEAVES else None, **dict(node.attrs))


def rewrite(program: Program, rule: Rule) -> Program:
    """Apply ``rule`` to every node in order; see the module docstring."""
    b = Builder(program.maps)
    remap: dict[int, int] = {}
    for node in program.nodes:
        inputs = tuple(remap[i] for i in node.inputs)
        new = rule(node, b, inputs)
        remap[node.id] = copy_node(b, node, inputs) if new is None else new
    return b.build()

