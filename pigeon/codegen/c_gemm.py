"""C code generation for segmented GEMMs (``kernels/gemm.c.jinja``): a typed GEMM
specialised for its widths, on rows of one vector or of several (``[rows, *mid, K]``),
with one matrix per type shared by a row's vectors or one per type and vector (per-head
weights ``[types, *mid, K, N]``, the ``batched`` form).

Blocks of rows of one type are spread over threads (:func:`block_positions` positions
each, about :data:`GEMM_BLOCK_ROWS` vectors). A's rows are gathered and result rows
placed inside the kernel, or, for a scatter, summed into the targets after the blocks,
each target row by one thread through a CSR of the scatter over the positions. The
micro-kernels keep a tile of SIMD vector accumulators in registers, sized in the C for
the vector width the compiler targets. A transposed weight is packed once per call. The
weight gradient writes a type of one block straight into its output and sums the
others through per-thread slices, so no atomics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pigeon.codegen.templates import render
from pigeon.ir.kernel_ir import GemmKernel

GEMM_BLOCK_ROWS = 64  # vectors per block a thread takes (one type's rows in segment order)
GEMM_MAX_RB = 8       # the template's bound on its register tile's rows (padding room)


@dataclass(frozen=True)
class CGemm:
    """A rendered segmented GEMM: its C source and the shapes it was specialised for.

    Called with ``args = (A, rows or NULL, W or B, blocks, out, place or NULL, slots,
    scratch, scatter rowptr, scatter positions, scatter result)`` and ``sizes = (blocks,
    types, threads, types of several blocks, scatter targets)``, where ``blocks`` cuts
    each type's positions into runs of at most ``block_positions``; the arguments a form
    does not read are NULL or 0. See ``kernels/gemm.c.jinja``.
    ``vectors`` is the number of K-vectors of an A row (``prod(mid)``), ``heads`` the
    number of weight matrices per type (``vectors`` when batched, else 1).
    A, W (or B), ``out`` and the scatter's result hold the library's ``storage`` type,
    except a weight gradient's ``out`` and its slices: ``real``, the compute type (the
    caller rounds it once). ``scratch`` holds W's matrices packed in ``real`` where W is
    transposed or ``storage`` is narrower than ``real``.
    """

    name: str
    source: str
    k: int
    n: int
    vectors: int
    heads: int
    weight_grad: bool
    block_positions: int


def gemm_supported(kernel: GemmKernel, a_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether the C template takes this GEMM: a typed one (an untyped GEMM is one BLAS
    call) on rows ``[*mid, K]`` with one matrix per type (``[K, N]``), or one per type
    and vector of ``mid`` when batched (``[*mid, K, N]``); a weight gradient's B rows
    are ``[*mid, N]``."""
    if kernel.segment is None or not a_shape:
        return False
    mid = a_shape[:-1]
    if kernel.weight_grad:
        return w_shape[:-1] == mid
    return w_shape[:-2] == (mid if kernel.batched else ()) and len(w_shape) >= 2


def block_positions(vectors: int, heads: int) -> int:
    """Positions per block: about :data:`GEMM_BLOCK_ROWS` rows for each weight matrix
    (a position carries ``vectors // heads`` rows of one matrix)."""
    return max(1, GEMM_BLOCK_ROWS // (vectors // heads))


def render_gemm(kernel: GemmKernel, name: str, a_shape: tuple[int, ...], n: int) -> CGemm:
    """Render one segmented GEMM as a C function ``name`` for A rows of shape ``a_shape``
    (``[*mid, K]``) and outputs of width ``n`` (the weight, transposed by the caller if
    ``transpose_w``, is ``[types, K, n]``, or ``[types, *mid, K, n]`` when batched)."""
    k, vectors = a_shape[-1], math.prod(a_shape[:-1])
    heads = vectors if kernel.batched else 1
    shared = vectors // heads   # the vectors of a position that one matrix multiplies
    positions = block_positions(vectors, heads)
    source = render("gemm.c.jinja", title=kernel.describe(), name=name, K=k, N=n, S=vectors, H=heads, SUB=shared,
                    max_rows=positions * shared + GEMM_MAX_RB, max_rb=GEMM_MAX_RB, weight_grad=kernel.weight_grad,
                    transpose=kernel.transpose_w and not kernel.weight_grad,
                    scatter=kernel.scatter is not None and not kernel.weight_grad)
    return CGemm(name, source, k, n, vectors, heads, kernel.weight_grad, positions)
