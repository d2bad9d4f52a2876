"""The Triton GEMM template against the torch backend's GEMMs.

Every GemmKernel of compiled RGCN, RGAT and HGT layers (forward and backward, each
layout decision forced) runs through ``launch_gemm`` on the buffers the torch backend
computes up to it, and must equal ``TorchExecutor.gemm``. Hand-built kernels cover the
structures no layer emits today. Without CUDA the kernels run in Triton's interpreter.
"""

from __future__ import annotations

import math
import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before Triton is imported

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import pigeon
from pigeon import nn as pnn
from pigeon.codegen.triton_gemm import default_config, render_gemm
from pigeon.runtime.triton_gemm import _SEGMENT_TABLES, launch_gemm
from pigeon.ir.graph_ir import (
    EDGE, ETYPE, ETYPE_OF_EDGE, GLOBAL, NODE, NTYPE, NTYPE_OF_NODE, SRC, DST, Op, TensorType,
)
from pigeon.ir.kernel_ir import Buffer, BufferRole, GemmKernel, KernelProgram, SegmentLayout, ViewKernel
from pigeon.runtime.interpret import run
from pigeon.runtime.torch_backend import TorchExecutor, run_view
from pigeon.runtime.triton_backend import load_module
from strategies import hetero_graphs

F64 = dict(rtol=1e-10, atol=1e-10)
# fp32: both sides sum at most ~40 products of O(1) values in fp32 in different orders,
# so they differ by a few ulps of the largest partial sum (~2**-24 * 40 * 10 ~ 2.4e-5).
F32 = dict(rtol=1e-5, atol=5e-5)
# fp16/bf16 inputs, fp32 accumulation, rounded once to the output: half an ulp of the
# result (2**-11 for fp16, 2**-8 for bf16) relative, against an fp64 reference on the same inputs.
HALF = {torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}
SMALL_TILES = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "num_warps": 4, "num_stages": 2}


def _skewed_graph() -> pigeon.HeteroGraph:
    """50 edges: relation 0 has 37 (three 16-row tiles), relation 1 none, relation 2 has 13;
    node type 2 is empty, node 11 isolated, and edge (3, 4) repeats five times."""
    gen = torch.Generator().manual_seed(7)
    src = torch.randint(0, 11, (50,), generator=gen)
    dst = torch.randint(0, 11, (50,), generator=gen)
    src[:5], dst[:5] = 3, 4
    etype = torch.cat([torch.zeros(37, dtype=torch.long), torch.full((13,), 2)])
    ntype = torch.tensor([0, 1] * 6)
    return pigeon.HeteroGraph(src, dst, etype, 12, ntype, num_etypes=3, num_ntypes=3)


# ---- real layers -----------------------------------------------------------------------

def _layer(name: str, graph, options: dict, dtype: torch.dtype):
    """The layer and its tensors; widths above 16 so small tiles take several K and N steps."""
    if name == "rgcn":
        in_dim, module = 20, pnn.RGCN(20, 24, graph.num_etypes, **options)
    elif name == "rgat":
        in_dim, module = 20, pnn.RGAT(20, 12, graph.num_etypes, heads=2, **options)
    else:
        in_dim, module = 8, pnn.HGT(8, 16, graph.num_ntypes, graph.num_etypes, heads=2, **options)
    module = module.to(dtype=dtype, device=DEVICE)
    gen = torch.Generator().manual_seed(graph.num_edges)
    x = torch.randn(graph.num_nodes, in_dim, generator=gen, dtype=dtype).to(DEVICE)
    return module, {"x": x, **{n: p.detach() for n, p in module.named_parameters()}}


def _check_program(program: KernelProgram, graph, env: dict, dtype: torch.dtype, config, tolerance) -> int:
    """Run ``program`` with the torch backend, checking each GEMM's Triton launch on the way."""
    torch_exec = TorchExecutor(program)
    gemms = {i: render_gemm(k, f"gemm{i}", program)
             for i, k in enumerate(program.kernels) if isinstance(k, GemmKernel)}
    module = load_module([g.source for g in gemms.values()])
    for i, kernel in enumerate(program.kernels):
        if isinstance(kernel, GemmKernel):
            want = torch_exec.gemm(kernel, graph, env)
            # Outputs start as NaN, so an element no program writes fails the test.
            got = launch_gemm(module, gemms[i], graph, env, dtype, config=config, poison=True)
            assert got.shape == want.shape and got.dtype == want.dtype, kernel.describe()
            torch.testing.assert_close(got, want, **tolerance, msg=lambda m: f"{kernel.describe()}: {m}")
            env[kernel.out] = want
            continue
        if isinstance(kernel, ViewKernel):
            env[kernel.out] = run_view(kernel, graph, program, env)
            continue
        inputs = {n.attr("name"): env[n.attr("name")] for n in kernel.body.nodes if n.op is Op.INPUT}
        env.update(run(kernel.body, graph, inputs, {}, dtype=dtype))
    return len(gemms)


def _check_layer(name: str, options: dict, graph, dtype: torch.dtype, config, tolerance) -> None:
    graph = graph.to(DEVICE)
    module, tensors = _layer(name, graph, options, dtype)
    plan = module.compiled.plan(graph, tensors)
    env = dict(tensors)
    count = _check_program(plan.forward_kernels, graph, env, dtype, config, tolerance)
    # The backward program's inputs, as the autograd function gives them.
    values = dict(tensors)
    values.update({saved: env[buffer] for buffer, saved in plan.saved})
    gen = torch.Generator().manual_seed(1)
    for out_name, buffer in plan.forward_kernels.outputs:
        values[f"grad_{out_name}"] = torch.randn(env[buffer].shape, generator=gen, dtype=dtype).to(DEVICE)
    count += _check_program(plan.backward_kernels, graph, values, dtype, config, tolerance)
    assert count > 0


LAYER_CASES = [
    ("rgcn", dict()),                                        # compact_src, untyped self-loop GEMMs
    ("rgcn", dict(reorder=True, compact=False)),             # coo_etype: gather by src, scatter to src
    ("rgat", dict(reorder=False, compact=True)),             # compact_dst
    ("rgat", dict(reorder=True, compact=True)),              # compact rows as A, no gather
    ("hgt", dict(reorder=False, compact=False)),             # ntype_sorted, batched coo_etype
    ("hgt", dict(reorder=True, compact=True)),               # ntype_etype, ntype_etype_compact_src
    ("hgt", dict(reorder=True, compact=False)),              # ntype_etype_edges
]


@pytest.mark.parametrize("name,options", LAYER_CASES, ids=lambda v: v if isinstance(v, str) else
                         ",".join(f"{k}={x}" for k, x in v.items()) or "cost-model")
@settings(max_examples=2)
@given(graph=hetero_graphs(max_nodes=10, max_edges=40, max_etypes=4), small=st.booleans())
@example(graph=_skewed_graph(), small=True)
def test_layer_gemms_match_torch_float64(name, options, graph, small):
    _check_layer(name, options, graph, torch.float64, SMALL_TILES if small else None, F64)


@pytest.mark.parametrize("name,options", [("rgcn", dict(reorder=True, compact=False)),
                                          ("hgt", dict(reorder=False, compact=False))])
def test_layer_gemms_match_torch_float32(name, options):
    assert not torch.backends.cuda.matmul.allow_tf32   # exact fp32 on both sides
    _check_layer(name, options, _skewed_graph(), torch.float32, None, F32)


# ---- hand-built kernels ----------------------------------------------------------------

def _program(kernel: GemmKernel, types: dict[str, TensorType]) -> KernelProgram:
    buffers = tuple(Buffer(name, t, BufferRole.INPUT if name != kernel.out else BufferRole.OUTPUT)
                    for name, t in types.items())
    return KernelProgram(buffers, (kernel,), (kernel.layout.value,) if kernel.layout else (), (("out", kernel.out),))


def _rows(graph, space) -> int | None:
    return {NODE: graph.num_nodes, EDGE: graph.num_edges, ETYPE: graph.num_etypes, NTYPE: graph.num_ntypes,
            GLOBAL: None}[space]


def _inputs(program: KernelProgram, graph, dtype, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    env = {}
    for b in program.buffers:
        if b.role is BufferRole.INPUT:
            rows = _rows(graph, b.type.space)
            shape = b.type.shape if rows is None else (rows, *b.type.shape)
            env[b.name] = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=DEVICE)
    return env


T = TensorType
HAND_BUILT = {
    # untyped, W [H, K, N] per head; A rows gathered by src, summed into dst
    "untyped-batched-gather-scatter": (
        GemmKernel("out", "a", "w", a_gather=SRC, scatter=DST, batched=True),
        {"a": T(NODE, (2, 20)), "w": T(GLOBAL, (2, 20, 18)), "out": T(NODE, (2, 18))}),
    # untyped, one W shared by the leading dim of the rows, transposed
    "untyped-shared-w-transposed": (
        GemmKernel("out", "a", "w", transpose_w=True),
        {"a": T(EDGE, (3, 20)), "w": T(GLOBAL, (18, 20)), "out": T(EDGE, (3, 18))}),
    # typed by edge type, one W per type shared by the rows' leading dim
    "typed-shared-w": (
        GemmKernel("out", "a", "w", a_gather=DST, segment=ETYPE_OF_EDGE, layout=SegmentLayout.COO_ETYPE),
        {"a": T(NODE, (3, 20)), "w": T(ETYPE, (20, 18)), "out": T(EDGE, (3, 18))}),
    # weight gradient summed over the rows' leading dim (the weight is shared by it)
    "typed-weight-grad-batch-sum": (
        GemmKernel("out", "a", "w", a_gather=SRC, segment=ETYPE_OF_EDGE, weight_grad=True, layout=SegmentLayout.COO_ETYPE),
        {"a": T(NODE, (3, 20)), "w": T(EDGE, (3, 18)), "out": T(ETYPE, (20, 18))}),
    "untyped-weight-grad-batch-sum": (
        GemmKernel("out", "a", "w", weight_grad=True),
        {"a": T(NODE, (3, 20)), "w": T(NODE, (3, 18)), "out": T(GLOBAL, (20, 18))}),
    "untyped-weight-grad-batched-gather": (
        GemmKernel("out", "a", "w", a_gather=SRC, weight_grad=True, batched=True),
        {"a": T(NODE, (2, 20)), "w": T(EDGE, (2, 18)), "out": T(GLOBAL, (2, 20, 18))}),
    # a GLOBAL operand is one row
    "untyped-weight-grad-global": (
        GemmKernel("out", "a", "w", weight_grad=True),
        {"a": T(GLOBAL, (20,)), "w": T(GLOBAL, (18,)), "out": T(GLOBAL, (20, 18))}),
    # node types: one segment empty
    "typed-ntype-transposed": (
        GemmKernel("out", "a", "w", segment=NTYPE_OF_NODE, transpose_w=True, layout=SegmentLayout.NTYPE_SORTED),
        {"a": T(NODE, (20,)), "w": T(NTYPE, (18, 20)), "out": T(NODE, (18,))}),
}


@pytest.mark.parametrize("case", list(HAND_BUILT))
@pytest.mark.parametrize("config", [None, SMALL_TILES], ids=["default", "small-tiles"])
def test_hand_built_gemms_match_torch(case, config):
    kernel, types = HAND_BUILT[case]
    graph = _skewed_graph().to(DEVICE)
    program = _program(kernel, types)
    env = _inputs(program, graph, torch.float64, seed=len(case))
    module = load_module([render_gemm(kernel, "gemm", program).source])
    want = TorchExecutor(program).gemm(kernel, graph, env)
    got = launch_gemm(module, render_gemm(kernel, "gemm", program), graph, env, torch.float64, config=config,
                      poison=True)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **F64)


HALF_DTYPES = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("case", ["untyped-batched-gather-scatter", "typed-weight-grad-batch-sum",
                                  "typed-ntype-transposed"])
def test_half_precision_accumulates_in_fp32(case, dtype):
    kernel, types = HAND_BUILT[case]
    graph = _skewed_graph().to(DEVICE)
    program = _program(kernel, types)
    env = _inputs(program, graph, dtype, seed=3)
    want = TorchExecutor(program).gemm(kernel, graph, {k: v.double() for k, v in env.items()})
    gemm = render_gemm(kernel, "gemm", program)
    got = launch_gemm(load_module([gemm.source]), gemm, graph, env, dtype, poison=True)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, **HALF[dtype])


# ---- rendering (FileCheck style) -------------------------------------------------------

def _source(case: str) -> str:
    kernel, types = HAND_BUILT[case]
    return render_gemm(kernel, "gemm", _program(kernel, types)).source


def test_header_names_the_kernel_spec_and_every_function_has_the_prefix():
    for case, (kernel, types) in HAND_BUILT.items():
        source = render_gemm(kernel, "pfx3", _program(kernel, types)).source
        assert source.splitlines()[0] == f"# {kernel.describe()}"
        defs = [line for line in source.splitlines() if line.startswith("def ")]
        assert defs == ["def pfx3_kernel("], case
        compile(source, case, "exec")   # valid Python as rendered


def test_scatter_uses_atomics_and_store_does_not():
    scatter = _source("untyped-batched-gather-scatter")
    assert "c_rows = tl.load(targets_ptr + offs_m" in scatter
    assert "tl.atomic_add(c_ptrs, c, mask=mask_c)" in scatter
    store = _source("untyped-shared-w-transposed")
    assert "tl.atomic" not in store and "targets_ptr" not in store
    assert "tl.store(c_ptrs, c, mask=mask_c)" in store


def test_weight_gradient_has_no_atomics_and_walks_its_segment():
    source = _source("typed-weight-grad-batch-sum")
    assert "tl.atomic" not in source
    assert "row_start = tl.load(bounds_ptr + pid_t)" in source
    assert "for m in range(row_start, row_end, BLOCK_M):" in source
    assert "for batch in range(0, BATCH):" in source          # the shared weight sums the leading dim
    assert "b_rows = tl.load(perm_ptr + offs_m" in source     # upstream rows read through the permutation


def test_gathered_variant_loads_the_row_index_and_direct_does_not():
    gathered = _source("typed-shared-w")
    assert "rows = tl.load(rows_ptr + offs_m, mask=mask_m, other=0)" in gathered
    assert "segment = tl.load(tiles_ptr + 3 * pid_m)" in gathered
    direct = _source("untyped-shared-w-transposed")
    assert "rows_ptr" not in direct and "rows = offs_m.to(tl.int64)" in direct
    assert "# W is stored [N, K]: the strides read it transposed." in direct
    batched = _source("untyped-batched-gather-scatter")
    assert "batch = tl.program_id(2)" in batched and "tiles_ptr" not in batched


def test_fp32_dot_is_exact_unless_torch_allows_tf32():
    from pigeon.runtime.triton_gemm import _dot_precision
    was = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert _dot_precision(torch.float32) == "ieee"
        torch.backends.cuda.matmul.allow_tf32 = True
        assert _dot_precision(torch.float32) == "tf32"
        assert _dot_precision(torch.float64) == "ieee"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was
    assert "input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)" in _source("typed-shared-w")


# ---- tables, configs and errors --------------------------------------------------------

def test_tile_table_is_built_once_per_graph_and_never_crosses_a_segment():
    graph = _skewed_graph()
    kernel = HAND_BUILT["typed-shared-w"][0]
    table = _SEGMENT_TABLES.tiles(graph, kernel, 16)
    assert table.tolist() == [[0, 0, 37], [0, 16, 37], [0, 32, 37], [2, 37, 50]]
    assert _SEGMENT_TABLES.tiles(graph, kernel, 16) is table
    assert _SEGMENT_TABLES.tiles(graph, kernel, 64).tolist() == [[0, 0, 37], [2, 37, 50]]
    assert _SEGMENT_TABLES.bounds(graph, kernel).tolist() == [0, 37, 37, 50]


def test_default_configs_are_powers_of_two_of_at_least_16():
    for weight_grad in (False, True):
        for n, k in ((1, 1), (8, 20), (300, 1000)):
            for dtype in (torch.float32, torch.float64):
                config = default_config(weight_grad, n, k, dtype)
                assert set(config) == {"BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"}
                for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"):
                    assert config[key] >= 16 and math.log2(config[key]).is_integer()
    assert default_config(False, 20, 20, torch.float32)["BLOCK_N"] == 32


def test_bad_dtypes_name_the_argument():
    kernel, types = HAND_BUILT["typed-shared-w"]
    program = _program(kernel, types)
    graph = _skewed_graph().to(DEVICE)
    env = _inputs(program, graph, torch.float64, seed=1)
    gemm = render_gemm(kernel, "gemm", program)
    module = load_module([gemm.source])
    with pytest.raises(ValueError, match=r"Expected `dtype` to be one of float64, float32, float16, "
                                         r"bfloat16 .*got torch.int32"):
        launch_gemm(module, gemm, graph, env, torch.int32)
    with pytest.raises(ValueError, match=r"Expected buffer `a` \(A operand of `gemm out = a\[dst\] @ w.*\) "
                                         r"in torch.float32 \(got torch.float64\)"):
        launch_gemm(module, gemm, graph, env, torch.float32)
    env["w"] = env["w"][:, :, :5]
    with pytest.raises(ValueError, match=r"Expected buffer `w` \(weight .*of shape \[rows, 20, 18\] "
                                         r"\(got \[3, 20, 5\]\)"):
        launch_gemm(module, gemm, graph, env, torch.float64)
