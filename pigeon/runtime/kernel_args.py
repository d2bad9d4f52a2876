"""What a launcher passes for each argument of a generated kernel
(:class:`~pigeon.codegen.rules.ArgKind`), shared by the C and Triton backends, and the
switch that poisons fresh outputs.

With ``PIGEON_POISON=1`` in the environment when an executor is built (the test suite
sets it), every output buffer a kernel is meant to write in full is filled with NaN
before the kernel runs, so an element the kernel leaves unwritten shows up as NaN
instead of passing by chance with whatever the memory held.
"""

from __future__ import annotations

import os

import torch

from pigeon.codegen.rules import ArgKind, KernelArg, OutputKind
from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import GLOBAL, IndexMap
from pigeon.runtime.graph_index import GRAPH_INDEX
from pigeon.runtime.interpret import space_size


def poison_requested() -> bool:
    """Whether ``PIGEON_POISON`` asks for fresh outputs filled with NaN."""
    return os.environ.get("PIGEON_POISON", "") not in ("", "0")


def new_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu",
               poison: bool = False) -> torch.Tensor:
    """A buffer a kernel writes in full: uninitialised, or NaN when ``poison``."""
    if poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def graph_array(graph: HeteroGraph, arg: KernelArg, group: IndexMap | None, block_rows: int = 0) -> torch.Tensor:
    """The int64 array of a graph-side argument (``arg.kind.graph_array``), from the
    per-graph index cache; ``block_rows`` sizes the blocks of :attr:`ArgKind.BLOCKS`."""
    index, kind = GRAPH_INDEX, arg.kind
    if kind is ArgKind.ROWPTR:
        return index.group_csr(graph, arg.key)[0]
    if kind is ArgKind.PERM:
        return index.group_csr(graph, arg.key)[1]
    if kind is ArgKind.INDEX:
        return index.index(graph, arg.key)[0]
    if kind is ArgKind.INDEX_SORTED:
        return index.sorted_index(graph, group, arg.key)
    if kind is ArgKind.COUNT:
        return index.counts(graph, arg.key)
    if kind is ArgKind.BLOCKS:
        return index.group_blocks(graph, arg.key, block_rows)
    raise ValueError(f"Expected a graph-side kernel argument (got {kind})")


def output(graph: HeteroGraph, arg: KernelArg, num_groups: int, dtype: torch.dtype,
           device: torch.device | str = "cpu", poison: bool = False) -> torch.Tensor:
    """A fresh output buffer for ``arg`` (:attr:`ArgKind.OUTPUT`): one row per row of
    its space (none for GLOBAL) or per group; zeros where the kernel adds into it."""
    if arg.output is OutputKind.GROUP:
        rows = (num_groups,)
    else:
        rows = () if arg.rows == GLOBAL else (space_size(graph, arg.rows),)
    shape = (*rows, *arg.shape)
    if arg.output is OutputKind.ATOMIC:
        return torch.zeros(shape, dtype=dtype, device=device)
    return new_output(shape, dtype, device, poison)
