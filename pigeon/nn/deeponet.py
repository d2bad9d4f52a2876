"""DeepONet compiled by Pigeon: branch MLP, trunk MLP and the merge GEMM in one program.

The layer language works on rows. Here the rows are the input functions: the "graph"
has one node per function of the batch and no edges, and the branch net is a chain of
``linear`` s over those rows (for the stacked variant, rows of shape ``[p, h]`` times a
batched ``[p, h, h']`` weight: the ``p`` branch nets are one batched GEMM per layer).
The query points are the same for every function, so the trunk net runs on a global
``[N, d]`` value; its ``[N, p]`` output is then the weight of the merge,
``linear(branch, trunk, transpose=True)``: every function against every point,
``[B, p] @ [N, p]^T``, is one GEMM kernel, and its adjoint gives the trunk's gradient
as a weight gradient (``branch^T @ dG``).

A layer function has one parameter per argument, so :func:`deeponet_layer` builds one
for each (branch depth, trunk depth) pair, with its signature spelled out for the tracer.
"""

from __future__ import annotations

import functools
import inspect

import torch

import pigeon.reference as reference
from pigeon.data.graph import HeteroGraph
from pigeon.frontend import Shared, layer, linear, relu, reshape, tanh
from pigeon.frontend.lang import Layer
from pigeon.reference._common import check_choice
from pigeon.compiler import compile as compile_layer
from pigeon.runtime.compiled import BACKENDS

__all__ = ["DeepONet", "deeponet_layer"]

_ACTIVATIONS = {"relu": relu, "tanh": tanh}


def _parameter_names(branch_depth: int, trunk_depth: int) -> list[tuple[str, bool]]:
    """(name, optional) of every parameter: the weights, then the biases (a Python
    signature puts arguments with a default last)."""
    layers = [(part, l) for part, depth in (("branch", branch_depth), ("trunk", trunk_depth)) for l in range(depth)]
    return ([(f"{part}_weight_{l}", False) for part, l in layers]
            + [(f"{part}_bias_{l}", True) for part, l in layers] + [("bias", True)])


@functools.lru_cache(maxsize=None)
def deeponet_layer(branch_depth: int, trunk_depth: int) -> Layer:
    """The layer function of a DeepONet whose branch and trunk have ``branch_depth`` and
    ``trunk_depth`` dense layers.

    Signature: ``(g, u, y: Shared, branch_weight_0: Shared, ..., trunk_weight_0: Shared,
    ..., branch_bias_0: Shared = None, ..., trunk_bias_0: Shared = None, ...,
    bias: Shared = None, *, activation="relu", stacked=False)``: ``u`` holds one
    function's sensor values per row of ``g``, ``y`` the ``[N, d]`` query points (a
    ``Shared`` value: the language has no other kind of global input); the output has
    ``N`` values per row. One layer is built and cached per depth pair.
    """
    names = _parameter_names(branch_depth, trunk_depth)

    def deeponet(g, u, y, *params, activation="relu", stacked=False):
        values = dict(zip((name for name, _ in names), params))
        act = _ACTIVATIONS[activation]
        h = u
        for l in range(branch_depth):
            weight, bias = values[f"branch_weight_{l}"], values[f"branch_bias_{l}"]
            if stacked and l == 0:
                # Every net reads the same sensors: one GEMM against [m, p * h1], then the
                # rows split into the p nets.
                sensors, nets, width = weight.shape
                h = reshape(linear(h, reshape(weight, sensors, nets * width)), nets, width)
            else:
                h = linear(h, weight)   # stacked: rows [p, h] times the batched [p, h, h'] weight
            if bias is not None:
                h = h + bias
            if l < branch_depth - 1:
                h = act(h)
        if stacked:
            h = reshape(h, h.shape[0])
        t = y
        for l in range(trunk_depth):
            t = linear(t, values[f"trunk_weight_{l}"])
            bias = values[f"trunk_bias_{l}"]
            t = act(t if bias is None else t + bias)
        out = linear(h, t, transpose=True)
        return out if values["bias"] is None else out + values["bias"]

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    deeponet.__signature__ = inspect.Signature([
        inspect.Parameter("g", positional),
        inspect.Parameter("u", positional),
        inspect.Parameter("y", positional, annotation=Shared),
        *(inspect.Parameter(name, positional, annotation=Shared, **({"default": None} if optional else {}))
          for name, optional in names),
        inspect.Parameter("activation", inspect.Parameter.KEYWORD_ONLY, default="relu"),
        inspect.Parameter("stacked", inspect.Parameter.KEYWORD_ONLY, default=False),
    ])
    deeponet.__name__ = deeponet.__qualname__ = f"deeponet_{branch_depth}_{trunk_depth}"
    return layer(deeponet)


class DeepONet(reference.DeepONet):
    r"""Deep operator network with the branch, trunk and merge compiled as one program.

    .. math::
        G(u)(y) = \sum_{k=1}^{p} b_k\big(u(x_1), \dots, u(x_m)\big)\, t_k(y) + b_0

    The same map, parameters and initialisation as :class:`pigeon.reference.DeepONet`
    (see there for the stacked variant and the parameter shapes); the forward pass runs
    the layer function of :func:`deeponet_layer`, in which the ``[B, p] @ [N, p]^T``
    merge is one GEMM kernel.

    Args:
        branch_sizes (sequence of int): ``[m, h_1, ..., p]``.
        trunk_sizes (sequence of int): ``[d, g_1, ..., p]``.
        stacked (bool): ``p`` branch nets with one output each. Default ``False``.
        activation (str): ``"relu"`` or ``"tanh"``. Default ``"relu"``.
        bias (bool): biases in every layer and :math:`b_0`. Default ``True``.
        backend (str): ``"torch"``, ``"cpu"``, ``"triton"`` or ``"auto"`` (see
            :func:`pigeon.compile`). Default ``"auto"``.
        device, dtype: where and in which dtype to create the parameters.

    Shapes: ``forward(u, y)`` with ``u`` ``[B, m]`` and ``y`` ``[N, d]`` (or ``[N]`` when
    ``d = 1``) returns ``[B, N]``.
    """

    def __init__(self, branch_sizes, trunk_sizes, *, stacked: bool = False, activation: str = "relu",
                 bias: bool = True, backend: str = "auto", device=None, dtype=None):
        super().__init__(branch_sizes, trunk_sizes, stacked=stacked, activation=activation, bias=bias,
                         device=device, dtype=dtype)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.compiled = compile_layer(deeponet_layer(self.branch_depth, self.trunk_depth), backend=backend,
                                      activation=self.activation, stacked=self.stacked)
        self._graphs: dict[tuple, HeteroGraph] = {}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"

    def function_graph(self, batch: int, device) -> HeteroGraph:
        """The row space of the branch net: ``batch`` nodes, no edges. Built once per
        batch size and device."""
        key = (batch, str(device))
        graph = self._graphs.get(key)
        if graph is None:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            graph = HeteroGraph(empty, empty, num_nodes=batch)
            self._graphs[key] = graph
        return graph

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        u, y = self.check_inputs(u, y)
        graph = self.function_graph(u.shape[0], u.device)
        return self.compiled(graph, u=u.contiguous(), y=y.contiguous(), **dict(self.named_parameters()))
