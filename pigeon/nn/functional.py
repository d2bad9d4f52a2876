"""RGCN, RGAT, HGT and the NBFNet layer written in the layer language.

Each function is the whole layer: the compiler traces it, so what is written here
is what gets optimised and generated. Parameter names match
:mod:`pigeon.reference` one to one (the state_dict contract).
"""

from __future__ import annotations

import math

from pigeon.frontend import (
    EtypeInput, PerEtype, PerNtype, Shared, aggregate, chunk, concat, dot, edge_softmax, equal,
    gelu, layer, layer_norm, leaky_relu, linear, log, maximum, mean_rows, merge_heads, relu,
    reshape, sigmoid, split_heads, sqrt,
)
from pigeon.reference import NBF_AGGREGATES, NBF_MESSAGES


@layer
def rgcn(g, x, weight: PerEtype = None, basis: Shared = None, coeff: PerEtype = None,
         loop_weight: Shared = None, bias: Shared = None, *, norm="right"):
    if basis is not None:  # W_r = sum_b coeff[r, b] basis[b], computed once per relation
        bases, in_dim, out_dim = basis.shape
        weight = reshape(linear(coeff, reshape(basis, bases, in_dim * out_dim)), in_dim, out_dim)
    message = linear(g.src(x), weight)
    if norm == "right":
        message = message / g.dst(g.in_degree())
    elif norm == "relation":
        message = message / g.relation_in_degree()
    out = aggregate(g, message, "sum")
    if loop_weight is not None:
        out = out + linear(x, loop_weight)
    return out if bias is None else out + bias


@layer
def rgat(g, x, weight: PerEtype, att_src: PerEtype, att_dst: PerEtype, bias: Shared = None,
         *, heads=1, negative_slope=0.2):
    z_src = split_heads(linear(g.src(x), weight), heads)
    z_dst = split_heads(linear(g.dst(x), weight), heads)
    score = leaky_relu(dot(z_src, att_src) + dot(z_dst, att_dst), negative_slope)
    out = merge_heads(aggregate(g, edge_softmax(g, score) * z_src, "sum"))
    return out if bias is None else out + bias


@layer
def hgt(g, x, k_weight: PerNtype, q_weight: PerNtype, v_weight: PerNtype, a_weight: PerNtype,
        rel_att: PerEtype, rel_msg: PerEtype, rel_pri: PerEtype, k_bias: PerNtype = None,
        q_bias: PerNtype = None, v_bias: PerNtype = None, a_bias: PerNtype = None,
        skip: PerNtype = None, *, heads=1):
    def project(value, weight, bias):
        out = linear(value, weight)
        return out if bias is None else out + bias

    k, q, v = (split_heads(project(x, w, b), heads) for w, b in
               ((k_weight, k_bias), (q_weight, q_bias), (v_weight, v_bias)))
    head_dim = k.shape[-1]
    score = dot(linear(g.src(k), rel_att), g.dst(q)) * rel_pri * (1.0 / math.sqrt(head_dim))
    message = edge_softmax(g, score) * linear(g.src(v), rel_msg)
    out = project(gelu(merge_heads(aggregate(g, message, "sum"))), a_weight, a_bias)
    if skip is not None:
        gate = sigmoid(skip)
        out = gate * out + (1 - gate) * x
    return out


def _nbf_message(kind: str, x_src, rel):
    if kind == "distmult":
        return x_src * rel
    if kind == "transe":
        return x_src + rel
    if kind == "rotate":  # complex product; real parts first, imaginary parts second
        (x_re, x_im), (r_re, r_im) = chunk(x_src, 2), chunk(rel, 2)
        return concat(x_re * r_re - x_im * r_im, x_re * r_im + x_im * r_re)
    raise ValueError(f"Expected `message` to be one of {list(NBF_MESSAGES)} (got {kind!r})")


def _pna(g, msg, boundary):
    """Mean, max, min and std, each times the degree scalers 1, s, 1/max(s, 0.01).

    The variance of a node's n + 1 messages (its edges' and its boundary b) is the mean
    square deviation from their mean m, written as sums that never subtract two stored
    values, not the mean square less the squared mean (the reference's formula, equal
    in exact arithmetic): that difference cancels where the spread is small beside the
    mean, keeping only the rounding of the two moments, which in bfloat16 or float16
    storage is all there is. Here the traversal's first sweep sums m_e - b over the
    edges (``drift``: (n + 1)(m - b)) and its second sweep the squared deviations
    (m_e - m)^2, reading m from float32 registers; then
    variance = (sum (m_e - m)^2 + (b - m)^2) / (n + 1), with b - m = -drift / (n + 1)."""
    batch, dim = msg.shape
    mean = aggregate(g, msg, "mean", self_message=boundary)
    high = aggregate(g, msg, "max", self_message=boundary)
    low = aggregate(g, msg, "min", self_message=boundary)
    drift = aggregate(g, msg - g.dst(boundary), "sum")
    deviation = msg - g.dst(mean)
    spread = aggregate(g, deviation * deviation, "sum")
    count = g.in_degree() + 1.0
    own = drift / count
    variance = (spread + own * own) / count
    stats = [mean, high, low, sqrt(maximum(variance, 1e-6))]
    log_degree = log(g.in_degree() + 1.0)          # the boundary counts as a message
    flat = equal(mean_rows(log_degree), 0.0)       # no edges at all: s = 1
    s = (log_degree + flat) / (mean_rows(log_degree) + flat)
    stacked = concat(*(reshape(v, batch, dim, 1) for v in stats))
    scaled = (stacked, stacked * s, stacked / maximum(s, 0.01))
    return reshape(concat(*(reshape(v, batch, dim, 4, 1) for v in scaled)), batch, 12 * dim)


@layer
def nbfnet(g, x, boundary, relation: EtypeInput, linear_weight: Shared, linear_bias: Shared,
           layer_norm_weight: Shared = None, layer_norm_bias: Shared = None, *,
           message="distmult", reduce="sum", short_cut=True):
    # Rows are nodes (or relations); each row holds [batch, dim]: the queries share one pass.
    msg = _nbf_message(message, g.src(x), g.edge_type(relation))
    if reduce == "pna":
        update = _pna(g, msg, boundary)
    elif reduce in NBF_AGGREGATES:
        update = aggregate(g, msg, reduce, self_message=boundary)
    else:
        raise ValueError(f"Expected `aggregate` to be one of {list(NBF_AGGREGATES)} (got {reduce!r})")
    out = linear(concat(x, update), linear_weight, transpose=True) + linear_bias
    if layer_norm_weight is not None:
        out = layer_norm(out) * layer_norm_weight + layer_norm_bias
    out = relu(out)
    return out + x if short_cut else out
