"""PyTorch Geometric interop.

PyG has two ways to hold a typed graph. Relational layers (``RGCNConv``,
``RGATConv``) take a homogeneous ``edge_index`` with an ``edge_type`` vector:
:func:`to_pyg` / :func:`from_pyg`, no relabelling. ``HeteroData`` numbers nodes
per node type: :func:`to_pyg_hetero` / :func:`from_pyg_hetero`, with the id
convention of :mod:`pigeon.interop._common`. PyG keeps types in insertion order,
so type ids survive the trip as they are.

``to_pyg`` and ``from_pyg`` need only torch; the ``HeteroData`` functions import
PyG when called.
"""

from __future__ import annotations

from typing import Sequence

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.interop._common import (
    HeteroNames, Relation, assemble_block, check_type_vector, join_relations, split_relations,
)

__all__ = ["to_pyg", "from_pyg", "to_pyg_hetero", "from_pyg_hetero", "blocks_from_pyg"]


def to_pyg(graph: HeteroGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(edge_index, edge_type)`` pair PyG's relational layers take.

    ``edge_index`` is ``[2, num_edges]`` int64 with sources in row 0 and
    destinations in row 1; ``edge_type`` is ``[num_edges]`` int64. Node ids and edge
    order are the graph's; node types are ``graph.ntype`` (not part of the pair).
    """
    return torch.stack([graph.src, graph.dst]), graph.etype.clone()


def from_pyg(
    edge_index,
    edge_type=None,
    num_nodes: int | None = None,
    node_type=None,
    *,
    num_etypes: int | None = None,
    num_ntypes: int | None = None,
    etype_names: Sequence | None = None,
    ntype_names: Sequence[str] | None = None,
) -> HeteroGraph:
    """Build a :class:`HeteroGraph` from PyG's ``(edge_index, edge_type)``.

    Args:
        edge_index (Tensor): ``[2, num_edges]`` integer tensor, sources in row 0.
        edge_type (Tensor, optional): ``[num_edges]`` integer tensor. Defaults to one
            relation.
        num_nodes (int, optional): defaults as in :class:`HeteroGraph`.
        node_type (Tensor, optional): ``[num_nodes]`` node types (the ``node_type``
            of ``HeteroData.to_homogeneous()``). Defaults to one node type.
        num_etypes, num_ntypes, etype_names, ntype_names: as in :class:`HeteroGraph`;
            a count or names keep the types that have no edges (or nodes).
    """
    if not isinstance(edge_index, torch.Tensor):
        edge_index = torch.as_tensor(edge_index)
    dtype = edge_index.dtype
    integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or not integer:
        raise ValueError(
            f"Expected `edge_index` to be a [2, num_edges] integer tensor (got shape "
            f"{list(edge_index.shape)}, dtype {str(edge_index.dtype).replace('torch.', '')})"
        )
    num_edges = edge_index.shape[1]
    if edge_type is not None:
        edge_type = check_type_vector("edge_type", edge_type, num_edges, "edge")
    if node_type is not None:
        node_type = torch.as_tensor(node_type)
        expected = node_type.numel() if num_nodes is None else num_nodes
        node_type = check_type_vector("node_type", node_type, expected, "node")
    return HeteroGraph(
        edge_index[0],
        edge_index[1],
        edge_type,
        num_nodes=num_nodes,
        ntype=node_type,
        num_etypes=num_etypes,
        num_ntypes=num_ntypes,
        etype_names=etype_names,
        ntype_names=ntype_names,
    )


def to_pyg_hetero(graph: HeteroGraph):
    """Convert a :class:`HeteroGraph` to a ``torch_geometric.data.HeteroData``.

    One node store per node type, with ``num_nodes`` set, and one edge store per
    edge type, keyed ``(src, relation, dst)`` as :func:`~pigeon.interop.hetero_names`
    names them, with ``edge_index`` in local ids (a node's rank among the nodes of
    its type by ascending global id; edges keep their order within each relation).
    Types are inserted in type-id order, so ``data.node_types[t]`` is node type
    ``t``; types without nodes or edges are kept.

    Raises:
        ValueError: an edge type connects several ``(src ntype, dst ntype)`` pairs.
    """
    from torch_geometric.data import HeteroData

    names, node_counts, relations = split_relations(graph)
    data = HeteroData()
    for name, count in zip(names.ntypes, node_counts):
        data[name].num_nodes = count
    for canonical, rel in zip(names.canonical_etypes, relations):
        data[canonical].edge_index = torch.stack([rel.src, rel.dst])
    return data


def from_pyg_hetero(data) -> HeteroGraph:
    """Convert a ``torch_geometric.data.HeteroData`` to a :class:`HeteroGraph`.

    Global node ids concatenate ``data.node_types`` in order (node type ``t`` is
    ``data.node_types[t]``), each in local id order; edges concatenate
    ``data.edge_types`` the same way. The result is named by them.

    Raises:
        ValueError: a node type has no known ``num_nodes``, an edge type has no
            ``edge_index`` or names an undeclared node type, or an id is out of range.
    """
    from torch_geometric.data import HeteroData

    if not isinstance(data, HeteroData):
        raise ValueError(
            f"Expected `data` to be a torch_geometric HeteroData (got {type(data).__name__})"
        )
    ntypes = list(data.node_types)
    etypes = list(data.edge_types)
    if not ntypes or not etypes:
        raise ValueError(
            f"Expected `data` to have at least one node type and one edge type "
            f"(got {len(ntypes)} node types, {len(etypes)} edge types)"
        )
    node_counts = []
    for name in ntypes:
        count = data[name].num_nodes
        if count is None:
            raise ValueError(f"Expected `data[{name!r}].num_nodes` to be known (set it explicitly)")
        node_counts.append(int(count))
    relations = []
    for canonical in etypes:
        edge_index = data[canonical].get("edge_index")
        is_tensor = isinstance(edge_index, torch.Tensor)
        if not is_tensor or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            got = list(edge_index.shape) if is_tensor else type(edge_index).__name__
            raise ValueError(
                f"Expected `data[{canonical!r}].edge_index` to be a [2, num_edges] tensor (got {got})"
            )
        for end in (canonical[0], canonical[2]):
            if end not in ntypes:
                raise ValueError(
                    f"Expected edge type {canonical!r} to connect node types of `data` {ntypes} "
                    f"(got {end!r}; set `data[{end!r}].num_nodes`)"
                )
        relations.append(Relation(ntypes.index(canonical[0]), ntypes.index(canonical[2]), *edge_index))
    return join_relations(
        node_counts, relations, relation_labels=etypes, ntype_names=ntypes, etype_names=etypes
    )


def blocks_from_pyg(
    batch,
    names: HeteroNames,
    type_nodes: Sequence[torch.Tensor],
    num_layers: int,
    *,
    etype_names: Sequence | None = None,
) -> tuple[list[HeteroGraph], torch.Tensor, torch.Tensor]:
    """A heterogeneous mini-batch of PyG's ``NeighborLoader`` as one Pigeon block per layer.

    ``batch`` is the ``HeteroData`` the loader yields (``disjoint=False``): per node type
    ``n_id`` (ids within the type) and ``num_sampled_nodes`` (per hop, seeds first);
    per edge type ``edge_index`` (batch-local ids, sources in row 0) and
    ``num_sampled_edges`` (per hop); the seed type's ``batch_size``. The edges of hop
    ``k`` enter the nodes of hop ``k``. Rows are numbered by (hop, node type), so the
    nodes within ``h`` hops are a prefix; layer ``l`` of ``num_layers`` gets the nodes
    within ``num_layers - l`` hops as sources, those within ``num_layers - l - 1`` as
    destinations, and the edges of hops below that (trimming the sampled subgraph
    layer by layer, as PyG's ``trim_to_layer`` does). ``names`` and ``type_nodes`` are
    as in :func:`pigeon.interop.dgl.blocks_from_dgl`, whose return value this matches.
    """
    ntype_ids = {name: t for t, name in enumerate(names.ntypes)}
    etype_ids = {canonical: t for t, canonical in enumerate(names.canonical_etypes)}
    hops = num_layers + 1
    counts = torch.zeros(hops, len(names.ntypes), dtype=torch.int64)
    for name in batch.node_types:
        sampled = [int(c) for c in batch[name].num_sampled_nodes]
        if len(sampled) > hops:
            raise ValueError(f"Expected `batch[{name!r}].num_sampled_nodes` to cover at most {hops} hops "
                             f"for {num_layers} layers (got {len(sampled)})")
        counts[: len(sampled), ntype_ids[name]] = torch.tensor(sampled, dtype=torch.int64)
    # Row of the first node of (hop, type), hop-major.
    starts = (torch.cumsum(counts.flatten(), 0) - counts.flatten()).view(hops, -1)
    rows = []
    for t in range(len(names.ntypes)):
        hop_of = torch.repeat_interleave(torch.arange(hops), counts[:, t])
        first_of_hop = torch.cumsum(counts[:, t], 0) - counts[:, t]
        local = torch.arange(hop_of.numel())
        rows.append(starts[hop_of, t] + local - first_of_hop[hop_of])
    within = torch.cumsum(counts.sum(1), 0)  # nodes within h hops, h = 0 .. num_layers

    edge_hops = {}
    for canonical in batch.edge_types:
        sampled = [int(c) for c in batch[canonical].num_sampled_edges]
        edge_hops[canonical] = torch.cumsum(torch.tensor([0] + sampled, dtype=torch.int64), 0)
    blocks = []
    for layer in range(num_layers):
        keep_hops = num_layers - layer  # edges of hops 0 .. keep_hops - 1
        relations = []
        for canonical in batch.edge_types:
            ends = edge_hops[canonical]
            kept = int(ends[min(keep_hops, ends.numel() - 1)])
            edge_index = batch[canonical].edge_index[:, :kept]
            relations.append((etype_ids[tuple(canonical)], ntype_ids[canonical[0]], ntype_ids[canonical[2]],
                              edge_index[0], edge_index[1]))
        num_src, num_dst = int(within[keep_hops]), int(within[keep_hops - 1])
        block_rows = [r[r < num_src] for r in rows]
        blocks.append(assemble_block(block_rows, relations, num_src, num_dst,
                                     num_etypes=len(names.canonical_etypes), ntype_names=names.ntypes,
                                     etype_names=etype_names))

    input_nodes = torch.empty(blocks[0].num_src_nodes, dtype=torch.int64)
    for t, name in enumerate(names.ntypes):
        if name in batch.node_types:
            keep = rows[t] < input_nodes.numel()
            input_nodes[rows[t][keep]] = type_nodes[t][batch[name].n_id[keep]]
    return blocks, input_nodes, input_nodes[: blocks[-1].num_dst_nodes].clone()
