"""DGL interop, and the one place in Pigeon that touches DGL's internals.

``dgl==2.1.0`` is the only DGL wheel on PyPI that installs beside a recent torch.
Its ``dgl.graphbolt`` extension ships only for torch <= 2.2 and fails at import,
which makes ``import dgl`` fail. Nothing in Pigeon uses graphbolt, so
:func:`import_dgl` registers an empty ``dgl.graphbolt`` module before the first
import. Installing DGL is the Makefile's job (its set-up step), not this
module's.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Sequence

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.interop._common import (
    HeteroNames, Relation, assemble_block, check_type_vector, join_relations, split_relations,
)


def import_dgl():
    """Import and return ``dgl``, working around its graphbolt import failure."""
    if "dgl" in sys.modules:
        return sys.modules["dgl"]
    # An import of dgl that failed before (another library trying it without the
    # graphbolt stub, as ogb does) leaves its submodules behind; a new import would
    # then find them and never bind them to the new package (``dgl.utils`` missing).
    for name in [n for n in sys.modules if n.startswith("dgl.") and n != "dgl.graphbolt"]:
        del sys.modules[name]
    os.environ.setdefault("DGLBACKEND", "pytorch")
    sys.modules.setdefault("dgl.graphbolt", types.ModuleType("dgl.graphbolt"))
    return importlib.import_module("dgl")


# ---- conversions ------------------------------------------------------------------
# Everything below goes through DGL's public API only, and imports DGL through
# import_dgl() when called, so that Pigeon imports without DGL.


def to_dgl(graph: HeteroGraph, *, hetero: bool = False):
    """Convert a :class:`HeteroGraph` to a ``dgl.DGLGraph``.

    With ``hetero=False`` the result is homogeneous, as ``dgl.to_homogeneous``
    makes them: the same nodes and edges in the same order, with the edge types in
    ``edata[dgl.ETYPE]`` and the node types in ``ndata[dgl.NTYPE]``.

    With ``hetero=True`` the result has one DGL node type per node type and one
    canonical edge type per edge type, named by :func:`~pigeon.interop.hetero_names`;
    types without nodes or edges are kept (with count 0). The local id of a node is
    its rank among the nodes of its type by ascending global id; edges keep their
    order within each relation. Note that DGL sorts type names, so the type ids of
    the result (positions in ``g.ntypes`` / ``g.canonical_etypes``) may differ from
    Pigeon's; :func:`from_dgl` takes the names to restore them.

    Args:
        graph (HeteroGraph): the graph, on any device DGL supports.
        hetero (bool, optional): build a heterograph. (default: ``False``)

    Raises:
        ValueError: with ``hetero=True``, an edge type connects several
            ``(src ntype, dst ntype)`` pairs (see :func:`~pigeon.interop.hetero_names`).
    """
    dgl = import_dgl()
    if not hetero:
        g = dgl.graph(
            (graph.src, graph.dst), num_nodes=graph.num_nodes, idtype=torch.int64, device=graph.device
        )
        g.edata[dgl.ETYPE] = graph.etype
        g.ndata[dgl.NTYPE] = graph.ntype
        return g
    names, node_counts, relations = split_relations(graph)
    data = {name: (rel.src, rel.dst) for name, rel in zip(names.canonical_etypes, relations)}
    return dgl.heterograph(
        data,
        num_nodes_dict=dict(zip(names.ntypes, node_counts)),
        idtype=torch.int64,
        device=graph.device,
    )


def from_dgl(
    g,
    *,
    ntype_names: Sequence | None = None,
    etype_names: Sequence | None = None,
    num_ntypes: int | None = None,
    num_etypes: int | None = None,
    ntype_field: str | None = None,
    etype_field: str | None = None,
) -> HeteroGraph:
    """Convert a ``dgl.DGLGraph`` to a :class:`HeteroGraph`.

    A graph with one node type and one edge type that carries a type field
    (``edata[etype_field]`` and/or ``ndata[ntype_field]``, as ``dgl.to_homogeneous``
    and :func:`to_dgl` leave them) is read as a flattened heterograph: same ids,
    types from the fields (zeros where a field is absent). ``ntype_names`` /
    ``etype_names`` / ``num_ntypes`` / ``num_etypes`` then pass to
    :class:`HeteroGraph` as they are, e.g. to keep types that have no edges.

    Any other graph is read by its DGL types. Global node ids concatenate the node
    types in order, each type in local id order; edges concatenate the relations
    the same way. The order is DGL's (``g.ntypes``, ``g.canonical_etypes``, which
    matches ``dgl.to_homogeneous``) unless ``ntype_names`` / ``etype_names`` list
    the types in another one; the result is named by them, or by DGL's names and
    canonical triples.

    Args:
        g (DGLGraph): the graph (not a block).
        ntype_names (sequence of str, optional): node type names in type-id order.
        etype_names (sequence, optional): edge type names in type-id order. For a
            heterograph, each is a canonical triple of ``g`` or a relation name
            that only one of its canonical edge types has.
        num_ntypes (int, optional): the number of node types.
        num_etypes (int, optional): the number of edge types.
        ntype_field (str, optional): node data key of the node types of a flattened
            graph. (default: ``dgl.NTYPE``)
        etype_field (str, optional): edge data key of the edge types of a flattened
            graph. (default: ``dgl.ETYPE``)

    To get back the type ids of a ``graph`` sent through ``to_dgl(graph, hetero=True)``,
    pass ``ntype_names`` and ``etype_names`` from :func:`~pigeon.interop.hetero_names`.
    """
    dgl = import_dgl()
    if not isinstance(g, dgl.DGLGraph):
        raise ValueError(f"Expected `g` to be a dgl.DGLGraph (got {type(g).__name__})")
    if g.is_block:
        raise ValueError("Expected `g` to be a graph, not a block (message flow graph)")
    ntype_field = dgl.NTYPE if ntype_field is None else ntype_field
    etype_field = dgl.ETYPE if etype_field is None else etype_field
    if g.is_homogeneous and (etype_field in g.edata or ntype_field in g.ndata):
        return _from_flat_dgl(
            g, ntype_field, etype_field, ntype_names, etype_names, num_ntypes, num_etypes
        )

    ntypes = _dgl_type_order("ntype_names", ntype_names, list(g.ntypes), _resolve_ntype)
    etypes = _dgl_type_order("etype_names", etype_names, list(g.canonical_etypes), _resolve_etype)
    counts = (("num_ntypes", num_ntypes, len(ntypes)), ("num_etypes", num_etypes, len(etypes)))
    for name, given, actual in counts:
        if given is not None and given != actual:
            raise ValueError(f"Expected `{name}` to match the {actual} types of `g` (got {given})")
    relations = []
    for canonical in etypes:
        src, dst = g.edges(etype=canonical, order="eid")
        relations.append(Relation(ntypes.index(canonical[0]), ntypes.index(canonical[2]), src, dst))
    return join_relations(
        [g.num_nodes(ntype) for ntype in ntypes],
        relations,
        relation_labels=etypes,
        ntype_names=ntypes,
        etype_names=tuple(etype_names) if etype_names is not None else etypes,
    )


def _from_flat_dgl(g, ntype_field, etype_field, ntype_names, etype_names, num_ntypes, num_etypes):
    src, dst = g.edges(order="eid")
    etype = ntype = None
    if etype_field in g.edata:
        etype = check_type_vector(f"g.edata[{etype_field!r}]", g.edata[etype_field], g.num_edges(), "edge")
    if ntype_field in g.ndata:
        ntype = check_type_vector(f"g.ndata[{ntype_field!r}]", g.ndata[ntype_field], g.num_nodes(), "node")
    return HeteroGraph(
        src,
        dst,
        etype,
        num_nodes=g.num_nodes(),
        ntype=ntype,
        num_etypes=num_etypes,
        num_ntypes=num_ntypes,
        etype_names=etype_names,
        ntype_names=ntype_names,
    )


def _resolve_ntype(name, ntypes: list):
    return name if name in ntypes else None


def _resolve_etype(name, canonical_etypes: list):
    if isinstance(name, (tuple, list)):
        name = tuple(name)
        return name if name in canonical_etypes else None
    matches = [c for c in canonical_etypes if c[1] == name]
    return matches[0] if len(matches) == 1 else None


def _dgl_type_order(arg: str, names, dgl_types: list, resolve) -> list:
    """DGL's types in the order ``names`` gives (DGL's own order when ``None``)."""
    if names is None:
        return dgl_types
    ordered = []
    for name in names:
        resolved = resolve(name, dgl_types)
        if resolved is None:
            raise ValueError(
                f"Expected each entry of `{arg}` to name one type of `g` {dgl_types} (got {name!r})"
            )
        if resolved in ordered:
            raise ValueError(f"Expected `{arg}` to name each type of `g` once (got {resolved!r} twice)")
        ordered.append(resolved)
    if len(ordered) != len(dgl_types):
        missing = [t for t in dgl_types if t not in ordered]
        raise ValueError(f"Expected `{arg}` to name every type of `g` (missing {missing})")
    return ordered


# ---- sampled blocks -------------------------------------------------------------------
def blocks_from_dgl(
    blocks: Sequence,
    names: HeteroNames,
    type_nodes: Sequence[torch.Tensor],
    *,
    etype_names: Sequence | None = None,
) -> tuple[list[HeteroGraph], torch.Tensor, torch.Tensor]:
    """DGL's sampled heterogeneous blocks (input layer first) as Pigeon blocks.

    The blocks come from a DGL graph built by :func:`to_dgl` (``hetero=True``) from a
    Pigeon graph whose type names are ``names`` (:func:`~pigeon.interop.hetero_names`)
    and whose type ``t`` has global ids ``type_nodes[t]`` (ascending). Type ids follow
    ``names``, so they are the same in every batch, whatever DGL's sorted order.

    Rows are numbered from the last layer back: the last block's destinations (the
    seeds) by node type, then each block's source-only nodes by node type after its
    destinations. So block ``l``'s destinations are block ``l + 1``'s sources in the
    same order (no permutation between layers), and every block's destinations are a
    prefix of its sources, as DGL guarantees per node type.

    Returns ``(pigeon_blocks, input_nodes, seeds)``: the global ids (in the Pigeon
    graph) of the first block's sources and of the last block's destinations, in row
    order. No feature is read or copied.
    """
    dgl = import_dgl()
    ntype_ids = {name: t for t, name in enumerate(names.ntypes)}
    etype_ids = {canonical: t for t, canonical in enumerate(names.canonical_etypes)}
    out: list[HeteroGraph | None] = [None] * len(blocks)
    dst_rows = None
    for layer in reversed(range(len(blocks))):
        block = blocks[layer]
        if not block.is_block:
            raise ValueError(f"Expected `blocks[{layer}]` to be a DGL block (got a graph)")
        dst_counts = [block.num_dst_nodes(n) for n in names.ntypes]
        if dst_rows is None:
            starts = torch.cumsum(torch.tensor([0] + dst_counts[:-1]), 0).tolist()
            dst_rows = [torch.arange(s, s + c) for s, c in zip(starts, dst_counts)]
        elif [r.numel() for r in dst_rows] != dst_counts:
            raise ValueError(f"Expected the destinations of `blocks[{layer}]` to be the sources of "
                             f"`blocks[{layer + 1}]` (got {dst_counts} destinations per node type, "
                             f"{[r.numel() for r in dst_rows]} sources)")
        num_dst = sum(dst_counts)
        rows, next_row = [], num_dst
        for t, name in enumerate(names.ntypes):
            extra = block.num_src_nodes(name) - dst_counts[t]
            rows.append(torch.cat([dst_rows[t], torch.arange(next_row, next_row + extra)]))
            next_row += extra
        relations = []
        for canonical in block.canonical_etypes:
            src, dst = block.edges(etype=canonical, order="eid")
            relations.append((etype_ids[canonical], ntype_ids[canonical[0]], ntype_ids[canonical[2]], src, dst))
        out[layer] = assemble_block(rows, relations, next_row, num_dst, num_etypes=len(names.canonical_etypes),
                                    ntype_names=names.ntypes, etype_names=etype_names)
        if layer == len(blocks) - 1:
            seed_rows = dst_rows
        dst_rows = rows

    first, last = blocks[0], blocks[-1]
    input_nodes = torch.empty(out[0].num_src_nodes, dtype=torch.int64)
    seeds = torch.empty(out[-1].num_dst_nodes, dtype=torch.int64)
    for t, name in enumerate(names.ntypes):
        input_nodes[dst_rows[t]] = type_nodes[t][first.srcnodes[name].data[dgl.NID].cpu()]
        seeds[seed_rows[t]] = type_nodes[t][last.dstnodes[name].data[dgl.NID].cpu()]
    return out, input_nodes, seeds
