"""A built-in layer at a given width on a given graph, with random inputs: what the
command line shows (``pigeon show-ir``, ``show-kernels``), tunes (``pigeon tune``) and
benchmarks (``bench/tune.py``)."""

from __future__ import annotations

import torch

from pigeon.nn import modules as pnn

__all__ = ["EXAMPLE_LAYERS", "example_layer"]

EXAMPLE_LAYERS = ("rgcn", "rgat", "hgt", "nbfnet")


def example_layer(name: str, graph, dim: int, heads: int, backend: str = "torch"):
    """A ``pigeon.nn`` layer compiled for ``backend`` and the tensors its compiled
    function takes."""
    gen = torch.Generator().manual_seed(0)
    if name == "nbfnet":
        module = pnn.NBFNetLayer(dim, graph.num_etypes, aggregate="pna", backend=backend)
        batch = 2
        tensors = {
            "x": torch.randn(graph.num_nodes, batch, dim, generator=gen),
            "boundary": torch.randn(graph.num_nodes, batch, dim, generator=gen),
            "relation": torch.randn(graph.num_etypes, batch, dim, generator=gen),
        }
        params = {n.replace(".", "_"): p for n, p in module.named_parameters()}
        return module, {**tensors, **params}
    module = {
        "rgcn": lambda: pnn.RGCN(dim, dim, graph.num_etypes, backend=backend),
        "rgat": lambda: pnn.RGAT(dim, dim // heads, graph.num_etypes, heads=heads, backend=backend),
        "hgt": lambda: pnn.HGT(dim, dim, graph.num_ntypes, graph.num_etypes, heads=heads, backend=backend),
    }[name]()
    return module, {"x": torch.randn(graph.num_nodes, dim, generator=gen), **dict(module.named_parameters())}
