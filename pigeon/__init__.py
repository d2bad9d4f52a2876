"""Pigeon: a compiler for relational graph neural network kernels."""

from pigeon.data.graph import HeteroGraph
from pigeon.frontend.lang import layer
from pigeon.runtime.compiled import compile

__version__ = "0.1.0"

from pigeon.tune import tune  # noqa: E402  (after __version__, which the tuning cache keys on)

__all__ = ["HeteroGraph", "compile", "layer", "tune", "__version__"]
