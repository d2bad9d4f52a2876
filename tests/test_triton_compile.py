"""Generated Triton kernels compile for a Hopper GPU (sm_90) with the installed Triton, on
a machine without one.

Triton's interpreter runs kernels as NumPy code, which accepts programs the compiler
rejects (a value defined inside one loop and read after it, say). Compiling ahead of
time for a fixed target (Triton's frontend, LLVM and the ptxas it ships) catches those
without a GPU. Each layer compiles in a fresh process: the interpreter, once other
tests in this process have run kernels through it, leaves ``triton.language`` patched.

`make test` compiles one kernel of each template and mode (a GEMM, a CSR traversal, a
row-parallel traversal); every kernel of every layer compiles in the nightly job
(marker ``nightly``, run by `make test-all`), which takes a minute on 2 cores.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import pigeon
from pigeon import nn as pnn
from pigeon.codegen.triton import TritonTraversal
from pigeon.codegen.triton_gemm import TritonGemm, default_config
from pigeon.runtime.triton_backend import TritonExecutor

def _layers(graph):
    return {
        "rgcn": (pnn.RGCN(16, 16, graph.num_etypes), {}),
        "rgat": (pnn.RGAT(16, 8, graph.num_etypes, heads=2), {}),
        "hgt": (pnn.HGT(16, 16, graph.num_ntypes, graph.num_etypes, heads=2), {}),
        "nbfnet": (pnn.NBFNetLayer(16, graph.num_etypes, aggregate="pna"), {
            "x": torch.randn(graph.num_nodes, 2, 16), "boundary": torch.randn(graph.num_nodes, 2, 16),
            "relation": torch.randn(graph.num_etypes, 2, 16)}),
    }


def _signature(fn, part: TritonTraversal) -> dict[str, str]:
    sig = {name: ("*i64" if arg.kind.graph_array else "*fp32") for arg, name in zip(part.args, fn.arg_names)}
    return {**sig, "num": "i64", "REAL": "constexpr", "STORAGE": "constexpr", "BLOCK": "constexpr"}


# GEMM pointers to index arrays; every other pointer is to fp32 operands.
_GEMM_INDEX_POINTERS = ("tiles_ptr", "rows_ptr", "targets_ptr", "bounds_ptr", "perm_ptr")


def _gemm_source(fn, part: TritonGemm) -> ASTSource:
    config = part.config.as_dict() if part.config is not None else default_config(
        part.structure.weight_grad, 32, 32, torch.float32)
    constants = {"BLOCK_M": config["BLOCK_M"], "BLOCK_N": config["BLOCK_N"], "BLOCK_K": config["BLOCK_K"],
                 "ACC_DTYPE": tl.float32, "DOT_DTYPE": tl.float32, "DOT_PRECISION": "ieee"}
    sig = {}
    for name in fn.arg_names:
        if name in constants:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*i64" if name in _GEMM_INDEX_POINTERS else "*fp32"
        else:  # sizes and strides
            sig[name] = "i64"
    return ASTSource(fn, sig, constants)


def _compiled_module(source: str, path):
    """The generated module imported with real ``triton.jit`` functions (other tests in
    this process may have turned the interpreter on)."""
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"pigeon_aot_{abs(hash(source))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kind(part) -> str:
    return "gemm" if isinstance(part, TritonGemm) else part.mode


def compile_layer(name: str, folder: Path, one_per_kind: bool = False) -> list[str]:
    """Compile for sm_90 every kernel of one layer's forward and backward (with
    ``one_per_kind``, only the first GEMM and the first traversal of each mode); the
    kinds of the kernels compiled, in order."""
    graph = pigeon.data.load("aifb", scale=0.01, seed=0).graph
    module, tensors = _layers(graph)[name]
    if not tensors:
        tensors = {"x": torch.randn(graph.num_nodes, 16)}
    params = {n.replace(".", "_"): p for n, p in module.named_parameters()}
    plan = module.compiled.plan(graph, {**tensors, **params})
    target = GPUTarget("cuda", 90, 32)
    compiled = []
    for i, program in enumerate((plan.forward_kernels, plan.backward_kernels)):
        executor = TritonExecutor(program)
        generated = _compiled_module(executor.source(), folder / f"program{i}.py")
        for parts in executor.rendered.values():
            for part in parts:
                if one_per_kind and _kind(part) in compiled:
                    continue
                if isinstance(part, TritonGemm):
                    source = _gemm_source(getattr(generated, f"{part.name}_kernel"), part)
                else:
                    fn = getattr(generated, part.name)
                    source = ASTSource(fn, _signature(fn, part), {"REAL": tl.float32, "STORAGE": tl.float32,
                                                                   "BLOCK": part.block})
                triton.compile(source, target=target)
                compiled.append(_kind(part))
    return compiled


def _compile_in_a_fresh_process(name: str, folder: Path, one_per_kind: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (f"import test_triton_compile as t; "
            f"print(*t.compile_layer({name!r}, t.Path({str(folder)!r}), {one_per_kind}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1].split()


def test_one_kernel_of_each_template_and_mode_compiles_for_sm90(tmp_path):
    # RGAT's forward has all three: its typed GEMM, the softmax traversal over the
    # destination CSR and a row-parallel traversal.
    assert sorted(_compile_in_a_fresh_process("rgat", tmp_path, one_per_kind=True)) == ["csr", "gemm", "rows"]


@pytest.mark.nightly
@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt", "nbfnet"])
def test_every_generated_kernel_compiles_for_sm90(name, tmp_path):
    kinds = _compile_in_a_fresh_process(name, tmp_path, one_per_kind=False)
    assert {"csr", "rows", "gemm"} <= set(kinds) and len(kinds) >= 10
