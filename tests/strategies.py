"""Hypothesis strategies for random heterogeneous graphs.

Every graph these produce is a realistic stress case: empty relations, isolated
nodes, self-loops and repeated edges all occur, and so does a single-node graph.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

import pigeon


def _draw_graph(draw, max_nodes, max_edges, max_etypes, max_ntypes, block: bool):
    num_nodes = draw(st.integers(1, max_nodes))
    num_dst = draw(st.one_of(st.just(num_nodes), st.just(1), st.integers(1, num_nodes))) if block else num_nodes
    num_etypes = draw(st.integers(1, max_etypes))
    num_ntypes = draw(st.integers(1, max_ntypes))
    num_edges = draw(st.integers(0, max_edges))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_dst, (num_edges,), generator=gen)
    if num_edges > 2 and draw(st.booleans()):
        # Force self-loops and repeated edges, which uniform draws rarely give.
        src[0] = dst[0]
        src[1], dst[1] = src[2], dst[2]
    # The last relation is left empty half of the time.
    hi = num_etypes - 1 if num_etypes > 1 and draw(st.booleans()) else num_etypes
    etype = torch.randint(0, hi, (num_edges,), generator=gen)
    ntype = torch.randint(0, num_ntypes, (num_nodes,), generator=gen)
    if draw(st.booleans()):
        # Edges relation by relation, then by destination, as a sampler's blocks come
        # (the layouts then take their C paths for edges in relation order).
        order = torch.sort(etype * num_nodes + dst, stable=True).indices
        src, dst, etype = src[order], dst[order], etype[order]
    return pigeon.HeteroGraph(src, dst, etype, num_nodes, ntype, num_etypes=num_etypes, num_ntypes=num_ntypes,
                              num_dst_nodes=num_dst if block else None)


@st.composite
def hetero_graphs(draw, max_nodes: int = 24, max_edges: int = 80, max_etypes: int = 5, max_ntypes: int = 3):
    """A random :class:`pigeon.HeteroGraph` (node types arbitrary per node)."""
    return _draw_graph(draw, max_nodes, max_edges, max_etypes, max_ntypes, block=False)


@st.composite
def hetero_blocks(draw, max_nodes: int = 24, max_edges: int = 80, max_etypes: int = 5, max_ntypes: int = 3):
    """A random block (:class:`pigeon.HeteroGraph` with ``num_dst_nodes`` destinations,
    a prefix of its nodes), with the same stress cases as :func:`hetero_graphs`; the
    destinations are sometimes all the nodes, sometimes a single one."""
    return _draw_graph(draw, max_nodes, max_edges, max_etypes, max_ntypes, block=True)


def as_plain_graph(block: "pigeon.HeteroGraph") -> "pigeon.HeteroGraph":
    """The plain graph with a block's nodes and edges: on it a layer computes every node's
    output, and the block's outputs must be its destinations' rows."""
    return pigeon.HeteroGraph(block.src, block.dst, block.etype, block.num_nodes, block.ntype,
                              num_etypes=block.num_etypes, num_ntypes=block.num_ntypes)
