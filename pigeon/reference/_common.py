"""Argument checks and the few scatter helpers the reference layers share.

Everything here reads only the raw edge list of a :class:`~pigeon.HeteroGraph`
(``src``, ``dst``, ``etype``, ``ntype`` and the counts), never its memoized layouts:
the layouts are what the compiled kernels read, and the oracle must not share them.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from pigeon.data.graph import HeteroGraph


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---- constructor arguments --------------------------------------------------------
def check_int(name: str, value, at_least: int = 1) -> int:
    """``value`` as an int, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"Expected `{name}` to be an int >= {at_least} (got {type(value).__name__}: {value!r})"
        )
    if value < at_least:
        raise ValueError(f"Expected `{name}` to be an int >= {at_least} (got {value})")
    return value


def check_choice(name: str, value, choices: Sequence):
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"Expected `{name}` to be one of {list(choices)} (got {value!r})")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be a bool (got {type(value).__name__}: {value!r})")
    return value


def check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Expected `{name}` to be a finite float (got {value!r})")
    return float(value)


# ---- forward inputs ---------------------------------------------------------------
def check_graph(
    graph, *, num_etypes: int, num_ntypes: int | None = None, etypes_arg: str = "num_etypes"
) -> HeteroGraph:
    """The graph, if the layer has a parameter slot for each of its edge (and node) types.

    ``etypes_arg`` is the layer's name for its edge-type count, used in the message.
    """
    if not isinstance(graph, HeteroGraph):
        raise ValueError(f"Expected `graph` to be a pigeon.HeteroGraph (got {type(graph).__name__})")
    if graph.num_etypes > num_etypes:
        raise ValueError(
            f"Expected `graph` to have at most {etypes_arg}={num_etypes} edge types, the number the "
            f"layer was built for (got graph.num_etypes={graph.num_etypes})"
        )
    if num_ntypes is not None and graph.num_ntypes > num_ntypes:
        raise ValueError(
            f"Expected `graph` to have at most num_ntypes={num_ntypes} node types, the number the "
            f"layer was built for (got graph.num_ntypes={graph.num_ntypes})"
        )
    return graph


def check_features(name: str, value, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``value`` if it is a tensor of exactly ``shape`` with the dtype and device of ``like``.

    ``like`` is a parameter of the layer: the reference never casts, so a float32 input to
    a float64 layer is an error rather than a silent loss of precision.
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"Expected `{name}` to be a tensor of shape {list(shape)} (got {type(value).__name__})"
        )
    if list(value.shape) != list(shape):
        raise ValueError(
            f"Expected `{name}` to have shape {list(shape)} (got {list(value.shape)}, "
            f"dtype {_dtype_name(value.dtype)})"
        )
    if value.dtype != like.dtype:
        raise ValueError(
            f"Expected `{name}` to have the dtype of the layer's parameters, {_dtype_name(like.dtype)} "
            f"(got {_dtype_name(value.dtype)}); cast the input or the layer"
        )
    if value.device != like.device:
        raise ValueError(f"Expected `{name}` on the layer's device {like.device} (got {value.device})")
    return value


def check_graph_device(graph: HeteroGraph, like: torch.Tensor) -> None:
    if graph.device != like.device:
        raise ValueError(f"Expected `graph` on the layer's device {like.device} (got {graph.device})")


# ---- graph helpers ----------------------------------------------------------------
def edges_by_relation(graph: HeteroGraph) -> Iterator[tuple[int, torch.Tensor]]:
    """``(r, eids)`` for every relation that has edges; ``eids`` are ids into the edge list."""
    order = torch.argsort(graph.etype, stable=True)
    counts = torch.bincount(graph.etype, minlength=graph.num_etypes).tolist()
    for r, eids in enumerate(torch.split(order, counts)):
        if eids.numel():
            yield r, eids


def typed_linear(
    x: torch.Tensor, types: torch.Tensor, num_types: int, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x[i] @ weight[types[i]] + bias[types[i]]`` for every row, one matmul per type."""
    out = x.new_zeros(x.shape[0], weight.shape[-1])
    for t in range(num_types):
        rows = torch.nonzero(types == t, as_tuple=False).flatten()
        if rows.numel() == 0:
            continue
        y = x.index_select(0, rows) @ weight[t]
        if bias is not None:
            y = y + bias[t]
        out = out.index_copy(0, rows, y)
    return out


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``scores`` (``[E, ...]``) over the entries that share a value of ``index``.

    The per-segment maximum is subtracted for stability; it is detached because softmax
    is invariant to a constant shift, so the gradient is exact without it.
    """
    seg_shape = (num_segments,) + tuple(scores.shape[1:])
    expanded = index.view((-1,) + (1,) * (scores.dim() - 1)).expand_as(scores)
    peak = scores.new_full(seg_shape, float("-inf"))
    peak = peak.scatter_reduce(0, expanded, scores.detach(), reduce="amax", include_self=True)
    exp = torch.exp(scores - peak.index_select(0, index))
    total = scores.new_zeros(seg_shape).index_add(0, index, exp)
    return exp / total.index_select(0, index)


def uniform_(tensor: torch.Tensor, bound: float) -> torch.Tensor:
    """Fill with U(-bound, bound) from the global RNG."""
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def glorot_(tensor: torch.Tensor, fan_in: int, fan_out: int, gain: float = 1.0) -> torch.Tensor:
    """Xavier-uniform with explicit fans (``nn.init`` would misread stacked per-type weights)."""
    return uniform_(tensor, gain * math.sqrt(6.0 / (fan_in + fan_out)))
