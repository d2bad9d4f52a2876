"""C code generation for segmented GEMMs (``kernels/gemm.c.jinja``): a typed GEMM on
vector rows, specialised for its widths.

Blocks of up to :data:`GEMM_BLOCK_ROWS` rows of one type are spread over threads; A's
rows are gathered and result rows placed (or left in segment order for a scatter) inside
the kernel; a :data:`GEMM_ROW_TILE` x :data:`GEMM_COL_TILE` register tile. The weight
gradient adds into per-thread slices that the caller sums, so no atomics.
"""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.codegen.templates import render
from pigeon.ir.kernel_ir import GemmKernel

GEMM_ROW_TILE = 4     # rows per register tile of the forward micro-kernel
GEMM_COL_TILE = 32    # output columns per tile: RB x NB accumulators fill the AVX2 registers
GEMM_BLOCK_ROWS = 64  # rows per block a thread takes (one type's rows in segment order)


@dataclass(frozen=True)
class CGemm:
    """A rendered segmented GEMM: its C source and the widths it was specialised for.

    Called with ``args = (A, rows or NULL, W or B, blocks, out, place or NULL)`` and
    ``sizes = (number of blocks, number of types, threads)``; see ``kernels/gemm.c.jinja``.
    A, W (or B) and ``out`` hold the library's ``storage`` type, except a weight
    gradient's ``out`` (per-thread partial sums, which the caller adds up): ``real``, the
    compute type. A GEMM that scatters writes its rows (stored, so rounded) for the
    caller to sum into their targets in the compute type.
    """

    name: str
    source: str
    k: int
    n: int
    weight_grad: bool


def gemm_supported(kernel: GemmKernel, a_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether the C template takes this GEMM: typed, one vector per row, one matrix per
    type (the batched, per-head form stays on torch)."""
    if kernel.segment is None or kernel.batched or len(a_shape) != 1:
        return False
    return len(w_shape) == 1 if kernel.weight_grad else len(w_shape) == 2


def render_gemm(kernel: GemmKernel, name: str, k: int, n: int) -> CGemm:
    """Render one segmented GEMM as a C function ``name`` for A rows of width ``k`` and
    outputs of width ``n`` (the weight, transposed by the caller if ``transpose_w``, is
    ``[types, k, n]``)."""
    tiles = [(start, min(GEMM_COL_TILE, n - start)) for start in range(0, n, GEMM_COL_TILE)]
    k_tile = next(t for t in (4, 2, 1) if k % t == 0)
    # A weight gradient's per-thread partial sums are summed by the caller: they stay
    # `real`, so the sum is rounded once (see CGemm).
    wide = kernel.weight_grad
    source = render("gemm.c.jinja", title=kernel.describe(), name=name, K=k, N=n, RB=GEMM_ROW_TILE,
                    KB=k_tile, tiles=tiles, weight_grad=kernel.weight_grad,
                    out_type="real" if wide else "storage", store="" if wide else "STORE")
    return CGemm(name, source, k, n, kernel.weight_grad)
