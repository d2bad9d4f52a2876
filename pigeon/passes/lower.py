"""Fusion and lowering: a level-1 program becomes a level-2 kernel program.

Greedy and in program order:

1. Every (typed) linear and weight-gradient product is a GEMM. A gather that only
   feeds GEMMs' A operands is fused into each one's tile loads; a sum-aggregate that is the
   only reader of a GEMM's result is fused into its store (scatter-add).
2. Every other op over a graph space with grouping (edges, compact rows) joins the
   open *traversal* of that space: gathers become loads, elementwise ops and dots the
   per-row expression, softmaxes and aggregates along one group the reductions. A
   traversal is closed (emitted) when a later kernel reads one of its values.
3. What remains (node-wise and per-type work) joins an open *dense* kernel of its space
   the same way.

Constants are copied into every body that reads them, and so are cheap per-row values
(gathers and elementwise ops on them, at most ``_RECOMPUTE_LIMIT`` ops): a traversal
that reads one computed in another traversal recomputes it from the rows it gathers
rather than reading a buffer of one value per edge. (The backward of NBFNet's layer
would otherwise write the gathered source rows, relation vectors and messages,
``[edges, batch, dim]`` each, to read them back in its other traversals.) Such a value
still gets a buffer when a GEMM or the program's output reads it.

The layout a traversal walks (:class:`~pigeon.ir.kernel_ir.TraversalLayout`) is chosen per
kernel: ``layout="csr"`` walks the CSR of its group (node-parallel, no atomics) whatever
the group; ``layout="coo"`` makes every grouped traversal edge-parallel (atomics for the
reductions); None (Triton's default) walks the CSR of the destination or the source, which
the graph memoizes, and runs traversals grouped by another map edge-parallel. A backend
takes only the layouts it generates (``pigeon.runtime.compiled.TRAVERSAL_LAYOUTS``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pigeon.ir.builder import Builder
from pigeon.ir.graph_ir import COMPACT_DST, COMPACT_SRC, EDGE, GLOBAL, NODE_OF_DST, Node, Op, Program, Space
from pigeon.ir.kernel_ir import (
    GROUP_CSR_LAYOUTS, SEGMENT_LAYOUTS, Buffer, BufferRole, DenseKernel, GemmKernel, KernelProgram,
    ReductionSpec, TraversalKernel, TraversalLayout, View, ViewKernel,
)
from pigeon.ir.rewrite import copy_node

_GEMMS = (Op.LINEAR, Op.TYPED_LINEAR, Op.TYPED_OUTER)
_TRAVERSAL_SPACES = (EDGE, COMPACT_SRC, COMPACT_DST)
# Per-row ops a traversal may recompute instead of reading another traversal's buffer.
_RECOMPUTE_OPS = (
    Op.GATHER, Op.UNARY, Op.BINARY, Op.DOT, Op.SUM_LAST, Op.SUM_DIMS, Op.EXPAND_LAST, Op.RESHAPE,
    Op.CONCAT, Op.SLICE_LAST, Op.PAD_LAST,
)
_RECOMPUTE_LIMIT = 48   # distinct ops in one recomputed value, its operands' included


class _Kind(enum.Enum):
    TRAVERSAL = "traversal"
    DENSE = "dense"


@dataclass
class _Region:
    kind: _Kind
    space: Space
    group: object = None       # IndexMap of its reductions, if any
    nodes: list[int] = field(default_factory=list)


class _Lowering:
    def __init__(self, program: Program, layout: str | None):
        self.p = program
        self.layout = layout
        self.users = program.users()
        self.kernels: list = []
        self.buffers: dict[str, Buffer] = {}
        self.buffer_of: dict[int, str] = {}
        self.region_of: dict[int, _Region] = {}
        self.open: list[_Region] = []
        self.absorbed: set[int] = set()
        self.layouts: list[str] = []

    # -- helpers -------------------------------------------------------------------------
    def node(self, i: int) -> Node:
        return self.p.nodes[i]

    def need_layout(self, name: str | None) -> None:
        if name and name not in self.layouts:
            self.layouts.append(name)

    def materialize(self, i: int) -> str:
        """The buffer holding node ``i``'s value (closing its region if still open)."""
        region = self.region_of.get(i)
        if region is not None and region in self.open:
            self.close(region)
        return self.buffer_of[i]

    def temp(self, i: int) -> str:
        name = f"%{i}"
        self.buffers.setdefault(name, Buffer(name, self.node(i).type, BufferRole.TEMP))
        self.buffer_of[i] = name
        return name

    # -- GEMMs ---------------------------------------------------------------------------
    def single_user(self, i: int) -> int | None:
        users = self.users[i]
        return users[0] if len(users) == 1 else None

    def only_gemm_a_operand(self, i: int) -> bool:
        """Whether every reader of ``i`` is a GEMM that reads it as A (and only as A)."""
        readers = self.users[i]
        return bool(readers) and all(self.node(u).op in _GEMMS and self.node(u).inputs[0] == i
                                     and self.node(u).inputs[1] != i for u in readers)

    def plan_fusion(self) -> None:
        """Mark the gathers and aggregates that GEMMs take over (not the moves between node
        and destination rows: those are views, or a padding, of their own)."""
        self.gemm_gather: dict[int, int] = {}
        self.gemm_scatter: dict[int, int] = {}
        for node in self.p.nodes:
            if node.op not in _GEMMS:
                continue
            a = self.node(node.inputs[0])
            # A gather that GEMMs read only as their A operand is each GEMM's own tile load
            # (HGT's key and value products both read x at the edges' sources): gathering
            # twice in registers beats writing and reading a buffer of one row per edge.
            if a.op is Op.GATHER and not _moves_rows(a) and self.only_gemm_a_operand(a.id):
                self.gemm_gather[node.id] = a.id
                self.absorbed.add(a.id)
            if node.op is Op.TYPED_OUTER:
                continue
            reader = self.single_user(node.id)
            if reader is not None:
                agg = self.node(reader)
                if (agg.op is Op.AGGREGATE and len(agg.inputs) == 1 and agg.attr("reduce").value == "sum"
                        and not _moves_rows(agg)):
                    self.gemm_scatter[node.id] = agg.id
                    self.absorbed.add(agg.id)

    def emit_gemm(self, node: Node) -> None:
        gather_id = self.gemm_gather.get(node.id)
        a_source = self.node(gather_id).inputs[0] if gather_id is not None else node.inputs[0]
        a = self.materialize(a_source)
        w = self.materialize(node.inputs[1])
        out_node = self.gemm_scatter.get(node.id, node.id)
        out = self.temp(out_node)
        index = node.attr("index")
        segment_layout = SEGMENT_LAYOUTS.get(index.name) if index is not None else None
        self.need_layout(segment_layout.value if segment_layout is not None else None)
        weight_shape = self.node(node.inputs[1]).type.shape
        self.kernels.append(GemmKernel(
            out=out, a=a, w=w,
            a_gather=self.node(gather_id).attr("index") if gather_id is not None else None,
            segment=index,
            transpose_w=bool(node.attr("transpose_w")),
            scatter=self.node(out_node).attr("index") if out_node != node.id else None,
            weight_grad=node.op is Op.TYPED_OUTER,
            batched=bool(node.attr("batched")) if node.op is Op.TYPED_OUTER else len(weight_shape) > 2,
            layout=segment_layout,
        ))

    def emit_view(self, node: Node) -> None:
        """A node value read on the destinations, a destination value padded to node
        rows, or a reshape of a value already in memory: a :class:`ViewKernel`."""
        a = self.materialize(node.inputs[0])
        if node.op is Op.RESHAPE:
            view = View.RESHAPE
        else:
            view = View.ZERO_EXTEND if node.op is Op.AGGREGATE else View.DESTINATIONS
        self.kernels.append(ViewKernel(self.temp(node.id), a, view))

    def is_view(self, node: Node) -> bool:
        """Moves between node and destination rows, and reshapes of values that are in
        memory already (inputs, or written by a kernel that has run): viewed, not copied."""
        if _moves_rows(node):
            return True
        if node.op is not Op.RESHAPE or node.type.space == GLOBAL:
            return False
        source = node.inputs[0]
        region = self.region_of.get(source)
        if self.node(source).op is Op.CONST or source in self.recompute:
            return False
        return source in self.buffer_of and (region is None or region not in self.open)

    # -- recomputation -------------------------------------------------------------------
    def plan_recompute(self) -> None:
        """The per-row values of traversal spaces that readers in other traversals
        recompute (``self.recompute``) and, for each, the values its recomputation
        reads from buffers (``self.leaves``)."""
        read_as_buffer = {value for node in self.p.nodes if node.op is Op.OUTPUT for value in node.inputs}
        for node in self.p.nodes:
            if node.op is Op.GATHER:  # read at other rows than its own
                read_as_buffer.add(node.inputs[0])
            elif node.op in _GEMMS:
                gather_id = self.gemm_gather.get(node.id)
                read_as_buffer.add(self.node(gather_id).inputs[0] if gather_id is not None else node.inputs[0])
                read_as_buffer.add(node.inputs[1])
        # The ops a recomputation repeats: shared operands count once (RotatE reuses its
        # message parts many times).
        chain: dict[int, frozenset[int]] = {}
        self.leaves: dict[int, frozenset[int]] = {}
        for node in self.p.nodes:
            if node.op not in _RECOMPUTE_OPS or node.type.space not in _TRAVERSAL_SPACES or node.id in self.absorbed:
                continue
            ops, leaves, cheap = {node.id}, set(), True
            for j in node.inputs:
                source = self.node(j)
                if node.op is Op.GATHER or source.type.space not in _TRAVERSAL_SPACES:
                    if source.op is not Op.CONST:
                        leaves.add(j)
                elif j in chain:
                    ops |= chain[j]
                    leaves |= self.leaves[j]
                else:
                    cheap = False
            if cheap and len(ops) <= _RECOMPUTE_LIMIT:
                chain[node.id], self.leaves[node.id] = frozenset(ops), frozenset(leaves)
        self.recompute = {i for i in chain if i not in read_as_buffer}

    # -- regions -------------------------------------------------------------------------
    def place(self, node: Node) -> None:
        domain, group = self.domain(node)
        kind = _Kind.TRAVERSAL if domain in _TRAVERSAL_SPACES else _Kind.DENSE
        region = None
        for r in reversed(self.open):
            if r.kind == kind and r.space == domain and (group is None or r.group in (None, group)):
                region = r
                break
        # Operands held by other open regions must be written before this region reads them;
        # for a recomputed operand, the values its recomputation reads.
        for i in node.inputs:
            needed = self.leaves[i] if i in self.recompute else (i,)
            for j in needed:
                owner = self.region_of.get(j)
                if owner is not None and owner is not region and owner in self.open:
                    self.close(owner)
            if i in self.recompute and self.region_of.get(i) is not region:
                # Read mid-pass, a leaf of this region's own would be a partial reduction
                # (an operand computed in this region has had its reads checked already: a
                # reduction gathered along the group is final in a later sweep).
                for j in self.leaves[i]:
                    if region is not None and self.region_of.get(j) is region:
                        self.close(region)
        if region is not None and region not in self.open:
            region = None  # closed above because it read one of ours
        if region is not None and kind is _Kind.TRAVERSAL and self.reads_reduction_across(node, region):
            self.close(region)  # a reduced value read through another map needs the pass finished
            region = None
        if region is None:
            region = _Region(kind, domain)
            self.open.append(region)
        if group is not None:
            region.group = group
        region.nodes.append(node.id)
        self.region_of[node.id] = region

    def reads_reduction_across(self, node: Node, region: _Region) -> bool:
        """Whether ``node`` reads one of ``region``'s reduced values other than through the
        region's own group map (a row can only see its own group's reduction mid-pass)."""
        for i in node.inputs:
            if self.region_of.get(i) is region and self.node(i).type.space != region.space:
                if not (node.op is Op.GATHER and node.attr("index") == region.group):
                    return True
        return False

    @staticmethod
    def domain(node: Node) -> tuple[Space, object]:
        if node.op in (Op.AGGREGATE, Op.SEGMENT_SOFTMAX, Op.DEGREE):
            return node.attr("index").source, node.attr("index")
        return node.type.space, None

    def close(self, region: _Region) -> None:
        self.open.remove(region)
        inside = set(region.nodes)
        b = Builder(self.p.maps)
        local: dict[int, int] = {}
        outputs = []

        def operand(i: int) -> int:
            if i in local:
                return local[i]
            src = self.node(i)
            if src.op is Op.CONST:
                local[i] = copy_node(b, src, ())
            elif i in self.recompute:
                local[i] = copy_node(b, src, tuple(operand(j) for j in src.inputs))
            else:
                local[i] = b.add(Op.INPUT, type=src.type, name=self.materialize(i))
            return local[i]

        # Values another region's recomputation reads need a buffer like any other read.
        exported = set()
        for i in region.nodes:
            if i in self.recompute and any(u not in inside for u in self.users[i]):
                exported |= self.leaves[i]
        reductions, softmax = [], False
        for i in region.nodes:
            node = self.node(i)
            local[i] = copy_node(b, node, tuple(operand(j) for j in node.inputs))
            if node.op is Op.AGGREGATE:
                reductions.append(ReductionSpec(node.attr("reduce"), node.attr("index")))
            softmax = softmax or node.op is Op.SEGMENT_SOFTMAX
            if i not in self.recompute and (i in exported or any(u not in inside for u in self.users[i])):
                outputs.append(i)
        if not outputs:
            return  # every value it computes is recomputed where it is read
        for i in outputs:
            b.add(Op.OUTPUT, (local[i],), name=self.temp(i))
        body = b.build()
        if region.kind is _Kind.DENSE:
            self.kernels.append(DenseKernel(region.space, body))
            return
        kernel = TraversalKernel(region.space, region.group, self.traversal_layout(region), body,
                                 tuple(reductions), softmax)
        self.need_layout(kernel.graph_layout)
        self.kernels.append(kernel)

    def traversal_layout(self, region: _Region) -> TraversalLayout:
        if region.group is None:
            return TraversalLayout.ROWS
        if self.layout == "coo" or (self.layout is None and region.group.name not in GROUP_CSR_LAYOUTS):
            return TraversalLayout.COO
        return TraversalLayout.CSR

    # -- driver --------------------------------------------------------------------------
    def run(self) -> KernelProgram:
        self.plan_fusion()
        self.plan_recompute()
        outputs = []
        # Degrees read nothing: placing them first lets them join the traversal of their group
        # instead of opening a pass of their own later.
        order = sorted(self.p.nodes, key=lambda n: n.op is not Op.DEGREE)
        for node in order:
            if node.op in (Op.INPUT, Op.PARAM):
                name = node.attr("name")
                role = BufferRole.INPUT if node.op is Op.INPUT else BufferRole.PARAM
                self.buffers[name] = Buffer(name, node.type, role)
                self.buffer_of[node.id] = name
            elif node.op is Op.OUTPUT:
                outputs.append((node.attr("name"), node.inputs[0]))
            elif node.op is Op.CONST or node.id in self.absorbed:
                continue
            elif node.op in _GEMMS:
                self.emit_gemm(node)
            elif self.is_view(node):
                self.emit_view(node)
            else:
                self.place(node)
        resolved = []
        for name, value in outputs:
            if self.node(value).op is Op.CONST:
                raise ValueError(f"output {name!r} is a constant; a layer must return a computed value")
            buffer = self.materialize(value)
            resolved.append((name, buffer))
        while self.open:
            self.close(self.open[0])
        for _, buffer in resolved:
            if self.buffers[buffer].role is BufferRole.TEMP:
                self.buffers[buffer] = Buffer(buffer, self.buffers[buffer].type, BufferRole.OUTPUT)
        return KernelProgram(tuple(self.buffers.values()), tuple(self.kernels), tuple(self.layouts), tuple(resolved))


def _moves_rows(node: Node) -> bool:
    """A gather of node rows onto the destinations, or its adjoint (each node receives at
    most its own destination row): a :class:`ViewKernel`."""
    if node.attr("index") != NODE_OF_DST:
        return False
    return node.op is Op.GATHER or (node.op is Op.AGGREGATE and len(node.inputs) == 1)


def lower(program: Program, layout: str | None = None) -> KernelProgram:
    """Lower an (optimised) level-1 program to level 2; ``layout``: None, ``"csr"`` or
    ``"coo"`` (see the module docstring)."""
    if layout not in (None, "csr", "coo"):
        raise ValueError(f"Expected `layout` to be None, 'csr' or 'coo' (got {layout!r})")
    return _Lowering(program, layout).run()

