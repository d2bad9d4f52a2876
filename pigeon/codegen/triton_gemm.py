"""Triton code generation for GEMM kernels: the template's structure, configs and rendering.

The template (``kernels/gemm.py.jinja``) owns the kernel's structure; this module
decides that structure from the kernel spec (:class:`GemmStructure`) and renders it.
Launching it with the graph's index arrays, and how its tiles find their segments, is
the runtime's job (:mod:`pigeon.runtime.triton_gemm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pigeon.codegen.templates import render
from pigeon.ir.graph_ir import TensorType
from pigeon.ir.kernel_ir import GemmKernel, KernelProgram

@dataclass(frozen=True)
class GemmStructure:
    """What the template emits for one GEMM kernel, and the buffer types it checks.

    ``store`` is ``"store"`` (row p), ``"permuted"`` (row ``perm[p]``) or ``"scatter"``.
    ``batch``: A rows carry leading dims ``[..., K]`` (a grid axis, or a loop for
    ``batch_sum``, a weight gradient shared by them).
    """

    typed: bool
    permuted: bool
    a_indexed: bool
    store: str
    weight_grad: bool
    b_indexed: bool
    batch: bool
    batch_sum: bool
    a_type: TensorType
    w_type: TensorType


@dataclass(frozen=True)
class GemmConfig:
    """Tile sizes and launch options of one GEMM kernel.

    Args:
        BLOCK_M (int): rows per tile (a weight gradient: rows per step of its loop).
        BLOCK_N (int): output columns per tile.
        BLOCK_K (int): depth per step (a weight gradient: output rows per tile).
        num_warps (int): warps per program. Default 4.
        num_stages (int): software-pipelining stages of the K loop. Default 3.

    Every block is a power of two of at least 16 (``tl.dot``'s minimum).
    """

    BLOCK_M: int
    BLOCK_N: int
    BLOCK_K: int
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 16 or value & (value - 1):
                raise ValueError(f"Expected `{name}` to be a power of two of at least 16 (got {value!r})")
        if not isinstance(self.num_warps, int) or self.num_warps < 1 or self.num_warps & (self.num_warps - 1):
            raise ValueError(f"Expected `num_warps` to be a positive power of two (got {self.num_warps!r})")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"Expected `num_stages` to be a positive int (got {self.num_stages!r})")

    def as_dict(self) -> dict[str, int]:
        return {"BLOCK_M": self.BLOCK_M, "BLOCK_N": self.BLOCK_N, "BLOCK_K": self.BLOCK_K,
                "num_warps": self.num_warps, "num_stages": self.num_stages}


@dataclass(frozen=True)
class TritonGemm:
    name: str          # prefix of every @triton.jit function in ``source``
    source: str        # Triton source text (no imports; the module prelude has torch, triton, tl)
    kernel: GemmKernel
    structure: GemmStructure
    config: GemmConfig | None = None   # None: :func:`default_config` of the launch's shape and dtype


def gemm_structure(kernel: GemmKernel, program: KernelProgram) -> GemmStructure:
    """The template's structure for ``kernel``, from the spec and the buffer types."""
    typed = kernel.segment is not None
    permuted = typed and kernel.layout.permuted
    a_type, w_type = program.buffer(kernel.a).type, program.buffer(kernel.w).type
    if kernel.scatter is not None:
        store = "scatter"
    else:
        store = "permuted" if permuted else "store"
    batch = len(a_type.shape) > 1
    return GemmStructure(
        typed=typed,
        permuted=permuted,
        a_indexed=kernel.a_gather is not None or permuted,
        store=store,
        weight_grad=kernel.weight_grad,
        b_indexed=kernel.weight_grad and permuted,
        batch=batch,
        batch_sum=kernel.weight_grad and batch and not kernel.batched,
        a_type=a_type,
        w_type=w_type,
    )


def render_gemm(kernel: GemmKernel, name: str, program: KernelProgram,
                config: GemmConfig | None = None) -> TritonGemm:
    """Render ``kernel`` as one ``@triton.jit`` function, ``{name}_kernel``, launched
    with ``config`` (default: :func:`default_config` of the launch's shape and dtype)."""
    s = gemm_structure(kernel, program)
    launch = "default" if config is None else ", ".join(f"{k}={v}" for k, v in config.as_dict().items())
    source = render(
        "gemm.py.jinja", header=kernel.describe(), name=name, typed=s.typed, a_indexed=s.a_indexed,
        store=s.store, weight_grad=s.weight_grad, b_indexed=s.b_indexed, batch=s.batch,
        batch_sum=s.batch_sum, transpose_w=kernel.transpose_w and not kernel.weight_grad, launch=launch,
    )
    return TritonGemm(name, source.rstrip() + "\n", kernel, s, config)


# ---- configs -------------------------------------------------------------------------

def _pow2(n: int, lo: int, hi: int) -> int:
    """The power of two covering ``n``, clamped to ``[lo, hi]`` (tl.dot needs >= 16)."""
    return max(lo, min(hi, 1 << (max(n, 1) - 1).bit_length()))


def default_config(weight_grad: bool, n: int, k: int, dtype: torch.dtype) -> dict[str, int]:
    """Tile sizes and launch options for a GEMM with output width ``n`` and depth ``k``.

    ``BLOCK_M`` is rows per tile (a weight gradient: rows per step of its loop).
    fp64 tiles are kept narrower: an fp64 accumulator takes twice the registers.
    """
    wide = 64 if dtype == torch.float64 else 128
    if weight_grad:   # the output tile is [BLOCK_K, BLOCK_N]
        block_k, block_n = _pow2(k, 16, 64), _pow2(n, 16, 64)
    else:
        block_k, block_n = _pow2(k, 16, 64), _pow2(n, 16, wide)
    return {"BLOCK_M": 64, "BLOCK_N": block_n, "BLOCK_K": block_k, "num_warps": 4, "num_stages": 3}
