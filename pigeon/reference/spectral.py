"""Reference Fourier neural operator layers (Li et al. 2021): the oracle for the compiled
spectral convolution.

The forward pass is what the FNO paper's code does, in plain torch: ``rfft``/``rfftn``,
keep the low modes, one ``torch.einsum`` for the per-mode complex contraction, inverse
FFT. Nothing here imports the compiler.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pigeon.reference._common import check_choice, check_int

__all__ = ["SpectralConv", "FNO", "FNO_ACTIVATIONS", "normalize_modes", "check_spectral_input",
           "num_spectral_modes"]

FNO_ACTIVATIONS = {"gelu": nn.functional.gelu, "relu": nn.functional.relu, "tanh": torch.tanh}


def normalize_modes(modes, dim: int) -> tuple[int, ...]:
    """``modes`` as a tuple of ``dim`` positive ints (an int is used on every axis)."""
    check_choice("dim", dim, (1, 2))
    given = modes
    if isinstance(modes, int) and not isinstance(modes, bool):
        modes = (modes,) * dim
    if (not isinstance(modes, Sequence) or len(modes) != dim
            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in modes)):
        raise ValueError(f"Expected `modes` to be a positive int or a sequence of {dim} positive ints "
                         f"(got {given!r})")
    return tuple(modes)


def num_spectral_modes(modes: tuple[int, ...]) -> int:
    """The number of complex weights per (in, out) channel pair: ``m`` in 1-D, and
    ``2 m1 m2`` in 2-D (rows ``[:m1]`` and ``[-m1:]`` of the first axis)."""
    if len(modes) == 1:
        return modes[0]
    return 2 * modes[0] * modes[1]


def check_spectral_input(x, in_channels: int, modes: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial size of ``x`` ``[batch, in_channels, *spatial]``, after checking that the
    grid holds the kept modes: ``m <= s // 2 + 1`` on an rfft axis and ``2 m1 <= s1`` on the
    first axis in 2-D, where the low and the high rows must not overlap."""
    dim = len(modes)
    if not isinstance(x, torch.Tensor) or x.dim() != dim + 2:
        got = f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        axes = "s" if dim == 1 else "s1, s2"
        raise ValueError(f"Expected `x` to be a tensor of shape [batch, {in_channels}, {axes}] (got {got})")
    if x.shape[1] != in_channels:
        raise ValueError(f"Expected `x` to have {in_channels} channels in dim 1 (got shape {list(x.shape)})")
    if x.is_complex() or not x.is_floating_point():
        raise ValueError(f"Expected `x` to be a real floating tensor (got dtype {x.dtype})")
    spatial = tuple(x.shape[2:])
    if spatial[-1] // 2 + 1 < modes[-1]:
        raise ValueError(f"Expected `modes` on the last axis to be at most s // 2 + 1 = {spatial[-1] // 2 + 1} "
                         f"for an input of size {spatial[-1]} (got {modes[-1]})")
    if dim == 2 and 2 * modes[0] > spatial[0]:
        raise ValueError(f"Expected `modes` on the first axis to be at most s1 // 2 = {spatial[0] // 2} for an "
                         f"input of size {spatial[0]}: rows [:m1] and [-m1:] must not overlap (got {modes[0]})")
    return spatial


def gather_modes(x_ft: torch.Tensor, modes: tuple[int, ...]) -> torch.Tensor:
    """The kept coefficients of an ``rfftn`` output, ``[..., num_modes]``, in the weight order:
    1-D ``k``; 2-D ``(block, k1, k2)`` with block 0 = rows ``[:m1]``, block 1 = ``[-m1:]``."""
    if len(modes) == 1:
        return x_ft[..., : modes[0]]
    m1, m2 = modes
    blocks = torch.stack([x_ft[..., :m1, :m2], x_ft[..., -m1:, :m2]], dim=-3)
    return blocks.flatten(-3)


def scatter_modes(values: torch.Tensor, modes: tuple[int, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    """The inverse of :func:`gather_modes`: ``[..., num_modes]`` back on the kept rows of a
    zero spectrum (the last axis only up to ``m2``: the inverse FFT pads the rest)."""
    if len(modes) == 1:
        return values
    m1, m2 = modes
    blocks = values.unflatten(-1, (2, m1, m2))
    out = values.new_zeros(*values.shape[:-1], spatial[0], m2)
    out[..., :m1, :] = blocks[..., 0, :, :]
    out[..., spatial[0] - m1:, :] = blocks[..., 1, :, :]
    return out


class SpectralConv(nn.Module):
    r"""Spectral convolution, the FNO layer's integral operator, in plain PyTorch.

    .. math::
        \hat{x} = \mathcal{F}(x), \qquad
        \hat{y}_{b,o,k} = \sum_i \hat{x}_{b,i,k} \, (W^{re}_{k,i,o} + i\, W^{im}_{k,i,o})
        \text{ for kept modes } k, \qquad
        y = \mathcal{F}^{-1}(\hat{y})

    with :math:`\mathcal{F}` the real FFT over the spatial axes (``rfft``/``rfftn``) and
    :math:`\hat{y}` zero outside the kept modes: ``[:m]`` in 1-D; rows ``[:m1]`` and
    ``[-m1:]`` of the first axis times ``[:m2]`` of the last in 2-D, as the FNO paper does.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        modes (int or tuple of int): modes kept per axis; an int is used on every axis.
        dim (int): 1 or 2 spatial axes. Default: 1.
        device, dtype: where and in which dtype to create the parameters.

    Parameters (the state_dict contract shared with :class:`pigeon.nn.SpectralConv`):
        ``weight_real`` and ``weight_imag``, each ``[num_modes, in_channels, out_channels]``
        (``num_modes`` = ``m`` in 1-D, ``2 m1 m2`` in 2-D, in :func:`gather_modes` order),
        drawn uniformly from ``[0, 1 / (in_channels * out_channels))`` as in the FNO paper.

    Shapes: ``forward(x)`` with ``x`` ``[batch, in_channels, *spatial]`` returns
    ``[batch, out_channels, *spatial]``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes, dim: int = 1, *, device=None, dtype=None):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.dim = check_choice("dim", dim, (1, 2))
        self.modes = normalize_modes(modes, dim)
        self.num_modes = num_spectral_modes(self.modes)
        shape = (self.num_modes, in_channels, out_channels)
        scale = 1.0 / (in_channels * out_channels)
        self.weight_real = nn.Parameter(scale * torch.rand(shape, device=device, dtype=dtype))
        self.weight_imag = nn.Parameter(scale * torch.rand(shape, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}, dim={self.dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = check_spectral_input(x, self.in_channels, self.modes)
        axes = tuple(range(-self.dim, 0))
        x_modes = gather_modes(torch.fft.rfftn(x, dim=axes), self.modes)
        weight = torch.complex(self.weight_real, self.weight_imag)
        y_modes = torch.einsum("bik,kio->bok", x_modes, weight)
        return torch.fft.irfftn(scatter_modes(y_modes, self.modes, spatial), s=spatial, dim=axes)


def grid_coordinates(spatial: tuple[int, ...], *, like: torch.Tensor) -> torch.Tensor:
    """``[len(spatial), *spatial]``: each point's coordinates on ``[0, 1]`` per axis."""
    axes = [torch.linspace(0.0, 1.0, s, device=like.device, dtype=like.dtype) for s in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


class FNO(nn.Module):
    r"""Fourier neural operator (Li et al. 2021), in plain PyTorch.

    .. math::
        v_0 = P(x \,\Vert\, \text{grid}), \qquad
        v_{l+1} = \sigma\big(\mathcal{K}_l(v_l) + W_l v_l\big) \ (\text{no } \sigma \text{ after the last}),
        \qquad y = Q_2\, \sigma(Q_1 v_L)

    with :math:`P`, :math:`W_l`, :math:`Q_1`, :math:`Q_2` pointwise linear maps (with bias) and
    :math:`\mathcal{K}_l` a :class:`SpectralConv`. The input is padded by ``padding`` points at
    the end of every axis before the first block and cropped after the last (for
    non-periodic problems such as Darcy flow).

    Args:
        in_channels (int): input channels (the grid coordinates are appended).
        out_channels (int): output channels.
        width (int): channels of the spectral blocks. Default: 32.
        modes (int or tuple of int): modes kept per axis. Default: 16 in 1-D, 12 in 2-D.
        num_layers (int): spectral blocks. Default: 4.
        dim (int): 1 or 2 spatial axes. Default: 1.
        hidden (int): width of the projection MLP. Default: 128.
        activation (str): ``"gelu"``, ``"relu"`` or ``"tanh"``. Default: ``"gelu"``.
        padding (int): points of zero padding per axis. Default: 0.
        device, dtype: where and in which dtype to create the parameters.

    Shapes: ``forward(x)`` with ``x`` ``[batch, in_channels, *spatial]`` returns
    ``[batch, out_channels, *spatial]``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, modes=None, num_layers: int = 4,
                 dim: int = 1, *, hidden: int = 128, activation: str = "gelu", padding: int = 0,
                 device=None, dtype=None):
        super().__init__()
        self.dim = check_choice("dim", dim, (1, 2))
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.width = check_int("width", width)
        self.num_layers = check_int("num_layers", num_layers)
        self.modes = normalize_modes((16 if dim == 1 else 12) if modes is None else modes, dim)
        self.activation = check_choice("activation", activation, tuple(FNO_ACTIVATIONS))
        self.padding = check_int("padding", padding, at_least=0)
        check_int("hidden", hidden)
        factory = {"device": device, "dtype": dtype}
        self.lift = nn.Linear(in_channels + dim, width, **factory)
        self.spectral = nn.ModuleList(SpectralConv(width, width, self.modes, dim, **factory)
                                      for _ in range(num_layers))
        self.skip = nn.ModuleList(nn.Linear(width, width, **factory) for _ in range(num_layers))
        self.project_hidden = nn.Linear(width, hidden, **factory)
        self.project_out = nn.Linear(hidden, out_channels, **factory)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, width={self.width}, modes={self.modes}, "
                f"dim={self.dim}, activation={self.activation!r}, padding={self.padding}")

    @staticmethod
    def _pointwise(linear: nn.Linear, v: torch.Tensor) -> torch.Tensor:
        """A linear map over the channel axis (dim 1) at every grid point."""
        return linear(v.movedim(1, -1)).movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != self.dim + 2 or x.shape[1] != self.in_channels:
            got = f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            axes = "s" if self.dim == 1 else "s1, s2"
            raise ValueError(f"Expected `x` to be a tensor of shape [batch, {self.in_channels}, {axes}] (got {got})")
        act = FNO_ACTIVATIONS[self.activation]
        spatial = tuple(x.shape[2:])
        grid = grid_coordinates(spatial, like=x).expand(x.shape[0], -1, *spatial)
        v = self._pointwise(self.lift, torch.cat([x, grid], dim=1))
        if self.padding:
            v = nn.functional.pad(v, (0, self.padding) * self.dim)
        for t, (spectral, skip) in enumerate(zip(self.spectral, self.skip)):
            v = spectral(v) + self._pointwise(skip, v)
            if t < self.num_layers - 1:
                v = act(v)
        if self.padding:
            v = v[(..., *(slice(0, s) for s in spatial))]
        return self._pointwise(self.project_out, act(self._pointwise(self.project_hidden, v)))
