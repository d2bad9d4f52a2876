"""backend="cpu": the generated C (structure), float32 accuracy, the on-disk cache across
processes, and compiler errors. Float64 agreement with the reference for every layer is in
test_nn.py (parametrized over backends)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import pigeon
from pigeon import nn as pnn
from pigeon import reference
from pigeon.runtime.cpu_backend import CompilerError, build_library


def _graph():
    return pigeon.data.load("aifb", scale=0.05, seed=2).graph


def _forward_source(module, graph, tensors, dtype=torch.float32):
    plan = module.compiled.plan(graph, tensors)
    return plan.run_forward.source(dtype), plan


def test_rgat_is_one_node_parallel_traversal_without_atomics():
    graph = _graph()
    layer = pnn.RGAT(8, 4, graph.num_etypes, heads=2, backend="cpu")
    source, plan = _forward_source(layer, graph, dict(x=torch.randn(graph.num_nodes, 8), **dict(layer.named_parameters())))
    kernels = [line for line in source.splitlines() if line.startswith("void k")]
    assert len(kernels) == 1  # scores, softmax and aggregation fused in one function
    assert "atomic" not in source
    assert "#pragma omp parallel for schedule(dynamic" in source
    assert source.count("/* sweep") == 2  # online max/sum, then normalise and aggregate


def test_pna_statistics_share_one_pass_over_the_edges():
    graph = _graph()
    layer = pnn.NBFNetLayer(4, graph.num_etypes, aggregate="pna", backend="cpu")
    tensors = {"x": torch.randn(graph.num_nodes, 2, 4), "boundary": torch.randn(graph.num_nodes, 2, 4),
               "relation": torch.randn(graph.num_etypes, 2, 4)}
    tensors.update({n.replace(".", "_"): p for n, p in layer.named_parameters()})
    source, _ = _forward_source(layer, graph, tensors)
    kernel = source[source.index("/* traversal"):]
    assert [line for line in source.splitlines() if line.startswith("void k")] == [kernel.splitlines()[1]]
    assert kernel.count("/* sweep") == 1
    assert kernel.count("max_(a") == 1 and kernel.count("min_(a") == 1  # max and min updated in that sweep
    assert "count + 1" in kernel  # the boundary is one more message of every mean


@pytest.mark.parametrize("cls, args, kwargs", [
    ("RGCN", (16, 16), dict(num_bases=4)),
    ("RGAT", (16, 8), dict(heads=2)),
    ("HGT", (16, 16), dict(heads=2)),
])
def test_float32_against_the_float64_reference(cls, args, kwargs):
    graph = _graph()
    torch.manual_seed(0)
    extra = (graph.num_ntypes, graph.num_etypes) if cls == "HGT" else (graph.num_etypes,)
    layer = getattr(pnn, cls)(*args, *extra, **kwargs, backend="cpu")
    ref = getattr(reference, cls)(*args, *extra, **kwargs).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(graph.num_nodes, args[0])
    got, want = layer(graph, x), ref(graph, x.double())
    # float32 keeps ~7 significant digits; sums over up to a few hundred terms lose ~2 more.
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_auto_picks_cpu_for_cpu_tensors():
    graph = _graph()
    layer = pnn.RGCN(4, 4, graph.num_etypes, backend="auto")
    x = torch.randn(graph.num_nodes, 4)
    plan = layer.compiled.plan(graph, dict(x=x, **dict(layer.named_parameters())))
    assert type(plan.run_forward).__name__ == "CpuExecutor"


_SCRIPT = textwrap.dedent("""
    import torch, pigeon
    from pigeon import nn as pnn
    g = pigeon.data.load("aifb", scale=0.02, seed=0).graph
    torch.manual_seed(0)
    layer = pnn.RGAT(4, 3, g.num_etypes, backend="cpu").to({dtype})
    out = layer(g, torch.randn(g.num_nodes, 4, dtype={dtype}))
    print(float(out.sum()))
""")


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_cache_is_reused_across_processes(tmp_path):
    env = {**os.environ, "PIGEON_CACHE_DIR": str(tmp_path)}
    first = _run(_SCRIPT.format(dtype="torch.float64"), env)
    assert first.returncode == 0, first.stderr
    libraries = sorted(p.name for p in tmp_path.glob("*.so"))
    assert libraries
    # No compiler at all: the second process can only succeed by loading the cached library.
    second = _run(_SCRIPT.format(dtype="torch.float64"), {**env, "CC": "no-such-compiler-pigeon"})
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert sorted(p.name for p in tmp_path.glob("*.so")) == libraries
    # A program not in the cache (float32) needs the compiler, and says so.
    third = _run(_SCRIPT.format(dtype="torch.float32"), {**env, "CC": "no-such-compiler-pigeon"})
    assert third.returncode != 0
    assert "`no-such-compiler-pigeon` was not found" in third.stderr and "backend='torch'" in third.stderr


def test_compiler_errors_name_the_file_and_the_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    with pytest.raises(CompilerError) as info:
        build_library("int broken( { return 0; }\n")
    message = str(info.value)
    assert str(tmp_path) in message and ".c failed" in message and "error" in message
