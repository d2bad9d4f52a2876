"""Conversions between :class:`pigeon.HeteroGraph` and DGL / PyG graphs.

DGL and PyG are imported only when a conversion needs them. Heterograph
conversions relabel ids by one convention (see :mod:`pigeon.interop._common`):
a node's id within its type is its rank among that type's nodes by ascending
global id, and global ids concatenate the types in type-id order.
"""

from pigeon.interop._common import (
    HeteroNames,
    global_to_hetero_features,
    hetero_features_to_global,
    hetero_names,
)
from pigeon.interop.dgl import from_dgl, to_dgl
from pigeon.interop.pyg import from_pyg, from_pyg_hetero, to_pyg, to_pyg_hetero

__all__ = [
    "to_dgl",
    "from_dgl",
    "to_pyg",
    "from_pyg",
    "to_pyg_hetero",
    "from_pyg_hetero",
    "hetero_names",
    "HeteroNames",
    "global_to_hetero_features",
    "hetero_features_to_global",
]
