"""Reference heterogeneous graph transformer layer (Hu et al. 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pigeon.reference._common import (
    check_bool,
    check_features,
    check_graph,
    check_graph_device,
    check_int,
    edges_by_relation,
    segment_softmax,
    typed_linear,
    uniform_,
)


class HGT(nn.Module):
    r"""One HGT layer, the correctness oracle for compiled HGT layers.

    With :math:`\tau(n)` the type of node :math:`n`, :math:`d = \text{out\_dim} / H` and
    heads :math:`h = 1..H`, for every edge :math:`e = (s, r, t)`:

    .. math::
        K_s = \mathbf{x}_s W^K_{\tau(s)} + b^K_{\tau(s)}, \quad
        Q_t = \mathbf{x}_t W^Q_{\tau(t)} + b^Q_{\tau(t)}, \quad
        V_s = \mathbf{x}_s W^V_{\tau(s)} + b^V_{\tau(s)} \quad (\text{each split into } H \text{ heads of } d)

    .. math::
        a_{e,h} = \frac{(K_{s,h} W^{att}_{r,h}) \cdot Q_{t,h} \; \mu_{r,h}}{\sqrt d}, \qquad
        \alpha_{e,h} = \operatorname{softmax}_{e' \in \text{in}(t)} a_{e',h}, \qquad
        \tilde{\mathbf{h}}_t = \big\Vert_h \sum_{e \in \text{in}(t)} \alpha_{e,h} \, V_{s,h} W^{msg}_{r,h}

    .. math::
        \mathbf{o}_t = \operatorname{GELU}(\tilde{\mathbf{h}}_t) W^A_{\tau(t)} + b^A_{\tau(t)}, \qquad
        \mathbf{h}_t = \sigma(\beta_{\tau(t)}) \, \mathbf{o}_t + (1 - \sigma(\beta_{\tau(t)})) \, \mathbf{x}_t
        \text{ if in\_dim = out\_dim, else } \mathbf{o}_t

    Conventions (PyG's ``HGTConv`` semantics, chosen so its weights carry over exactly):

    * the activation before the A-linear is the exact (erf) GELU, as in PyG; DGL's
      ``HGTConv`` applies none there (the one difference from DGL);
    * the softmax runs over all in-edges of the destination, across relations;
    * relation parameters (:math:`W^{att}, W^{msg}, \mu`) are indexed by the edge type id
      alone; the node types of the edge's endpoints enter only through K, Q, V (of the
      source, destination and source types). A PyG edge type is a
      ``(src_type, relation, dst_type)`` triple, i.e. one of our edge types;
    * the skip gate exists only when ``in_dim == out_dim``; otherwise there is no residual
      (DGL instead projects ``x`` with a ``residual_w``, PyG drops it, as here);
    * every node gets an output: one with no in-edges (so every node of a type that is no
      edge type's destination) has :math:`\tilde{\mathbf{h}} = 0`. PyG leaves node types
      that are no edge type's destination out of its output;
    * no dropout and no layer norm (DGL's options); evaluation semantics only;
    * on a block, :math:`t` runs over the destinations: the query projection, the
      A-linear and the skip read only the destination rows ``x[:num_dst_nodes]`` (and
      their types), K and V every source row, as DGL's ``HGTConv`` does on blocks.

    Args:
        in_dim (int): input feature size (shared by all node types).
        out_dim (int): output feature size, divisible by ``heads``.
        num_ntypes (int): number of node types; a graph may use fewer.
        num_etypes (int): number of edge types; a graph may use fewer.
        heads (int): number of attention heads. Default: 1.
        bias (bool): biases on the K, Q, V and A linears (DGL's have none). Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Parameters (the state_dict contract): ``k_weight``, ``q_weight``, ``v_weight``
    ``[num_ntypes, in_dim, out_dim]``; ``a_weight`` ``[num_ntypes, out_dim, out_dim]``;
    with ``bias``, ``k_bias``, ``q_bias``, ``v_bias``, ``a_bias`` ``[num_ntypes, out_dim]``;
    ``rel_att``, ``rel_msg`` ``[num_etypes, heads, d, d]`` (applied as ``k @ rel_att``);
    ``rel_pri`` ``[num_etypes, heads]``; ``skip`` ``[num_ntypes]`` only if
    ``in_dim == out_dim``. Head ``h`` of a K/Q/V/output row is columns ``h*d:(h+1)*d``.

    Shapes: ``forward(graph, x)`` with ``x`` ``[graph.num_src_nodes, in_dim]`` and node
    types from ``graph.ntype`` returns ``[graph.num_dst_nodes, out_dim]`` (both
    ``graph.num_nodes`` on a plain graph).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_ntypes: int,
        num_etypes: int,
        *,
        heads: int = 1,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_dim = check_int("in_dim", in_dim)
        self.out_dim = check_int("out_dim", out_dim)
        self.num_ntypes = check_int("num_ntypes", num_ntypes)
        self.num_etypes = check_int("num_etypes", num_etypes)
        self.heads = check_int("heads", heads)
        check_bool("bias", bias)
        if out_dim % heads != 0:
            raise ValueError(f"Expected `out_dim` to be divisible by heads={heads} (got out_dim={out_dim})")
        self.head_dim = out_dim // heads
        d = self.head_dim
        factory = {"device": device, "dtype": dtype}

        for name, fan_in in (("k", in_dim), ("q", in_dim), ("v", in_dim), ("a", out_dim)):
            setattr(self, f"{name}_weight", nn.Parameter(torch.empty(num_ntypes, fan_in, out_dim, **factory)))
            if bias:
                setattr(self, f"{name}_bias", nn.Parameter(torch.empty(num_ntypes, out_dim, **factory)))
            else:
                self.register_parameter(f"{name}_bias", None)
        self.rel_att = nn.Parameter(torch.empty(num_etypes, heads, d, d, **factory))
        self.rel_msg = nn.Parameter(torch.empty(num_etypes, heads, d, d, **factory))
        self.rel_pri = nn.Parameter(torch.empty(num_etypes, heads, **factory))
        if in_dim == out_dim:
            self.skip = nn.Parameter(torch.empty(num_ntypes, **factory))
        else:
            self.register_parameter("skip", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``-style uniform bounds for every matrix and bias, ones for the prior
        and the skip logits (as both PyG and DGL)."""
        for name, fan_in in (("k", self.in_dim), ("q", self.in_dim), ("v", self.in_dim), ("a", self.out_dim)):
            uniform_(getattr(self, f"{name}_weight"), 1.0 / math.sqrt(fan_in))
            bias = getattr(self, f"{name}_bias")
            if bias is not None:
                uniform_(bias, 1.0 / math.sqrt(fan_in))
        uniform_(self.rel_att, 1.0 / math.sqrt(self.head_dim))
        uniform_(self.rel_msg, 1.0 / math.sqrt(self.head_dim))
        nn.init.ones_(self.rel_pri)
        if self.skip is not None:
            nn.init.ones_(self.skip)

    def _project(self, name: str, x: torch.Tensor, ntype: torch.Tensor) -> torch.Tensor:
        weight, bias = getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias")
        return typed_linear(x, ntype, self.num_ntypes, weight, bias)

    def forward(self, graph, x: torch.Tensor) -> torch.Tensor:
        graph = check_graph(graph, num_etypes=self.num_etypes, num_ntypes=self.num_ntypes)
        check_graph_device(graph, self.k_weight)
        x = check_features("x", x, (graph.num_src_nodes, self.in_dim), self.k_weight)
        num_src, num_dst, heads, d = graph.num_src_nodes, graph.num_dst_nodes, self.heads, self.head_dim
        x_dst, dst_ntype = x[:num_dst], graph.ntype[:num_dst]

        k = self._project("k", x, graph.ntype).view(num_src, heads, d)
        q = self._project("q", x_dst, dst_ntype).view(num_dst, heads, d)
        v = self._project("v", x, graph.ntype).view(num_src, heads, d)

        scores, messages, dsts = [], [], []
        for r, eids in edges_by_relation(graph):
            src, dst = graph.src[eids], graph.dst[eids]
            key = torch.einsum("ehi,hij->ehj", k.index_select(0, src), self.rel_att[r])
            score = (key * q.index_select(0, dst)).sum(-1) * self.rel_pri[r] / math.sqrt(d)
            scores.append(score)
            messages.append(torch.einsum("ehi,hij->ehj", v.index_select(0, src), self.rel_msg[r]))
            dsts.append(dst)

        aggregated = x.new_zeros(num_dst, heads, d)
        if scores:
            dst = torch.cat(dsts)
            alpha = segment_softmax(torch.cat(scores), dst, num_dst)
            aggregated = aggregated.index_add(0, dst, alpha.unsqueeze(-1) * torch.cat(messages))
        aggregated = aggregated.reshape(num_dst, self.out_dim)

        out = self._project("a", F.gelu(aggregated), dst_ntype)
        if self.skip is not None:
            gate = torch.sigmoid(self.skip).index_select(0, dst_ntype).unsqueeze(-1)
            out = gate * out + (1 - gate) * x_dst
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_dim}, {self.out_dim}, num_ntypes={self.num_ntypes}, num_etypes={self.num_etypes}, "
            f"heads={self.heads}, bias={self.k_bias is not None}"
        )
