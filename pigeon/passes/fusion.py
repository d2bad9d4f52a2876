"""Fusion planning: what the lowering fuses into what, decided before any kernel exists.

* A gather that only feeds GEMMs' A operands is fused into each one's tile loads (HGT's
  key and value products both read x at the edges' sources: gathering twice in
  registers beats writing and reading a buffer of one row per edge); a sum-aggregate
  that is the only reader of a GEMM's result is fused into its store (scatter-add).
  Moves between node and destination rows are views of their own, never fused.
* Cheap per-row values of traversal spaces (gathers and elementwise ops on them, at most
  :data:`RECOMPUTE_LIMIT` ops, shared operands counted once) that another traversal reads
  are recomputed there from the rows they gather, rather than written as a buffer of one
  value per edge. (The backward of NBFNet's layer would otherwise write the gathered
  source rows, relation vectors and messages, ``[edges, batch, dim]`` each, to read them
  back in its other traversals.) A value a GEMM, a gather or an output reads keeps its
  buffer. A recomputation may also read a value of a traversal space that is not cheap
  (a softmax, a reduction) from its buffer, when that value's rows are at most
  1/:data:`NARROW_LEAF_RATIO` as wide as the value recomputed: RGAT's backward then
  writes its attention weights, ``[edges, heads]``, instead of the weighted gradient
  rows, ``[edges, heads * dim]``, and reads the destinations' gradient rows again where
  it needs them.

:func:`plan_fusion` gives the :class:`FusionPlan`; :mod:`pigeon.passes.lower` emits the
kernels by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pigeon.ir.graph_ir import COMPACT_DST, COMPACT_SRC, EDGE, NODE_OF_DST, Node, Op, Program

__all__ = ["FusionPlan", "plan_fusion", "GEMMS", "TRAVERSAL_SPACES", "moves_rows"]

GEMMS = (Op.LINEAR, Op.TYPED_LINEAR, Op.TYPED_OUTER)
TRAVERSAL_SPACES = (EDGE, COMPACT_SRC, COMPACT_DST)
# Per-row ops a traversal may recompute instead of reading another traversal's buffer.
_RECOMPUTE_OPS = (
    Op.GATHER, Op.UNARY, Op.BINARY, Op.DOT, Op.SUM_LAST, Op.SUM_DIMS, Op.EXPAND_LAST, Op.RESHAPE,
    Op.CONCAT, Op.SLICE_LAST, Op.PAD_LAST,
)
RECOMPUTE_LIMIT = 48   # distinct ops in one recomputed value, its operands' included
NARROW_LEAF_RATIO = 4  # a buffer read by a recomputation: at most 1/4 of the value's row width


@dataclass(frozen=True)
class FusionPlan:
    """What the lowering fuses.

    ``gemm_gather[g]``: the gather GEMM ``g`` loads its A rows through; ``gemm_scatter[g]``:
    the aggregate GEMM ``g`` scatter-adds its result into; ``absorbed``: the nodes that
    thereby need no kernel of their own; ``recompute``: the per-row values recomputed where
    they are read, and ``leaves[v]`` the values the recomputation of ``v`` reads from memory.
    """

    gemm_gather: dict[int, int]
    gemm_scatter: dict[int, int]
    absorbed: frozenset[int]
    recompute: frozenset[int]
    leaves: dict[int, frozenset[int]]


def moves_rows(node: Node) -> bool:
    """A gather of node rows onto the destinations, or its adjoint (each node receives at
    most its own destination row): a view, or a padding, of its own."""
    if node.attr("index") != NODE_OF_DST:
        return False
    return node.op is Op.GATHER or (node.op is Op.AGGREGATE and len(node.inputs) == 1)


def plan_fusion(program: Program) -> FusionPlan:
    """The :class:`FusionPlan` of ``program`` (module docstring)."""
    users = program.users()
    nodes = program.nodes

    def only_gemm_a_operand(i: int) -> bool:
        readers = users[i]
        return bool(readers) and all(nodes[u].op in GEMMS and nodes[u].inputs[0] == i and nodes[u].inputs[1] != i
                                     for u in readers)

    gemm_gather: dict[int, int] = {}
    gemm_scatter: dict[int, int] = {}
    absorbed: set[int] = set()
    for node in nodes:
        if node.op not in GEMMS:
            continue
        a = nodes[node.inputs[0]]
        if a.op is Op.GATHER and not moves_rows(a) and only_gemm_a_operand(a.id):
            gemm_gather[node.id] = a.id
            absorbed.add(a.id)
        if node.op is Op.TYPED_OUTER or len(users[node.id]) != 1:
            continue
        agg = nodes[users[node.id][0]]
        if agg.op is Op.AGGREGATE and len(agg.inputs) == 1 and agg.attr("reduce").value == "sum" and not moves_rows(agg):
            gemm_scatter[node.id] = agg.id
            absorbed.add(agg.id)
    recompute, leaves = _plan_recompute(program, gemm_gather, absorbed)
    return FusionPlan(gemm_gather, gemm_scatter, frozenset(absorbed), recompute, leaves)


def _plan_recompute(program: Program, gemm_gather: dict[int, int],
                    absorbed: set[int]) -> tuple[frozenset[int], dict[int, frozenset[int]]]:
    """The per-row values of traversal spaces that readers in other traversals recompute,
    and for each the values its recomputation reads from buffers."""
    nodes = program.nodes
    read_as_buffer = {value for node in nodes if node.op is Op.OUTPUT for value in node.inputs}
    for node in nodes:
        if node.op is Op.GATHER:  # read at other rows than its own
            read_as_buffer.add(node.inputs[0])
        elif node.op in GEMMS:
            gather_id = gemm_gather.get(node.id)
            read_as_buffer.add(nodes[gather_id].inputs[0] if gather_id is not None else node.inputs[0])
            read_as_buffer.add(node.inputs[1])
    # The ops a recomputation repeats: shared operands count once (RotatE reuses its
    # message parts many times).
    chain: dict[int, frozenset[int]] = {}
    leaves: dict[int, frozenset[int]] = {}
    for node in nodes:
        if node.op not in _RECOMPUTE_OPS or node.type.space not in TRAVERSAL_SPACES or node.id in absorbed:
            continue
        ops, reads, cheap = {node.id}, set(), True
        for j in node.inputs:
            source = nodes[j]
            if node.op is Op.GATHER or source.type.space not in TRAVERSAL_SPACES:
                if source.op is not Op.CONST:
                    reads.add(j)
            elif j in chain:
                ops |= chain[j]
                reads |= leaves[j]
            elif NARROW_LEAF_RATIO * math.prod(source.type.shape) <= math.prod(node.type.shape):
                reads.add(j)
            else:
                cheap = False
        if cheap and len(ops) <= RECOMPUTE_LIMIT:
            chain[node.id], leaves[node.id] = frozenset(ops), frozenset(reads)
    return frozenset(i for i in chain if i not in read_as_buffer), leaves
