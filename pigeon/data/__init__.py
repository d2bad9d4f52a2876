"""Graph container and datasets. Knows nothing of the compiler."""

from pigeon.data.datasets import Dataset, load
from pigeon.data.graph import CSR, CompactMap, HeteroGraph, SortedCOO

__all__ = ["HeteroGraph", "CSR", "SortedCOO", "CompactMap", "Dataset", "load"]
