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

from pigeon.ir.builder import format_program
from pigeon.ir.graph_ir import IndexMap, Program, Space, TensorType


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
    layout: str | None = None

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

    ``layout`` says how the rows are walked: ``csr_dst``/``csr_src``/... node-parallel
    over a CSR of the group (no atomics), or ``coo`` edge-parallel (atomics for the
    reductions). ``reductions`` and ``softmax`` summarise what the body does.
    """

    domain: Space
    group: IndexMap | None
    layout: str
    body: Program
    reductions: tuple[str, ...] = ()
    softmax: bool = False

    def describe(self) -> str:
        head = f"traversal over {self.domain}"
        if self.group is not None:
            head += f" grouped by {self.group}"
        head += f"  layout={self.layout}"
        if self.reductions:
            head += f"  reduce=[{', '.join(self.reductions)}]"
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


Kernel = GemmKernel | TraversalKernel | DenseKernel


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
