"""Graph container and datasets. Knows nothing of the compiler."""

from pigeon.data.datasets import Dataset, load
from pigeon.data.graph import CSR, CompactMap, HeteroGraph, SortedCOO
from pigeon.data.operators import OperatorProblem, load_operator_problem

__all__ = ["HeteroGraph", "CSR", "SortedCOO", "CompactMap", "Dataset", "load", "OperatorProblem",
           "load_operator_problem"]
