"""Level 2: the kernel-level IR.

A :class:`KernelProgram` is an ordered list of kernels over named buffers. Three
kinds of kernel:

- :class:`GemmKernel`: a (typed) matrix product over rows segmented by type; the A
  rows read directly or through a gather map; the result stored, or scatter-added
  through a map; or, in weight-gradient mode, ``dW_t = A_t^T dC_t`` per segment.
- :class:`TraversalKernel`: one pass over the rows of a graph space (edges, or
  compact rows), grouped by an index map (destination, source, ...): a body of
  level-1 ops evaluated per row, with segment softmax and reductions into the
  group's rows. Several reductions of one pass are one kernel (PNA).
- :class:`DenseKernel`: whatever is neither (node-wise layer norm, per-type weight
  folding), as a body of level-1 ops over one space.

Bodies are small level-1 programs whose ``input`` nodes name buffers and whose
``output`` nodes name the buffers they write, so templates and the torch backend
read one format. Everything a code generator needs is here: nothing about a
kernel is decided after level 2.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pigeon.ir.builder import IRError, format_program, verify
from pigeon.ir.graph_ir import IndexMap, Op, Program, Reduce, Space, TensorType


class SegmentLayout(enum.Enum):
    """The graph layout that puts a typed GEMM's rows in segment order (rows of one type
    contiguous). Values are :data:`pigeon.data.graph.LAYOUTS` names."""

    COO_ETYPE = "coo_etype"                              # edges sorted by (etype, dst)
    COMPACT_SRC = "compact_src"                          # unique (src, etype) rows, sorted by etype
    COMPACT_DST = "compact_dst"                          # unique (dst, etype) rows, sorted by etype
    NTYPE_SORTED = "ntype_sorted"                        # nodes grouped by node type
    DST_NTYPE_SORTED = "dst_ntype_sorted"                # destination nodes grouped by node type
    NTYPE_ETYPE = "ntype_etype"                          # (ntype, etype) pairs, sorted by etype
    NTYPE_ETYPE_EDGES = "ntype_etype_edges"              # edges grouped by their pair
    NTYPE_ETYPE_COMPACT_SRC = "ntype_etype_compact_src"  # compact_src rows grouped by their pair

    @property
    def permuted(self) -> bool:
        """Whether the rows need a permutation into segment order (the compact and pair
        spaces are stored in it already)."""
        return self not in (SegmentLayout.COMPACT_SRC, SegmentLayout.COMPACT_DST, SegmentLayout.NTYPE_ETYPE)

    def __str__(self) -> str:
        return self.value


#: The segment layout of a typed GEMM, by the map from a row to its type.
SEGMENT_LAYOUTS = {
    "etype": SegmentLayout.COO_ETYPE,
    "compact_src_etype": SegmentLayout.COMPACT_SRC,
    "compact_dst_etype": SegmentLayout.COMPACT_DST,
    "ntype": SegmentLayout.NTYPE_SORTED,
    "dst_ntype": SegmentLayout.DST_NTYPE_SORTED,
    "ntype_etype_etype": SegmentLayout.NTYPE_ETYPE,
    "edge_to_ntype_etype": SegmentLayout.NTYPE_ETYPE_EDGES,
    "compact_src_to_ntype_etype": SegmentLayout.NTYPE_ETYPE_COMPACT_SRC,
}


class TraversalLayout(enum.Enum):
    """How a traversal walks its rows."""

    CSR = "csr"     # node-parallel: one group at a time through a CSR of the group map, no atomics
    COO = "coo"     # edge-parallel: blocks of rows, reductions scatter-added with atomics
    ROWS = "rows"   # no group (no reductions): row-parallel

    def __str__(self) -> str:
        return self.value


#: Group maps whose CSR is a memoized graph layout; other groups' CSRs are built by a sort.
GROUP_CSR_LAYOUTS = {"dst": "csr_dst", "src": "csr_src"}


@dataclass(frozen=True)
class ReductionSpec:
    """One reduction of a traversal: how, and into the rows of which map's target."""

    how: Reduce
    group: IndexMap

    def __str__(self) -> str:
        return f"{self.how.value}[{self.group}]"


class BufferRole(enum.Enum):
    INPUT = "input"
    PARAM = "param"
    TEMP = "temp"
    OUTPUT = "output"


@dataclass(frozen=True)
class Buffer:
    name: str
    type: TensorType
    role: BufferRole

    def __str__(self) -> str:
        return f"{self.role.value} {self.name}: {self.type}"


@dataclass(frozen=True)
class GemmKernel:
    """``out = A @ W`` with optional gather, typed weight, transposition and scatter.

    ``a_gather``: A's rows are read through this map (A lives in its target space).
    ``segment``: the map from a result row to its weight type (None: one weight).
    ``scatter``: result rows are summed into the map's target rows.
    ``weight_grad``: instead ``out[t] = sum over rows r of type t of A_r^T B_r`` with
    ``b`` the upstream rows (``w`` unused), ``segment`` None meaning one global sum.
    ``layout``: the graph layout that gives the rows of each segment.
    """

    out: str
    a: str
    w: str
    a_gather: IndexMap | None = None
    segment: IndexMap | None = None
    transpose_w: bool = False
    scatter: IndexMap | None = None
    weight_grad: bool = False
    batched: bool = False
    layout: SegmentLayout | None = None

    def describe(self) -> str:
        parts = [f"gemm {self.out} = "]
        a = f"{self.a}[{self.a_gather}]" if self.a_gather else self.a
        if self.weight_grad:
            parts.append(f"sum_rows {a}^T {self.w}")
        else:
            parts.append(f"{a} @ {self.w}{'^T' if self.transpose_w else ''}")
        if self.segment:
            parts.append(f"  segment={self.segment}")
        if self.scatter:
            parts.append(f"  scatter_add={self.scatter}")
        if self.batched:
            parts.append("  batched")
        if self.layout:
            parts.append(f"  layout={self.layout}")
        return "".join(parts)


@dataclass(frozen=True)
class TraversalKernel:
    """One pass over ``domain`` rows, grouped by ``group`` (None: no reduction).

    ``layout`` says how the rows are walked (:class:`TraversalLayout`): node-parallel
    over a CSR of the group (no atomics), edge-parallel (atomics for the reductions), or
    row-parallel without a group. ``reductions`` and ``softmax`` summarise what the body
    does.
    """

    domain: Space
    group: IndexMap | None
    layout: TraversalLayout
    body: Program
    reductions: tuple[ReductionSpec, ...] = ()
    softmax: bool = False

    @property
    def graph_layout(self) -> str | None:
        """The memoized graph layout a CSR walk reads (None: its CSR is built by a sort)."""
        if self.layout is not TraversalLayout.CSR:
            return None
        return GROUP_CSR_LAYOUTS.get(self.group.name)

    def describe(self) -> str:
        head = f"traversal over {self.domain}"
        if self.group is not None:
            head += f" grouped by {self.group}"
        head += f"  layout={self.graph_layout or self.layout}"
        if self.reductions:
            head += f"  reduce=[{', '.join(map(str, self.reductions))}]"
        if self.softmax:
            head += "  softmax"
        return head + "\n" + _indent(format_program(self.body))


@dataclass(frozen=True)
class DenseKernel:
    """Row-wise work over one space that is neither a GEMM nor a graph traversal."""

    space: Space
    body: Program

    def describe(self) -> str:
        return f"dense over {self.space}\n" + _indent(format_program(self.body))


class View(enum.Enum):
    """What a :class:`ViewKernel` does to its operand's rows."""

    DESTINATIONS = "destinations of"   # a node value on the destinations: its first rows
    ZERO_EXTEND = "zero-extend"        # a destination value as a node value: zero rows after it
    RESHAPE = "reshape"                # the same rows with another row shape

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ViewKernel:
    """Rows of a buffer seen another way, without arithmetic: the destinations' rows of a
    node value (the first rows), the same elements under another row shape, or, the
    adjoint of the first, a destination value padded with zero rows for the source-only
    nodes of a block. All but that padding are views; on a plain graph (every node a
    destination) it is a view too."""

    out: str
    a: str
    view: View

    def describe(self) -> str:
        return f"view {self.out} = {self.view} {self.a}"


Kernel = GemmKernel | TraversalKernel | DenseKernel | ViewKernel


@dataclass(frozen=True)
class KernelProgram:
    """Kernels in execution order, the buffers they share, and the layouts they read."""

    buffers: tuple[Buffer, ...]
    kernels: tuple[Kernel, ...]
    layouts: tuple[str, ...]
    outputs: tuple[tuple[str, str], ...]   # (program output name, buffer holding it)

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)


def kernel_reads(kernel: Kernel) -> tuple[str, ...]:
    """The buffers a kernel reads."""
    if isinstance(kernel, GemmKernel):
        return (kernel.a, kernel.w)
    if isinstance(kernel, ViewKernel):
        return (kernel.a,)
    return tuple(n.attr("name") for n in kernel.body.nodes if n.op is Op.INPUT)


def kernel_writes(kernel: Kernel) -> tuple[str, ...]:
    """The buffers a kernel writes."""
    if isinstance(kernel, (GemmKernel, ViewKernel)):
        return (kernel.out,)
    return tuple(n.attr("name") for n in kernel.body.outputs())


def dead_after(program: KernelProgram, keep: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """Per kernel, the temporaries no later kernel reads once it has run (nor the program's
    outputs, nor ``keep``): an executor drops them there, so a program holds at once only
    the buffers still to be read, not every temporary it ever wrote."""
    last: dict[str, int] = {}
    for i, kernel in enumerate(program.kernels):
        for name in (*kernel_writes(kernel), *kernel_reads(kernel)):
            last[name] = i
    held = {buffer for _, buffer in program.outputs} | set(keep)
    dead: list[list[str]] = [[] for _ in program.kernels]
    for name, i in last.items():
        if name not in held and program.buffer(name).role is BufferRole.TEMP:
            dead[i].append(name)
    return tuple(tuple(sorted(names)) for names in dead)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def format_kernel_program(program: KernelProgram) -> str:
    """A readable, stable text form of a level-2 program."""
    lines = ["buffers:"]
    lines += [f"  {b}" for b in program.buffers]
    lines.append(f"layouts: {', '.join(program.layouts) or '-'}")
    lines.append("outputs: " + ", ".join(f"{name} = {buf}" for name, buf in program.outputs))
    for i, kernel in enumerate(program.kernels):
        text = kernel.describe()
        first, *rest = text.splitlines()
        lines.append(f"k{i}: {first}")
        lines += rest
    return "\n".join(lines)


# ---- verifier ------------------------------------------------------------------------

class KernelIRError(ValueError):
    """A level-2 program that breaks an invariant the backends rely on; names the kernel."""


_TRAVERSAL_DOMAINS = ("edge", "compact_src", "compact_dst")


def verify_kernels(program: KernelProgram) -> None:
    """Check a level-2 program: buffers are unique and written once before they are read;
    GEMM operands and results have the shapes their product gives; a traversal's body is
    a valid level-1 program over its domain whose inputs and outputs are the program's
    buffers with the same types, walked in a layout that fits its group; the program's
    outputs are output buffers. Raises :class:`KernelIRError` naming the kernel."""
    buffers: dict[str, Buffer] = {}
    for b in program.buffers:
        if b.name in buffers:
            raise KernelIRError(f"buffer {b.name!r} is declared twice")
        buffers[b.name] = b
    ready = {name for name, b in buffers.items() if b.role in (BufferRole.INPUT, BufferRole.PARAM)}

    def read(where: str, name: str, type_: TensorType | None = None) -> Buffer:
        if name not in buffers:
            raise KernelIRError(f"{where}: reads {name!r}, which is no buffer of the program")
        if name not in ready:
            raise KernelIRError(f"{where}: reads {name!r} before any kernel writes it")
        if type_ is not None and buffers[name].type != type_:
            raise KernelIRError(f"{where}: reads {name!r} as {type_}, but the buffer is {buffers[name].type}")
        return buffers[name]

    def write(where: str, name: str, type_: TensorType | None = None) -> Buffer:
        if name not in buffers:
            raise KernelIRError(f"{where}: writes {name!r}, which is no buffer of the program")
        if name in ready:
            raise KernelIRError(f"{where}: writes {name!r}, which is an input or already written")
        if buffers[name].role not in (BufferRole.TEMP, BufferRole.OUTPUT):
            raise KernelIRError(f"{where}: writes {name!r}, a {buffers[name].role.value} buffer")
        if type_ is not None and buffers[name].type != type_:
            raise KernelIRError(f"{where}: writes {name!r} as {type_}, but the buffer is {buffers[name].type}")
        ready.add(name)
        return buffers[name]

    for i, kernel in enumerate(program.kernels):
        where = f"k{i} ({kernel.describe().splitlines()[0]})"
        if isinstance(kernel, GemmKernel):
            _verify_gemm(where, kernel, read, write)
            continue
        if isinstance(kernel, ViewKernel):
            _verify_view(where, kernel, read(where, kernel.a), write(where, kernel.out))
            continue
        body = kernel.body
        try:
            verify(body)
        except IRError as err:
            raise KernelIRError(f"{where}: its body is not a valid level-1 program: {err}") from None
        if isinstance(kernel, TraversalKernel):
            _verify_walk(where, kernel)
        for node in body.nodes:
            if node.op is Op.INPUT:
                read(where, node.attr("name"), node.type)
            elif node.op in (Op.AGGREGATE, Op.SEGMENT_SOFTMAX, Op.DEGREE) and isinstance(kernel, TraversalKernel):
                if node.attr("index") != kernel.group:
                    raise KernelIRError(f"{where}: %{node.id} reduces along {node.attr('index')}, "
                                        f"not the kernel's group {kernel.group}")
        for node in body.outputs():
            write(where, node.attr("name"), node.type)
    for name, buffer in program.outputs:
        if buffer not in ready:
            raise KernelIRError(f"output {name!r}: buffer {buffer!r} is never written")
        if buffers[buffer].role not in (BufferRole.OUTPUT, BufferRole.INPUT, BufferRole.PARAM):
            raise KernelIRError(f"output {name!r}: buffer {buffer!r} is a {buffers[buffer].role.value} buffer")


def _verify_view(where: str, kernel: ViewKernel, a: Buffer, out: Buffer) -> None:
    if kernel.view is View.RESHAPE:
        if a.type.space != out.type.space or a.type.numel != out.type.numel:
            raise KernelIRError(f"{where}: reshapes {a.type} to {out.type}; expected one space and as many "
                                "elements per row")
        return
    spaces = ("node", "dst_node") if kernel.view is View.DESTINATIONS else ("dst_node", "node")
    if (a.type.space.name, out.type.space.name) != spaces or a.type.shape != out.type.shape:
        raise KernelIRError(f"{where}: maps {a.type} to {out.type}; expected {spaces[0]} rows to "
                            f"{spaces[1]} rows of one shape")


def _verify_walk(where: str, kernel: TraversalKernel) -> None:
    if kernel.domain.name not in _TRAVERSAL_DOMAINS:
        raise KernelIRError(f"{where}: a traversal over {kernel.domain}, which is no graph row space")
    if kernel.group is None:
        if kernel.layout is not TraversalLayout.ROWS or kernel.reductions or kernel.softmax:
            raise KernelIRError(f"{where}: without a group a traversal is row-parallel with no reductions "
                                f"(got layout {kernel.layout}, {len(kernel.reductions)} reductions)")
        return
    if kernel.layout is TraversalLayout.ROWS:
        raise KernelIRError(f"{where}: a traversal grouped by {kernel.group} walks a CSR or COO, not rows")
    if kernel.group.source != kernel.domain:
        raise KernelIRError(f"{where}: group map {kernel.group} reads {kernel.group.source} rows, "
                            f"not the domain {kernel.domain}")
    if any(r.group != kernel.group for r in kernel.reductions):
        raise KernelIRError(f"{where}: reductions {list(map(str, kernel.reductions))} are not all along "
                            f"the group {kernel.group}")


def _verify_gemm(where: str, kernel: GemmKernel, read, write) -> None:
    a = read(where, kernel.a)
    w = read(where, kernel.w)
    if kernel.a_gather is not None and a.type.space != kernel.a_gather.target:
        raise KernelIRError(f"{where}: A is gathered along {kernel.a_gather}, which reads "
                            f"{kernel.a_gather.target} rows, but {kernel.a} is {a.type}")
    rows = kernel.a_gather.source if kernel.a_gather is not None else a.type.space
    if kernel.segment is not None:
        if kernel.segment.source != rows:
            raise KernelIRError(f"{where}: segment map {kernel.segment} types {kernel.segment.source} rows, "
                                f"but the product's rows are {rows}")
        expected = SEGMENT_LAYOUTS.get(kernel.segment.name)
        if kernel.layout is not expected:
            raise KernelIRError(f"{where}: segment map {kernel.segment} is ordered by layout {expected}, "
                                f"not {kernel.layout}")
        if not kernel.weight_grad and w.type.space != kernel.segment.target:
            raise KernelIRError(f"{where}: a typed weight lives in {kernel.segment.target}, got {w.type}")
    elif kernel.layout is not None:
        raise KernelIRError(f"{where}: an untyped GEMM has no segment layout (got {kernel.layout})")
    if kernel.scatter is not None and kernel.scatter.source != rows:
        raise KernelIRError(f"{where}: scatter map {kernel.scatter} reads {kernel.scatter.source} rows, "
                            f"but the product's rows are {rows}")
    if not a.type.shape or not w.type.shape:
        raise KernelIRError(f"{where}: operands need a feature dim (got {a.type} and {w.type})")
    if kernel.weight_grad:
        batch = a.type.shape[:-1] if kernel.batched else ()
        shape = batch + (a.type.shape[-1], w.type.shape[-1])
        space = kernel.segment.target if kernel.segment is not None else None
    else:
        w_in, w_out = (w.type.shape[-1], w.type.shape[-2]) if kernel.transpose_w else w.type.shape[-2:]
        if a.type.shape[-1] != w_in:
            raise KernelIRError(f"{where}: A rows of width {a.type.shape[-1]} do not fit a weight "
                                f"{list(w.type.shape)}{'^T' if kernel.transpose_w else ''}")
        shape = a.type.shape[:-1] + (w_out,)
        space = kernel.scatter.target if kernel.scatter is not None else rows
    out = write(where, kernel.out)
    if out.type.shape != shape or (space is not None and out.type.space != space):
        raise KernelIRError(f"{where}: writes {kernel.out!r} typed {out.type}, but the product gives "
                            f"{space or out.type.space}[{'x'.join(map(str, shape))}]")
