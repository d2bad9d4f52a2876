"""The CPU backend: traversal kernels compiled to C with OpenMP and called through ctypes.

Per program and dtype, every traversal kernel is rendered into one C file, compiled
with the system C compiler into a shared library named by the hash of its source and
flags under ``PIGEON_CACHE_DIR`` (default ``~/.cache/pigeon``), and loaded with
ctypes; a later process finds the library on disk and skips the compiler.

Typed GEMMs whose types own few rows each (the compact per-(node, type) rows of an RDF
graph: a hundred types of a hundred rows) run as generated C too
(``kernels/gemm.c.jinja``): the gather of A's rows and the placement of the result rows
are fused into it, and its row blocks spread over threads whatever the type sizes,
where torch would pay a gather, a matmul call per type and a scatter. Measured on the
2-core development machine, 13,466 rows of 104 types, K = N = 64: 1.2 ms against 6.6 ms
for torch's per-type loop. Large segments (more than :data:`C_GEMM_MAX_AVG_ROWS` rows per
type on average), types of equal size (one batched matmul) and untyped GEMMs stay on
torch's BLAS, which is faster there; so do dense kernels.

Graph-side arrays the kernels read (int64 index maps, the CSR of each group) come from
the per-graph cache every backend shares (:class:`~pigeon.runtime.graph_index.GraphIndex`).

Every dtype of :data:`~pigeon.runtime.precision.STORAGE_DTYPES` has a library of its own:
bfloat16 and float16 buffers are converted to float in registers as the kernels read
them and rounded as they write them (``kernels/library.c.jinja``); per-thread partial
sums and scratch rows are float; the rows a GEMM scatters are summed per target in
float by the library's ``pigeon_sum_rows``, in parallel and without a float buffer.
Dense kernels run as torch operations, each storing its result in the dtype (torch sums
16-bit values in float32), so their temporaries take half the memory too.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

import torch

from pigeon.codegen.c import CConfig, CKernel, render_library, render_traversal
from pigeon.codegen.c_gemm import GEMM_BLOCK_ROWS, CGemm, gemm_supported, render_gemm
from pigeon.codegen.rules import ArgKind
from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import Op
from pigeon.ir.kernel_ir import GemmKernel, KernelProgram, ViewKernel, TraversalKernel
from pigeon.paths import cache_dir
from pigeon.runtime import kernel_args
from pigeon.runtime.graph_index import GRAPH_INDEX
from pigeon.runtime.interpret import space_size
from pigeon.runtime.precision import HALF_DTYPES, check_storage, compute_dtype
from pigeon.runtime.profiling import kernel_ranges
from pigeon.runtime.torch_backend import DeadBuffers, TorchExecutor, run_body, run_view
from pigeon.version import __version__

SPLIT_BLOCK_ROWS = 256      # rows per block of a traversal split over few groups
C_GEMM_MAX_AVG_ROWS = 8192   # above this, per-type BLAS calls amortise their overhead

CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-std=c11")
#: The C element type of each storage dtype (``storage`` in ``kernels/library.c.jinja``).
C_TYPES = {torch.float64: "double", torch.float32: "float", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class CompilerError(RuntimeError):
    """The C compiler failed or is missing."""


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise CompilerError(
            f"backend='cpu' needs a C compiler with OpenMP, and `{cc}` was not found on PATH "
            "(set CC to one). backend='torch' runs without a compiler."
        )
    return cc


_LOADED: dict[str, ctypes.CDLL] = {}   # process-wide: a library is loaded once


def build_library(source: str) -> tuple[ctypes.CDLL, Path]:
    """Compile ``source`` (or find it in the cache) and load it.

    The cache key is the source and the flags (the generated C names the Pigeon version);
    a cached library needs no compiler at all.
    """
    digest = hashlib.sha256("\n".join([source, *CFLAGS]).encode()).hexdigest()[:24]
    if digest in _LOADED:
        return _LOADED[digest], cache_dir() / f"pigeon_{digest}.so"
    folder = cache_dir()
    c_path, so_path = folder / f"pigeon_{digest}.c", folder / f"pigeon_{digest}.so"
    if not so_path.exists():
        cc = _compiler()
        c_path.write_text(source)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        result = subprocess.run([cc, *CFLAGS, str(c_path), "-o", tmp, "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            os.unlink(tmp)
            raise CompilerError(f"compiling {c_path} failed:\n{result.stderr.strip()}")
        os.replace(tmp, so_path)  # atomic: a concurrent process sees the whole library or none
    library = ctypes.CDLL(str(so_path))
    _LOADED[digest] = library
    return library, so_path


class CpuExecutor:
    """Runs one level-2 program with C traversals, torch GEMMs and torch dense kernels.

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
        for i, k in enumerate(program.kernels):
            if isinstance(k, GemmKernel):
                a_shape, w_shape = program.buffer(k.a).type.shape, program.buffer(k.w).type.shape
                if gemm_supported(k, a_shape, w_shape):
                    n = w_shape[0] if k.weight_grad else w_shape[-2 if k.transpose_w else -1]
                    self.rendered[i] = render_gemm(k, f"g{i}", a_shape[0], n)
        self._libraries: dict[torch.dtype, ctypes.CDLL] = {}
        self._narrow: dict[int, CKernel | CGemm] | None = None

    def kernels(self, dtype: torch.dtype) -> dict[int, CKernel | CGemm]:
        """The rendered kernels of the library for ``dtype``, by kernel index."""
        if dtype not in HALF_DTYPES:
            return self.rendered
        if self._narrow is None:
            self._narrow = {**self.rendered, **{
                i: render_traversal(self.program.kernels[i], name, config, narrow=True)
                for i, (name, config) in self._traversals.items()}}
        return self._narrow

    def source(self, dtype: torch.dtype = torch.float32) -> str:
        """The C file this program compiles to for buffers of ``dtype``."""
        check_storage(dtype, "cpu")
        return render_library(list(self.kernels(dtype).values()), C_TYPES[dtype], __version__)

    def library(self, dtype: torch.dtype) -> ctypes.CDLL:
        if dtype not in self._libraries:
            library, _ = build_library(self.source(dtype))
            for name in [kernel.name for kernel in self.kernels(dtype).values()] + ["pigeon_sum_rows"]:
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
        """One typed GEMM through its C kernel; None where torch's BLAS is the faster
        choice for this graph (see the module's notes)."""
        index = self.index
        perm, bounds = index.segments(graph, k.segment, k.layout)
        types = len(bounds) - 1
        used, uniform = index.segment_profile(graph, k.segment, k.layout)
        if uniform or bounds[-1] > C_GEMM_MAX_AVG_ROWS * max(used, 1):
            return None
        a, w = env[k.a].contiguous(), env[k.w]
        if a.dtype != dtype or w.dtype != dtype:
            raise ValueError(f"GEMM {k.out}: expected {dtype} operands, got {a.dtype} and {w.dtype}")
        rows = index.sorted_rows(graph, k.a_gather, k.segment, k.layout)
        if index.in_order(graph, k.segment, k.layout):
            perm, rows = None, rows if k.a_gather is not None else None
        rows, perm = (None if v is None else v.contiguous() for v in (rows, perm))
        blocks = index.blocks(graph, k.segment, k.layout, GEMM_BLOCK_ROWS)
        compute = compute_dtype(dtype)
        if k.weight_grad:
            out = torch.zeros(torch.get_num_threads(), types, rendered.k, rendered.n, dtype=compute)
            place, w = perm, w.contiguous()
        else:
            out = kernel_args.new_output((bounds[-1], rendered.n), dtype, poison=self.poison)
            place = perm if k.scatter is None else None
            w = (w.transpose(-1, -2) if k.transpose_w else w).contiguous()
        pointers = [a.data_ptr(), 0 if rows is None else rows.data_ptr(), w.data_ptr(), blocks.data_ptr(),
                    out.data_ptr(), 0 if place is None else place.data_ptr()]
        getattr(library, rendered.name)((ctypes.c_void_p * 6)(*pointers),
                                        (ctypes.c_int64 * 3)(blocks.shape[0], types, torch.get_num_threads()))
        if k.weight_grad:
            return out.sum(0).to(dtype)
        if k.scatter is not None:   # the rows summed per target, in parallel, in the compute dtype
            rowptr, positions = index.scatter_csr(graph, k.scatter, k.segment, k.layout)
            summed = torch.empty(rowptr.numel() - 1, rendered.n, dtype=dtype)
            library.pigeon_sum_rows((ctypes.c_void_p * 4)(out.data_ptr(), rowptr.data_ptr(), positions.data_ptr(),
                                                          summed.data_ptr()),
                                    (ctypes.c_int64 * 2)(summed.shape[0], rendered.n))
            return summed
        return out

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
                elif isinstance(kernel, ViewKernel):
                    env[kernel.out] = run_view(kernel, graph, self.program, env)
                else:   # dense: torch ops, each storing its result (run_body)
                    env.update(run_body(kernel.body, graph, env, dtype, fused=False))
            for name in dead:
                del env[name]
        return {name: env[buffer] for name, buffer in self.program.outputs}, {name: env[name] for name in keep}


def graph_rows(graph: HeteroGraph, traversal: TraversalKernel) -> int:
    """Rows of a traversal's domain space."""
    return space_size(graph, traversal.domain)
