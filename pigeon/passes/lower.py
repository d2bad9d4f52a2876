"""Fusion and lowering: a level-1 program becomes a level-2 kernel program.

Greedy and in program order:

1. Every (typed) linear and weight-gradient product is a GEMM, with the gathers and
   scatters :mod:`pigeon.passes.fusion` plans for it in its loads and stores.
2. Every other op over a graph space with grouping (edges, compact rows) joins the
   open *traversal* of that space: gathers become loads, elementwise ops and dots the
   per-row expression, softmaxes and aggregates along one group the reductions. A
   traversal is closed (emitted) when a later kernel reads one of its values.
3. What remains (node-wise and per-type work) joins an open *dense* kernel of its space
   the same way.

Constants are copied into every body that reads them, and so are the cheap per-row
values the fusion plan recomputes where they are read. Moves between node and
destination rows, and reshapes of values in memory, are views.

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
from pigeon.ir.graph_ir import GLOBAL, Node, Op, Program, Space
from pigeon.ir.kernel_ir import (
    GROUP_CSR_LAYOUTS, SEGMENT_LAYOUTS, Buffer, BufferRole, DenseKernel, GemmKernel, KernelProgram,
    ReductionSpec, TraversalKernel, TraversalLayout, View, ViewKernel,
)
from pigeon.ir.rewrite import copy_node
from pigeon.passes.fusion import GEMMS, TRAVERSAL_SPACES, moves_rows, plan_fusion


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
        fusion = plan_fusion(program)
        self.gemm_gather, self.gemm_scatter = fusion.gemm_gather, fusion.gemm_scatter
        self.absorbed, self.recompute, self.leaves = fusion.absorbed, fusion.recompute, fusion.leaves
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

    # -- GEMMs and views ---------------------------------------------------------------------------
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
        if moves_rows(node):
            return True
        if node.op is not Op.RESHAPE or node.type.space == GLOBAL:
            return False
        source = node.inputs[0]
        region = self.region_of.get(source)
        if self.node(source).op is Op.CONST or source in self.recompute:
            return False
        return source in self.buffer_of and (region is None or region not in self.open)

    # -- regions -------------------------------------------------------------------------
    def place(self, node: Node) -> None:
        domain, group = self.domain(node)
        kind = _Kind.TRAVERSAL if domain in TRAVERSAL_SPACES else _Kind.DENSE
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
            elif node.op in GEMMS:
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


def lower(program: Program, layout: str | None = None) -> KernelProgram:
    """Lower an (optimised) level-1 program to level 2; ``layout``: None, ``"csr"`` or
    ``"coo"`` (see the module docstring)."""
    if layout not in (None, "csr", "coo"):
        raise ValueError(f"Expected `layout` to be None, 'csr' or 'coo' (got {layout!r})")
    return _Lowering(program, layout).run()

