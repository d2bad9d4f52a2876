"""Sweep planning shared by the code generators.

A traversal reads a reduction of its own pass only after the sweep that computes it:
``phase(value)`` is the first sweep over a group's rows in which a per-row value can be
computed, and a reduction over a value of phase k is final after sweep k. A softmax
needs its maximum and sum (one online sweep) before any normalised value exists, so it
adds a sweep. The C and Triton generators share this plan and differ in what they emit.
"""

from __future__ import annotations

from pigeon.ir.graph_ir import IndexMap, Node, Op, Program, Space

GROUP_VALUES = (Op.AGGREGATE, Op.DEGREE)  # one value per group, held in registers during a pass


class SweepPlan:
    """Which sweep computes each per-row value of one traversal body."""

    def __init__(self, body: Program, domain: Space, group: IndexMap | None):
        self.body = body
        self.domain = domain
        self.group = group
        self.phase: dict[int, int] = {}
        self.reductions: list[Node] = [n for n in body.nodes if n.op is Op.AGGREGATE]
        self.softmaxes: list[Node] = [n for n in body.nodes if n.op is Op.SEGMENT_SOFTMAX]
        self.outputs: list[Node] = [n for n in body.nodes if n.op is Op.OUTPUT]
        self.compute_phases()

    def is_row(self, node: Node) -> bool:
        return node.type.space == self.domain and node.op not in (Op.INPUT, Op.CONST)

    def compute_phases(self) -> None:
        for node in self.body.nodes:
            if node.op is Op.AGGREGATE:  # final after the sweep that computes its operand
                self.phase[node.id] = self.phase.get(node.inputs[0], 0)
                continue
            if node.op is Op.DEGREE:  # the group's row count: known before any sweep
                self.phase[node.id] = -1
                continue
            if not self.is_row(node):
                continue
            phase = 0
            for i in node.inputs:
                src = self.body.nodes[i]
                if self.is_row(src):
                    phase = max(phase, self.phase[i] + (1 if node.op is Op.SEGMENT_SOFTMAX else 0))
                elif src.op in GROUP_VALUES:
                    phase = max(phase, self.phase[i] + 1)
            if node.op is Op.SEGMENT_SOFTMAX and not self.is_row(self.body.nodes[node.inputs[0]]):
                phase = 1
            self.phase[node.id] = phase

    def stats_phase(self, softmax: Node) -> int:
        """The sweep that accumulates a softmax's running maximum and sum."""
        return self.phase.get(softmax.inputs[0], 0)

    def row_outputs(self) -> list[Node]:
        return [o for o in self.outputs if self.is_row(self.body.nodes[o.inputs[0]])]

    def last_sweep(self) -> int:
        return max([self.phase[r.id] for r in self.reductions] + [self.stats_phase(s) for s in self.softmaxes]
                   + [self.phase[o.inputs[0]] for o in self.row_outputs()] + [0])

    def closure(self, roots: list[int], given: frozenset[int] | dict = frozenset()) -> list[int]:
        """The per-row values, inputs and constants ``roots`` need, in program order;
        nodes in ``given`` are read from memory, so what they need is not."""
        needed: set[int] = set()
        stack = list(roots)
        while stack:
            i = stack.pop()
            node = self.body.nodes[i]
            if i in needed or not (self.is_row(node) or node.op in (Op.INPUT, Op.CONST) or i in given):
                continue
            needed.add(i)
            if i in given:
                continue
            if node.op is Op.SEGMENT_SOFTMAX:
                stack.append(node.inputs[0])
            else:
                stack.extend(node.inputs)
        return sorted(needed)

    def sweep_roots(self, k: int) -> tuple[list[int], list[Node]]:
        """The values sweep ``k`` must compute, and the row outputs it stores."""
        roots = [r.inputs[0] for r in self.reductions if self.phase[r.id] == k]
        roots += [s.inputs[0] for s in self.softmaxes if self.stats_phase(s) == k]
        outputs = [o for o in self.row_outputs() if self.phase[o.inputs[0]] == k]
        return roots + [o.inputs[0] for o in outputs], outputs
