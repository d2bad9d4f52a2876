"""Every generated traversal and dense kernel compiles for a Hopper GPU (sm_90) with the
installed Triton, on a machine without one.

Triton's interpreter runs kernels as NumPy code, which accepts programs the compiler
rejects (a value defined inside one loop and read after it, say). Compiling ahead of
time for a fixed target (Triton's frontend, LLVM and the ptxas it ships) catches those
without a GPU. Each layer compiles in a fresh process: the interpreter, once other
tests in this process have run kernels through it, leaves ``triton.language`` patched.
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
    return {**sig, "num": "i64", "REAL": "constexpr", "BLOCK": "constexpr"}


def _compiled_module(source: str, path):
    """The generated module imported with real ``triton.jit`` functions (other tests in
    this process may have turned the interpreter on)."""
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"pigeon_aot_{abs(hash(source))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_layer(name: str, folder: Path) -> int:
    """Compile every traversal and dense kernel of one layer's forward and backward for
    sm_90; the number compiled."""
    graph = pigeon.data.load("aifb", scale=0.01, seed=0).graph
    module, tensors = _layers(graph)[name]
    if not tensors:
        tensors = {"x": torch.randn(graph.num_nodes, 16)}
    params = {n.replace(".", "_"): p for n, p in module.named_parameters()}
    plan = module.compiled.plan(graph, {**tensors, **params})
    target = GPUTarget("cuda", 90, 32)
    compiled = 0
    for i, program in enumerate((plan.forward_kernels, plan.backward_kernels)):
        executor = TritonExecutor(program)
        generated = _compiled_module(executor.source(), folder / f"program{i}.py")
        for parts in executor.rendered.values():
            for part in parts:
                if not isinstance(part, TritonTraversal):
                    continue  # GEMM kernels: tests/test_triton_gemm.py
                fn = getattr(generated, part.name)
                source = ASTSource(fn, _signature(fn, part), {"REAL": tl.float32, "BLOCK": part.block})
                triton.compile(source, target=target)
                compiled += 1
    return compiled


@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt", "nbfnet"])
def test_generated_kernels_compile_for_sm90(name, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = f"import test_triton_compile as t; print(t.compile_layer({name!r}, t.Path({str(tmp_path)!r})))"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert int(result.stdout.split()[-1]) >= 2
