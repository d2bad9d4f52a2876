"""Pigeon: a compiler for relational graph neural network kernels."""

from pigeon.data.graph import HeteroGraph

__version__ = "0.1.0"

__all__ = ["HeteroGraph", "__version__"]
