"""bfloat16 and float16: every layer on every backend against the float64 reference,
forward and every gradient, with tolerances derived from the format; accumulation in
float32; mixed parameter and input dtypes; torch.autocast; the C conversions.

Tolerance. A compiled layer reads inputs and parameters stored in the 16-bit format,
computes in float32 and rounds each value it writes to memory. The reference runs in
float64 on the very same (already rounded) values, so what is measured is the
computation's own error. Each value written rounds with a relative error of at most
u = 2^-p (p: the format's significand bits, 8 for bfloat16, 11 for float16), and a
rounded value enters sums of up to K terms (K: the longest reduction of the layer,
forward or backward: a GEMM's width, a node's in-degree, the rows of a weight
gradient). Rounding errors of random signs add up like a random walk, so the error of a
sum of K rounded terms is about u sqrt(K) times the size of the terms, and we hold
every output and gradient to

    ||got - want|| / size  <=  C u sqrt(K),   C = 8

where size is ||want||, unless the result cancels: the terms of a sum can add to
(nearly) 0, as the gradients of RGAT's ``att_dst`` or HGT's ``k_bias`` do (a term the
same on each edge of a destination's softmax gets the sum of the softmax's gradients,
0), or every attention gradient on a node whose edges are copies of one edge; rounding
then leaves u times the size of the terms, and that size is what counts. The test
measures it the same way for every result: the float64 reference run once more with
every value each of its rounding operations produces (forward and backward; copies,
selections and maxima are exact) moved by a random relative error of at most u,
``want_moved``, errs by about u times the size of the terms, so

    size = max(||want||, ||want_moved - want|| / u).

The few roundings in a chain of kernels and the float32 sums stay well under C; summing
in the 16-bit format instead loses u K, and a wrong conversion loses everything.

Kinks are the other limit: a maximum's gradient goes to the rows that reach it, and a
ReLU's to the values above 0, and rounding moves a value across a near tie or across 0,
which moves a whole term of the gradient elsewhere. The NBFNet layers (max and min
aggregation, a ReLU after a layer norm) take inputs on a grid of quarters below 2,
whose messages are exact in both formats, so they and the reference pick the same rows
(and split exact ties alike), and a layer norm scaled by at most 0.1 and shifted by 1, so the
ReLU sees values in [0.8, 1.2].
"""

from __future__ import annotations

import math
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_map  # noqa: E402

import pigeon  # noqa: E402
from pigeon import nn as pnn  # noqa: E402
from pigeon.frontend import PerNtype, aggregate, linear  # noqa: E402
from pigeon import reference  # noqa: E402
from strategies import hetero_graphs  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.bfloat16, torch.float16]
#: Unit roundoff of each format: 2^-(significand bits).
UNIT = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
C = 8


def tolerance(dtype: torch.dtype, length: int) -> float:
    """The bound on the norm-wise relative error (module docstring) for reductions of ``length`` terms."""
    return C * UNIT[dtype] * math.sqrt(max(length, 1))


_aten = torch.ops.aten
#: Operations whose every value is one of their inputs' values (or its negation): exact in
#: any format, so not perturbed. Perturbing a maximum would also break the reference's
#: ``value == max`` tie masks and leave no row to route its gradient to.
_EXACT = {_aten.gather, _aten.index_select, _aten.index, _aten.cat, _aten.stack, _aten._to_copy, _aten.clone,
          _aten.copy, _aten.new_full, _aten.new_zeros, _aten.new_empty, _aten.full, _aten.full_like, _aten.zeros,
          _aten.zeros_like, _aten.arange, _aten.neg, _aten.relu, _aten.threshold_backward, _aten.where,
          _aten.amax, _aten.amin, _aten.max, _aten.min, _aten.maximum, _aten.minimum}


class _Perturbed(TorchDispatchMode):
    """Every float64 value a rounding torch operation produces (not views, not in-place
    updates, not the exact operations of ``_EXACT`` or a scatter's maximum or minimum)
    times 1 + u r, r uniform in [-1, 1] per element: the reference with a random
    rounding error of at most u in each of its operations (Monte Carlo arithmetic)."""

    def __init__(self, unit: float, seed: int = 0):
        super().__init__()
        self.unit = unit
        self.generator = torch.Generator().manual_seed(seed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func._schema.is_mutable or func.overloadpacket in _EXACT:
            return out
        if func.overloadpacket is _aten.scatter_reduce and _reduction(args, kwargs) in ("amax", "amin"):
            return out
        return tree_map(self._perturb, out)

    def _perturb(self, t):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float64:
            return t
        r = torch.rand(t.shape, generator=self.generator, dtype=torch.float64) * 2 - 1
        return t * (1 + self.unit * r.to(t.device))


def _reduction(args, kwargs) -> str:
    """The ``reduce`` argument of a ``scatter_reduce`` call (its fifth, or a keyword)."""
    return (kwargs or {}).get("reduce", args[4] if len(args) > 4 else None)


def _results(layer, inputs, call, upstream):
    """(output, gradients of ``inputs`` and of the layer's parameters) for ``upstream``."""
    out = call(layer, inputs)
    grads = torch.autograd.grad(out, [*inputs, *layer.parameters()], upstream, allow_unused=True)
    return out, grads


# ---- layers: the compiled one in a 16-bit dtype and the float64 reference on its values ----

def _graph_layer(name: str, graph, backend: str, dtype: torch.dtype):
    """(compiled layer in ``dtype``, float64 reference with the same values, inputs in
    ``dtype``, the longest reduction)."""
    torch.manual_seed(graph.num_edges)
    if name == "rgcn":
        args, kwargs, cls = (4, 6, graph.num_etypes), dict(num_bases=2, norm="relation"), "RGCN"
    elif name == "rgat":
        args, kwargs, cls = (4, 3, graph.num_etypes), dict(heads=2), "RGAT"
    elif name == "hgt":
        args, kwargs, cls = (4, 4, graph.num_ntypes, graph.num_etypes), dict(heads=2), "HGT"
    else:
        message, aggregate = name.split("-")[1:]
        args, kwargs, cls = (4, graph.num_etypes), dict(message=message, aggregate=aggregate), "NBFNetLayer"
    compiled = getattr(pnn, cls)(*args, **kwargs, backend=backend).to(dtype)
    if cls == "NBFNetLayer":   # the ReLU's input in [0.8, 1.2] (module docstring)
        with torch.no_grad():
            compiled.layer_norm.weight.uniform_(0.05, 0.1)
            compiled.layer_norm.bias.fill_(1.0)
    ref = getattr(reference, cls)(*args, **kwargs).double()
    ref.load_state_dict(compiled.state_dict())
    gen = torch.Generator().manual_seed(graph.num_nodes)
    if cls == "NBFNetLayer":
        shapes = [(2, graph.num_nodes, 4), (2, graph.num_nodes, 4), (2, graph.num_etypes, 4)]
        width = 13 * 4    # the linear after PNA's 12 statistics and the input
    else:
        shapes = [(graph.num_nodes, args[0])]
        width = max(args[:2])
    if cls == "NBFNetLayer":   # quarters below 2: exact messages (module docstring)
        inputs = [torch.randint(-7, 8, s, generator=gen).to(dtype) / 4 for s in shapes]
    else:
        inputs = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    degree = int(torch.bincount(graph.dst, minlength=graph.num_nodes).max()) if graph.num_edges else 0
    # Forward sums run over a GEMM's width and a node's edges (+ a self message); weight
    # gradients over every edge or node of a type.
    length = max(width, degree + 1, graph.num_edges, graph.num_nodes)
    return compiled, ref, inputs, length


def _compare(compiled, ref, inputs, call, dtype, length):
    """Forward and the gradients of every input and parameter, each within the tolerance
    (module docstring); returns the errors, relative to each result's size."""
    inputs = [x.to(DEVICE).requires_grad_() for x in inputs]
    wide = [x.detach().cpu().double().requires_grad_() for x in inputs]
    upstream = torch.randn(call(ref, wide).shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    got, got_grads = _results(compiled, inputs, call, upstream.to(DEVICE))
    assert got.dtype == dtype
    want, want_grads = _results(ref, wide, call, upstream.double())
    with _Perturbed(UNIT[dtype]):
        perturbed, perturbed_grads = _results(ref, [x.detach().requires_grad_() for x in wide], call, upstream.double())
    names = ["forward"] + [f"input{i}" for i in range(len(inputs))] + [n for n, _ in compiled.named_parameters()]
    leaves = [got, *inputs, *compiled.parameters()]
    errors = {}
    for name, leaf, a, b, c in zip(names, leaves, (got, *got_grads), (want, *want_grads),
                                   (perturbed, *perturbed_grads)):
        if b is None:   # a parameter the graph never reaches: Pigeon gives zeros or nothing
            assert a is None or not a.any(), f"gradient of {name}: expected zeros"
            continue
        assert a.dtype == leaf.dtype, f"{name}: in {a.dtype}, its tensor in {leaf.dtype}"
        size = max(b.norm().item(), (c - b).norm().item() / UNIT[dtype])
        error = (a.cpu().double() - b).norm().item()
        errors[name] = error / size if size > 0 else error
    bound = tolerance(dtype, length)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= bound, (f"{worst}: relative error {errors[worst]:.3g} over the bound {bound:.3g} "
                                    f"({C} u sqrt({length})); all: {errors}")
    return errors


GRAPH_LAYERS = ["rgcn", "rgat", "hgt", "nbfnet-distmult-pna", "nbfnet-rotate-max"]


def _on(graph):
    """A ``call`` that gives each layer the graph on its inputs' device."""
    graphs = {"cpu": graph.to("cpu"), DEVICE: graph.to(DEVICE)}
    return lambda layer, xs: layer(graphs[xs[0].device.type], *xs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("name", GRAPH_LAYERS)
@settings(max_examples=4)
@given(graph=hetero_graphs(max_nodes=10, max_edges=30))
def test_graph_layers_within_the_format_tolerance(graph, name, backend, dtype):
    compiled, ref, inputs, length = _graph_layer(name, graph, backend, dtype)
    _compare(compiled, ref, inputs, _on(graph), dtype, length)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", GRAPH_LAYERS)
@settings(max_examples=2)
@given(graph=hetero_graphs(max_nodes=6, max_edges=12, max_etypes=3, max_ntypes=2))
def test_graph_layers_on_triton(graph, name, dtype):
    compiled, ref, inputs, length = _graph_layer(name, graph, "triton", dtype)
    _compare(compiled.to(DEVICE), ref, inputs, _on(graph), dtype, length)


# ---- neural operators ------------------------------------------------------------------------

SPECTRAL = [(1, 4, (16,)), (2, (2, 3), (6, 7))]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", ["fft", "dft"])
@pytest.mark.parametrize("backend", ["cpu", "torch", "triton"])
@pytest.mark.parametrize("dim, modes, spatial", SPECTRAL, ids=["1d", "2d"])
def test_spectral_conv_within_the_format_tolerance(dim, modes, spatial, backend, path, dtype):
    torch.manual_seed(5)
    cin, cout, batch = 3, 4, 3
    compiled = pnn.SpectralConv(cin, cout, modes, dim, backend=backend, path=path).to(DEVICE, dtype)
    ref = reference.SpectralConv(cin, cout, modes, dim, dtype=torch.float64)
    ref.load_state_dict(compiled.state_dict())
    x = torch.randn(batch, cin, *spatial, generator=torch.Generator().manual_seed(6)).to(dtype)
    # Transforms sum over the grid, the mix over 2 cin values; weight gradients over the batch.
    length = max(math.prod(spatial), 2 * cin, batch)
    _compare(compiled, ref, [x], lambda layer, xs: layer(xs[0]), dtype, length)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["cpu", "torch", "triton"])
@pytest.mark.parametrize("stacked", [False, True])
def test_deeponet_within_the_format_tolerance(stacked, backend, dtype):
    torch.manual_seed(8)
    branch, trunk = [6, 8, 4], [2, 8, 4]
    compiled = pnn.DeepONet(branch, trunk, backend=backend, stacked=stacked, activation="tanh").to(DEVICE, dtype)
    ref = reference.DeepONet(branch, trunk, stacked=stacked, activation="tanh", dtype=torch.float64)
    ref.load_state_dict(compiled.state_dict())
    gen = torch.Generator().manual_seed(9)
    u, y = torch.randn(5, 6, generator=gen).to(dtype), torch.rand(7, 2, generator=gen).to(dtype)
    # The widest layer, and weight gradients over the 5 functions or 7 points.
    _compare(compiled, ref, [u, y], lambda layer, xs: layer(*xs), dtype, 8)


# ---- accumulation: long sums lose only their final rounding ----------------------------------

@pigeon.layer
def _long_sums(g, x, w: PerNtype):
    return aggregate(g, g.src(linear(x, w)), "sum")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", ["cpu", "torch", "triton"])
def test_long_sums_accumulate_in_float32(backend, dtype):
    # Every node sends to node 0: its sum has 1024 positive terms (each near 4), and the
    # gradient of each node type's weight sums over its 512 nodes. With no cancellation,
    # float32 sums leave the roundings of the stored terms and of the result, a few u;
    # a sum kept in the 16-bit format stalls once a term is below half its last bit
    # (near 1024 in bfloat16, a quarter of the way).
    nodes = 1024
    graph = pigeon.HeteroGraph(torch.arange(nodes), torch.zeros(nodes, dtype=torch.long), num_nodes=nodes,
                               ntype=torch.arange(nodes) % 2, num_ntypes=2).to(DEVICE)
    gen = torch.Generator().manual_seed(0)
    x = (0.5 + torch.rand(nodes, 4, generator=gen)).to(dtype)
    w = (0.5 + torch.rand(2, 4, 4, generator=gen)).to(dtype)
    layer = pigeon.compile(_long_sums, backend=backend)
    xs, ws = x.to(DEVICE).requires_grad_(), w.to(DEVICE).requires_grad_()
    out = layer(graph, x=xs, w=ws)
    upstream = (0.5 + torch.rand(nodes, 4, generator=gen)).to(dtype)
    grad_w, = torch.autograd.grad(out, ws, upstream.to(DEVICE))
    x64, w64 = x.double(), w.double().requires_grad_()
    want = torch.zeros(nodes, 4, dtype=torch.float64)
    want[0] = torch.einsum("ni,nio->o", x64, w64[graph.ntype.cpu()])
    want_w, = torch.autograd.grad(want, w64, upstream.double())
    for name, got, expected in (("forward", out[0], want[0]), ("weight gradient", grad_w, want_w)):
        error = ((got.cpu().double() - expected).abs() / expected.abs()).max().item()
        assert error <= 4 * UNIT[dtype], f"{name}: relative error {error:.3g} over 4u = {4 * UNIT[dtype]:.3g}"


# ---- mixed dtypes and autocast ----------------------------------------------------------------

def _rgcn(dtype=torch.float32):
    torch.manual_seed(3)
    return pnn.RGCN(4, 5, 3, num_bases=2, backend="cpu").to(dtype)


def _small_graph():
    gen = torch.Generator().manual_seed(4)
    return pigeon.HeteroGraph(torch.randint(0, 9, (30,), generator=gen), torch.randint(0, 9, (30,), generator=gen),
                              torch.randint(0, 3, (30,), generator=gen), num_nodes=9, num_etypes=3)


def _by_hand(layer, graph, x, dtype):
    """The layer called with its parameters cast to ``dtype`` by hand: output and the
    gradients of x and of the (cast) parameters."""
    params = {name: p.detach().to(dtype).requires_grad_() for name, p in layer.named_parameters()}
    xs = x.detach().to(dtype).requires_grad_()
    out = layer.compiled(graph, x=xs, **params)
    grads = torch.autograd.grad(out, [xs, *params.values()], torch.ones_like(out))
    return out, grads


def test_float32_weights_with_bfloat16_inputs_need_no_casting_by_hand():
    graph, layer = _small_graph(), _rgcn()
    x = torch.randn(9, 4).bfloat16().requires_grad_()
    out = layer(graph, x)
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out, [x, *layer.parameters()], torch.ones_like(out))
    # The parameters were cast to the inputs' dtype; each gradient is in its tensor's dtype.
    assert [g.dtype for g in grads] == [torch.bfloat16] + [torch.float32] * len(list(layer.parameters()))
    want, want_grads = _by_hand(layer, graph, x, torch.bfloat16)
    assert torch.equal(out, want)
    for got, expected in zip(grads, want_grads):
        assert torch.equal(got, expected.to(got.dtype))


def test_inputs_in_two_dtypes_are_an_error_naming_them():
    graph = _small_graph()
    layer = pnn.NBFNetLayer(4, 3, backend="cpu")
    x, boundary = torch.randn(2, 9, 4).bfloat16(), torch.randn(2, 9, 4)
    with pytest.raises(ValueError, match=r"Expected every input in one floating dtype \(got `x` bfloat16, "
                                         r"`boundary` float32, `relation` float32\).*torch.autocast"):
        layer(graph, x, boundary, torch.randn(2, 3, 4))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autocast_runs_in_its_dtype_like_nn_linear(dtype):
    graph, layer = _small_graph(), _rgcn()
    x = torch.randn(9, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        out = layer(graph, x)
        linear = torch.nn.Linear(4, 5)(x)
    assert out.dtype == linear.dtype == dtype
    grads = torch.autograd.grad(out, [x, *layer.parameters()], torch.ones_like(out))
    assert all(g.dtype == torch.float32 for g in grads)   # each in its own tensor's dtype
    want, want_grads = _by_hand(layer, graph, x, dtype)
    assert torch.equal(out, want)
    for got, expected in zip(grads, want_grads):
        assert torch.equal(got, expected.float())


def test_autocast_leaves_float64_and_other_devices_alone():
    graph = _small_graph()
    layer = _rgcn(torch.float64)
    x = torch.randn(9, 4, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(graph, x).dtype == torch.float64   # autocast does not cast float64
    with torch.autocast("cuda", dtype=torch.float16, enabled=torch.cuda.is_available()):
        assert _rgcn()(graph, x.float()).dtype == torch.float32   # on for CUDA tensors only


def test_autocast_under_torch_compile():
    torch._dynamo.reset()
    graph, layer = _small_graph(), _rgcn()
    x = torch.randn(9, 4, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(graph, x)
    want, want_grads = _by_hand(layer, graph, x, torch.bfloat16)
    assert out.dtype == torch.bfloat16 and torch.equal(out, want)
    grads = torch.autograd.grad(out, [x, *layer.parameters()], torch.ones_like(out))
    for got, expected in zip(grads, want_grads):
        assert got.dtype == torch.float32 and torch.equal(got, expected.float())


def test_parameter_casts_are_made_once_per_step():
    graph, layer = _small_graph(), _rgcn()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    cache = layer.compiled._casts
    weight = layer.basis
    x = torch.randn(9, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = cache.cast(weight, torch.bfloat16)
        layer(graph, x).sum().backward()
        assert cache.cast(weight, torch.bfloat16) is first   # the call reused it
        layer(graph, x).sum().backward()                     # two micro-batches, one step
    assert cache.cast(weight, torch.bfloat16) is first
    optimizer.step()                                         # the weight changes in place
    second = cache.cast(weight, torch.bfloat16)
    assert second is not first and torch.equal(second, weight.detach().bfloat16())
    with torch.no_grad():   # a cast made without gradients is not handed to a call that needs them
        assert not cache.cast(weight, torch.bfloat16).requires_grad
    assert cache.cast(weight, torch.bfloat16).requires_grad


# ---- the C conversions ------------------------------------------------------------------------

_CONVERSIONS = """
void to_float(void **args, const int64_t *sizes)
{
    const storage *in = (const storage *)args[0];
    float *out = (float *)args[1];
    for (int64_t i = 0; i < sizes[0]; i++) out[i] = LOAD(in[i]);
}
void to_storage(void **args, const int64_t *sizes)
{
    const float *in = (const float *)args[0];
    storage *out = (storage *)args[1];
    for (int64_t i = 0; i < sizes[0]; i++) out[i] = STORE(in[i]);
}
"""


def _conversions(dtype, bits: bool):
    """The prelude's LOAD and STORE for ``dtype`` as two C functions, with the compiler's
    16-bit types or (``bits``) the bit conversions."""
    from pigeon.codegen.c import render_library
    from pigeon.runtime.cpu_backend import C_TYPES, build_library

    source = render_library([], C_TYPES[dtype], "test") + _CONVERSIONS
    if bits:
        source = "#define PIGEON_BIT_CONVERSIONS\n" + source
    library, _ = build_library(source)
    for name in ("to_float", "to_storage"):
        getattr(library, name).restype = None
    return library


def _call(function, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    import ctypes

    function((ctypes.c_void_p * 2)(src.data_ptr(), dst.data_ptr()), (ctypes.c_int64 * 1)(src.numel()))
    return dst


@pytest.mark.parametrize("bits", [False, True], ids=["compiler-types", "bit-conversions"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_c_conversions_match_torch_on_every_value(dtype, bits):
    library = _conversions(dtype, bits)
    # Every 16-bit pattern to float, exactly as torch widens it (NaNs stay NaN).
    patterns = torch.arange(-2**15, 2**15, dtype=torch.int16).view(dtype)
    wide = _call(library.to_float, patterns, torch.empty(patterns.numel()))
    want = patterns.float()
    assert torch.equal(wide.isnan(), want.isnan())
    assert torch.equal(wide[~want.isnan()].view(torch.int32), want[~want.isnan()].view(torch.int32))
    # Floats to 16 bits, rounded to nearest even as torch rounds: every pattern's value,
    # the midpoints between neighbours (ties), and random floats of every magnitude,
    # subnormals, overflow, infinities and NaN among them.
    finite = want[want.isfinite()].double().sort().values.unique()
    midpoints = ((finite[1:] + finite[:-1]) / 2).float()
    gen = torch.Generator().manual_seed(0)
    random = torch.randint(-2**31, 2**31, (200_000,), generator=gen, dtype=torch.int64).to(torch.int32).view(torch.float32)
    floats = torch.cat([want, midpoints, random, torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e-8, -1e-8,
                                                               float("inf"), -float("inf"), float("nan")])])
    narrow = _call(library.to_storage, floats, torch.empty(floats.numel(), dtype=dtype))
    want = floats.to(dtype)
    assert torch.equal(narrow.isnan(), want.isnan())
    assert torch.equal(narrow[~want.isnan()].view(torch.int16), want[~want.isnan()].view(torch.int16))


# ---- the save budget counts the bytes of the storage dtype ------------------------------------

def test_the_save_budget_counts_two_bytes_for_16_bit_values():
    graph = _small_graph()
    torch.manual_seed(0)
    layer = pnn.HGT(8, 8, 1, 3, heads=2, backend="cpu", compact=False)
    x = torch.randn(9, 8, requires_grad=True)
    tensors = {"x": x, **dict(layer.named_parameters())}
    plan = layer.compiled.plan(graph, tensors)
    _, kept = plan.execute_forward(graph, tensors, torch.float32, keep=tuple(b for b, _ in plan.saved))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept.values()}
    saved = sum(storages.values())   # float32: what the budget is measured against
    lean = pnn.HGT(8, 8, 1, 3, heads=2, backend="cpu", compact=False, save_budget_gb=0.75 * saved / 2**30)
    lean.load_state_dict(layer.state_dict())
    assert any(d.startswith("save:") for d in lean.compiled.plan(graph, tensors).decisions)
    half = {"x": x.detach().bfloat16().requires_grad_(), **dict(lean.named_parameters())}
    assert not any(d.startswith("save:") for d in lean.compiled.plan(graph, half).decisions)
