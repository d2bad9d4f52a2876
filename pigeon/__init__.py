"""Pigeon: a compiler for relational graph neural network kernels.

``import pigeon`` loads the user-facing submodules, as torch, DGL and PyG do:
``pigeon.nn`` (compiled layers), ``pigeon.reference`` (the plain-PyTorch oracle),
``pigeon.data`` (graphs and datasets), ``pigeon.tune`` (autotuning).
"""

from pigeon.version import __version__
from pigeon.data.graph import HeteroGraph
from pigeon.frontend.lang import layer
from pigeon.compiler import compile
from pigeon.tune import tune
from pigeon import data, nn, reference  # noqa: E402  (submodules, loaded on import)

__all__ = ["HeteroGraph", "compile", "layer", "tune", "data", "nn", "reference", "__version__"]
