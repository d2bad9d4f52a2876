"""Fourier neural operator layers whose per-mode contraction is compiled by Pigeon.

The spectral convolution of an FNO multiplies every kept Fourier mode ``k`` of the
input by its own complex matrix ``W_k``: a typed GEMM whose type is the mode. Here the
rows are the (mode, batch) pairs, grouped by mode; the "graph" has one node per row,
the node type is the mode and there are no edges. Complex numbers travel as
``[re, im]`` halves of a real row, and the complex product is one real GEMM with the
block weight ``[[W_re, W_im], [-W_im, W_re]]``, built inside the layer function so
the compiler differentiates it back to both weight parts.

Two ways to reach the modes:

* ``path="fft"``: ``torch.fft.rfftn``, gather the kept modes, the typed GEMM, scatter,
  ``irfftn``.
* ``path="dft"``: the truncated transform and its inverse as GEMMs with precomputed
  real cos/sin bases (separable in 2-D), so the layer is one GEMM chain: basis GEMMs,
  the typed GEMM, inverse basis GEMMs. Its cost grows with ``modes`` times the grid
  size instead of ``log`` of the grid size, so it pays only for few modes.

``path="auto"`` uses :func:`choose_path`, whose rule comes from ``bench/spectral.py``.

In bfloat16 and float16 (inputs in them, or under ``torch.autocast``) the mix runs in
the 16-bit dtype like every compiled layer (:mod:`pigeon.runtime.precision`); the FFT
path transforms in float32, as torch has no 16-bit FFT on the CPU (and autocast runs
FFTs in float32), and stores the modes it hands to the mix, and its output, in the
16-bit dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import pigeon.reference as reference
from pigeon.data.graph import HeteroGraph
from pigeon.frontend import PerNtype, concat, layer, linear, reshape
from pigeon.reference._common import check_choice
from pigeon.reference.spectral import check_spectral_input
from pigeon.compiler import compile as compile_layer
from pigeon.runtime.compiled import BACKENDS
from pigeon.runtime.precision import compute_dtype

__all__ = ["SpectralConv", "FNO", "spectral_mix", "choose_path", "SPECTRAL_PATHS"]

SPECTRAL_PATHS = ("auto", "fft", "dft")


@layer
def spectral_mix(g, x, weight_real: PerNtype, weight_imag: PerNtype):
    # Rows are (mode, batch) pairs typed by mode, holding [re(x), im(x)]:
    # [re, im] @ [[Wr, Wi], [-Wi, Wr]] = [re Wr - im Wi, re Wi + im Wr], the complex product.
    cin, cout = weight_real.shape
    top = reshape(concat(weight_real, weight_imag), cin * 2 * cout)
    bottom = reshape(concat(-weight_imag, weight_real), cin * 2 * cout)
    block = reshape(concat(top, bottom), 2 * cin, 2 * cout)
    return linear(x, block)


def choose_path(spatial: tuple[int, ...], modes: tuple[int, ...]) -> str:
    """The faster path on CPU for this grid and these modes.

    The DFT path does ``2 m s`` multiply-adds per axis and function against the FFT's
    ``~ s log2 s``, but as dense GEMMs without complex copies. It takes the DFT path when
    ``sum(2 m s) / sum(s log2 s)`` over the axes is at most 12: in
    ``bench/results/spectral-cpu-2026-11-26.md`` (2-core EPYC, float32, batch 20) the DFT
    path was faster in every case up to a ratio of 12.8 (1-D s=1024, m=64) and 6.7x slower
    at 16 (1-D s=256, m=64)."""
    work_dft = sum(2 * m * s for m, s in zip(modes, spatial))
    work_fft = sum(s * max(math.log2(s), 1.0) for s in spatial)
    return "dft" if work_dft <= _DFT_OVER_FFT * work_fft else "fft"


#: Break-even of :func:`choose_path`, measured by ``bench/spectral.py``.
_DFT_OVER_FFT = 12.0


class _Bases(nn.Module):
    """Real DFT bases of one spatial size, as non-persistent buffers (rebuilt, never saved).

    Forward, per axis: ``X_k = sum_n x_n e^{-2 pi i k n / s}``. Inverse on the last (rfft)
    axis: ``x_n = (1/s) sum_k c_k Re(X_k e^{2 pi i k n / s})`` with ``c_k = 2`` except at
    ``k = 0`` and the Nyquist bin, as ``irfft`` reads a half spectrum. In 2-D the first
    axis keeps rows ``k1 in [0, m1) u [s1 - m1, s1)`` and transforms as a full complex DFT.
    """

    def __init__(self, spatial: tuple[int, ...], modes: tuple[int, ...], dtype, device):
        super().__init__()
        s, m = spatial[-1], modes[-1]
        n = torch.arange(s, dtype=torch.float64)
        k = torch.arange(m, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(n, k) / s                   # [s, m]
        # [s, 2m]: x @ forward_last = [Re X, Im X] over the kept modes.
        self.register_buffer("forward_last", torch.cat([angle.cos(), -angle.sin()], 1).to(device, dtype),
                             persistent=False)
        c = torch.full((m,), 2.0, dtype=torch.float64)
        c[0] = 1.0
        if 2 * (m - 1) == s:
            c[m - 1] = 1.0
        weights = (c / s)[:, None]
        # [2m, s]: [Re X, Im X] @ inverse_last = the real signal.
        self.register_buffer("inverse_last", torch.cat([weights * angle.T.cos(), -weights * angle.T.sin()], 0)
                             .to(device, dtype), persistent=False)
        if len(spatial) == 2:
            s1, m1 = spatial[0], modes[0]
            rows = torch.cat([torch.arange(m1), torch.arange(s1 - m1, s1)]).to(torch.float64)
            h = torch.arange(s1, dtype=torch.float64)
            theta = 2 * math.pi * torch.outer(rows, h) / s1           # [2 m1, s1]
            cos, sin = theta.cos(), theta.sin()
            # e^{-i theta} (a_re + i a_im) as [[C, S], [-S, C]] @ [a_re; a_im] with S = sin: [4 m1, 2 s1].
            forward_first = torch.cat([torch.cat([cos, sin], 1), torch.cat([-sin, cos], 1)], 0)
            self.register_buffer("forward_first", forward_first.to(device, dtype), persistent=False)
            # (1/s1) e^{+i theta} (y_re + i y_im) is [[C^T, -S^T], [S^T, C^T]] / s1: the transpose.
            self.register_buffer("inverse_first", (forward_first.T / s1).contiguous().to(device, dtype),
                                 persistent=False)


class SpectralConv(reference.SpectralConv):
    r"""Spectral convolution with the per-mode complex contraction compiled as a typed GEMM.

    .. math::
        y = \mathcal{F}^{-1}\Big(k \mapsto \big[\hat{x}_{\cdot,\cdot,k}\big]
            \begin{bmatrix} W^{re}_k & W^{im}_k \\ -W^{im}_k & W^{re}_k \end{bmatrix}\Big),
        \qquad \hat{x} = \mathcal{F}(x) \text{ on the kept modes}

    where :math:`[\hat{x}] = [\mathrm{Re}\,\hat{x}, \mathrm{Im}\,\hat{x}]` per (mode, batch) row:
    the same map as :class:`pigeon.reference.SpectralConv`, whose arguments, parameters and
    initialisation it shares.

    Args:
        in_channels (int), out_channels (int), modes (int or tuple of int), dim (int):
            as :class:`pigeon.reference.SpectralConv`.
        backend (str): backend of the typed GEMM: ``"torch"``, ``"cpu"``, ``"triton"`` or
            ``"auto"`` (see :func:`pigeon.compile`). Default: ``"auto"``.
        path (str): ``"fft"``, ``"dft"`` (truncated DFT as GEMMs) or ``"auto"``
            (:func:`choose_path` per input size). Default: ``"auto"``.
        device, dtype: where and in which dtype to create the parameters.

    Shapes: ``forward(x)`` with ``x`` ``[batch, in_channels, *spatial]`` returns
    ``[batch, out_channels, *spatial]``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes, dim: int = 1, *, backend: str = "auto",
                 path: str = "auto", device=None, dtype=None):
        super().__init__(in_channels, out_channels, modes, dim, device=device, dtype=dtype)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.path = check_choice("path", path, SPECTRAL_PATHS)
        self.compiled = compile_layer(spectral_mix, backend=backend)
        self._graphs: dict[tuple, HeteroGraph] = {}
        self._bases: dict[tuple, _Bases] = {}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}, path={self.path!r}"

    def mode_graph(self, batch: int, device) -> HeteroGraph:
        """The row space of the typed GEMM: ``num_modes * batch`` nodes, row ``k * batch + b``
        of node type ``k``, no edges. Built once per batch size and device."""
        key = (batch, str(device))
        graph = self._graphs.get(key)
        if graph is None:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            ntype = torch.arange(self.num_modes, device=device).repeat_interleave(batch)
            graph = HeteroGraph(empty, empty, num_nodes=self.num_modes * batch, ntype=ntype,
                                num_ntypes=self.num_modes)
            self._graphs[key] = graph
        return graph

    def mix(self, rows: torch.Tensor, batch: int) -> torch.Tensor:
        """The compiled typed GEMM on ``[num_modes * batch, 2 * in]`` rows ``[re, im]``."""
        return self.compiled(self.mode_graph(batch, rows.device), x=rows,
                             weight_real=self.weight_real, weight_imag=self.weight_imag)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = check_spectral_input(x, self.in_channels, self.modes)
        path = choose_path(spatial, self.modes) if self.path == "auto" else self.path
        return self._forward_dft(x, spatial) if path == "dft" else self._forward_fft(x, spatial)

    # -- FFT path -----------------------------------------------------------------------
    def _forward_fft(self, x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        batch, cin, cout, k = x.shape[0], self.in_channels, self.out_channels, self.num_modes
        axes = tuple(range(-self.dim, 0))
        x_ft = torch.fft.rfftn(x.to(compute_dtype(x.dtype)), dim=axes)
        if self.dim == 1:
            kept = x_ft[..., : self.modes[0]]                                  # [B, I, K]
        else:
            m1, m2 = self.modes
            kept = torch.stack([x_ft[..., :m1, :m2], x_ft[..., -m1:, :m2]], dim=2).reshape(batch, cin, k)
        rows = torch.view_as_real(kept).permute(2, 0, 3, 1).reshape(k * batch, 2 * cin).to(x.dtype)
        y = self.mix(rows, batch).view(k, batch, 2, cout)
        stored = y.dtype   # the mix's storage dtype: x's, or autocast's
        y = y.to(compute_dtype(stored))
        y_modes = torch.complex(y[:, :, 0], y[:, :, 1]).permute(1, 2, 0)         # [B, O, K]
        if self.dim == 2:
            m1, m2 = self.modes
            blocks = y_modes.reshape(batch, cout, 2, m1, m2)
            middle = y_modes.new_zeros(batch, cout, spatial[0] - 2 * m1, m2)
            y_modes = torch.cat([blocks[:, :, 0], middle, blocks[:, :, 1]], dim=2)
        # irfftn pads the last axis with zeros up to s // 2 + 1.
        return torch.fft.irfftn(y_modes, s=spatial, dim=axes).to(stored)

    # -- DFT path -----------------------------------------------------------------------
    def bases(self, spatial: tuple[int, ...], dtype, device) -> _Bases:
        """The DFT bases for ``spatial`` (built once per size, dtype and device)."""
        key = (spatial, dtype, str(device))
        bases = self._bases.get(key)
        if bases is None:
            bases = _Bases(spatial, self.modes, dtype, device)
            self._bases[key] = bases
        return bases

    def _forward_dft(self, x: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        batch, cin, cout, k = x.shape[0], self.in_channels, self.out_channels, self.num_modes
        basis = self.bases(spatial, x.dtype, x.device)
        m2 = self.modes[-1]
        a = x.reshape(-1, spatial[-1]) @ basis.forward_last                   # [B*I*(s1), 2*m2]
        if self.dim == 1:
            rows = a.view(batch, cin, 2, m2).permute(3, 0, 2, 1)              # [K, B, 2, I]
        else:
            s1, m1 = spatial[0], self.modes[0]
            a = a.view(batch, cin, s1, 2, m2).permute(3, 2, 0, 1, 4).reshape(2 * s1, batch * cin * m2)
            a = basis.forward_first @ a                                        # [2 (re/im), 2 m1, B, I, m2]
            rows = a.view(2, 2 * m1, batch, cin, m2).permute(1, 4, 2, 0, 3)    # [2 m1, m2, B, 2, I]
        y = self.mix(rows.reshape(k * batch, 2 * cin), batch)                  # [K * B, 2 O]
        if self.dim == 1:
            y = y.view(m2, batch, 2, cout).permute(1, 3, 2, 0).reshape(batch * cout, 2 * m2)
        else:
            s1, m1 = spatial[0], self.modes[0]
            y = y.view(2 * m1, m2, batch, 2, cout).permute(3, 0, 2, 4, 1).reshape(4 * m1, batch * cout * m2)
            y = basis.inverse_first @ y                                        # [2 (re/im), s1, B, O, m2]
            y = y.view(2, s1, batch, cout, m2).permute(2, 3, 1, 0, 4).reshape(batch * cout * s1, 2 * m2)
        return (y @ basis.inverse_last).view(batch, cout, *spatial)


class FNO(reference.FNO):
    """The Fourier neural operator with every :class:`SpectralConv` compiled. Arguments,
    parameters and shapes as :class:`pigeon.reference.FNO`, plus ``backend`` and ``path``
    of :class:`SpectralConv`, which every block receives."""

    def __init__(self, *args, backend: str = "auto", path: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        for t, spectral in enumerate(self.spectral):
            # Built on the meta device and handed the reference block's tensors, so the
            # compiled model draws its parameters exactly as the reference does.
            compiled = SpectralConv(spectral.in_channels, spectral.out_channels, spectral.modes, spectral.dim,
                                    backend=backend, path=path, device="meta")
            compiled.load_state_dict(spectral.state_dict(), assign=True)
            self.spectral[t] = compiled
