"""Reference DeepONet (Lu et al. 2021): the oracle for the compiled :class:`pigeon.nn.DeepONet`.

Plain torch: matrix products, ``torch.einsum`` for the stacked branch nets, one
matrix product for the merge. Nothing here imports the compiler.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pigeon.reference._common import check_bool, check_choice, glorot_

__all__ = ["DeepONet", "DEEPONET_ACTIVATIONS", "check_sizes"]

DEEPONET_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


def check_sizes(name: str, sizes) -> tuple[int, ...]:
    """``sizes`` as a tuple of at least two positive ints (input width, ..., output width)."""
    if (isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)):
        raise ValueError(f"Expected `{name}` to be a sequence of at least two positive ints, the input width, "
                         f"the hidden widths and the output width (got {sizes!r})")
    return tuple(sizes)


class DeepONet(nn.Module):
    r"""Deep operator network: a branch net reads the input function at fixed sensors,
    a trunk net reads a query point, and their features are contracted.

    .. math::
        G(u)(y) = \sum_{k=1}^{p} b_k\big(u(x_1), \dots, u(x_m)\big)\, t_k(y) + b_0

    Unstacked, :math:`b = (b_1, \dots, b_p)` is one MLP with ``branch_sizes`` widths
    :math:`[m, h_1, \dots, p]`; stacked, each :math:`b_k` is its own MLP with widths
    :math:`[m, h_1, \dots, 1]` (``p = branch_sizes[-1]`` nets, the hidden widths shared).
    The trunk :math:`t` is an MLP with ``trunk_sizes`` widths :math:`[d, g_1, \dots, p]`.
    Every branch layer but the last is followed by the activation; every trunk layer,
    the last included, is (as in the DeepONet paper). For a batch of ``B`` functions and
    ``N`` query points the output is the ``[B, N]`` matrix of every pair, one matrix
    product :math:`b\,t^T` of the ``[B, p]`` branch and ``[N, p]`` trunk features.

    Parameters (the state_dict contract with :class:`pigeon.nn.DeepONet`):
    ``branch_weight_l``/``branch_bias_l`` for branch layer ``l``: ``[n_l, n_{l+1}]``/
    ``[n_{l+1}]`` unstacked; stacked, ``[m, p, n_1]``/``[p, n_1]`` for the first layer
    (all nets read the same sensors) and ``[p, n_l, n_{l+1}]``/``[p, n_{l+1}]`` after it.
    ``trunk_weight_l``/``trunk_bias_l``: ``[d_l, d_{l+1}]``/``[d_{l+1}]``. ``bias``: the
    scalar :math:`b_0`. Weights are Glorot-uniform per net, biases zero.

    Args:
        branch_sizes (sequence of int): ``[m, h_1, ..., p]``: sensors, hidden widths, ``p``.
        trunk_sizes (sequence of int): ``[d, g_1, ..., p]``: query dimension, hidden
            widths, ``p`` (must equal ``branch_sizes[-1]``).
        stacked (bool): ``p`` separate branch nets instead of one. Default ``False``.
        activation (str): ``"relu"`` or ``"tanh"``. Default ``"relu"``.
        bias (bool): biases in every layer and :math:`b_0`. Default ``True``.
        device, dtype: where and in which dtype to create the parameters.

    Shapes: ``forward(u, y)`` with ``u`` ``[B, m]`` and ``y`` ``[N, d]`` (or ``[N]`` when
    ``d = 1``) returns ``[B, N]``.
    """

    def __init__(self, branch_sizes: Sequence[int], trunk_sizes: Sequence[int], *, stacked: bool = False,
                 activation: str = "relu", bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.branch_sizes = check_sizes("branch_sizes", branch_sizes)
        self.trunk_sizes = check_sizes("trunk_sizes", trunk_sizes)
        if self.branch_sizes[-1] != self.trunk_sizes[-1]:
            raise ValueError(f"Expected `branch_sizes` and `trunk_sizes` to end in the same width p "
                             f"(got {self.branch_sizes[-1]} and {self.trunk_sizes[-1]})")
        self.stacked = check_bool("stacked", stacked)
        self.activation = check_choice("activation", activation, tuple(DEEPONET_ACTIVATIONS))
        self.has_bias = check_bool("bias", bias)
        factory = {"device": device, "dtype": dtype}
        p = self.p
        for l, (fan_in, fan_out) in enumerate(self._branch_widths()):
            if not self.stacked:
                shape, bias_shape = (fan_in, fan_out), (fan_out,)
            elif l == 0:
                shape, bias_shape = (fan_in, p, fan_out), (p, fan_out)
            else:
                shape, bias_shape = (p, fan_in, fan_out), (p, fan_out)
            self.register_parameter(f"branch_weight_{l}", nn.Parameter(torch.empty(shape, **factory)))
            self.register_parameter(f"branch_bias_{l}",
                                    nn.Parameter(torch.empty(bias_shape, **factory)) if bias else None)
        for l, (fan_in, fan_out) in enumerate(zip(self.trunk_sizes[:-1], self.trunk_sizes[1:])):
            self.register_parameter(f"trunk_weight_{l}", nn.Parameter(torch.empty(fan_in, fan_out, **factory)))
            self.register_parameter(f"trunk_bias_{l}",
                                    nn.Parameter(torch.empty(fan_out, **factory)) if bias else None)
        self.bias = nn.Parameter(torch.empty((), **factory)) if bias else None
        self.reset_parameters()

    @property
    def p(self) -> int:
        """The number of basis functions, ``branch_sizes[-1]``."""
        return self.branch_sizes[-1]

    @property
    def branch_depth(self) -> int:
        return len(self.branch_sizes) - 1

    @property
    def trunk_depth(self) -> int:
        return len(self.trunk_sizes) - 1

    def _branch_widths(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of each branch layer, per net when stacked (the last is 1)."""
        widths = list(self.branch_sizes)
        if self.stacked:
            widths[-1] = 1
        return list(zip(widths[:-1], widths[1:]))

    def reset_parameters(self) -> None:
        """Glorot-uniform weights with each net's own fans, zero biases."""
        if self.branch_weight_0.is_meta:
            return
        for l, (fan_in, fan_out) in enumerate(self._branch_widths()):
            glorot_(getattr(self, f"branch_weight_{l}"), fan_in, fan_out)
        for l, (fan_in, fan_out) in enumerate(zip(self.trunk_sizes[:-1], self.trunk_sizes[1:])):
            glorot_(getattr(self, f"trunk_weight_{l}"), fan_in, fan_out)
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if "bias" in name:
                    parameter.zero_()

    def extra_repr(self) -> str:
        return (f"branch_sizes={list(self.branch_sizes)}, trunk_sizes={list(self.trunk_sizes)}, "
                f"stacked={self.stacked}, activation={self.activation!r}, bias={self.has_bias}")

    def check_inputs(self, u, y) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` ``[B, m]`` and ``y`` as ``[N, d]``, in the parameters' dtype and device."""
        m, d = self.branch_sizes[0], self.trunk_sizes[0]
        like = self.branch_weight_0
        if not isinstance(u, torch.Tensor) or u.dim() != 2 or u.shape[1] != m:
            got = list(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"Expected `u` to be a tensor of shape [batch, {m}] (got {got})")
        if isinstance(y, torch.Tensor) and y.dim() == 1 and d == 1:
            y = y.unsqueeze(1)
        if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[1] != d:
            got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"Expected `y` to be a tensor of shape [points, {d}]"
                             + (" or [points]" if d == 1 else "") + f" (got {got})")
        for name, value in (("u", u), ("y", y)):
            if value.dtype != like.dtype or value.device != like.device:
                raise ValueError(f"Expected `{name}` in the parameters' dtype and device ({like.dtype}, "
                                 f"{like.device}) (got {value.dtype}, {value.device})")
        return u, y

    def branch(self, u: torch.Tensor) -> torch.Tensor:
        """The ``[B, p]`` branch features."""
        act = DEEPONET_ACTIVATIONS[self.activation]
        h = u
        for l in range(self.branch_depth):
            weight, bias = getattr(self, f"branch_weight_{l}"), getattr(self, f"branch_bias_{l}")
            if not self.stacked:
                h = h @ weight
            elif l == 0:
                h = torch.einsum("bi,ipo->bpo", h, weight)
            else:
                h = torch.einsum("bpi,pio->bpo", h, weight)
            if bias is not None:
                h = h + bias
            if l < self.branch_depth - 1:
                h = act(h)
        return h.squeeze(-1) if self.stacked else h

    def trunk(self, y: torch.Tensor) -> torch.Tensor:
        """The ``[N, p]`` trunk features."""
        act = DEEPONET_ACTIVATIONS[self.activation]
        t = y
        for l in range(self.trunk_depth):
            t = t @ getattr(self, f"trunk_weight_{l}")
            bias = getattr(self, f"trunk_bias_{l}")
            t = act(t if bias is None else t + bias)
        return t

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        u, y = self.check_inputs(u, y)
        out = self.branch(u) @ self.trunk(y).T
        return out if self.bias is None else out + self.bias
