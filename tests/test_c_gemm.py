"""The generated C GEMM (``kernels/gemm.c.jinja``) against the torch backend's GEMMs.

Hand-built typed GEMMs of every form the template takes (rows of one vector, per-head
rows with a weight per head, rows whose vectors share one weight; forward, transposed
data gradient with a scatter, weight gradient) run through ``CpuExecutor.run_gemm`` on
graphs with empty types, a single row, skewed and uniform types, and gather and scatter
maps with repeats, and must equal ``TorchExecutor.gemm``: float64 to 1e-10, float32 to
a bound that grows with the number of products each result sums. Outputs start as NaN
(poison), so a row the kernel skips fails. Widths that are not multiples of the vector
or the register tile take every tail of the micro-kernels.
"""

from __future__ import annotations

import dataclasses
import math
import platform

import pytest
import torch

import pigeon
from pigeon.codegen.c_gemm import gemm_supported, render_gemm
from pigeon.ir.graph_ir import DST, DST_NODE, EDGE, ETYPE, ETYPE_OF_EDGE, NODE, NTYPE, NTYPE_OF_NODE, SRC, TensorType
from pigeon.ir.kernel_ir import Buffer, BufferRole, GemmKernel, KernelProgram, SegmentLayout
from pigeon.runtime.cpu_backend import CpuExecutor
from pigeon.runtime.torch_backend import TorchExecutor

F64 = dict(rtol=1e-10, atol=1e-10)
THREADS = 3   # more than this machine's cores: blocks of one type land on several threads


def _graph(src, dst, etype, num_nodes, ntype, num_etypes, num_ntypes=3):
    return pigeon.HeteroGraph(torch.as_tensor(src), torch.as_tensor(dst), torch.as_tensor(etype), num_nodes,
                              torch.as_tensor(ntype), num_etypes=num_etypes, num_ntypes=num_ntypes)


def _skewed_graph():
    """50 edges: relation 0 has 37, relation 1 none, relation 2 has 13; node type 2 is
    empty, node 11 isolated, and edge (3, 4) repeats five times."""
    gen = torch.Generator().manual_seed(7)
    src, dst = torch.randint(0, 11, (50,), generator=gen), torch.randint(0, 11, (50,), generator=gen)
    src[:5], dst[:5] = 3, 4
    etype = torch.cat([torch.zeros(37, dtype=torch.long), torch.full((13,), 2)])
    return _graph(src, dst, etype, 12, torch.tensor([0, 1] * 6), 3)


def _zipf_graph():
    """3,000 edges over 300 nodes (each source about ten times), six relations of Zipf
    sizes (the largest about 1,200 rows: many blocks) and a seventh with none."""
    gen = torch.Generator().manual_seed(11)
    share = 1.0 / torch.arange(1, 7, dtype=torch.float64)
    etype = torch.multinomial(share, 3000, replacement=True, generator=gen)
    src, dst = torch.randint(0, 300, (3000,), generator=gen), torch.randint(0, 300, (3000,), generator=gen)
    return _graph(src, dst, etype, 300, torch.randint(0, 2, (300,), generator=gen), 7)


def _single_edge_graph():
    return _graph([1], [0], [1], 2, [0, 2], 3)


def _uniform_graph():
    """Four relations of 24 edges each."""
    gen = torch.Generator().manual_seed(3)
    etype = torch.arange(4).repeat_interleave(24)[torch.randperm(96, generator=gen)]
    src, dst = torch.randint(0, 40, (96,), generator=gen), torch.randint(0, 40, (96,), generator=gen)
    return _graph(src, dst, etype, 40, torch.randint(0, 3, (40,), generator=gen), 4)


GRAPHS = {"skewed": _skewed_graph, "zipf": _zipf_graph, "single-edge": _single_edge_graph, "uniform": _uniform_graph}

T = TensorType
BY_ETYPE = dict(segment=ETYPE_OF_EDGE, layout=SegmentLayout.COO_ETYPE)


def _cases(k: int, n: int) -> dict[str, tuple[GemmKernel, dict[str, TensorType]]]:
    """Every form, for A rows of width ``k`` and results of width ``n``."""
    return {
        # rows of one vector: A gathered by source, one [k, n] matrix per edge type
        "vector-forward": (
            GemmKernel("out", "a", "w", a_gather=SRC, **BY_ETYPE),
            {"a": T(NODE, (k,)), "w": T(ETYPE, (k, n)), "out": T(EDGE, (n,))}),
        "vector-data-grad": (
            GemmKernel("out", "a", "w", transpose_w=True, scatter=DST, **BY_ETYPE),
            {"a": T(EDGE, (k,)), "w": T(ETYPE, (n, k)), "out": T(DST_NODE, (n,))}),
        "vector-weight-grad": (
            GemmKernel("out", "a", "w", a_gather=SRC, weight_grad=True, **BY_ETYPE),
            {"a": T(NODE, (k,)), "w": T(EDGE, (n,)), "out": T(ETYPE, (k, n))}),
        # per-head rows [rows, heads, k] and a [heads, k, n] weight per type (HGT, RGAT)
        "heads-forward": (
            GemmKernel("out", "a", "w", a_gather=SRC, batched=True, **BY_ETYPE),
            {"a": T(NODE, (3, k)), "w": T(ETYPE, (3, k, n)), "out": T(EDGE, (3, n))}),
        "heads-data-grad": (
            GemmKernel("out", "a", "w", transpose_w=True, scatter=SRC, batched=True, **BY_ETYPE),
            {"a": T(EDGE, (3, k)), "w": T(ETYPE, (3, n, k)), "out": T(NODE, (3, n))}),
        "heads-weight-grad": (
            GemmKernel("out", "a", "w", a_gather=SRC, weight_grad=True, batched=True, **BY_ETYPE),
            {"a": T(NODE, (3, k)), "w": T(EDGE, (3, n)), "out": T(ETYPE, (3, k, n))}),
        # two leading dims, one weight matrix for each of the 2 x 2 vectors of a row
        "heads-2d-forward": (
            GemmKernel("out", "a", "w", a_gather=DST, batched=True, **BY_ETYPE),
            {"a": T(DST_NODE, (2, 2, k)), "w": T(ETYPE, (2, 2, k, n)), "out": T(EDGE, (2, 2, n))}),
        # rows [rows, m, k] whose m vectors share the type's one [k, n] matrix
        "shared-forward": (
            GemmKernel("out", "a", "w", a_gather=DST, **BY_ETYPE),
            {"a": T(DST_NODE, (5, k)), "w": T(ETYPE, (k, n)), "out": T(EDGE, (5, n))}),
        "shared-data-grad": (
            GemmKernel("out", "a", "w", transpose_w=True, scatter=SRC, **BY_ETYPE),
            {"a": T(EDGE, (5, k)), "w": T(ETYPE, (n, k)), "out": T(NODE, (5, n))}),
        "shared-weight-grad": (
            GemmKernel("out", "a", "w", a_gather=DST, weight_grad=True, **BY_ETYPE),
            {"a": T(DST_NODE, (5, k)), "w": T(EDGE, (5, n)), "out": T(ETYPE, (k, n))}),
        # typed by node type, no gather: result rows placed through the type order's permutation
        "ntype-heads-forward": (
            GemmKernel("out", "a", "w", segment=NTYPE_OF_NODE, layout=SegmentLayout.NTYPE_SORTED, batched=True),
            {"a": T(NODE, (2, k)), "w": T(NTYPE, (2, k, n)), "out": T(NODE, (2, n))}),
        "ntype-weight-grad": (
            GemmKernel("out", "a", "w", segment=NTYPE_OF_NODE, layout=SegmentLayout.NTYPE_SORTED, weight_grad=True),
            {"a": T(NODE, (k,)), "w": T(NODE, (n,)), "out": T(NTYPE, (k, n))}),
    }


def _program(kernel: GemmKernel, types: dict[str, TensorType]) -> KernelProgram:
    buffers = tuple(Buffer(name, t, BufferRole.OUTPUT if name == "out" else BufferRole.INPUT)
                    for name, t in types.items())
    return KernelProgram(buffers, (kernel,), (kernel.layout.value,), (("out", "out"),))


def _every_form(k: int, n: int) -> tuple[KernelProgram, dict[str, dict[str, TensorType]]]:
    """Every form of :func:`_cases` in one program, each case's buffers prefixed by its
    name, so that one library per dtype and width holds them all (one compile, not
    twelve). Returns the program and each kernel's types by its roles."""
    buffers, kernels, types_of = [], [], {}
    for case, (kernel, types) in _cases(k, n).items():
        name = {role: f"{case.replace('-', '_')}_{role}" for role in types}
        kernels.append(dataclasses.replace(kernel, out=name["out"], a=name["a"], w=name["w"]))
        buffers += [Buffer(name[role], t, BufferRole.OUTPUT if role == "out" else BufferRole.INPUT)
                    for role, t in types.items()]
        types_of[kernels[-1].out] = types
    program = KernelProgram(tuple(buffers), tuple(kernels), tuple(k.layout.value for k in kernels),
                            tuple((k.out, k.out) for k in kernels))
    return program, types_of


def _inputs(kernel: GemmKernel, types: dict[str, TensorType], graph, dtype, seed: int) -> dict[str, torch.Tensor]:
    rows = {NODE: graph.num_nodes, DST_NODE: graph.num_dst_nodes, EDGE: graph.num_edges,
            ETYPE: graph.num_etypes, NTYPE: graph.num_ntypes}
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(rows[types[role].space], *types[role].shape, generator=gen,
                              dtype=torch.float64).to(dtype)
            for role, name in (("a", kernel.a), ("w", kernel.w))}


def _products_per_result(kernel: GemmKernel, types, graph, k: int) -> int:
    """The most products one result element sums: A's width, times the most rows a
    scatter adds into one target; or, for a weight gradient, the rows of the largest type
    times the vectors of a row that share its matrix."""
    if kernel.weight_grad:
        shared = 1 if kernel.batched else math.prod(types["a"].shape[:-1])
        typed = graph.etype if kernel.segment is ETYPE_OF_EDGE else graph.ntype
        return int(torch.bincount(typed).max()) * shared
    if kernel.scatter is None:
        return k
    target = graph.src if kernel.scatter is SRC else graph.dst
    return k * int(torch.bincount(target).max())


def _check(kernel, types, graph, dtype, k):
    _check_in(CpuExecutor(_program(kernel, types), poison=True), 0, types, graph, dtype, k)


def _check_in(executor: CpuExecutor, i: int, types, graph, dtype, k):
    """Kernel ``i`` of the executor's program (with ``types`` by role) against torch."""
    kernel = executor.program.kernels[i]
    assert gemm_supported(kernel, types["a"].shape, types["w"].shape)
    library = executor.library(dtype)
    library.pigeon_set_threads(THREADS)
    env = _inputs(kernel, types, graph, dtype, seed=graph.num_edges)
    got = executor.run_gemm(library, executor.rendered[i], kernel, graph, env, dtype)
    want = TorchExecutor(executor.program).gemm(kernel, graph, {n: v.double() for n, v in env.items()})
    assert got.dtype == dtype and got.shape == want.shape, kernel.describe()
    if dtype == torch.float64:
        torch.testing.assert_close(got, want, **F64, msg=lambda m: f"{kernel.describe()}: {m}")
        return
    # The inputs (float32, or 16-bit) are exact in float64, so the error is the float32
    # accumulation's: each of the L additions of a sum rounds by at most eps/2 of the sum
    # of the products' magnitudes (the same GEMM on |A|, |W|), and the roundings add up
    # like a random walk, about eps * sqrt(L) of it (4x for the tail of the distribution).
    # 16-bit storage adds its own eps/2 twice at most: a scattered row is stored before
    # the rows are summed, and the result is stored.
    magnitude = TorchExecutor(executor.program).gemm(kernel, graph, {n: v.double().abs() for n, v in env.items()})
    bound = 4 * torch.finfo(torch.float32).eps * math.sqrt(_products_per_result(kernel, types, graph, k))
    # Below the smallest normal value a stored result is a multiple of the subnormal
    # spacing (float16's 2^-24), an absolute error of half of it.
    slack = 1e-30
    if dtype in (torch.bfloat16, torch.float16):
        bound += torch.finfo(dtype).eps
        slack = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    error = (got.double() - want).abs()
    assert not got.isnan().any(), kernel.describe()
    assert (error <= bound * magnitude + slack).all(), f"{kernel.describe()}: error {float(error.max()):.2e}"


# (k, n): a width below one vector, widths with a partial vector and a scalar tail, and
# widths of whole register tiles (both float32 and float64 vectors).
WIDTHS = [(3, 5), (20, 37), (13, 90), (64, 64)]


# 16-bit storage at two widths: a partial vector with a scalar tail, and whole tiles.
DTYPES_AND_WIDTHS = [(dtype, width) for dtype in (torch.float64, torch.float32) for width in WIDTHS] + [
    (dtype, width) for dtype in (torch.bfloat16, torch.float16) for width in ((20, 37), (64, 64))]


@pytest.mark.parametrize("dtype,k,n", [(d, *w) for d, w in DTYPES_AND_WIDTHS], ids=lambda v: str(v))
def test_generated_gemm_matches_torch(k, n, dtype, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: THREADS)
    program, types_of = _every_form(k, n)
    executor = CpuExecutor(program, poison=True)
    for i, kernel in enumerate(program.kernels):
        for name, make in GRAPHS.items():
            if kernel.segment is NTYPE_OF_NODE and name == "single-edge":
                continue   # the same as skewed for node types
            _check_in(executor, i, types_of[kernel.out], make(), dtype, k)


NARROWER = {"avx2": ("-mno-avx512f",), "sse": ("-mno-avx512f", "-mno-avx2", "-mno-avx")}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 vector-width flags")
@pytest.mark.parametrize("isa", list(NARROWER))
def test_narrower_vector_widths_match_torch(isa, monkeypatch):
    # The tile and the vector width follow what the compiler targets: build for narrower
    # vectors than this machine's (-march=native) and check the same forms.
    from pigeon import clib

    monkeypatch.setattr(clib, "CFLAGS", clib.CFLAGS + NARROWER[isa])
    monkeypatch.setattr(torch, "get_num_threads", lambda: THREADS)
    for case in ("vector-forward", "heads-data-grad", "shared-weight-grad"):
        kernel, types = _cases(13, 90)[case]
        for dtype in (torch.float64, torch.float32):
            _check(kernel, types, _zipf_graph(), dtype, 13)


def test_empty_graph_writes_every_output():
    graph = _graph(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                   torch.zeros(0, dtype=torch.long), 3, [0, 1, 0], 2)
    for case in ("heads-forward", "heads-data-grad", "heads-weight-grad"):
        kernel, types = _cases(7, 9)[case]
        _check(kernel, types, graph, torch.float64, 7)


# ---- where the CPU backend runs which ------------------------------------------------

def _executor(case: str, k: int = 8, n: int = 8) -> tuple[CpuExecutor, GemmKernel]:
    kernel, types = _cases(k, n)[case]
    executor = CpuExecutor(_program(kernel, types))
    return executor, kernel


@pytest.mark.parametrize("case", ["vector-forward", "heads-forward", "heads-weight-grad", "shared-data-grad"])
def test_c_runs_skewed_uniform_and_long_segments(case):
    executor, kernel = _executor(case)
    rendered = executor.rendered[0]
    one_type = _graph(torch.randint(0, 50, (20_000,)), torch.randint(0, 50, (20_000,)),
                      torch.zeros(20_000, dtype=torch.long), 50, torch.zeros(50, dtype=torch.long), 1)
    for graph in (_zipf_graph(), _uniform_graph(), one_type):
        assert executor.gemm_in_c(kernel, rendered, graph)


def test_torch_keeps_transposed_products_of_one_row_per_matrix_over_uniform_types():
    one_each = _graph([0, 1, 2, 0], [1, 2, 0, 0], [0, 1, 2, 3], 3, [0, 1, 2], 4)
    executor, kernel = _executor("heads-data-grad")
    assert not executor.gemm_in_c(kernel, executor.rendered[0], one_each)
    assert executor.gemm_in_c(kernel, executor.rendered[0], _uniform_graph())
    # The forward and the weight gradient read the weight as stored: C.
    for case in ("heads-forward", "heads-weight-grad"):
        executor, kernel = _executor(case)
        assert executor.gemm_in_c(kernel, executor.rendered[0], one_each)
    # Vectors sharing a matrix are several rows of it.
    executor, kernel = _executor("shared-data-grad")
    assert executor.gemm_in_c(kernel, executor.rendered[0], one_each)


def test_every_typed_form_is_rendered_and_untyped_gemms_are_not():
    for case, (kernel, types) in _cases(4, 6).items():
        assert gemm_supported(kernel, types["a"].shape, types["w"].shape), case
    assert not gemm_supported(GemmKernel("out", "a", "w", a_gather=SRC), (4,), (4, 6))  # one BLAS call
    heads = _cases(4, 6)["heads-forward"][0]
    assert not gemm_supported(heads, (3, 4), (2, 4, 6))   # a weight per head needs as many heads


# ---- the rendered C (FileCheck style) ------------------------------------------------

def _source(case: str, k: int = 64, n: int = 64) -> str:
    kernel, types = _cases(k, n)[case]
    return render_gemm(kernel, "g0", types["a"].shape, n).source


def test_micro_kernel_keeps_vector_accumulators_in_a_register_tile():
    source = _source("vector-forward")
    assert "typedef real vreal __attribute__((vector_size(GEMM_VBYTES)" in source
    assert "vreal acc[GEMM_RB][GEMM_NV];" in source
    assert "acc[i][j] = vfma_(av, wv[j], acc[i][j]);" in source   # broadcast A times a vector of W
    assert "_mm512_fmadd_ps" in source and "_mm256_fmadd_pd" in source   # explicit FMAs, not contraction
    assert "__builtin_prefetch((const char *)a[q + i] + c);" in source   # the next tile's gathered rows
    assert "#pragma omp parallel" in source and "schedule(dynamic, 1)" in source


def test_heads_loop_over_their_matrices_and_shared_vectors_are_rows():
    heads = _source("heads-forward")
    assert "for (int h = 0; h < 3; h++)" in heads
    assert "const real *w = weights + (t * 3 + h) * 4096;" in heads
    shared = _source("shared-forward")
    assert "for (int h = 0; h < 1; h++)" in shared and "for (int m = 0; m < 5; m++, count++)" in shared


def test_data_gradient_packs_the_transposed_weights_once():
    source = _source("heads-data-grad")
    assert "gemm_pack_(W + th * 4096, packed + th * 4096, 64, 64, 1);" in source and "const int pack = 1;" in source
    assert "if (slot[th / 3] == -1) continue;" in source    # types without rows are not packed
    # W in place, unless its storage is 16-bit (then converted once into `packed`).
    assert "const int pack = PIGEON_NARROW;" in _source("heads-forward")


def test_scatter_sums_each_target_row_on_one_thread():
    source = _source("heads-data-grad")
    assert "atomic" not in source
    assert "for (int64_t g = 0; g < targets; g++) {" in source
    assert "const storage *r = out + target_pos[e] * 192;" in source and "y[j] += LOAD(r[j]);" in source
    assert "target_pos" not in _source("heads-forward")


def test_weight_gradient_writes_single_block_types_directly_and_sums_per_thread_slices():
    source = _source("heads-weight-grad")
    assert "atomic" not in source
    assert "real *mine = partial + (int64_t)omp_get_thread_num() * shared_types * 12288;" in source
    assert "slot[t] == -2 ? out + t * 12288 : mine + slot[t] * 12288" in source
    assert "for (int th = 0; th < team; th++)" in source   # the threads OpenMP gave
