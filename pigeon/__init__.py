"""Pigeon: a compiler for relational graph neural network kernels."""

from pigeon.data.graph import HeteroGraph
from pigeon.frontend.lang import layer
from pigeon.runtime.compiled import compile

__version__ = "0.1.0"

__all__ = ["HeteroGraph", "compile", "layer", "__version__"]
