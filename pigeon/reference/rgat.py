"""Reference relational graph attention (Busbridge et al. 2019), across-relation form."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pigeon.reference._common import (
    check_bool,
    check_features,
    check_float,
    check_graph,
    check_graph_device,
    check_int,
    edges_by_relation,
    glorot_,
    segment_softmax,
)


class RGAT(nn.Module):
    r"""Relational graph attention, the correctness oracle for compiled RGAT layers.

    For an edge :math:`e = (u, r, v)` and head :math:`h`:

    .. math::
        \mathbf{z}_{e,h} = (\mathbf{x}_u \mathbf{W}_r)_h, \qquad
        s_{e,h} = \operatorname{LeakyReLU}\big(\langle \mathbf{z}_{e,h}, \mathbf{a}^{src}_{r,h}\rangle
            + \langle (\mathbf{x}_v \mathbf{W}_r)_h, \mathbf{a}^{dst}_{r,h}\rangle\big),

    .. math::
        \alpha_{e,h} = \operatorname{softmax}_{e' \in \text{in}(v)} s_{e',h}, \qquad
        \mathbf{h}_v = \big\Vert_h \sum_{e \in \text{in}(v)} \alpha_{e,h} \mathbf{z}_{e,h} + \mathbf{b}

    The softmax runs over *all* in-edges of :math:`v`, across relations ("across-relation"
    attention with additive self-attention in PyG's ``RGATConv``). The destination term
    projects :math:`\mathbf{x}_v` with the edge's own :math:`\mathbf{W}_r`. A node with
    no in-edges outputs the bias alone. On a block, ``v`` runs over the destinations and
    the destination term reads their rows ``x[:num_dst_nodes]``. Heads are concatenated, head-major:
    ``out[:, h * out_dim:(h + 1) * out_dim]`` is head ``h``.

    Args:
        in_dim (int): input feature size.
        out_dim (int): feature size per head.
        num_etypes (int): number of relations; a graph may use fewer.
        heads (int): number of attention heads. Default: 1.
        negative_slope (float): LeakyReLU slope. Default: 0.2.
        bias (bool): add a learnable bias. Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Parameters (the state_dict contract): ``weight`` ``[num_etypes, in_dim,
    heads * out_dim]``; ``att_src`` and ``att_dst`` ``[num_etypes, heads, out_dim]``;
    ``bias`` ``[heads * out_dim]`` if ``bias``.

    Shapes: ``forward(graph, x)`` with ``x`` ``[graph.num_src_nodes, in_dim]`` returns
    ``[graph.num_dst_nodes, heads * out_dim]`` (both ``graph.num_nodes`` on a plain graph).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_etypes: int,
        *,
        heads: int = 1,
        negative_slope: float = 0.2,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_dim = check_int("in_dim", in_dim)
        self.out_dim = check_int("out_dim", out_dim)
        self.num_etypes = check_int("num_etypes", num_etypes)
        self.heads = check_int("heads", heads)
        self.negative_slope = check_float("negative_slope", negative_slope)
        check_bool("bias", bias)
        factory = {"device": device, "dtype": dtype}

        self.weight = nn.Parameter(torch.empty(num_etypes, in_dim, heads * out_dim, **factory))
        self.att_src = nn.Parameter(torch.empty(num_etypes, heads, out_dim, **factory))
        self.att_dst = nn.Parameter(torch.empty(num_etypes, heads, out_dim, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(heads * out_dim, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot for the weights and attention vectors, zero bias (as PyG's ``RGATConv``)."""
        glorot_(self.weight, self.in_dim, self.heads * self.out_dim)
        glorot_(self.att_src, self.out_dim, 1)
        glorot_(self.att_dst, self.out_dim, 1)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, graph, x: torch.Tensor) -> torch.Tensor:
        graph = check_graph(graph, num_etypes=self.num_etypes)
        check_graph_device(graph, self.weight)
        x = check_features("x", x, (graph.num_src_nodes, self.in_dim), self.weight)
        heads, width = self.heads, self.out_dim
        x_dst = x[: graph.num_dst_nodes]

        # Per relation: source values, their scores, and the destinations, in relation order.
        values, scores, dsts = [], [], []
        for r, eids in edges_by_relation(graph):
            src, dst = graph.src[eids], graph.dst[eids]
            z_src = (x.index_select(0, src) @ self.weight[r]).view(-1, heads, width)
            z_dst = (x_dst.index_select(0, dst) @ self.weight[r]).view(-1, heads, width)
            score = (z_src * self.att_src[r]).sum(-1) + (z_dst * self.att_dst[r]).sum(-1)
            values.append(z_src)
            scores.append(score)
            dsts.append(dst)

        num_dst = graph.num_dst_nodes
        out = x.new_zeros(num_dst, heads, width)
        if values:
            dst = torch.cat(dsts)
            score = F.leaky_relu(torch.cat(scores), self.negative_slope)
            alpha = segment_softmax(score, dst, num_dst)
            out = out.index_add(0, dst, alpha.unsqueeze(-1) * torch.cat(values))
        out = out.reshape(num_dst, heads * width)
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_dim}, {self.out_dim}, num_etypes={self.num_etypes}, heads={self.heads}, "
            f"negative_slope={self.negative_slope}, bias={self.bias is not None}"
        )
