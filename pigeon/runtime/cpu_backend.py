"""The CPU backend: traversal kernels compiled to C with OpenMP and called through ctypes.

Per program and dtype, every traversal kernel is rendered into one C file, compiled
with the system C compiler into a shared library named by the hashes of its source and
flags, the host CPU and the compiler's version under ``PIGEON_CACHE_DIR`` (default
``~/.cache/pigeon``), and loaded with ctypes; a later process finds the library on disk
and skips the compiler.

Typed GEMMs run as generated C too (``kernels/gemm.c.jinja``), on rows of one vector
or of several (per-head weights, or one weight shared by a row's vectors): the gather
of A's rows and the placement of the result rows are fused into the kernel, its row
blocks spread over threads whatever the type sizes, and its micro-kernel keeps a tile
of SIMD accumulators in registers (explicit FMAs).
Measured on the 2-core development machine (``bench/gemm.py``, one thread, CPU time),
it beats torch's per-type loop from 8 to 100,000 rows per type, skewed or uniform, and
one batched ``bmm`` of uniform types, by 1.2x to 8x; the kernel alone, on 100,000 rows
of one type (K = N = 64 and 128, float32), runs at 110 to 150 GFLOP/s where
``torch.matmul`` reaches 88 on 2048^2 matrices. Torch keeps only the transposed product
of one row per matrix over uniform types (:meth:`CpuExecutor.gemm_in_c`), untyped GEMMs (one BLAS call) and dense kernels.

Graph-side arrays the kernels read (int64 index maps, the CSR of each group) come from
the per-graph cache every backend shares (:class:`~pigeon.runtime.graph_index.GraphIndex`).

Every dtype of :data:`~pigeon.runtime.precision.STORAGE_DTYPES` has a library of its own:
bfloat16 and float16 buffers are converted to float in registers as the kernels read
them and rounded as they write them (``kernels/library.c.jinja``); per-thread partial
sums and scratch rows are float; a GEMM converts a block's rows into a small per-thread
float buffer as the block starts and each used weight matrix once, and the rows it
scatters are stored, then summed per target in float (``kernels/gemm.c.jinja``).
Dense kernels of row-wise work run as generated C too, one pass over their rows
(:func:`rows_kernel`): HGT's per-type bias, gate and skip mixing read and write each row
once instead of once per torch operation. A dense kernel that sums all rows of a space
into one (a bias gradient), or over the global space, or with an op the C rules do not
have, runs as torch operations, each storing its result in the dtype (torch sums 16-bit
values in float32).
"""

from __future__ import annotations

import ctypes
from typing import Mapping

import torch

from pigeon.codegen.c import CConfig, CKernel, CodegenError, render_library, render_traversal
from pigeon.codegen.c_gemm import CGemm, gemm_supported, render_gemm
from pigeon.codegen.rules import ArgKind
from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import GLOBAL, Op, Unary
from pigeon.ir.kernel_ir import DenseKernel, GemmKernel, KernelProgram, TraversalKernel, TraversalLayout, ViewKernel
from pigeon.clib import CompilerError, build_library
from pigeon.runtime import kernel_args
from pigeon.runtime.graph_index import GRAPH_INDEX, PerGraphCache
from pigeon.runtime.interpret import run, space_size
from pigeon.runtime.precision import HALF_DTYPES, check_storage, compute_dtype
from pigeon.runtime.profiling import kernel_ranges
from pigeon.runtime.torch_backend import DeadBuffers, TorchExecutor, run_body, run_view
from pigeon.version import __version__

SPLIT_BLOCK_ROWS = 256      # rows per block of a traversal split over few groups

#: The C element type of each storage dtype (``storage`` in ``kernels/library.c.jinja``).
C_TYPES = {torch.float64: "double", torch.float32: "float", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class CpuExecutor:
    """Runs one level-2 program with C traversals and typed GEMMs, torch untyped GEMMs and
    torch dense kernels.

    Args:
        program (KernelProgram): the level-2 program.
        configs (mapping of str to CConfig, optional): per traversal kernel, by name
            (``"k3"`` is ``program.kernels[3]``), its OpenMP schedule; kernels not named
            keep :func:`pigeon.codegen.c.default_config`. Default: none.
        poison (bool, optional): fill every output a generated kernel writes with NaN
            before it runs, so an element it skips shows. Default: the ``PIGEON_POISON``
            environment variable (:mod:`pigeon.runtime.kernel_args`).
    """

    def __init__(self, program: KernelProgram, configs: Mapping[str, CConfig] | None = None,
                 poison: bool | None = None):
        self.program = program
        self.poison = kernel_args.poison_requested() if poison is None else poison
        self.gemms = TorchExecutor(program)
        self.index = GRAPH_INDEX
        self.dead = DeadBuffers(program)
        configs = dict(configs or {})
        names = {f"k{i}": i for i, k in enumerate(program.kernels) if isinstance(k, TraversalKernel)}
        for name, config in configs.items():
            if name not in names or not isinstance(config, CConfig):
                raise ValueError(f"Expected `configs` to map traversal kernel names of this program "
                                 f"({sorted(names)}) to CConfig (got {name!r}: {config!r})")
        self._traversals = {i: (name, configs.get(name)) for name, i in names.items()}
        # Rendered for buffers of `real`; the 16-bit libraries render their traversals
        # again, converting rows as they read them (_narrow).
        self.rendered: dict[int, CKernel | CGemm] = {
            i: render_traversal(program.kernels[i], name, config) for i, (name, config) in self._traversals.items()
        }
        # Row-wise dense kernels as C traversals without a group (rows_kernel).
        self._rows: dict[int, TraversalKernel] = {}
        for i, k in enumerate(program.kernels):
            rows = rows_kernel(k) if isinstance(k, DenseKernel) else None
            if rows is not None:
                self._rows[i] = rows
                self.rendered[i] = render_traversal(rows, f"k{i}")
        for i, k in enumerate(program.kernels):
            if isinstance(k, GemmKernel):
                a_shape, w_shape = program.buffer(k.a).type.shape, program.buffer(k.w).type.shape
                if gemm_supported(k, a_shape, w_shape):
                    n = w_shape[-1] if k.weight_grad else w_shape[-2 if k.transpose_w else -1]
                    self.rendered[i] = render_gemm(k, f"g{i}", a_shape, n)
        self._libraries: dict[torch.dtype, ctypes.CDLL] = {}
        self._narrow: dict[int, CKernel | CGemm] | None = None

    def kernels(self, dtype: torch.dtype) -> dict[int, CKernel | CGemm]:
        """The rendered kernels of the library for ``dtype``, by kernel index."""
        if dtype not in HALF_DTYPES:
            return self.rendered
        if self._narrow is None:
            self._narrow = {**self.rendered, **{
                i: render_traversal(self.program.kernels[i], name, config, narrow=True)
                for i, (name, config) in self._traversals.items()}, **{
                i: render_traversal(rows, f"k{i}", narrow=True) for i, rows in self._rows.items()}}
        return self._narrow

    def source(self, dtype: torch.dtype = torch.float32) -> str:
        """The C file this program compiles to for buffers of ``dtype``."""
        check_storage(dtype, "cpu")
        return render_library(list(self.kernels(dtype).values()), C_TYPES[dtype], __version__)

    def library(self, dtype: torch.dtype) -> ctypes.CDLL:
        if dtype not in self._libraries:
            library, _ = build_library(self.source(dtype))
            for name in [kernel.name for kernel in self.kernels(dtype).values()]:
                getattr(library, name).restype = None
            self._libraries[dtype] = library
        return self._libraries[dtype]

    def _launch(self, library, kernel: CKernel, traversal: TraversalKernel, graph: HeteroGraph,
                env: dict, dtype: torch.dtype) -> None:
        if kernel.group is not None:
            size = self.index.group_csr(graph, kernel.group)[0].numel() - 1
        else:
            size = graph_rows(graph, traversal)
        threads = torch.get_num_threads()
        compute = compute_dtype(dtype)   # what partial sums and scratch rows hold (`real`)
        pointers, keep = [], []
        for arg in kernel.args:
            if arg.kind.graph_array:
                tensor = kernel_args.graph_array(graph, arg, kernel.group, SPLIT_BLOCK_ROWS)
            elif arg.kind is ArgKind.PARTIAL:
                tensor = torch.zeros(threads * size * arg.key, dtype=compute)
            elif arg.kind is ArgKind.SCRATCH:
                tensor = torch.empty(threads * self.index.largest(graph, kernel.group) * arg.key, dtype=compute)
            elif arg.kind is ArgKind.OUTPUT:
                tensor = kernel_args.output(graph, arg, size, dtype, poison=self.poison)
                env[arg.key] = tensor
            else:
                tensor = env[arg.key].contiguous()
                if tensor.dtype != dtype:
                    raise ValueError(f"buffer {arg.key}: expected {dtype}, got {tensor.dtype}")
            keep.append(tensor)
            pointers.append(tensor.data_ptr())
        args = (ctypes.c_void_p * len(pointers))(*pointers)
        if kernel.split:
            blocks = self.index.group_blocks(graph, kernel.group, SPLIT_BLOCK_ROWS).shape[0]
            sizes = (ctypes.c_int64 * 3)(size, blocks, threads)
        elif kernel.scratch:
            sizes = (ctypes.c_int64 * 3)(size, self.index.largest(graph, kernel.group), threads)
        else:
            sizes = (ctypes.c_int64 * 1)(size)
        getattr(library, kernel.name)(args, sizes)

    def _gemm(self, library, rendered: CGemm, k: GemmKernel, graph: HeteroGraph, env: dict,
              dtype: torch.dtype) -> torch.Tensor | None:
        """One typed GEMM through its C kernel; None where torch is the faster choice for
        this graph (:meth:`gemm_in_c`)."""
        if not self.gemm_in_c(k, rendered, graph):
            return None
        return self.run_gemm(library, rendered, k, graph, env, dtype)

    def gemm_in_c(self, k: GemmKernel, rendered: CGemm, graph: HeteroGraph) -> bool:
        """Whether the generated kernel runs typed GEMM ``k`` on ``graph``: always, except a
        transposed product of one row per weight matrix with every type alike (HGT's
        per-(node type, edge type) data gradients), where the C kernel would transpose
        each matrix for a single row and torch's one batched product reads it in place."""
        if not k.transpose_w or k.weight_grad:
            return True
        bounds = self.index.segments(graph, k.segment, k.layout)[1]
        used, uniform = self.index.segment_profile(graph, k.segment, k.layout)
        rows_per_matrix = bounds[-1] // max(used, 1) * (rendered.vectors // rendered.heads)
        return not (uniform and rows_per_matrix == 1)

    def run_gemm(self, library, rendered: CGemm, k: GemmKernel, graph: HeteroGraph, env: dict,
                 dtype: torch.dtype) -> torch.Tensor:
        """Typed GEMM ``k`` through its C kernel ``rendered`` of ``library``."""
        index = self.index
        perm, bounds = index.segments(graph, k.segment, k.layout)
        types = len(bounds) - 1
        a, w = env[k.a].contiguous(), env[k.w]
        if a.dtype != dtype or w.dtype != dtype:
            raise ValueError(f"GEMM {k.out}: expected {dtype} operands, got {a.dtype} and {w.dtype}")
        rows = index.sorted_rows(graph, k.a_gather, k.segment, k.layout)
        if index.in_order(graph, k.segment, k.layout):
            perm, rows = None, rows if k.a_gather is not None else None
        rows, perm = (None if v is None else v.contiguous() for v in (rows, perm))
        blocks = index.blocks(graph, k.segment, k.layout, rendered.block_positions)
        threads = torch.get_num_threads()
        mid = a.shape[1:-1]
        slot, shared_types = _SLOTS(graph, k, rendered.block_positions, types)
        scratch, scatter = None, [None, None, None]
        compute = compute_dtype(dtype)   # `real`: what a weight gradient and packed weights hold
        if k.weight_grad:
            heads = mid if k.batched else ()
            out = kernel_args.new_output((types, *heads, rendered.k, rendered.n), compute, poison=self.poison)
            scratch = torch.empty(max(threads * shared_types, 1), *out.shape[1:], dtype=compute)  # per-thread slices
            place, w = perm, w.contiguous()
        else:
            out = kernel_args.new_output((bounds[-1], *mid, rendered.n), dtype, poison=self.poison)
            place, w = (perm if k.scatter is None else None), w.contiguous()
            if k.transpose_w or compute != dtype:   # where the kernel packs W (transposed, or in `real`)
                scratch = torch.empty(w.shape[0], *w.shape[1:-2], rendered.k, rendered.n, dtype=compute)
            if k.scatter is not None:   # `out` in segment order, summed into the targets by the kernel
                target_ptr, target_pos, size = _SCATTER_CSR(graph, k)
                summed = kernel_args.new_output((size, *mid, rendered.n), dtype, poison=self.poison)
                scatter = [target_ptr, target_pos, summed]
        pointers = [0 if v is None else v.data_ptr()
                    for v in (a, rows, w, blocks, out, place, slot, scratch, *scatter)]
        targets = 0 if scatter[2] is None else scatter[2].shape[0]
        sizes = (blocks.shape[0], types, threads, shared_types, targets)
        getattr(library, rendered.name)((ctypes.c_void_p * 11)(*pointers), (ctypes.c_int64 * 5)(*sizes))
        if k.weight_grad:
            return out.to(dtype)   # summed in `real`, rounded once
        return out if scatter[2] is None else scatter[2]

    def __call__(self, graph: HeteroGraph, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 keep: tuple[str, ...] = (), scope: str = "") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Run the program: (outputs by name, the buffers named in ``keep``). Under a
        profiler each kernel is a range named ``{scope}/k{i}: ...``."""
        if graph.device.type != "cpu":
            raise ValueError(f"backend='cpu' runs on CPU tensors (the graph is on {graph.device})")
        check_storage(dtype, "cpu")
        library = self.library(dtype) if self.rendered else None
        if library is not None:
            library.pigeon_set_threads(torch.get_num_threads())
        env = dict(tensors)
        ranges = kernel_ranges(self, self.program, scope)
        for i, (kernel, dead) in enumerate(zip(self.program.kernels, self.dead(keep))):
            with ranges(i):
                if isinstance(kernel, GemmKernel):
                    rendered = self.rendered.get(i)
                    out = None if rendered is None else self._gemm(library, rendered, kernel, graph, env, dtype)
                    env[kernel.out] = self.gemms.gemm(kernel, graph, env) if out is None else out
                elif isinstance(kernel, TraversalKernel):
                    self._launch(library, self.rendered[i], kernel, graph, env, dtype)
                elif i in self._rows:
                    self._launch(library, self.rendered[i], self._rows[i], graph, env, dtype)
                elif isinstance(kernel, ViewKernel):
                    env[kernel.out] = run_view(kernel, graph, self.program, env)
                else:   # dense: torch ops, each storing its result (run_body)
                    env.update(run_body(kernel.body, graph, env, dtype, fused=False))
            for name in dead:
                del env[name]
        return {name: env[buffer] for name, buffer in self.program.outputs}, {name: env[name] for name in keep}


class _WeightGradSlots(PerGraphCache):
    """Per graph and GEMM segmentation, where the C weight gradient sums each type
    (``kernels/gemm.c.jinja``): -1 no rows, -2 one block (straight into the output), or
    the type's index among those of several blocks (per-thread slices), and their count."""

    def __call__(self, graph: HeteroGraph, k: GemmKernel, positions: int, types: int) -> tuple[torch.Tensor, int]:
        def build():
            blocks = GRAPH_INDEX.blocks(graph, k.segment, k.layout, positions)
            count = torch.bincount(blocks[:, 0], minlength=types)
            several = count > 1
            slot = torch.where(count == 0, -1, -2)
            slot[several] = torch.arange(int(several.sum()))
            return slot.contiguous(), int(several.sum())
        return self._memo(graph, (k.segment.name, positions), build)


_SLOTS = _WeightGradSlots()


class _ScatterCsr(PerGraphCache):
    """Per graph and GEMM, the positions (in segment order) that the scatter adds into
    each target row, as a CSR (rowptr, positions in order), and the number of targets:
    the C kernel sums each target's rows without two threads writing one row."""

    def __call__(self, graph: HeteroGraph, k: GemmKernel) -> tuple[torch.Tensor, torch.Tensor, int]:
        def build():
            target, size = GRAPH_INDEX.sorted_scatter(graph, k.scatter, k.segment, k.layout)
            rowptr = torch.zeros(size + 1, dtype=torch.int64)
            torch.cumsum(torch.bincount(target, minlength=size), 0, out=rowptr[1:])
            return rowptr, torch.sort(target, stable=True).indices.contiguous(), size
        return self._memo(graph, (k.scatter.name, k.segment.name), build)


_SCATTER_CSR = _ScatterCsr()


#: Functions torch computes on whole vectors where the C library calls libm per element
#: (GELU's erf took HGT's dense kernel on mutag from 1.0 to 4.9 ms): dense kernels with
#: these stay torch operations.
TORCH_UNARY = frozenset({Unary.EXP, Unary.LOG, Unary.TANH, Unary.SIGMOID, Unary.GELU, Unary.GELU_GRAD})


def rows_kernel(kernel: DenseKernel) -> TraversalKernel | None:
    """A dense kernel as a C traversal over its rows without a group, one pass that reads
    and writes each row once; None where it must stay torch operations: over the global
    space, summing all rows of a space into one, or with an op the C rules lack."""
    if kernel.space == GLOBAL or any(n.op in (Op.SUM_ROWS, Op.MEAN_ROWS) for n in kernel.body.nodes):
        return None
    if any(n.op is Op.UNARY and n.attr("fn") in TORCH_UNARY for n in kernel.body.nodes):
        return None
    rows = TraversalKernel(kernel.space, None, TraversalLayout.ROWS, kernel.body)
    try:
        render_traversal(rows, "probe")
    except CodegenError:
        return None
    return rows


def graph_rows(graph: HeteroGraph, traversal: TraversalKernel) -> int:
    """Rows of a traversal's domain space."""
    return space_size(graph, traversal.domain)
