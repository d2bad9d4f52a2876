"""backend="cpu": the generated C (structure), float32 accuracy, the on-disk cache across
processes, and compiler errors. Float64 agreement with the reference for every layer is in
test_nn.py (parametrized over backends)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import pigeon
from pigeon import nn as pnn
from pigeon import reference
from pigeon.clib import CompilerError, build_library


def _graph():
    return pigeon.data.load("aifb", scale=0.05, seed=2).graph


def _forward_source(module, graph, tensors, dtype=torch.float32):
    plan = module.compiled.plan(graph, tensors)
    return plan.run_forward.source(dtype), plan


def test_rgat_is_one_node_parallel_traversal_without_atomics():
    graph = _graph()
    layer = pnn.RGAT(8, 4, graph.num_etypes, heads=2, backend="cpu")
    source, plan = _forward_source(layer, graph, dict(x=torch.randn(graph.num_nodes, 8), **dict(layer.named_parameters())))
    kernels = [line for line in source.splitlines() if line.startswith("/* traversal over edge")]
    assert len(kernels) == 1  # scores, softmax and aggregation fused in one function over the edges
    assert "atomic" not in source
    assert re.search(r"#pragma omp parallel for (num_threads\(sizes\[2\]\) )?schedule\(dynamic", source)
    assert source.count("/* sweep") == 2  # online max/sum, then normalise and aggregate
    # The second sweep reads the scores the first stored, instead of recomputing them.
    first, second = source.split("/* sweep 1 */")
    assert "scratch_mine[(p - begin)" in first and "= scratch_mine + (p - begin)" in second
    assert "att_src" in first.split("/* sweep 0 */")[1] and "att_src" not in second


def test_pna_statistics_share_one_traversal_of_the_edges():
    graph = _graph()
    layer = pnn.NBFNetLayer(4, graph.num_etypes, aggregate="pna", backend="cpu")
    tensors = {"x": torch.randn(graph.num_nodes, 2, 4), "boundary": torch.randn(graph.num_nodes, 2, 4),
               "relation": torch.randn(graph.num_etypes, 2, 4)}
    tensors.update({n.replace(".", "_"): p for n, p in layer.named_parameters()})
    source, _ = _forward_source(layer, graph, tensors)
    edges = [line for line in source.splitlines() if line.startswith("/* traversal over edge")]
    assert len(edges) == 1, edges   # (the other functions are row-wise dense kernels)
    kernel = source[source.index(edges[0]):]
    kernel = kernel[:kernel.index("\n}\n")]
    # Mean, max and min in the first sweep; the squared deviations from that mean (read
    # from registers: the variance never subtracts two stored moments) in the second.
    first, second = kernel.split("/* sweep 1 */")
    assert "/* sweep 2 */" not in second
    assert first.count("max_(a") == 1 and first.count("min_(a") == 1
    assert "count + 1" in first  # the boundary is one more message of every mean
    mean = re.search(r"const real \*v(\d+) = a(\d+);", second)   # the group's mean, gathered in registers
    assert mean and f"a{mean.group(2)}[j] /= (real)(count + 1)" in first


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


_ANSWER = "int pigeon_answer(void) { return %d; }\n"


def test_a_truncated_cached_library_is_rebuilt(tmp_path, monkeypatch):
    from pigeon import clib

    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path / "first"))
    _, built = build_library(_ANSWER % 41)
    # What a process killed while filling a cache leaves: half of the library, in a
    # cache this process has not loaded from (the loader would hand back a library
    # already loaded from the same path without reading the file).
    cache = tmp_path / "second"
    cache.mkdir()
    so_path = cache / built.name
    so_path.write_bytes(built.read_bytes()[:built.stat().st_size // 2])
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(cache))
    with pytest.warns(UserWarning, match="failed to load"):
        library, again = build_library(_ANSWER % 41)
    assert again == so_path and so_path.stat().st_size == built.stat().st_size
    assert library.pigeon_answer() == 41


def test_a_library_that_fails_to_load_after_rebuilding_names_the_file(tmp_path, monkeypatch):
    from pigeon import clib

    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    # A compiler that "succeeds" with something the loader refuses.
    monkeypatch.setattr(clib, "_compile", lambda cc, source, so_path: so_path.write_bytes(b"not a library" * 8))
    with pytest.raises(CompilerError) as info:
        build_library(_ANSWER % 42)
    message = str(info.value)
    assert str(tmp_path / "pigeon_") in message and "failed right after compiling it" in message
    assert "invalid ELF header" in message  # the loader's own words


def test_the_cache_key_names_the_compiler_version_and_the_cpu(tmp_path, monkeypatch):
    # A cache shared by machines of a cluster must not hand one CPU's -march=native
    # library, or one compiler's, to another.
    from pigeon import clib

    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))

    def path(cpu: str, compiler: str) -> str:
        monkeypatch.setattr(clib, "_cpu_identity", lambda: cpu)
        monkeypatch.setattr(clib, "_compiler_version", lambda cc: compiler)
        return build_library(_ANSWER % 43)[1].name

    here = path("flags: avx2", "gcc 12.2.0")
    assert path("flags: avx2", "gcc 12.2.0") == here
    assert len({here, path("flags: avx2 avx512f", "gcc 12.2.0"), path("flags: avx2", "gcc 13.1.0")}) == 3


def test_the_cpu_identity_holds_the_instruction_set():
    from pigeon.clib import _cpu_identity

    identity = _cpu_identity()
    info = "/proc/cpuinfo"
    if os.path.exists(info):
        first = open(info).read().split("\n\n")[0]
        flags = [line.split(":", 1)[1].strip() for line in first.splitlines()
                 if line.split(":")[0].strip() in ("flags", "Features", "isa")]
        assert flags and all(f in identity for f in flags)
        assert "MHz" not in identity and "bogomips" not in identity.lower()
    assert identity


def _c_gemm_calls(monkeypatch):
    """Record, per call of a typed GEMM the executor offers to C, (kind, taken by C)."""
    from pigeon.runtime import cpu_backend

    calls, original = [], cpu_backend.CpuExecutor._gemm

    def spy(self, library, rendered, kernel, graph, env, dtype):
        out = original(self, library, rendered, kernel, graph, env, dtype)
        kind = "weight_grad" if kernel.weight_grad else "scatter" if kernel.scatter is not None else "forward"
        calls.append((kind + (" per head" if kernel.batched else ""), out is not None))
        return out

    monkeypatch.setattr(cpu_backend.CpuExecutor, "_gemm", spy)
    return calls


@pytest.mark.parametrize("dims", [(37, 70), (6, 5)], ids=["wide", "narrow"])
def test_generated_gemms_match_the_reference(dims, monkeypatch):
    # Widths that are not multiples of the tiles (32 columns, 4 rows, 4 k-rows) and a
    # graph whose types own different numbers of rows, some none.
    calls = _c_gemm_calls(monkeypatch)
    graph = pigeon.data.load("aifb", scale=0.05, seed=5).graph
    torch.manual_seed(1)
    layer = pnn.RGCN(*dims, graph.num_etypes, backend="cpu", compact=True).double()
    ref = reference.RGCN(*dims, graph.num_etypes).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(graph.num_nodes, dims[0], dtype=torch.float64, requires_grad=True)
    got, want = layer(graph, x), ref(graph, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(want.shape, dtype=torch.float64)
    got_grads = torch.autograd.grad(got, [x, *layer.parameters()], upstream)
    want_grads = torch.autograd.grad(want, [x, *ref.parameters()], upstream)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # The gather, the scatter of the input gradient and the weight gradient all ran in C.
    assert {kind for kind, in_c in calls if in_c} == {"forward", "scatter", "weight_grad"}
    source = layer.compiled.plan(graph, dict(x=x, **dict(layer.named_parameters()))).run_backward.source(torch.float64)
    assert "omp_get_thread_num" in source  # per-thread weight-gradient slices, no atomics
    assert "atomic" not in source


@pytest.mark.parametrize("options", [dict(reorder=False, compact=False), dict()], ids=["per-edge", "cost-model"])
def test_hgt_per_head_relation_gemms_run_in_c(options, monkeypatch):
    # Per edge (no chain fold) the relation transforms are [edges, heads, d] x [etypes,
    # heads, d, d]; with the fold the cost model picks here they are one row per (node
    # type, edge type) pair, whose transposed data gradients stay on torch's one bmm.
    calls = _c_gemm_calls(monkeypatch)
    graph = _graph()
    torch.manual_seed(3)
    layer = pnn.HGT(8, 8, graph.num_ntypes, graph.num_etypes, heads=2, backend="cpu", **options).double()
    ref = reference.HGT(8, 8, graph.num_ntypes, graph.num_etypes, heads=2).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(graph.num_nodes, 8, dtype=torch.float64, requires_grad=True)
    got, want = layer(graph, x), ref(graph, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(want.shape, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, [x, *layer.parameters()], upstream),
                    torch.autograd.grad(want, [x, *ref.parameters()], upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    in_c = {kind for kind, taken in calls if taken}
    assert {"forward per head", "weight_grad per head"} <= in_c
    if options:
        assert "scatter per head" in in_c and all(taken for _, taken in calls)
    plan = layer.compiled.plan(graph, dict(x=x, **dict(layer.named_parameters())))
    assert any(getattr(k, "heads", 1) == 2 for k in plan.run_forward.rendered.values())


def test_traversals_into_few_groups_split_their_rows_over_threads(monkeypatch):
    # RGAT's attention-vector gradient sums every edge into its edge type: the kernel
    # hands out blocks of one type's rows, not whole types, and adds per-thread slices.
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # more slices than this machine's cores
    graph = pigeon.data.load("aifb", scale=0.05, seed=4).graph
    torch.manual_seed(2)
    layer = pnn.RGAT(6, 5, graph.num_etypes, heads=1, backend="cpu").double()
    ref = reference.RGAT(6, 5, graph.num_etypes, heads=1).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(graph.num_nodes, 6, dtype=torch.float64, requires_grad=True)
    got, want = layer(graph, x), ref(graph, x)
    upstream = torch.randn(want.shape, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, [x, *layer.parameters()], upstream),
                    torch.autograd.grad(want, [x, *ref.parameters()], upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    plan = layer.compiled.plan(graph, dict(x=x, **dict(layer.named_parameters())))
    split = [k for k in plan.run_backward.rendered.values() if getattr(k, "split", False)]
    assert split and all(k.group.target.name == "etype" for k in split)
    assert "partial[(th * num_groups + g)" in plan.run_backward.source(torch.float64)


def test_row_wise_dense_kernels_run_as_c_and_match_torch():
    """HGT's per-type bias and skip mixing (gathers of per-type values, products and sums)
    are one C pass over the rows; its GELU, which torch computes on whole vectors, stays
    torch operations, as does a dense kernel that sums rows into groups. The layer in
    float64, with every C output poisoned before it is written, matches the torch
    backend's."""
    from pigeon.ir.kernel_ir import DenseKernel
    from pigeon.ir.graph_ir import Op, Unary
    from pigeon.runtime.cpu_backend import rows_kernel

    graph = _graph()
    torch.manual_seed(0)
    layer = pnn.HGT(8, 8, graph.num_ntypes, graph.num_etypes, heads=2, backend="cpu").double()
    x = torch.randn(graph.num_nodes, 8, dtype=torch.float64, requires_grad=True)
    plan = layer.compiled.plan(graph, {"x": x, **dict(layer.named_parameters())})
    executor = plan.run_forward
    dense = {i: k for i, k in enumerate(executor.program.kernels) if isinstance(k, DenseKernel)}

    def has(k, op, fn=None):
        return any(n.op is op and (fn is None or n.attr("fn") is fn) for n in k.body.nodes)

    mixing = [i for i, k in dense.items() if has(k, Op.GATHER) and not has(k, Op.UNARY)]
    gelu = [i for i, k in dense.items() if has(k, Op.UNARY, Unary.GELU)]
    assert mixing and gelu
    assert all(i in executor._rows for i in mixing) and not any(i in executor._rows for i in gelu)
    assert all(f"void k{i}(" in executor.source(torch.float64) for i in mixing)
    backward = [k for k in plan.backward_kernels.kernels if isinstance(k, DenseKernel) and has(k, Op.AGGREGATE)]
    assert backward and all(rows_kernel(k) is None for k in backward)

    executor.poison = True
    got = layer(graph, x)
    want = pnn.HGT(8, 8, graph.num_ntypes, graph.num_etypes, heads=2, backend="torch").double()
    want.load_state_dict(layer.state_dict())
    torch.testing.assert_close(got, want(graph, x), rtol=1e-10, atol=1e-10)
