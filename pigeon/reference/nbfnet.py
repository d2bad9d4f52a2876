"""Reference generalized relational convolution of NBFNet (Zhu et al. 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pigeon.reference._common import (
    check_bool,
    check_choice,
    check_features,
    check_graph,
    check_graph_device,
    check_int,
)

NBF_MESSAGES = ("distmult", "transe", "rotate")
NBF_AGGREGATES = ("sum", "mean", "max", "min", "pna")

# PNA's floor under the variance before the square root, as in NBFNet's code.
PNA_EPS = 1e-6
# PNA's floor under the degree scaler before taking its inverse, as in NBFNet's code.
PNA_MIN_SCALE = 1e-2


def nbf_message(kind: str, x_src: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """The message of every edge from the source state and the relation vector.

    ``rotate`` reads a ``dim`` vector as ``dim / 2`` complex numbers, real parts in the
    first half and imaginary parts in the second (NBFNet's ``chunk(2)`` layout), and
    multiplies them.
    """
    if kind == "distmult":
        return x_src * rel
    if kind == "transe":
        return x_src + rel
    x_re, x_im = x_src.chunk(2, dim=-1)
    r_re, r_im = rel.chunk(2, dim=-1)
    return torch.cat([x_re * r_re - x_im * r_im, x_re * r_im + x_im * r_re], dim=-1)


def pna_degree_scales(degree: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[num_nodes, 3]``: the scalers ``1, s, 1 / max(s, 0.01)`` with ``s = log(deg) / mean(log(deg))``.

    ``deg`` counts the boundary message, so it is at least 1. When every node has degree 1
    (a graph without edges) the mean log-degree is 0; NBFNet's code gives NaN there, the
    reference takes the limit of a uniform degree, ``s = 1``.
    """
    log_degree = torch.log(degree.to(dtype))
    mean = log_degree.mean() if log_degree.numel() else log_degree.new_zeros(())
    if float(mean) > 0:
        scale = log_degree / mean
    else:
        scale = torch.ones_like(log_degree)
    return torch.stack([torch.ones_like(scale), scale, 1.0 / scale.clamp(min=PNA_MIN_SCALE)], dim=-1)


class NBFNetLayer(nn.Module):
    r"""One generalized Bellman-Ford layer of NBFNet, the oracle for compiled NBFNet layers.

    For a batch of queries, with node states :math:`\mathbf{x}`, boundary
    :math:`\mathbf{b}` and query-dependent relation vectors :math:`\mathbf{w}_r`:

    .. math::
        M_v = \{\, \textsc{Msg}(\mathbf{x}_u, \mathbf{w}_r) : (u, r, v) \in E \,\}
            \cup \{\mathbf{b}_v\}, \qquad
        \mathbf{a}_v = \textsc{Agg}(M_v)

    .. math::
        \mathbf{h}_v = \operatorname{ReLU}(\operatorname{LayerNorm}(
            [\mathbf{x}_v \Vert \mathbf{a}_v] W^\top + \mathbf{c})) \; (+ \mathbf{x}_v \text{ if short\_cut})

    ``Msg`` is ``distmult`` (:math:`\mathbf{x}\odot\mathbf{w}`), ``transe``
    (:math:`\mathbf{x}+\mathbf{w}`) or ``rotate`` (complex product, real parts in the first
    half of the vector, imaginary parts in the second; ``dim`` must be even). ``Agg`` is
    elementwise sum, mean, max or min over :math:`M_v`, or ``pna``: mean, max, min and
    std (:math:`\sqrt{\max(\overline{m^2} - \bar m^2, 10^{-6})}`), each times the degree
    scalers :math:`1, s_v, 1/\max(s_v, 0.01)` with :math:`s_v = \log d_v /
    \operatorname{mean}_u \log d_u` and :math:`d_v = |M_v|` = in-degree + 1. The pna
    update has ``12 * dim`` features laid out as NBFNet's code does: feature
    ``(i * 4 + a) * 3 + k`` is dimension ``i``, statistic ``a`` (mean, max, min, std),
    scaler ``k``. Every node has its boundary message, so no aggregate is empty.

    Args:
        dim (int): feature size of states, boundary and relation vectors.
        num_relations (int): number of relations; a graph may use fewer.
        message (str): ``"distmult"``, ``"transe"`` or ``"rotate"``. Default: ``"distmult"``.
        aggregate (str): ``"sum"``, ``"mean"``, ``"max"``, ``"min"`` or ``"pna"``. Default:
            ``"sum"``.
        layer_norm (bool): apply ``nn.LayerNorm(dim)`` before the ReLU. Default: True.
        short_cut (bool): add the input state to the output. Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Parameters (the state_dict contract): ``linear`` = ``nn.Linear(13 * dim if pna else
    2 * dim, dim)``; ``layer_norm`` = ``nn.LayerNorm(dim)`` if ``layer_norm``.

    On a block, :math:`v` runs over the destinations: the boundary (self) message and
    the :math:`\mathbf{x}_v` of the update and the short cut read the destination rows
    ``[:, :num_dst_nodes]`` only, and pna's mean log-degree is taken over the
    destinations (so on a block, unlike the other aggregates, pna is not the plain
    graph's output cut to those rows: that mean is a statistic of the whole graph).

    Shapes: ``forward(graph, x, boundary, relation)`` with ``x`` and ``boundary``
    ``[batch, graph.num_src_nodes, dim]`` and ``relation`` ``[batch, num_relations, dim]``
    returns ``[batch, graph.num_dst_nodes, dim]`` (``graph.num_nodes`` rows each on a
    plain graph). ``graph.etype`` indexes ``relation``.
    """

    def __init__(
        self,
        dim: int,
        num_relations: int,
        *,
        message: str = "distmult",
        aggregate: str = "sum",
        layer_norm: bool = True,
        short_cut: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.num_relations = check_int("num_relations", num_relations)
        self.message = check_choice("message", message, NBF_MESSAGES)
        self.aggregate = check_choice("aggregate", aggregate, NBF_AGGREGATES)
        self.short_cut = check_bool("short_cut", short_cut)
        check_bool("layer_norm", layer_norm)
        if message == "rotate" and dim % 2 != 0:
            raise ValueError(f"Expected `dim` to be even for message='rotate' (got {dim})")
        factory = {"device": device, "dtype": dtype}

        update_dim = 12 * dim if aggregate == "pna" else dim
        self.linear = nn.Linear(dim + update_dim, dim, **factory)
        self.layer_norm = nn.LayerNorm(dim, **factory) if layer_norm else None

    def reset_parameters(self) -> None:
        """The default initialization of ``nn.Linear`` and ``nn.LayerNorm``."""
        self.linear.reset_parameters()
        if self.layer_norm is not None:
            self.layer_norm.reset_parameters()

    def _aggregate(self, messages: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        """Reduce ``messages`` ``[batch, M, dim]`` onto ``index`` (every node appears at least once)."""
        batch = messages.shape[0]
        expanded = index.view(1, -1, 1).expand_as(messages)
        zeros = messages.new_zeros(batch, num_nodes, self.dim)
        degree = torch.bincount(index, minlength=num_nodes)
        count = degree.to(messages.dtype).view(1, -1, 1)

        def total(values):
            return zeros.index_add(1, index, values)

        def extreme(reduce):
            # From -inf (+inf), every node having a message: torch's backward of
            # scatter_reduce with include_self=False still splits the gradient with the
            # excluded start value where the result equals it (a maximum of exactly 0).
            start = messages.new_full((batch, num_nodes, self.dim), -math.inf if reduce == "amax" else math.inf)
            return start.scatter_reduce(1, expanded, messages, reduce=reduce, include_self=True)

        if self.aggregate == "sum":
            return total(messages)
        if self.aggregate == "mean":
            return total(messages) / count
        if self.aggregate == "max":
            return extreme("amax")
        if self.aggregate == "min":
            return extreme("amin")

        mean = total(messages) / count
        square_mean = total(messages * messages) / count
        std = torch.sqrt(torch.clamp(square_mean - mean * mean, min=PNA_EPS))
        stats = torch.stack([mean, extreme("amax"), extreme("amin"), std], dim=-1)  # [B, N, dim, 4]
        scales = pna_degree_scales(degree, messages.dtype)  # [N, 3]
        scaled = stats.unsqueeze(-1) * scales.view(1, num_nodes, 1, 1, 3)
        return scaled.reshape(batch, num_nodes, 12 * self.dim)

    def forward(self, graph, x: torch.Tensor, boundary: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        like = self.linear.weight
        graph = check_graph(graph, num_etypes=self.num_relations, etypes_arg="num_relations")
        check_graph_device(graph, like)
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"Expected `x` to have shape [batch, {graph.num_src_nodes}, {self.dim}] (got {shape})"
            )
        batch, num_src, num_dst = x.shape[0], graph.num_src_nodes, graph.num_dst_nodes
        x = check_features("x", x, (batch, num_src, self.dim), like)
        boundary = check_features("boundary", boundary, (batch, num_src, self.dim), like)
        relation = check_features("relation", relation, (batch, self.num_relations, self.dim), like)

        edge_messages = nbf_message(
            self.message, x.index_select(1, graph.src), relation.index_select(1, graph.etype)
        )
        # The boundary is one more message per destination, received from itself.
        messages = torch.cat([edge_messages, boundary[:, :num_dst]], dim=1)
        index = torch.cat([graph.dst, torch.arange(num_dst, device=graph.device)])
        update = self._aggregate(messages, index, num_dst)

        x_dst = x[:, :num_dst]
        out = self.linear(torch.cat([x_dst, update], dim=-1))
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        out = F.relu(out)
        if self.short_cut:
            out = out + x_dst
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.dim}, num_relations={self.num_relations}, message={self.message!r}, "
            f"aggregate={self.aggregate!r}, layer_norm={self.layer_norm is not None}, "
            f"short_cut={self.short_cut}"
        )
