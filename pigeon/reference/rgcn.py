"""Reference relational graph convolution (Schlichtkrull et al. 2018)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pigeon.reference._common import (
    check_bool,
    check_choice,
    check_features,
    check_graph,
    check_graph_device,
    check_int,
    edges_by_relation,
    glorot_,
    uniform_,
)

RGCN_NORMS = ("right", "relation", None)


def rgcn_edge_norm(graph, norm: str | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The coefficient ``c_e`` of every edge, or None when ``norm`` is None.

    ``"right"``: one over the in-degree of the destination, counted over all relations.
    ``"relation"``: one over the number of edges of the edge's own relation that enter the
    destination (``c_{i,r}`` in the RGCN paper). Repeated edges count with multiplicity.
    """
    if norm is None:
        return None
    if norm == "right":
        degree = torch.bincount(graph.dst, minlength=graph.num_dst_nodes)
        return 1.0 / degree.index_select(0, graph.dst).to(dtype)
    # Count edges per (dst, relation) pair without an N x R table: unique over the pair key.
    key = graph.dst * graph.num_etypes + graph.etype
    _, pair, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return 1.0 / counts.index_select(0, pair).to(dtype)


class RGCN(nn.Module):
    r"""Relational graph convolution, the correctness oracle for compiled RGCN layers.

    .. math::
        \mathbf{h}_v = \sum_{(u, r, v) \in E} c_e \, \mathbf{x}_u \mathbf{W}_r
            + \mathbf{x}_v \mathbf{W}_{\text{loop}} + \mathbf{b},
        \qquad \mathbf{W}_r = \sum_b a_{rb} \mathbf{V}_b \text{ (with bases)}

    where ``c_e`` is ``1 / in_degree(v)`` (``norm="right"``, as DGL's RGCN examples feed
    :class:`dgl.nn.RelGraphConv`), ``1 / |{(u', r, v) in E}|`` (``norm="relation"``, the
    paper's :math:`c_{v,r}` and PyG's ``RGCNConv`` mean aggregation) or 1 (``norm=None``).
    A node with no in-edges receives no messages: its output is the self-loop plus bias.

    On a block (``graph.num_dst_nodes < graph.num_src_nodes``) the sum runs over the
    block's edges and ``v`` over its destinations: ``x`` has a row per source node, the
    output a row per destination, and the self-loop reads the destination rows
    ``x[:num_dst_nodes]`` only.

    Args:
        in_dim (int): input feature size.
        out_dim (int): output feature size.
        num_etypes (int): number of relations; a graph may use fewer.
        num_bases (int, optional): basis decomposition with this many bases. Default:
            None, a full ``weight`` per relation.
        self_loop (bool): add :math:`\mathbf{x}_v \mathbf{W}_{\text{loop}}`. Default: True.
        bias (bool): add a learnable bias. Default: True.
        norm (str or None): ``"right"``, ``"relation"`` or None. Default: ``"right"``.
        device, dtype: where and in which dtype to create the parameters.

    Parameters (the state_dict contract shared with the compiled layer):
        ``weight`` ``[num_etypes, in_dim, out_dim]`` without bases; with bases ``basis``
        ``[num_bases, in_dim, out_dim]`` and ``coeff`` ``[num_etypes, num_bases]``;
        ``loop_weight`` ``[in_dim, out_dim]`` if ``self_loop``; ``bias`` ``[out_dim]`` if
        ``bias``.

    Shapes: ``forward(graph, x)`` with ``x`` ``[graph.num_src_nodes, in_dim]`` returns
    ``[graph.num_dst_nodes, out_dim]`` in the dtype of the parameters (on a plain graph
    both are ``graph.num_nodes``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_etypes: int,
        *,
        num_bases: int | None = None,
        self_loop: bool = True,
        bias: bool = True,
        norm: str | None = "right",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_dim = check_int("in_dim", in_dim)
        self.out_dim = check_int("out_dim", out_dim)
        self.num_etypes = check_int("num_etypes", num_etypes)
        self.num_bases = None if num_bases is None else check_int("num_bases", num_bases)
        self.self_loop = check_bool("self_loop", self_loop)
        self.norm = check_choice("norm", norm, RGCN_NORMS)
        check_bool("bias", bias)
        factory = {"device": device, "dtype": dtype}

        if self.num_bases is None:
            self.weight = nn.Parameter(torch.empty(num_etypes, in_dim, out_dim, **factory))
        else:
            self.basis = nn.Parameter(torch.empty(self.num_bases, in_dim, out_dim, **factory))
            self.coeff = nn.Parameter(torch.empty(num_etypes, self.num_bases, **factory))
        if self.self_loop:
            self.loop_weight = nn.Parameter(torch.empty(in_dim, out_dim, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_dim, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DGL's initialization: relation weights as ``nn.Linear``, Xavier (ReLU gain) for
        the coefficients and the self-loop, zero bias."""
        relu_gain = nn.init.calculate_gain("relu")
        if self.num_bases is None:
            uniform_(self.weight, 1.0 / math.sqrt(self.in_dim))
        else:
            uniform_(self.basis, 1.0 / math.sqrt(self.in_dim))
            glorot_(self.coeff, self.num_bases, self.num_etypes, gain=relu_gain)
        if self.self_loop:
            glorot_(self.loop_weight, self.in_dim, self.out_dim, gain=relu_gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def relation_weights(self) -> torch.Tensor:
        """``W_r`` for every relation, ``[num_etypes, in_dim, out_dim]``."""
        if self.num_bases is None:
            return self.weight
        return torch.einsum("rb,bio->rio", self.coeff, self.basis)

    def _any_param(self) -> torch.Tensor:
        return self.weight if self.num_bases is None else self.basis

    def forward(self, graph, x: torch.Tensor) -> torch.Tensor:
        like = self._any_param()
        graph = check_graph(graph, num_etypes=self.num_etypes)
        check_graph_device(graph, like)
        x = check_features("x", x, (graph.num_src_nodes, self.in_dim), like)

        weight = self.relation_weights()
        norm = rgcn_edge_norm(graph, self.norm, x.dtype)
        out = x.new_zeros(graph.num_dst_nodes, self.out_dim)
        for r, eids in edges_by_relation(graph):
            message = x.index_select(0, graph.src[eids]) @ weight[r]
            if norm is not None:
                message = message * norm[eids].unsqueeze(-1)
            out = out.index_add(0, graph.dst[eids], message)
        if self.self_loop:
            out = out + x[: graph.num_dst_nodes] @ self.loop_weight
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_dim}, {self.out_dim}, num_etypes={self.num_etypes}, num_bases={self.num_bases}, "
            f"self_loop={self.self_loop}, bias={self.bias is not None}, norm={self.norm!r}"
        )
