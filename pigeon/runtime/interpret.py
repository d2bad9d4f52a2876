"""Run a level-1 program directly with torch ops, one node at a time.

This is the semantics of level 1, written as plainly as possible: passes are
tested by running a program before and after them here, and its results are
differentiable by torch autograd, which makes it the oracle for Pigeon's own
autodiff. It is not a fast path.

Runtime layout of values: a value in a row space is a tensor ``[rows, *shape]``;
a ``GLOBAL`` value is ``[*shape]`` (no row dim), which is also how untyped
parameters are stored. Typed parameters are ``[num_types, *shape]``.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import GLOBAL, NODE_OF_DST, Binary, IndexMap, Node, Op, Program, Reduce, Space, Unary


_NTYPE_ETYPE_MAPS = ("edge_to_ntype_etype", "compact_src_to_ntype_etype", "ntype_etype_ntype", "ntype_etype_etype")


def resolve_index(graph: HeteroGraph, index: IndexMap, bindings: Mapping[str, tuple] | None = None):
    """``(row -> target row tensor (int64), number of target rows)`` for ``index`` on ``graph``."""
    if bindings and index.name in bindings:
        tensor, size = bindings[index.name]
        return tensor.long(), int(size)
    name = index.name
    if name == "src":
        return graph.src, graph.num_nodes
    if name == "dst":
        return graph.dst, graph.num_dst_nodes
    if name == "etype":
        return graph.etype, graph.num_etypes
    if name == "ntype":
        return graph.ntype, graph.num_ntypes
    if name == "node_of_dst":
        return torch.arange(graph.num_dst_nodes, device=graph.device), graph.num_nodes
    if name == "dst_ntype":
        return graph.dst_ntype, graph.num_ntypes
    if name in _NTYPE_ETYPE_MAPS:
        pairs = graph.layout("ntype_etype")
        rows, size = {
            "edge_to_ntype_etype": (pairs.edge_row, pairs.num_rows),
            "compact_src_to_ntype_etype": (graph.layout("compact_src_pair"), pairs.num_rows),
            "ntype_etype_ntype": (pairs.ntype, graph.num_ntypes),
            "ntype_etype_etype": (pairs.etype, graph.num_etypes),
        }[name]
        return rows.long(), size
    for end in ("src", "dst"):
        if f"compact_{end}" not in name:
            continue   # build only the compact map the name is about
        cmap = graph.layout(f"compact_{end}")
        if name == f"edge_to_compact_{end}":
            return cmap.edge_row.long(), cmap.num_rows
        if name == f"compact_{end}_node":
            return cmap.node.long(), graph.num_nodes if end == "src" else graph.num_dst_nodes
        if name == f"compact_{end}_etype":
            return cmap.etype.long(), graph.num_etypes
    raise KeyError(f"index map {name!r} has no binding and is not a graph map")


def space_size(graph: HeteroGraph, space: Space, bindings: Mapping[str, tuple] | None = None) -> int:
    """Number of rows of ``space`` on ``graph`` (a declared space's size comes from ``bindings``)."""
    sizes = {
        "node": graph.num_nodes, "dst_node": graph.num_dst_nodes, "edge": graph.num_edges,
        "etype": graph.num_etypes, "ntype": graph.num_ntypes, "global": 1,
    }
    if space.name in sizes:
        return sizes[space.name]
    if space.name in ("compact_src", "compact_dst", "ntype_etype"):
        return graph.layout(space.name).num_rows
    if bindings and space.name in bindings:
        return int(bindings[space.name])
    raise KeyError(f"space {space.name!r} has no size binding and is not a graph space")


def _rows_first(value: torch.Tensor, node: Node) -> torch.Tensor:
    """GLOBAL values get a leading row dim of 1 so they broadcast against rows."""
    return value.unsqueeze(0) if node.type.space == GLOBAL else value


def _align(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NumPy broadcasting of row shapes behind the row dim: pad after the row dim."""
    rank = max(a.dim(), b.dim())
    a = a.view(a.shape[0], *([1] * (rank - a.dim())), *a.shape[1:])
    b = b.view(b.shape[0], *([1] * (rank - b.dim())), *b.shape[1:])
    return a, b


def _unary(fn: Unary, x: torch.Tensor, node: Node) -> torch.Tensor:
    if fn is Unary.LEAKY_RELU:
        return F.leaky_relu(x, node.attr("alpha"))
    table = {
        Unary.NEG: torch.neg, Unary.RELU: torch.relu, Unary.EXP: torch.exp, Unary.LOG: torch.log,
        Unary.SQRT: torch.sqrt, Unary.RSQRT: torch.rsqrt, Unary.RECIP: torch.reciprocal,
        Unary.SIGMOID: torch.sigmoid, Unary.TANH: torch.tanh, Unary.GELU: F.gelu,
        Unary.STEP: lambda v: (v > 0).to(v.dtype), Unary.SQUARE: torch.square,
        Unary.GELU_GRAD: _gelu_grad,
    }
    return table[fn](x)


def _gelu_grad(x: torch.Tensor) -> torch.Tensor:
    """d/dx of x * Phi(x): Phi(x) + x * phi(x)."""
    cdf = 0.5 * (1.0 + torch.erf(x * 0.7071067811865476))
    pdf = torch.exp(-0.5 * x * x) * 0.3989422804014327
    return cdf + x * pdf


def _binary(fn: Binary, a: torch.Tensor, b: torch.Tensor, storage: torch.dtype | None = None) -> torch.Tensor:
    if fn is Binary.EQ:
        if storage is not None:   # equal as stored: see run()
            return (a.to(storage) == b.to(storage)).to(torch.promote_types(a.dtype, b.dtype))
        return (a == b).to(torch.promote_types(a.dtype, b.dtype))
    table = {
        Binary.ADD: torch.add, Binary.SUB: torch.sub, Binary.MUL: torch.mul, Binary.DIV: torch.div,
        Binary.MAX: torch.maximum, Binary.MIN: torch.minimum,
    }
    return table[fn](a, b)


def segment_reduce(x: torch.Tensor, index: torch.Tensor, size: int, how: Reduce,
                   init: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce rows of ``x`` into ``size`` rows by ``index``; empty rows are zero.

    ``init`` (``[size, ...]``), when given, takes part in every reduction as one more row.
    """
    if init is not None:
        x = torch.cat([x, init])
        index = torch.cat([index, torch.arange(size, device=index.device)])
    out_shape = (size, *x.shape[1:])
    flat_index = index.view(-1, *([1] * (x.dim() - 1))).expand_as(x)
    if how in (Reduce.SUM, Reduce.MEAN):
        out = x.new_zeros(out_shape).index_add(0, index, x)
        if how is Reduce.MEAN:
            count = torch.bincount(index, minlength=size).clamp(min=1).to(x.dtype)
            out = out / count.view(-1, *([1] * (x.dim() - 1)))
        return out
    reduce = "amax" if how is Reduce.MAX else "amin"
    out = x.new_zeros(out_shape).scatter_reduce(0, flat_index, x, reduce=reduce, include_self=False)
    return out


def pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` followed by zero rows up to ``rows`` rows (``x`` itself when it has them):
    a destination value as a node value, what a sum along ``node_of_dst`` gives."""
    if x.shape[0] == rows:
        return x
    return torch.cat([x, x.new_zeros(rows - x.shape[0], *x.shape[1:])])


def _rows_by_type(index: torch.Tensor, num_types: int):
    """``(t, rows of type t)`` for every type that has rows."""
    for t in range(num_types):
        rows = torch.nonzero(index == t, as_tuple=True)[0]
        if rows.numel():
            yield t, rows


def _typed_linear(x: torch.Tensor, w: torch.Tensor, index: torch.Tensor, batched: bool) -> torch.Tensor:
    out = x.new_zeros(*x.shape[:-1], w.shape[-1])
    for t, rows in _rows_by_type(index, w.shape[0]):
        part = x[rows]
        out[rows] = torch.einsum("r...i,...io->r...o", part, w[t]) if batched else part @ w[t]
    return out


def run(program: Program, graph: HeteroGraph, inputs: Mapping[str, torch.Tensor],
        params: Mapping[str, torch.Tensor], bindings: Mapping[str, tuple] | None = None,
        dtype: torch.dtype | None = None, storage: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Evaluate ``program``; returns its outputs by name. Constants and degrees take
    ``dtype`` (default: the first input's).

    ``storage`` (default None: ``dtype``) is the dtype values are stored in when a
    kernel computes in ``dtype`` (:mod:`pigeon.runtime.precision`): ``equal`` then
    compares its operands as they would be stored, rounded to ``storage``. It finds the
    rows that reached a maximum, whose value the backward pass reads as stored (rounded)
    while it recomputes the rows in ``dtype``; rounding is monotonic, so the rounded
    maximum is the maximum of the rounded rows, and some row always matches."""
    values: list[torch.Tensor | None] = []
    outputs: dict[str, torch.Tensor] = {}
    if dtype is None:
        dtype = next(iter(inputs.values())).dtype if inputs else torch.get_default_dtype()
    device = graph.device
    for node in program.nodes:
        args = [values[i] for i in node.inputs]
        op = node.op
        if op is Op.INPUT:
            value = inputs[node.attr("name")]
        elif op is Op.PARAM:
            value = params[node.attr("name")]
        elif op is Op.CONST:
            value = torch.full(node.type.shape, node.attr("value"), dtype=dtype, device=device)
        elif op is Op.GATHER and node.attr("index") == NODE_OF_DST:
            value = args[0][: graph.num_dst_nodes]    # the destinations are the first nodes
        elif op is Op.GATHER:
            index, _ = resolve_index(graph, node.attr("index"), bindings)
            value = args[0].index_select(0, index)
        elif op is Op.AGGREGATE and node.attr("index") == NODE_OF_DST and len(args) == 1:
            value = pad_rows(args[0], graph.num_nodes)   # each node has at most one destination row
        elif op is Op.AGGREGATE:
            index, size = resolve_index(graph, node.attr("index"), bindings)
            value = segment_reduce(args[0], index, size, node.attr("reduce"), *args[1:])
        elif op is Op.SEGMENT_SOFTMAX:
            index, size = resolve_index(graph, node.attr("index"), bindings)
            peak = segment_reduce(args[0], index, size, Reduce.MAX).detach()
            shifted = torch.exp(args[0] - peak.index_select(0, index))
            total = segment_reduce(shifted, index, size, Reduce.SUM)
            value = shifted / total.index_select(0, index)
        elif op is Op.DEGREE:
            index, size = resolve_index(graph, node.attr("index"), bindings)
            value = torch.bincount(index, minlength=size).to(dtype)
        elif op is Op.LINEAR:
            x, w = args
            w = w.transpose(-1, -2) if node.attr("transpose_w") else w
            value = torch.einsum("r...i,...io->r...o", x, w) if w.dim() > 2 else x @ w
        elif op is Op.TYPED_LINEAR:
            index, _ = resolve_index(graph, node.attr("index"), bindings)
            x, w = args
            w = w.transpose(-1, -2) if node.attr("transpose_w") else w
            value = _typed_linear(x, w, index, batched=w.dim() > 3)
        elif op is Op.TYPED_OUTER:
            x, dy = args
            spec = "r...i,r...o->...io" if node.attr("batched") else "r...i,r...o->io"
            if node.attr("index") is None:  # all rows into one GLOBAL value
                x_rows, dy_rows = (_rows_first(v, program.nodes[i]) for v, i in zip(args, node.inputs))
                value = torch.einsum(spec, x_rows, dy_rows)
            else:
                index, size = resolve_index(graph, node.attr("index"), bindings)
                value = x.new_zeros(size, *node.type.shape)
                for t, rows in _rows_by_type(index, size):
                    value[t] = torch.einsum(spec, x[rows], dy[rows])
        elif op in (Op.UNARY, Op.BINARY, Op.DOT):
            if op is Op.UNARY:
                value = _unary(node.attr("fn"), args[0], node)
            else:
                a, b = (_rows_first(v, program.nodes[i]) for v, i in zip(args, node.inputs))
                a, b = _align(a, b)
                value = _binary(node.attr("fn"), a, b, storage) if op is Op.BINARY else (a * b).sum(-1)
                if node.type.space == GLOBAL:
                    value = value.squeeze(0)
        elif op is Op.SUM_LAST:
            value = args[0].sum(-1)
        elif op is Op.SUM_DIMS:
            offset = 0 if node.type.space == GLOBAL else 1
            dims = [d + offset for d in node.attr("dims")]
            value = args[0].sum(dim=dims, keepdim=True) if dims else args[0]
        elif op is Op.EXPAND_LAST:
            value = args[0].unsqueeze(-1).expand(*args[0].shape, node.attr("size"))
        elif op is Op.RESHAPE:
            lead = () if node.type.space == GLOBAL else (args[0].shape[0],)
            value = args[0].reshape(*lead, *node.type.shape)
        elif op is Op.CONCAT:
            value = torch.cat(args, dim=-1)
        elif op is Op.SLICE_LAST:
            value = args[0][..., node.attr("start"):node.attr("stop")]
        elif op is Op.PAD_LAST:
            value = F.pad(args[0], (node.attr("before"), node.attr("after")))
        elif op is Op.SUM_ROWS:
            value = args[0].sum(0)
        elif op is Op.MEAN_ROWS:
            value = args[0].mean(0) if args[0].shape[0] else args[0].new_zeros(args[0].shape[1:])
        elif op is Op.BROADCAST_ROWS:
            rows = space_size(graph, node.attr("space"), bindings)
            value = args[0].unsqueeze(0).expand(rows, *args[0].shape)
        elif op is Op.LAYER_NORM:
            value = F.layer_norm(args[0], args[0].shape[-1:], eps=node.attr("eps"))
        elif op is Op.OUTPUT:
            value = args[0]
            outputs[node.attr("name")] = value
        else:
            raise ValueError(f"interpret: no rule for op {op}")
        values.append(value)
    return outputs


__all__ = ["run", "resolve_index", "segment_reduce", "space_size", "pad_rows"]
