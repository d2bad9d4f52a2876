"""What the DGL and PyG converters share: type names, id relabelling, features.

DGL heterographs and PyG ``HeteroData`` number nodes per node type and edges per
relation. Pigeon numbers them globally. The two are related by one convention,
used in both directions and by every converter here:

* the *local* id of a node is its rank among the nodes of its type, by ascending
  global id, and likewise the local id of an edge within its relation;
* going the other way, global ids are built by concatenating the node types (and
  the relations) in type-id order.

So a :class:`HeteroGraph` whose ``ntype`` and ``etype`` are already non-decreasing
survives a trip through a heterograph unchanged; any other graph comes back with
its nodes grouped by type and its edges grouped by relation, keeping their order
within each group. The features helpers below follow the same convention, so the
graph alone is the map between global and per-type features.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch

from pigeon.data.graph import HeteroGraph

__all__ = ["HeteroNames", "hetero_names", "global_to_hetero_features", "hetero_features_to_global"]


class HeteroNames(NamedTuple):
    """The type names a graph gets as a DGL heterograph or PyG ``HeteroData``.

    ``ntypes[t]`` names node type ``t`` and ``canonical_etypes[t]`` is the
    ``(src_type, relation, dst_type)`` triple of edge type ``t``.
    """

    ntypes: tuple[str, ...]
    canonical_etypes: tuple[tuple[str, str, str], ...]


class Relation(NamedTuple):
    """One edge type of a heterograph: its endpoint types and its edges in local ids."""

    src_type: int
    dst_type: int
    src: torch.Tensor
    dst: torch.Tensor


def _generated_names(prefix: str, count: int) -> tuple[str, ...]:
    # Zero-padded so that DGL, which sorts type names, keeps them in id order.
    width = len(str(count - 1))
    return tuple(f"{prefix}{i:0{width}d}" for i in range(count))


def _is_triple(name) -> bool:
    return isinstance(name, tuple) and len(name) == 3


def _ntype_names(graph: HeteroGraph) -> tuple[str, ...]:
    if graph.ntype_names is None:
        return _generated_names("n", graph.num_ntypes)
    for name in graph.ntype_names:
        if not isinstance(name, str):
            raise ValueError(
                f"Expected `graph.ntype_names` to hold strings to name DGL/PyG node types "
                f"(got {name!r} of type {type(name).__name__})"
            )
    return graph.ntype_names


def _relation_name(graph: HeteroGraph, t: int, generated: tuple[str, ...]) -> str:
    if graph.etype_names is None:
        return generated[t]
    name = graph.etype_names[t]
    relation = name[1] if _is_triple(name) else name
    if not isinstance(relation, str) or (_is_triple(name) and not all(isinstance(n, str) for n in name)):
        raise ValueError(
            f"Expected `graph.etype_names[{t}]` to be a string or a triple of strings "
            f"(got {name!r})"
        )
    return relation


def _edge_type_pairs(graph: HeteroGraph) -> dict[int, list[tuple[int, int]]]:
    """The distinct ``(src ntype, dst ntype)`` pairs each edge type connects."""
    k = graph.num_ntypes
    key = (graph.etype * k + graph.ntype[graph.src]) * k + graph.ntype[graph.dst]
    pairs: dict[int, list[tuple[int, int]]] = {}
    for value in torch.unique(key).tolist():
        t, pair = divmod(value, k * k)
        pairs.setdefault(t, []).append(divmod(pair, k))
    return pairs


def _etype_ends(graph: HeteroGraph, ntype_names: tuple[str, ...]) -> list[tuple[int, int]]:
    """The ``(src ntype, dst ntype)`` of every edge type, checked against names.

    An edge type with edges takes the one pair its edges connect. One without
    edges takes the ends its ``(src, relation, dst)`` name gives when the graph
    names its node types, and ``(0, 0)`` otherwise: it has no edges to contradict.
    """
    observed = _edge_type_pairs(graph)
    named_ntypes = graph.ntype_names is not None
    ends = []
    for t in range(graph.num_etypes):
        name = graph.etype_names[t] if graph.etype_names is not None else None
        pairs = observed.get(t, [])
        if len(pairs) > 1:
            shown = [(ntype_names[s], ntype_names[d]) for s, d in pairs]
            raise ValueError(
                f"Expected every edge of type {t}{'' if name is None else f' ({name!r})'} to connect "
                f"one (src ntype, dst ntype) pair to build a heterograph (got {len(pairs)} pairs: {shown})"
            )
        if _is_triple(name) and named_ntypes:
            for end in (name[0], name[2]):
                if end not in ntype_names:
                    raise ValueError(
                        f"Expected the node types in `graph.etype_names[{t}]` = {name!r} to be among "
                        f"`graph.ntype_names` = {list(ntype_names)} (got {end!r})"
                    )
            named_pair = (ntype_names.index(name[0]), ntype_names.index(name[2]))
            if pairs and pairs[0] != named_pair:
                s, d = pairs[0]
                raise ValueError(
                    f"Expected the edges of type {t} to connect {name[0]!r} to {name[2]!r} as its "
                    f"name {name!r} says (got edges from {ntype_names[s]!r} to {ntype_names[d]!r})"
                )
            ends.append(named_pair)
        else:
            ends.append(pairs[0] if pairs else (0, 0))
    return ends


def _names_and_ends(graph: HeteroGraph) -> tuple[HeteroNames, list[tuple[int, int]]]:
    ntypes = _ntype_names(graph)
    ends = _etype_ends(graph, ntypes)
    generated = _generated_names("e", graph.num_etypes)
    canonical = tuple(
        (ntypes[s], _relation_name(graph, t, generated), ntypes[d]) for t, (s, d) in enumerate(ends)
    )
    if len(set(canonical)) != len(canonical):
        repeated = sorted({c for c in canonical if canonical.count(c) > 1})
        raise ValueError(
            f"Expected the edge types to get distinct (src, relation, dst) triples "
            f"(got {repeated} more than once; name the node types with `ntype_names`)"
        )
    return HeteroNames(ntypes, canonical), ends


def hetero_names(graph: HeteroGraph) -> HeteroNames:
    """The node type names and canonical edge types of ``graph`` as a heterograph.

    These are the names :func:`~pigeon.interop.to_dgl` (``hetero=True``) and
    :func:`~pigeon.interop.to_pyg_hetero` give. Node types keep
    ``graph.ntype_names``; unnamed ones become ``"n0"``, ``"n1"``, ... (zero-padded
    so they sort in id order). Edge type ``t`` becomes ``(src, relation, dst)``
    where ``relation`` is ``etype_names[t]`` (or its middle entry when it is a
    triple, or ``"e<t>"`` when unnamed).

    Args:
        graph (HeteroGraph): every edge type must connect a single
            ``(src ntype, dst ntype)`` pair.

    Raises:
        ValueError: an edge type connects several pairs, a triple name disagrees
            with its edges or with ``ntype_names``, or two edge types would get the
            same triple.
    """
    return _names_and_ends(graph)[0]


def _local_ids(types: torch.Tensor, num_types: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's rank among the items of its type, and the count of each type."""
    order = torch.sort(types, stable=True).indices
    counts = torch.bincount(types, minlength=num_types)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.empty_like(types)
    local[order] = torch.arange(types.numel(), device=types.device) - starts[types[order]]
    return local, counts


def split_relations(graph: HeteroGraph) -> tuple[HeteroNames, list[int], list[Relation]]:
    """``graph`` as a heterograph: names, node count per type, and one relation per edge type."""
    names, ends = _names_and_ends(graph)
    local, node_counts = _local_ids(graph.ntype, graph.num_ntypes)
    edge_order = torch.sort(graph.etype, stable=True).indices
    edge_counts = torch.bincount(graph.etype, minlength=graph.num_etypes).tolist()
    relations = []
    for (s, d), eids in zip(ends, torch.split(edge_order, edge_counts)):
        relations.append(Relation(s, d, local[graph.src[eids]], local[graph.dst[eids]]))
    return names, node_counts.tolist(), relations


def join_relations(
    node_counts: Sequence[int],
    relations: Sequence[Relation],
    *,
    relation_labels: Sequence,
    ntype_names: Sequence[str],
    etype_names: Sequence,
) -> HeteroGraph:
    """The inverse of :func:`split_relations`: concatenate node types, then relations.

    ``relation_labels[i]`` names relation ``i`` in errors (the caller's spelling).
    """
    device = relations[0].src.device if relations else torch.device("cpu")
    counts = torch.tensor(list(node_counts), dtype=torch.int64, device=device)
    offsets = (torch.cumsum(counts, 0) - counts).tolist()
    src, dst, etype = [], [], []
    for t, (rel, label) in enumerate(zip(relations, relation_labels)):
        for end, ids, ntype in (("source", rel.src, rel.src_type), ("destination", rel.dst, rel.dst_type)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= node_counts[ntype]):
                raise ValueError(
                    f"Expected the {end} ids of edge type {label!r} to lie in [0, {node_counts[ntype]}), "
                    f"the number of {ntype_names[ntype]!r} nodes (got ids in "
                    f"[{int(ids.min())}, {int(ids.max())}])"
                )
        src.append(rel.src.to(torch.int64) + offsets[rel.src_type])
        dst.append(rel.dst.to(torch.int64) + offsets[rel.dst_type])
        etype.append(torch.full((rel.src.numel(),), t, dtype=torch.int64, device=device))
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return HeteroGraph(
        torch.cat(src) if src else empty,
        torch.cat(dst) if dst else empty,
        torch.cat(etype) if etype else empty,
        num_nodes=int(counts.sum()),
        ntype=torch.repeat_interleave(torch.arange(len(node_counts), device=device), counts),
        num_etypes=len(relations),
        num_ntypes=len(node_counts),
        etype_names=etype_names,
        ntype_names=ntype_names,
    )


def check_type_vector(name: str, value, length: int, what: str) -> torch.Tensor:
    """``value`` as an int64 type-id vector with one entry per ``what`` (node or edge)."""
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    integer = not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
    if value.dim() != 1 or value.numel() != length or not integer:
        raise ValueError(
            f"Expected `{name}` to be a 1-D integer tensor with one entry per {what} ({length}) "
            f"(got shape {list(value.shape)}, dtype {str(value.dtype).replace('torch.', '')})"
        )
    return value.to(torch.int64)


# ---- features ---------------------------------------------------------------------
def _typed_keys(graph: HeteroGraph, on: str) -> tuple[torch.Tensor, int, tuple, tuple | None]:
    """The type vector, type count, heterograph names and own names for ``on``."""
    if on == "nodes":
        return graph.ntype, graph.num_ntypes, _ntype_names(graph), graph.ntype_names
    if on == "edges":
        return graph.etype, graph.num_etypes, hetero_names(graph).canonical_etypes, graph.etype_names
    raise ValueError(f"Expected `on` to be 'nodes' or 'edges' (got {on!r})")


def global_to_hetero_features(x: torch.Tensor, graph: HeteroGraph, *, on: str = "nodes") -> dict:
    """Split a global feature tensor into one tensor per type.

    ``out[name][i]`` is the row of ``x`` of the ``i``-th node (or edge) of that type
    in ascending global id, the local id a DGL heterograph or ``HeteroData`` made
    by :func:`~pigeon.interop.to_dgl` / :func:`~pigeon.interop.to_pyg_hetero`
    gives it. The dict can be assigned to ``g.ndata[key]`` / ``g.edata[key]`` as is.

    Args:
        x (Tensor): ``[num_nodes, ...]`` (or ``[num_edges, ...]``) features.
        graph (HeteroGraph): the graph ``x`` belongs to.
        on (str, optional): ``"nodes"`` or ``"edges"``. (default: ``"nodes"``)

    Returns:
        dict: node type name (or canonical edge type, see :func:`hetero_names`) to
        tensor, for every type in id order, types without nodes included.
    """
    types, num_types, names, _ = _typed_keys(graph, on)
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] != types.numel():
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"Expected `x` to be a tensor with one row per {on[:-1]} ({types.numel()}) (got {shape})"
        )
    order = torch.sort(types, stable=True).indices.to(x.device)
    counts = torch.bincount(types, minlength=num_types).tolist()
    return dict(zip(names, torch.split(x[order], counts)))


def hetero_features_to_global(
    features: Mapping, graph: HeteroGraph, *, on: str = "nodes"
) -> torch.Tensor:
    """Gather per-type features into one global tensor (inverse of :func:`global_to_hetero_features`).

    Row ``i`` of ``features[name]`` goes to the ``i``-th node (or edge) of that type
    in ascending global id. For a graph made by :func:`~pigeon.interop.from_dgl` or
    :func:`~pigeon.interop.from_pyg_hetero`, ``g.ndata[key]`` / ``data.x_dict`` can be
    passed as is.

    Args:
        features (Mapping): type to tensor. A key is a type id, a name from
            :func:`hetero_names`, or an entry of ``graph.ntype_names`` /
            ``graph.etype_names``. Every type with nodes (edges) must appear once;
            all tensors share dtype, device and trailing shape.
        graph (HeteroGraph): the graph the result belongs to.
        on (str, optional): ``"nodes"`` or ``"edges"``. (default: ``"nodes"``)

    Returns:
        Tensor: ``[num_nodes, ...]`` (or ``[num_edges, ...]``) features.
    """
    types, num_types, names, own_names = _typed_keys(graph, on)
    counts = torch.bincount(types, minlength=num_types).tolist()
    by_type = _features_by_type(features, names, own_names, counts, on[:-1])
    first = next(iter(by_type.values()))
    for t, value in by_type.items():
        if value.shape[1:] != first.shape[1:] or value.dtype != first.dtype or value.device != first.device:
            raise ValueError(
                f"Expected every tensor in `features` to share trailing shape, dtype and device "
                f"(got {list(value.shape[1:])} {value.dtype} {value.device} for {names[t]!r}, "
                f"{list(first.shape[1:])} {first.dtype} {first.device} for another type)"
            )
    # Types without nodes may be left out; they contribute no rows.
    empty = first.new_empty((0, *first.shape[1:]))
    rows = torch.cat([by_type.get(t, empty) for t in range(num_types)])
    out = first.new_empty((types.numel(), *first.shape[1:]))
    out[torch.sort(types, stable=True).indices.to(first.device)] = rows
    return out


def _features_by_type(features, names: tuple, own_names, counts: list[int], what: str) -> dict:
    """``features`` keyed by type id, each entry checked for its row count."""
    if not isinstance(features, Mapping) or not features:
        raise ValueError(
            f"Expected `features` to be a non-empty mapping from type to tensor (got {features!r:.80})"
        )
    lookup = {name: t for t, name in enumerate(names)}
    lookup.update({name: t for t, name in enumerate(own_names or ())})
    by_type: dict[int, torch.Tensor] = {}
    for key, value in features.items():
        t = key if isinstance(key, int) and 0 <= key < len(names) else lookup.get(key)
        if t is None:
            raise ValueError(
                f"Expected the keys of `features` to name {what} types of `graph` {list(names)} (got {key!r})"
            )
        if t in by_type:
            raise ValueError(
                f"Expected one entry per type in `features` (got type {names[t]!r} twice, last as {key!r})"
            )
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != counts[t]:
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"Expected `features[{key!r}]` to have one row per {what} of type {names[t]!r} "
                f"({counts[t]}) (got {shape})"
            )
        by_type[t] = value
    missing = [names[t] for t in range(len(names)) if counts[t] and t not in by_type]
    if missing:
        raise ValueError(f"Expected `features` to cover every {what} type with {what}s (missing {missing})")
    return by_type


def assemble_block(
    rows: Sequence[torch.Tensor],
    relations: Sequence[tuple[int, int, int, torch.Tensor, torch.Tensor]],
    num_src: int,
    num_dst: int,
    *,
    num_etypes: int,
    ntype_names: Sequence[str],
    etype_names: Sequence | None,
) -> HeteroGraph:
    """A block of a sampled mini-batch, from its nodes numbered per type.

    ``rows[t][i]`` is the row (global id in the block) of the ``i``-th node of type
    ``t`` in the sampler's numbering; rows below ``num_dst`` are the destinations.
    Each relation is ``(etype, src_type, dst_type, src, dst)`` with ``src``/``dst`` in
    that per-type numbering.

    The block's edges are the relations' in the order of their ``etype`` ids (each
    relation's in the sampler's order, by destination): a layout keyed by (relation,
    destination) then finds them in order and needs no sort.
    """
    device = rows[0].device if rows else torch.device("cpu")
    ntype = torch.empty(num_src, dtype=torch.int64, device=device)
    for t, r in enumerate(rows):
        ntype[r] = t
    src, dst, etype = [], [], []
    for t, s, d, u, v in sorted(relations, key=lambda relation: relation[0]):
        src.append(rows[s].index_select(0, u.to(torch.int64)))
        dst.append(rows[d].index_select(0, v.to(torch.int64)))
        etype.append(torch.full((u.numel(),), t, dtype=torch.int64, device=device))
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return HeteroGraph(
        torch.cat(src) if src else empty,
        torch.cat(dst) if dst else empty,
        torch.cat(etype) if etype else empty,
        num_nodes=num_src,
        ntype=ntype,
        num_dst_nodes=num_dst,
        num_etypes=num_etypes,
        num_ntypes=len(ntype_names),
        etype_names=etype_names,
        ntype_names=ntype_names,
    )
