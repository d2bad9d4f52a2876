"""RGCN, RGAT and HGT written in the layer language.

Each function is the whole layer: the compiler traces it, so what is written here
is what gets optimised and generated. Parameter names match
:mod:`pigeon.reference` one to one (the state_dict contract).
"""

from __future__ import annotations

import math

from pigeon.frontend import (
    PerEtype, PerNtype, Shared, aggregate, dot, edge_softmax, gelu, layer, leaky_relu, linear,
    merge_heads, reshape, sigmoid, split_heads,
)


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
