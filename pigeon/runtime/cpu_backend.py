"""The CPU backend: traversal kernels compiled to C with OpenMP and called through ctypes.

Per program and dtype, every traversal kernel is rendered into one C file, compiled
with the system C compiler into a shared library named by the hash of its source and
flags under ``PIGEON_CACHE_DIR`` (default ``~/.cache/pigeon``), and loaded with
ctypes; a later process finds the library on disk and skips the compiler. GEMMs run on
torch's BLAS, one matmul per type segment (the issue's plan until a generated
micro-kernel measures faster); dense kernels run as torch ops.

Graph-side arrays the kernels read (int64 index maps, the CSR of each group) come from
the torch backend's per-graph cache (:class:`~pigeon.runtime.torch_backend.GraphIndex`).
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

import pigeon
from pigeon.codegen.c import CConfig, CKernel, render_library, render_traversal
from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import Op
from pigeon.ir.kernel_ir import GemmKernel, KernelProgram, TraversalKernel
from pigeon.runtime.interpret import run, space_size
from pigeon.runtime.torch_backend import TorchExecutor

CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-std=c11")
_REAL = {torch.float32: "float", torch.float64: "double"}


class CompilerError(RuntimeError):
    """The C compiler failed or is missing."""


def cache_dir() -> Path:
    root = os.environ.get("PIGEON_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "pigeon"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    """

    def __init__(self, program: KernelProgram, configs: Mapping[str, CConfig] | None = None):
        self.program = program
        self.gemms = TorchExecutor(program)
        configs = dict(configs or {})
        names = {f"k{i}": i for i, k in enumerate(program.kernels) if isinstance(k, TraversalKernel)}
        for name, config in configs.items():
            if name not in names or not isinstance(config, CConfig):
                raise ValueError(f"Expected `configs` to map traversal kernel names of this program "
                                 f"({sorted(names)}) to CConfig (got {name!r}: {config!r})")
        self.rendered: dict[int, CKernel] = {
            i: render_traversal(program.kernels[i], name, configs.get(name)) for name, i in names.items()
        }
        self._libraries: dict[torch.dtype, ctypes.CDLL] = {}

    def source(self, dtype: torch.dtype = torch.float32) -> str:
        """The C file this program compiles to for ``dtype``."""
        if dtype not in _REAL:
            raise ValueError(f"backend='cpu' supports float32 and float64 tensors (got {dtype})")
        return render_library(list(self.rendered.values()), _REAL[dtype], pigeon.__version__)

    def library(self, dtype: torch.dtype) -> ctypes.CDLL:
        if dtype not in self._libraries:
            library, _ = build_library(self.source(dtype))
            for kernel in self.rendered.values():
                getattr(library, kernel.name).restype = None
            self._libraries[dtype] = library
        return self._libraries[dtype]

    def _launch(self, library, kernel: CKernel, traversal: TraversalKernel, graph: HeteroGraph,
                env: dict, dtype: torch.dtype) -> None:
        outputs = {n.attr("name"): n for n in traversal.body.nodes if n.op is Op.OUTPUT}
        pointers, keep = [], []
        if kernel.group is not None:
            rowptr, perm = self.gemms.index.group_csr(graph, kernel.group)
            size = rowptr.numel() - 1
        else:
            size = graph_rows(graph, traversal)
        for kind, key in kernel.args:
            if kind == "rowptr":
                tensor = rowptr
            elif kind == "perm":
                tensor = perm
            elif kind == "index":
                tensor = self.gemms.index.index(graph, key)[0]
            elif key in outputs:
                node = outputs[key]
                rows = size if kernel.group is not None and node.type.space == kernel.group.target else graph_rows(graph, traversal)
                tensor = torch.empty(rows, *node.type.shape, dtype=dtype)
                env[key] = tensor
            else:
                tensor = env[key].contiguous()
                if tensor.dtype != dtype:
                    raise ValueError(f"buffer {key}: expected {dtype}, got {tensor.dtype}")
            keep.append(tensor)
            pointers.append(tensor.data_ptr())
        args = (ctypes.c_void_p * len(pointers))(*pointers)
        sizes = (ctypes.c_int64 * 1)(size)
        getattr(library, kernel.name)(args, sizes)

    def __call__(self, graph: HeteroGraph, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 keep: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Run the program: (outputs by name, the buffers named in ``keep``)."""
        if graph.device.type != "cpu":
            raise ValueError(f"backend='cpu' runs on CPU tensors (the graph is on {graph.device})")
        library = self.library(dtype) if self.rendered else None
        if library is not None:
            library.pigeon_set_threads(torch.get_num_threads())
        env = dict(tensors)
        for i, kernel in enumerate(self.program.kernels):
            if isinstance(kernel, GemmKernel):
                env[kernel.out] = self.gemms.gemm(kernel, graph, env)
            elif isinstance(kernel, TraversalKernel):
                self._launch(library, self.rendered[i], kernel, graph, env, dtype)
            else:
                body_inputs = {n.attr("name"): env[n.attr("name")] for n in kernel.body.nodes if n.op is Op.INPUT}
                env.update(run(kernel.body, graph, body_inputs, {}, dtype=dtype))
        return {name: env[buffer] for name, buffer in self.program.outputs}, {name: env[name] for name in keep}


def graph_rows(graph: HeteroGraph, traversal: TraversalKernel) -> int:
    """Rows of a traversal's domain space."""
    return space_size(graph, traversal.domain)
