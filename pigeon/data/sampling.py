"""Sampled mini-batches as Pigeon blocks, through existing samplers, and node inputs by type.

Pigeon samples nothing itself. :class:`NeighborSampler` drives DGL's
``MultiLayerNeighborSampler`` and ``dgl.dataloading.DataLoader`` (``use_ddp=True`` under
``torch.distributed``: each rank gets an equal shard of the seeds, so every rank takes
the same number of steps); :class:`PyGNeighborSampler` reads the batches of PyG's
``NeighborLoader`` (which needs ``pyg-lib`` or ``torch-sparse``) or of any loader that
yields what it yields. Both give :class:`MiniBatch` es: one Pigeon block per layer
(:class:`~pigeon.HeteroGraph` with ``num_dst_nodes``; input layer first; type ids those
of the full graph in every batch), and the global ids of the first block's sources
and of the seeds. The conversions live in :mod:`pigeon.interop.dgl` and
:mod:`pigeon.interop.pyg`.

Features never travel with a batch: :class:`FeatureStore` keeps the full per-type
tables and gathers the rows a batch needs (``index_select`` by the block's source ids)
once per batch.

Fanouts are per layer, input layer first (DGL's order): an int for every edge type
(``-1`` takes every neighbour) or a dict from edge type (a canonical ``(src_type,
relation, dst_type)`` triple, or a relation name that only one edge type has) to an
int, the edge types it leaves out taking no neighbour (:func:`dgl_fanouts`). Two
relations with one name between different node types are different edge types.
"""

from __future__ import annotations

import time
import warnings
from typing import Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from pigeon.data.graph import HeteroGraph
from pigeon.interop._common import HeteroNames, hetero_names

__all__ = ["MiniBatch", "NodeInputs", "FeatureStore", "SamplingGraph", "NeighborSampler", "PyGNeighborSampler", "dgl_fanouts",
           "parse_fanouts"]


class MiniBatch(NamedTuple):
    """One sampled mini-batch.

    Attributes:
        blocks (list of HeteroGraph): one block per layer, input layer first; block
            ``l``'s destinations are block ``l + 1``'s sources, in the same order.
        input_nodes (Tensor): int64 global ids (in the full graph) of ``blocks[0]``'s
            sources, in row order: the rows to gather inputs for.
        seeds (Tensor): int64 global ids of ``blocks[-1]``'s destinations, in row order.
    """

    blocks: list
    input_nodes: torch.Tensor
    seeds: torch.Tensor

    def to(self, device) -> "MiniBatch":
        return MiniBatch([b.to(device) for b in self.blocks], self.input_nodes.to(device), self.seeds.to(device))


class NodeInputs(NamedTuple):
    """The inputs of some nodes, by node type.

    ``rows[t]`` are the positions (among the requested nodes) of the nodes of type
    ``t``, ``local[t]`` their ids within the type, and ``features[t]`` their feature
    rows (``[len(rows[t]), width_t]``) or None for a featureless type. Every type has an
    entry, empty when the batch has none of its nodes.
    """

    rows: list
    local: list
    features: list
    num_nodes: int


class FeatureStore:
    """Per-node-type input tables, and the gather of a batch's rows.

    Args:
        graph (HeteroGraph): the full graph.
        features (sequence): per node type, a tensor whose row ``i`` belongs to the
            type's ``i``-th node by ascending global id, or None (featureless).
    """

    def __init__(self, graph: HeteroGraph, features: Sequence[torch.Tensor | None]):
        if len(features) != graph.num_ntypes:
            raise ValueError(f"Expected `features` to have one entry per node type ({graph.num_ntypes}), "
                             f"got {len(features)}")
        self.ntype = graph.ntype
        self.local = torch.empty(graph.num_nodes, dtype=torch.int64, device=graph.device)
        for t in range(graph.num_ntypes):
            nodes = graph.nodes_of_type(t)
            self.local[nodes] = torch.arange(nodes.numel(), device=graph.device)
            table = features[t]
            if table is not None and (table.dim() != 2 or table.shape[0] != nodes.numel()):
                raise ValueError(f"Expected `features[{t}]` to have shape [{nodes.numel()}, width], one row per "
                                 f"node of type {t} (got {list(table.shape)})")
        self.features = list(features)

    @property
    def widths(self) -> list[int | None]:
        """The feature width of every node type, None for a featureless one."""
        return [None if f is None else f.shape[1] for f in self.features]

    def type_sizes(self) -> list[int]:
        return torch.bincount(self.ntype, minlength=len(self.features)).tolist()

    def gather(self, nodes: torch.Tensor) -> NodeInputs:
        """The inputs of ``nodes`` (global ids): one ``index_select`` per featured type."""
        types = self.ntype.index_select(0, nodes)
        local = self.local.index_select(0, nodes)
        rows, locals_, feats = [], [], []
        for t, table in enumerate(self.features):
            r = torch.nonzero(types == t).flatten()
            ids = local.index_select(0, r)
            rows.append(r)
            locals_.append(ids)
            feats.append(None if table is None else table.index_select(0, ids))
        return NodeInputs(rows, locals_, feats, nodes.numel())


# ---- fanouts ---------------------------------------------------------------------------
def parse_fanouts(text: str) -> list[int]:
    """``"25,20"`` as ``[25, 20]`` (per layer, input layer first; -1 takes every neighbour)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"Expected `fanouts` to be comma-separated integers like '25,20' (got {text!r})") from None
    if not values or any(v < 1 and v != -1 for v in values):
        raise ValueError(f"Expected every fanout to be a positive int or -1 for all neighbours (got {text!r})")
    return values


def _resolve_etype(key, names: HeteroNames):
    canonical = names.canonical_etypes
    if isinstance(key, (tuple, list)) and tuple(key) in canonical:
        return tuple(key)
    matches = [c for c in canonical if c[1] == key]
    if len(matches) == 1:
        return matches[0]
    detail = "several edge types have that relation name" if matches else "no edge type has that name"
    raise ValueError(f"Expected each fanout key to be a canonical edge type of the graph or a relation name "
                     f"that only one has (got {key!r}: {detail})")


def dgl_fanouts(fanouts: Sequence, names: HeteroNames) -> list[dict]:
    """Per layer, DGL's ``{canonical etype: fanout}`` for ``fanouts`` (see the module
    docstring). An int applies to every edge type; a dict gives per-edge-type fanouts,
    and edge types it leaves out take no neighbour (``0``), so that a dict says all
    there is to sample."""
    if isinstance(fanouts, (int, Mapping)) or not len(fanouts):
        raise ValueError(f"Expected `fanouts` to be a non-empty list with one entry per layer (got {fanouts!r})")
    out = []
    for layer, fanout in enumerate(fanouts):
        if isinstance(fanout, Mapping):
            chosen = {_resolve_etype(k, names): int(v) for k, v in fanout.items()}
            out.append({c: chosen.get(c, 0) for c in names.canonical_etypes})
        elif isinstance(fanout, int) and not isinstance(fanout, bool) and (fanout >= 0 or fanout == -1):
            out.append({c: fanout for c in names.canonical_etypes})
        else:
            raise ValueError(f"Expected `fanouts[{layer}]` to be an int (>= 0, or -1 for all) or a dict by edge "
                             f"type (got {fanout!r})")
    return out


def _seed_ids(graph: HeteroGraph, seeds, seed_ntype, names: HeteroNames) -> torch.Tensor:
    if seed_ntype is not None:
        if isinstance(seed_ntype, str):
            if seed_ntype not in names.ntypes:
                raise ValueError(f"Expected `seed_ntype` to be a node type of the graph {list(names.ntypes)} "
                                 f"(got {seed_ntype!r})")
            seed_ntype = names.ntypes.index(seed_ntype)
        elif not isinstance(seed_ntype, int) or not 0 <= seed_ntype < graph.num_ntypes:
            raise ValueError(f"Expected `seed_ntype` to be a node type name or id below {graph.num_ntypes} "
                             f"(got {seed_ntype!r})")
    if seeds is None:
        if seed_ntype is None:
            return torch.arange(graph.num_nodes)
        return graph.nodes_of_type(seed_ntype)
    seeds = torch.as_tensor(seeds, dtype=torch.int64)
    if seeds.dim() != 1 or (seeds.numel() and (int(seeds.min()) < 0 or int(seeds.max()) >= graph.num_nodes)):
        raise ValueError(f"Expected `seeds` to be a 1-D tensor of node ids below {graph.num_nodes} "
                         f"(got shape {list(seeds.shape)})")
    if seed_ntype is not None and seeds.numel() and bool((graph.ntype[seeds] != seed_ntype).any()):
        raise ValueError(f"Expected every seed to be of node type {names.ntypes[seed_ntype]!r} (`seed_ntype`)")
    return seeds


class SamplingGraph:
    """The full graph as the samplers need it, built once and shared by every sampler
    on it (training, and each layer of layer-wise inference): the type names, each
    type's global ids, each node's id within its type, and the DGL heterograph.

    Args:
        graph (HeteroGraph): the full graph, on the CPU.
    """

    def __init__(self, graph: HeteroGraph):
        self.graph = graph
        self.names = hetero_names(graph)
        self.type_nodes = [graph.nodes_of_type(t) for t in range(graph.num_ntypes)]
        self.local = torch.empty(graph.num_nodes, dtype=torch.int64)
        for nodes in self.type_nodes:
            self.local[nodes] = torch.arange(nodes.numel())
        self._dgl = None

    @property
    def dgl_graph(self):
        if self._dgl is None:
            from pigeon.interop.dgl import to_dgl

            self._dgl = to_dgl(self.graph, hetero=True)
            # Sampling reads the CSC; built here once, not by the first batch (and
            # shared by sampler workers instead of rebuilt in each).
            self._dgl.create_formats_()
        return self._dgl


def _sampling_graph(graph) -> SamplingGraph:
    if isinstance(graph, SamplingGraph):
        return graph
    if not isinstance(graph, HeteroGraph):
        raise ValueError(f"Expected `graph` to be a pigeon.HeteroGraph or a SamplingGraph (got {type(graph).__name__})")
    return SamplingGraph(graph)


class NeighborSampler:
    """Mini-batches of sampled blocks from DGL's neighbour sampler.

    Args:
        graph (HeteroGraph or SamplingGraph): the full graph (on the CPU); every edge
            type must join one pair of node types (canonical edge types).
        fanouts (list): per layer, input layer first: an int or a dict by edge type
            (:func:`dgl_fanouts`); ``-1`` takes every neighbour (deterministic).
        seeds (Tensor, optional): global ids of the nodes to compute outputs for.
            Default: every node of ``seed_ntype`` (every node when that is None too).
        seed_ntype (str or int, optional): the node type of the seeds, checked.
        batch_size (int): seeds per batch (per rank under ``torch.distributed``).
        shuffle (bool): a new order every epoch. Default: True.
        drop_last (bool): drop a last, smaller batch. Default: False.
        use_ddp (bool, optional): shard the seeds over the ranks of the initialised
            process group, DGL's ``use_ddp``: rank ``r`` takes the ``r``-th contiguous
            share of ``seeds`` (padded to equal shares), so pass them in a random order.
            Default: whether ``torch.distributed`` is initialised.
        num_workers (int): sampler processes of the ``torch.utils.data.DataLoader``
            (each runs DGL's sampling with one OpenMP thread). Default: 0 (sample in
            this process).
        seed (int): seeds DGL's and NumPy's generators (the shuffle) at construction.

    Iterating gives :class:`MiniBatch` es; ``len()`` is the number of batches per epoch,
    the same on every rank. After each batch, ``last_sample_s`` and ``last_convert_s``
    hold the seconds DGL took to sample it and Pigeon to convert it.
    """

    def __init__(self, graph: HeteroGraph, fanouts: Sequence, *, seeds=None, seed_ntype=None,
                 batch_size: int = 1024, shuffle: bool = True, drop_last: bool = False,
                 use_ddp: bool | None = None, num_workers: int = 0, seed: int = 0):
        from pigeon.interop.dgl import import_dgl

        dgl = import_dgl()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"Expected `batch_size` to be a positive int (got {batch_size!r})")
        self.typed = _sampling_graph(graph)
        graph, names = self.typed.graph, self.typed.names
        self.num_layers = len(fanouts) if not isinstance(fanouts, (int, Mapping)) else 0
        per_layer = dgl_fanouts(fanouts, names)
        self.seeds = _seed_ids(graph, seeds, seed_ntype, names)
        indices = {}
        for t, name in enumerate(names.ntypes):
            of_type = self.seeds[graph.ntype[self.seeds] == t]
            if of_type.numel():
                indices[name] = self.typed.local[of_type]
        if use_ddp is None:
            use_ddp = torch.distributed.is_available() and torch.distributed.is_initialized()
        dgl.seed(seed)
        np.random.seed(seed % 2**32)
        sampler = dgl.dataloading.MultiLayerNeighborSampler(per_layer)
        self.loader = dgl.dataloading.DataLoader(
            self.typed.dgl_graph, indices, sampler, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
            use_ddp=use_ddp, ddp_seed=seed, num_workers=num_workers, persistent_workers=num_workers > 0,
        )
        self.last_sample_s = self.last_convert_s = 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Tell DGL's sharded dataset the epoch (a new shuffle of the shards), as
        ``DistributedSampler.set_epoch``."""
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[MiniBatch]:
        from pigeon.interop.dgl import blocks_from_dgl

        # DGL warns on every epoch that it has not pinned its workers to cores; the
        # thread counts are set per process by the caller (see pigeon.train.entity).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Dataloader CPU affinity opt is not enabled")
            iterator = iter(self.loader)
        while True:
            started = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                return
            converting = time.perf_counter()
            converted, input_nodes, seeds = blocks_from_dgl(
                batch[2], self.typed.names, self.typed.type_nodes, etype_names=self.typed.graph.etype_names)
            self.last_sample_s = converting - started
            self.last_convert_s = time.perf_counter() - converting
            yield MiniBatch(converted, input_nodes, seeds)


class PyGNeighborSampler:
    """Mini-batches of blocks from PyG's ``NeighborLoader`` (or a loader like it).

    Args:
        graph (HeteroGraph or SamplingGraph): the full graph.
        num_layers (int): blocks per batch (PyG samples ``num_layers`` hops).
        loader (iterable, optional): yields the ``HeteroData`` batches of PyG's
            ``NeighborLoader`` over ``pigeon.interop.to_pyg_hetero(graph)`` (see
            :func:`pigeon.interop.pyg.blocks_from_pyg`). Default: one is built from the
            arguments below, which needs ``pyg-lib`` or ``torch-sparse``.
        fanouts (list, optional): per layer, input layer first, as :class:`NeighborSampler`
            takes them (PyG's ``num_neighbors`` lists them from the seeds out: reversed).
        seeds, seed_ntype, batch_size, shuffle: as :class:`NeighborSampler`; the seeds
            must be of one node type (PyG's ``input_nodes``).
    """

    def __init__(self, graph: HeteroGraph, num_layers: int, *, loader=None, fanouts=None, seeds=None,
                 seed_ntype=None, batch_size: int = 1024, shuffle: bool = True):
        self.typed = _sampling_graph(graph)
        self.num_layers = num_layers
        if loader is None:
            loader = self._neighbor_loader(self.typed.graph, fanouts, seeds, seed_ntype, batch_size, shuffle)
        self.loader = loader

    def _neighbor_loader(self, graph, fanouts, seeds, seed_ntype, batch_size, shuffle):
        import importlib.util

        if not any(importlib.util.find_spec(m) is not None for m in ("pyg_lib", "torch_sparse")):
            raise ModuleNotFoundError("PyG's NeighborLoader needs `pyg-lib` or `torch-sparse` (neither is "
                                      "installed); use pigeon.data.sampling.NeighborSampler (DGL) instead")
        from torch_geometric.loader import NeighborLoader

        from pigeon.interop.pyg import to_pyg_hetero

        names = self.typed.names
        if fanouts is None or len(fanouts) != self.num_layers:
            raise ValueError(f"Expected `fanouts` with one entry per layer ({self.num_layers}) (got {fanouts!r})")
        seeds = _seed_ids(graph, seeds, seed_ntype, names)
        types = torch.unique(graph.ntype[seeds])
        if types.numel() != 1:
            raise ValueError(f"Expected the seeds of one node type for PyG's NeighborLoader (got types "
                             f"{types.tolist()})")
        per_layer = dgl_fanouts(fanouts, names)
        num_neighbors = {c: [per_layer[layer][c] for layer in reversed(range(self.num_layers))]
                         for c in names.canonical_etypes}
        seed_name = names.ntypes[int(types[0])]
        return NeighborLoader(to_pyg_hetero(graph), num_neighbors=num_neighbors,
                              input_nodes=(seed_name, self.typed.local[seeds]), batch_size=batch_size,
                              shuffle=shuffle)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[MiniBatch]:
        from pigeon.interop.pyg import blocks_from_pyg

        for batch in self.loader:
            blocks, input_nodes, seeds = blocks_from_pyg(batch, self.typed.names, self.typed.type_nodes,
                                                         self.num_layers, etype_names=self.typed.graph.etype_names)
            yield MiniBatch(blocks, input_nodes, seeds)
