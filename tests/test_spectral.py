"""pigeon.nn.SpectralConv and FNO against the plain-PyTorch reference (pigeon.reference.spectral).

Kinds: (b) compiled layer vs reference, forward and every gradient (input, both weight
parts, every FNO parameter), float64 to 1e-10 (the two sides differ only in summation
order and in FFT versus cos/sin-basis rounding, ~1e-15 relative) and float32 to 1e-5
relative; (c) the FFT path vs the truncated-DFT path, and every backend (torch, cpu,
triton under TRITON_INTERPRET with tiny sizes); (a) the typed GEMM in the plan; argument
errors.

The ``neuraloperator`` package was also to be compared with copied weights: with
``pip install --no-deps neuraloperator`` (2.0.0) it installs but does not import
(``ModuleNotFoundError: No module named 'tensorly'``), so there is no such comparison.
"""

from __future__ import annotations

import pytest
import torch

from pigeon import nn as pnn
from pigeon import reference
from pigeon.ir.kernel_ir import GemmKernel
from pigeon.nn.spectral import choose_path

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-5, atol=1e-5)

# (dim, modes, spatial): modes that divide the size and that do not, odd sizes, and the
# largest modes the grid allows (the Nyquist bin in 1-D and rows meeting in 2-D).
CASES = [
    (1, 4, (16,)),
    (1, 5, (13,)),
    (1, 9, (16,)),
    (2, (3, 4), (8, 9)),
    (2, (4, 5), (8, 8)),
    (2, 2, (7, 5)),
]
TINY = [(1, 3, (7,)), (2, (2, 2), (5, 4))]


def _pair(dim, modes, backend, path, dtype=torch.float64, cin=3, cout=4):
    torch.manual_seed(7)
    compiled = pnn.SpectralConv(cin, cout, modes, dim, backend=backend, path=path, dtype=dtype)
    ref = reference.SpectralConv(cin, cout, modes, dim, dtype=dtype)
    ref.load_state_dict(compiled.state_dict())
    return compiled, ref


def _input(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=gen, requires_grad=True)


def _compare(compiled, ref, x, tol):
    got, want = compiled(x), ref(x)
    torch.testing.assert_close(got, want, **tol)
    upstream = torch.randn(want.shape, dtype=want.dtype, generator=torch.Generator().manual_seed(1))
    got_grads = torch.autograd.grad(got, [x, *compiled.parameters()], upstream)
    want_grads = torch.autograd.grad(want, [x, *ref.parameters()], upstream)
    names = ["x"] + [name for name, _ in compiled.named_parameters()]
    for name, a, b in zip(names, got_grads, want_grads):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("path", ["fft", "dft"])
@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("dim,modes,spatial", CASES)
def test_spectral_conv_matches_reference(dim, modes, spatial, backend, path):
    compiled, ref = _pair(dim, modes, backend, path)
    _compare(compiled, ref, _input((2, 3, *spatial)), F64)


@pytest.mark.parametrize("path", ["fft", "dft"])
@pytest.mark.parametrize("dim,modes,spatial", TINY)
def test_spectral_conv_triton_matches_reference(dim, modes, spatial, path):
    compiled, ref = _pair(dim, modes, "triton", path, cin=2, cout=2)
    _compare(compiled, ref, _input((2, 2, *spatial)), F64)


@pytest.mark.parametrize("dim,modes,spatial", [(1, 16, (64,)), (2, (6, 5), (17, 16))])
def test_spectral_conv_float32(dim, modes, spatial):
    compiled, ref = _pair(dim, modes, "cpu", "auto", dtype=torch.float32, cin=8, cout=8)
    _compare(compiled, ref, _input((4, 8, *spatial), dtype=torch.float32), F32)


@pytest.mark.parametrize("dim,modes,spatial", CASES)
def test_fft_and_dft_paths_agree(dim, modes, spatial):
    fft, _ = _pair(dim, modes, "torch", "fft")
    dft, _ = _pair(dim, modes, "torch", "dft")
    dft.load_state_dict(fft.state_dict())
    _compare(dft, fft, _input((3, 3, *spatial), seed=5), F64)


def test_contraction_is_one_typed_gemm_per_direction():
    """Forward: the block weight (a dense kernel over modes), then one GEMM segmented by
    mode; backward: a GEMM for the input gradient and a per-mode weight-gradient GEMM."""
    conv = pnn.SpectralConv(3, 4, 5, backend="cpu", path="fft", dtype=torch.float64)
    rows = _input((5 * 2, 6))
    graph = conv.mode_graph(2, rows.device)
    assert (graph.num_nodes, graph.num_edges, graph.num_ntypes) == (10, 0, 5)
    plan = conv.compiled.plan(graph, {"x": rows, "weight_real": conv.weight_real, "weight_imag": conv.weight_imag})
    forward = [k for k in plan.forward_kernels.kernels if isinstance(k, GemmKernel)]
    backward = [k for k in plan.backward_kernels.kernels if isinstance(k, GemmKernel)]
    assert [(k.segment.name, k.weight_grad) for k in forward] == [("ntype", False)]
    assert sorted((k.segment.name, k.weight_grad) for k in backward) == [("ntype", False), ("ntype", True)]


def test_spectral_conv_state_dict_round_trips():
    compiled, ref = _pair(2, (3, 2), "torch", "dft")
    assert set(compiled.state_dict()) == {"weight_real", "weight_imag"}
    assert compiled.weight_real.shape == (2 * 3 * 2, 3, 4)
    back = pnn.SpectralConv(3, 4, (3, 2), 2, dtype=torch.float64)
    back.load_state_dict(ref.state_dict())
    x = _input((2, 3, 8, 6))
    torch.testing.assert_close(back(x), ref(x), **F64)


@pytest.mark.parametrize("path", ["fft", "dft"])
@pytest.mark.parametrize("dim,spatial,padding", [(1, (20,), 0), (2, (9, 9), 3)])
def test_fno_matches_reference(dim, spatial, padding, path):
    torch.manual_seed(3)
    compiled = pnn.FNO(2, 1, width=6, modes=3, num_layers=2, dim=dim, hidden=8, padding=padding,
                       backend="cpu", path=path).double()
    torch.manual_seed(3)
    ref = reference.FNO(2, 1, width=6, modes=3, num_layers=2, dim=dim, hidden=8, padding=padding).double()
    # Same seed, same draws: the compiled model keeps the reference's initialisation.
    for (name, a), b in zip(compiled.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
    _compare(compiled, ref, _input((3, 2, *spatial), seed=4), F64)


def test_fno_triton_matches_reference():
    torch.manual_seed(3)
    compiled = pnn.FNO(1, 1, width=2, modes=2, num_layers=1, dim=1, hidden=4, backend="triton").double()
    ref = reference.FNO(1, 1, width=2, modes=2, num_layers=1, dim=1, hidden=4).double()
    ref.load_state_dict(compiled.state_dict())
    _compare(compiled, ref, _input((2, 1, 6), seed=4), F64)


def test_choose_path_follows_the_rule():
    assert choose_path((256,), (4,)) == "dft"
    assert choose_path((4096,), (256,)) == "fft"
    assert choose_path((85, 85), (12, 12)) == "dft"
    assert choose_path((256, 256), (64, 64)) == "fft"


@pytest.mark.parametrize("layer", [reference.SpectralConv, pnn.SpectralConv])
def test_spectral_conv_rejects_bad_arguments(layer):
    with pytest.raises(ValueError, match=r"Expected `modes` to be a positive int .*got -1"):
        layer(2, 2, -1)
    with pytest.raises(ValueError, match=r"Expected `modes` .* 2 positive ints .*got \(3, 3, 3\)"):
        layer(2, 2, (3, 3, 3), dim=2)
    with pytest.raises(ValueError, match=r"Expected `dim` to be one of \[1, 2\] \(got 3\)"):
        layer(2, 2, 3, dim=3)
    with pytest.raises(ValueError, match=r"Expected `in_channels` to be an int >= 1 \(got 0\)"):
        layer(0, 2, 3)
    conv = layer(2, 3, (3, 4), dim=2)
    with pytest.raises(ValueError, match=r"Expected `x` to be a tensor of shape \[batch, 2, s1, s2\] "
                                         r"\(got shape \[2, 2, 8\]\)"):
        conv(torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match=r"Expected `x` to have 2 channels in dim 1 \(got shape \[2, 3, 8, 8\]\)"):
        conv(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"`modes` on the first axis to be at most s1 // 2 = 2 .*got 3"):
        conv(torch.randn(2, 2, 5, 8))
    with pytest.raises(ValueError, match=r"`modes` on the last axis to be at most s // 2 \+ 1 = 3 .*got 4"):
        conv(torch.randn(2, 2, 8, 5))
    with pytest.raises(ValueError, match=r"at most s // 2 \+ 1 = 5 for an input of size 9 \(got 6\)"):
        layer(1, 1, 6)(torch.randn(1, 1, 9))


def test_compiled_options_are_checked():
    with pytest.raises(ValueError, match=r"Expected `path` to be one of \['auto', 'fft', 'dft'\] \(got 'fast'\)"):
        pnn.SpectralConv(2, 2, 3, path="fast")
    with pytest.raises(ValueError, match=r"Expected `backend` to be one of .* \(got 'gpu'\)"):
        pnn.SpectralConv(2, 2, 3, backend="gpu")
    with pytest.raises(ValueError, match=r"Expected `x` to be a tensor of shape \[batch, 1, s\] "
                                         r"\(got shape \[4, 8\]\)"):
        pnn.FNO(1, 1, width=4, modes=2)(torch.randn(4, 8))
