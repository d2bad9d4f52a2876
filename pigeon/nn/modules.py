"""The compiled layers as ``torch.nn.Module`` s.

Each shares its constructor arguments, parameters and initialisation with the
:mod:`pigeon.reference` layer of the same name (so ``state_dict`` s carry over both
ways) and replaces its forward with the compiled layer-language function.
"""

from __future__ import annotations

import torch

import pigeon.reference as reference
from pigeon.nn import functional
from pigeon.compiler import compile as compile_layer


def _compile_options(backend: str, reorder, compact, layout, disable, save_budget_gb=None, sink=None) -> dict:
    return {"backend": backend, "reorder": reorder, "compact": compact, "sink": sink, "layout": layout,
            "disable": disable, "save_budget_gb": save_budget_gb}


class RGCN(reference.RGCN):
    """Relational graph convolution, compiled. Arguments as :class:`pigeon.reference.RGCN`,
    plus ``backend`` (``"auto"`` default, ``"cpu"``, ``"triton"`` or ``"torch"``; see
    :func:`pigeon.compile`), ``reorder``/``compact``/``sink``/``layout`` to force
    compiler decisions (None: the cost model decides per graph), ``disable`` to skip passes and
    ``save_budget_gb`` for the forward values kept for the backward pass."""

    def __init__(self, *args, backend: str = "auto", reorder=None, compact=None, layout=None, disable=(),
                 save_budget_gb=None, sink=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compile_layer(functional.rgcn, norm=self.norm,
                                      **_compile_options(backend, reorder, compact, layout, disable, save_budget_gb, sink))

    def forward(self, graph, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(graph, x=x, **dict(self.named_parameters()))


class RGAT(reference.RGAT):
    """Relational graph attention, compiled. Arguments as :class:`pigeon.reference.RGAT`,
    plus the compiler options of :class:`RGCN`."""

    def __init__(self, *args, backend: str = "auto", reorder=None, compact=None, layout=None, disable=(),
                 save_budget_gb=None, sink=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compile_layer(functional.rgat, heads=self.heads, negative_slope=self.negative_slope,
                                      **_compile_options(backend, reorder, compact, layout, disable, save_budget_gb, sink))

    def forward(self, graph, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(graph, x=x, **dict(self.named_parameters()))


class HGT(reference.HGT):
    """Heterogeneous graph transformer layer, compiled. Arguments as
    :class:`pigeon.reference.HGT`, plus the compiler options of :class:`RGCN`."""

    def __init__(self, *args, backend: str = "auto", reorder=None, compact=None, layout=None, disable=(),
                 save_budget_gb=None, sink=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compile_layer(functional.hgt, heads=self.heads,
                                      **_compile_options(backend, reorder, compact, layout, disable, save_budget_gb, sink))

    def forward(self, graph, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(graph, x=x, **dict(self.named_parameters()))


class NBFNetLayer(reference.NBFNetLayer):
    """One NBFNet layer, compiled; the query batch is packed into each node's row.
    Arguments and shapes as :class:`pigeon.reference.NBFNetLayer`, plus the compiler
    options of :class:`RGCN`."""

    def __init__(self, *args, backend: str = "auto", reorder=None, compact=None, layout=None, disable=(),
                 save_budget_gb=None, sink=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = compile_layer(functional.nbfnet, message=self.message, reduce=self.aggregate,
                                      short_cut=self.short_cut, **_compile_options(backend, reorder, compact, layout, disable, save_budget_gb, sink))

    def forward(self, graph, x: torch.Tensor, boundary: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        for name, value in (("x", x), ("boundary", boundary), ("relation", relation)):
            if not isinstance(value, torch.Tensor) or value.dim() != 3:
                got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"Expected `{name}` to have shape [batch, rows, {self.dim}] (got {got})")
        params = {name.replace(".", "_"): p for name, p in self.named_parameters()}
        out = self.compiled(graph, x=x.transpose(0, 1), boundary=boundary.transpose(0, 1),
                            relation=relation.transpose(0, 1), **params)
        return out.transpose(0, 1)


class NBFNet(reference.NBFNet):
    """The NBFNet model with compiled layers. Arguments, parameters and shapes as
    :class:`pigeon.reference.NBFNet` (``forward(graph, heads, relations)`` takes the fact
    graph and returns ``[batch, graph.num_nodes]`` scores), plus the compiler options of
    :class:`RGCN`, which every layer receives."""

    def __init__(self, *args, backend: str = "auto", reorder=None, compact=None, layout=None, disable=(),
                 save_budget_gb=None, sink=None, **kwargs):
        super().__init__(*args, **kwargs)
        options = _compile_options(backend, reorder, compact, layout, disable, save_budget_gb, sink)
        for t, layer in enumerate(self.layers):
            # Built on the meta device and handed the reference layer's tensors, so the
            # compiled model draws its parameters exactly as the reference does (same seed,
            # same state_dict) and leaves the random generator where the reference leaves it.
            compiled = NBFNetLayer(layer.dim, layer.num_relations, message=layer.message,
                                   aggregate=layer.aggregate, layer_norm=layer.layer_norm is not None,
                                   short_cut=layer.short_cut, device="meta", **options)
            compiled.load_state_dict(layer.state_dict(), assign=True)
            self.layers[t] = compiled
