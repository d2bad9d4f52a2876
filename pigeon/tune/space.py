"""The search space, as data.

Per kernel, the template's configurations: a grid of values per parameter, each
clamped to the problem (no block wider than the padded rows or features it covers, no
chunk larger than the rows it hands out), de-duplicated, filtered by a ``keep(config)``
predicate and never empty (the default config is always first and always kept).

Per program, the compiler's decisions as whole-program variants: linear reordering
on/off, compact materialization on/off, traversal layout CSR/COO, each only where the
caller of :func:`pigeon.compile` left it to the cost model. A variant whose level-2
programs equal an earlier one's (the decision has nothing to rewrite in this program)
is dropped, so every variant left is a different program.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from pigeon.codegen import c as c_codegen
from pigeon.codegen.triton import TritonConfig, pad, traversal_mode
from pigeon.codegen.triton import default_config as triton_default
from pigeon.data.graph import HeteroGraph
from pigeon.ir.kernel_ir import (DenseKernel, GemmKernel, KernelProgram, TraversalKernel, TraversalLayout,
                                 format_kernel_program)
from pigeon.runtime.choice import Choice
from pigeon.runtime.compiled import TRAVERSAL_LAYOUTS, Compiled, resolve_backend
from pigeon.runtime.interpret import space_size
from pigeon.runtime.graph_index import GRAPH_INDEX

Keep = Callable[[Any], bool]

#: The grids the candidates are drawn from, before clamping.
C_CHUNKS = (0, 1, 4, 16, 64, 256)
TRITON_BLOCKS = (16, 32, 64, 128, 256)
TRITON_WARPS = (2, 4, 8)
TRITON_STAGES = (2, 3)
GEMM_BLOCK_M = (16, 32, 64, 128)
GEMM_BLOCK_N = (32, 64, 128)
GEMM_BLOCK_K = (16, 32, 64)
GEMM_WARPS = (4, 8)
GEMM_STAGES = (2, 3, 4)


@dataclass(frozen=True)
class KernelSpace:
    """One kernel's candidates: ``name`` in its program (``"k3"``), which half of the
    plan (``"forward"``/``"backward"``), a short description, the configs with the
    default first, and ``rows``, the rows it walks (the search visits big kernels first)."""

    name: str
    half: str
    what: str
    candidates: tuple[Any, ...]
    rows: int = 0

    @property
    def default(self) -> Any:
        return self.candidates[0]


def finish(default: Any, generated: Iterable[Any], keep: Keep | None = None) -> tuple[Any, ...]:
    """The default first, then ``generated`` de-duplicated (in order) and filtered by
    ``keep``; the default is kept whatever ``keep`` says, so the space is never empty."""
    out = [default]
    for config in generated:
        if config not in out and (keep is None or keep(config)):
            out.append(config)
    return tuple(out)


def _clamp_pow2(value: int, size: int, lo: int) -> int:
    """``value`` clamped to ``[lo, max(lo, pad(size))]``: no tile wider than the padded size."""
    return max(lo, min(value, max(lo, pad(size))))


# ---- per kernel ----------------------------------------------------------------------

def c_space(kernel: TraversalKernel, rows: int, keep: Keep | None = None) -> tuple[c_codegen.CConfig, ...]:
    """OpenMP schedules x chunks for a C traversal handing out ``rows`` groups (or rows).

    A chunk is clamped to ``rows``; a static schedule whose chunk covers every row is the
    same as one chunk, so it is written as chunk ``rows``."""
    rows = max(rows, 1)
    generated = (c_codegen.CConfig(schedule, min(chunk, rows))
                 for schedule in c_codegen.SCHEDULES for chunk in C_CHUNKS)
    return finish(c_codegen.default_config(kernel), generated, keep)


def triton_space(kernel: TraversalKernel | DenseKernel, rows: int, longest_group: int,
                 keep: Keep | None = None) -> tuple[TritonConfig, ...]:
    """Blocks x warps x stages for a Triton traversal or dense kernel. A ``csr``-mode
    block walks one group, so it is clamped to the longest group; a ``rows``-mode block
    to the rows of the domain (both padded, at least 16)."""
    size = longest_group if traversal_mode(kernel) is TraversalLayout.CSR else rows
    generated = (TritonConfig(_clamp_pow2(block, size, 16), warps, stages)
                 for block, warps, stages in itertools.product(TRITON_BLOCKS, TRITON_WARPS, TRITON_STAGES))
    return finish(triton_default(kernel), generated, keep)


def gemm_space(weight_grad: bool, rows: int, n: int, k: int, dtype: torch.dtype,
               keep: Keep | None = None) -> tuple[Any, ...]:
    """Tiles x warps x stages for a Triton GEMM over ``rows`` rows, output width ``n`` and
    depth ``k`` (a weight gradient's output tile is ``[BLOCK_K, BLOCK_N]``, so there
    ``BLOCK_K`` is clamped to ``k`` and ``BLOCK_M`` walks the rows). fp64 tiles stay at
    most 64 x 64: an fp64 accumulator takes twice the registers."""
    from pigeon.codegen.triton_gemm import GemmConfig, default_config

    def fits(config: GemmConfig) -> bool:
        tile = (config.BLOCK_K if weight_grad else config.BLOCK_M) * config.BLOCK_N
        return dtype != torch.float64 or tile <= 64 * 64

    generated = []
    for m, nn, kk, warps, stages in itertools.product(GEMM_BLOCK_M, GEMM_BLOCK_N, GEMM_BLOCK_K, GEMM_WARPS,
                                                      GEMM_STAGES):
        config = GemmConfig(_clamp_pow2(m, rows, 16), _clamp_pow2(nn, n, 16), _clamp_pow2(kk, k, 16), warps, stages)
        if fits(config):
            generated.append(config)
    return finish(GemmConfig(**default_config(weight_grad, n, k, dtype)), generated, keep)


def kernel_spaces(program: KernelProgram, half: str, backend: str, graph: HeteroGraph, dtype: torch.dtype,
                  keep: Keep | None = None) -> list[KernelSpace]:
    """The space of every tunable kernel of ``program`` on ``backend``, in program order
    (the torch backend has none; the cpu backend's GEMMs and dense kernels are torch's)."""
    spaces = []
    for i, kernel in enumerate(program.kernels):
        name = f"k{i}"
        what = kernel.describe().splitlines()[0]
        if backend == "cpu" and isinstance(kernel, TraversalKernel):
            rows = (GRAPH_INDEX.group_csr(graph, kernel.group)[0].numel() - 1 if kernel.group is not None
                    else space_size(graph, kernel.domain))
            candidates = c_space(kernel, rows, keep)
        elif backend == "triton" and isinstance(kernel, (TraversalKernel, DenseKernel)):
            domain = kernel.domain if isinstance(kernel, TraversalKernel) else kernel.space
            rows = space_size(graph, domain)
            longest = 1
            if isinstance(kernel, TraversalKernel) and kernel.group is not None:
                counts = GRAPH_INDEX.counts(graph, kernel.group)
                longest = int(counts.max()) if counts.numel() else 1
            candidates = triton_space(kernel, rows, longest, keep)
        elif backend == "triton" and isinstance(kernel, GemmKernel):
            a_type, w_type = program.buffer(kernel.a).type, program.buffer(kernel.w).type
            k = a_type.shape[-1] if a_type.shape else 1
            n = w_type.shape[-1] if kernel.weight_grad or not kernel.transpose_w else w_type.shape[-2]
            rows = space_size(graph, a_type.space)
            candidates = gemm_space(kernel.weight_grad, rows, n, k, dtype, keep)
        else:
            continue
        spaces.append(KernelSpace(name, half, what, candidates, rows))
    return spaces


# ---- per program ---------------------------------------------------------------------

def _programs(compiled: Compiled, graph: HeteroGraph, tensors: dict[str, torch.Tensor], mode: str,
              choice: Choice) -> str:
    """The level-2 program(s) ``choice`` builds, as text: forward, and backward in training."""
    plan = compiled.plan(graph, tensors, choice)
    text = format_kernel_program(plan.forward_kernels)
    return text + "\n" + format_kernel_program(plan.backward_kernels) if mode == "train" else text


def program_variants(compiled: Compiled, graph: HeteroGraph, tensors: dict[str, torch.Tensor],
                     mode: str) -> list[Choice]:
    """The default choice (the cost model's decisions), then every combination of the
    decisions :func:`pigeon.compile` left open whose level-2 program (forward, and
    backward in training) differs from every earlier one's."""
    options = compiled.options
    reorders = [options.reorder] if options.reorder is not None else [False, True]
    compacts = [options.compact] if options.compact is not None else [False, True]
    backend = resolve_backend(compiled.backend, graph.device)
    layouts = [compiled.layout] if compiled.layout is not None else [v for v in TRAVERSAL_LAYOUTS[backend] if v]
    variants, seen = [], set()
    for choice in [Choice(), *(Choice(r, c, lay) for r, c, lay in itertools.product(reorders, compacts, layouts))]:
        programs = _programs(compiled, graph, tensors, mode, choice)
        if programs not in seen:
            seen.add(programs)
            variants.append(choice)
    return variants
