"""The ``dgl-ops`` baseline: RGCN, RGAT and HGT written with DGL's low-level operators,
the same maths as :mod:`pigeon.reference`.

DGL's own layers compute other maths for two of the three models (``GATConv`` under
``HeteroGraphConv`` is a softmax per relation, summed over relations; ``HGTConv`` has
no GELU and no biases), so a comparison with them is a comparison of different layers.
These are what a DGL user writes for the reference's maths, as Hector's baselines do:
typed linears with ``dgl.ops.segment_mm`` over edges grouped by type (DGL's
``TypedLinear`` and ``RelGraphConv`` do the same: on the CPU it is one matrix multiply
per type), attention with ``dgl.nn.functional.edge_softmax`` over *all* incoming
edges, and aggregation with ``dgl.ops.copy_e_sum``.

Everything that depends only on the graph (edges sorted by type, the segment lengths,
the DGL graph in that edge order, the nodes sorted by type, RGCN's edge coefficients)
is built once when the layer is built, outside the timed call, as a user would.

Each layer has the reference's parameter names and shapes, so it loads the reference's
``state_dict`` and the benchmark compares parameter gradients too.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DGLOpsRGCN", "DGLOpsRGAT", "DGLOpsHGT", "build_dgl_ops_layer"]


class _Prepared:
    """The graph in the order the operators want it: edges grouped by edge type (the
    DGL graph is built in that order, so its edge ids index the sorted arrays), and
    the nodes grouped by node type."""

    def __init__(self, graph, dgl):
        order = torch.argsort(graph.etype, stable=True)
        self.order = order
        self.src, self.dst, self.etype = graph.src[order], graph.dst[order], graph.etype[order]
        # segment_mm slices by these on the host.
        self.edge_segments = torch.bincount(self.etype, minlength=graph.num_etypes).cpu()
        self.g = dgl.graph((self.src, self.dst), num_nodes=graph.num_nodes, idtype=torch.int64,
                           device=graph.src.device)
        node_order = torch.argsort(graph.ntype, stable=True)
        identity = torch.arange(graph.num_nodes, device=node_order.device)
        self.node_order = None if torch.equal(node_order, identity) else node_order
        self.node_segments = torch.bincount(graph.ntype, minlength=graph.num_ntypes).cpu()
        self.ntype = graph.ntype
        self.num_nodes = graph.num_nodes

    def typed_nodes(self, dgl, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x[v] @ weight[ntype(v)] + bias[ntype(v)]`` for every node, in node order."""
        if self.node_order is None:
            out = dgl.ops.segment_mm(x, weight, self.node_segments)
        else:
            out = torch.empty(x.shape[0], weight.shape[-1], dtype=x.dtype, device=x.device)
            out = out.index_copy(0, self.node_order,
                                 dgl.ops.segment_mm(x.index_select(0, self.node_order), weight, self.node_segments))
        return out if bias is None else out + bias.index_select(0, self.ntype)

    def typed_edges(self, dgl, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``rows[e] @ weight[etype(e)]`` for edge rows in sorted order."""
        return dgl.ops.segment_mm(rows, weight, self.edge_segments)


def _dgl():
    from pigeon.interop.dgl import import_dgl

    dgl = import_dgl()
    import dgl.nn.functional  # noqa: F401  (edge_softmax)

    return dgl


class DGLOpsRGCN(nn.Module):
    """``h_v = sum_{(u, r, v)} c_{v,r} x_u W_r + x_v W_loop + b`` (``norm="relation"``)."""

    def __init__(self, graph, in_dim: int, out_dim: int):
        super().__init__()
        from pigeon.reference.rgcn import rgcn_edge_norm

        self.dgl = _dgl()
        self.prepared = _Prepared(graph, self.dgl)
        self.weight = nn.Parameter(torch.empty(graph.num_etypes, in_dim, out_dim))
        self.loop_weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(out_dim))
        self.register_buffer("norm", rgcn_edge_norm(graph, "relation", torch.float32)[self.prepared.order]
                             .unsqueeze(-1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.prepared
        messages = p.typed_edges(self.dgl, x.index_select(0, p.src), self.weight) * self.norm
        return self.dgl.ops.copy_e_sum(p.g, messages) + x @ self.loop_weight + self.bias


class DGLOpsRGAT(nn.Module):
    """The reference RGAT: scores from the edge's own ``W_r`` at both ends, softmax over
    all in-edges of the destination (across relations), heads concatenated."""

    def __init__(self, graph, in_dim: int, out_dim: int, heads: int, negative_slope: float = 0.2):
        super().__init__()
        self.dgl = _dgl()
        self.prepared = _Prepared(graph, self.dgl)
        self.heads, self.out_dim, self.negative_slope = heads, out_dim, negative_slope
        self.weight = nn.Parameter(torch.empty(graph.num_etypes, in_dim, heads * out_dim))
        self.att_src = nn.Parameter(torch.empty(graph.num_etypes, heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(graph.num_etypes, heads, out_dim))
        self.bias = nn.Parameter(torch.empty(heads * out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, dgl = self.prepared, self.dgl
        shape = (-1, self.heads, self.out_dim)
        z_src = p.typed_edges(dgl, x.index_select(0, p.src), self.weight).view(shape)
        z_dst = p.typed_edges(dgl, x.index_select(0, p.dst), self.weight).view(shape)
        score = (z_src * self.att_src.index_select(0, p.etype)).sum(-1) \
            + (z_dst * self.att_dst.index_select(0, p.etype)).sum(-1)
        alpha = dgl.nn.functional.edge_softmax(p.g, F.leaky_relu(score, self.negative_slope))
        out = dgl.ops.copy_e_sum(p.g, alpha.unsqueeze(-1) * z_src)
        return out.reshape(p.num_nodes, self.heads * self.out_dim) + self.bias


class DGLOpsHGT(nn.Module):
    """The reference HGT: K, Q, V and A per node type with biases, ``K W_att`` and
    ``V W_msg`` per edge type and head, softmax over all in-edges, GELU, the skip gate."""

    def __init__(self, graph, in_dim: int, out_dim: int, heads: int):
        super().__init__()
        self.dgl = _dgl()
        self.prepared = _Prepared(graph, self.dgl)
        self.heads, self.head_dim, self.out_dim = heads, out_dim // heads, out_dim
        d, nt, et = self.head_dim, graph.num_ntypes, graph.num_etypes
        for name, fan_in in (("k", in_dim), ("q", in_dim), ("v", in_dim), ("a", out_dim)):
            setattr(self, f"{name}_weight", nn.Parameter(torch.empty(nt, fan_in, out_dim)))
            setattr(self, f"{name}_bias", nn.Parameter(torch.empty(nt, out_dim)))
        self.rel_att = nn.Parameter(torch.empty(et, heads, d, d))
        self.rel_msg = nn.Parameter(torch.empty(et, heads, d, d))
        self.rel_pri = nn.Parameter(torch.empty(et, heads))
        self.skip = nn.Parameter(torch.empty(nt)) if in_dim == out_dim else None

    def _per_head(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``rows[e, h] @ weight[etype(e), h]`` for each head: one segmented GEMM per head."""
        p = self.prepared
        return torch.stack([p.typed_edges(self.dgl, rows[:, h], weight[:, h]) for h in range(self.heads)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, dgl = self.prepared, self.dgl
        shape = (-1, self.heads, self.head_dim)
        k = p.typed_nodes(dgl, x, self.k_weight, self.k_bias).view(shape)
        q = p.typed_nodes(dgl, x, self.q_weight, self.q_bias).view(shape)
        v = p.typed_nodes(dgl, x, self.v_weight, self.v_bias).view(shape)
        key = self._per_head(k.index_select(0, p.src), self.rel_att)
        score = (key * q.index_select(0, p.dst)).sum(-1) * self.rel_pri.index_select(0, p.etype) \
            / math.sqrt(self.head_dim)
        alpha = dgl.nn.functional.edge_softmax(p.g, score)
        message = self._per_head(v.index_select(0, p.src), self.rel_msg)
        aggregated = dgl.ops.copy_e_sum(p.g, alpha.unsqueeze(-1) * message).reshape(p.num_nodes, self.out_dim)
        out = p.typed_nodes(dgl, F.gelu(aggregated), self.a_weight, self.a_bias)
        if self.skip is not None:
            gate = torch.sigmoid(self.skip).index_select(0, p.ntype).unsqueeze(-1)
            out = gate * out + (1 - gate) * x
        return out


def build_dgl_ops_layer(model: str, graph, reference) -> nn.Module:
    """The ``dgl-ops`` layer of ``model`` for ``graph`` with ``reference``'s weights."""
    if model == "rgcn":
        layer = DGLOpsRGCN(graph, reference.in_dim, reference.out_dim)
    elif model == "rgat":
        layer = DGLOpsRGAT(graph, reference.in_dim, reference.out_dim, reference.heads, reference.negative_slope)
    elif model == "hgt":
        layer = DGLOpsHGT(graph, reference.in_dim, reference.out_dim, reference.heads)
    else:
        raise ValueError(f"Expected `model` to be one of 'rgcn', 'rgat', 'hgt' (got {model!r})")
    layer.load_state_dict(reference.state_dict())
    return layer
