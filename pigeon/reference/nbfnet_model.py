"""Reference NBFNet model (Zhu et al. 2021): a stack of NBFNet layers and a link scorer."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from pigeon.data.graph import HeteroGraph
from pigeon.reference._common import _dtype_name, check_bool, check_choice, check_graph_device, check_int
from pigeon.reference.nbfnet import NBF_AGGREGATES, NBF_MESSAGES, NBFNetLayer


def _check_ids(name: str, value, limit: int, limit_text: str, like: torch.Tensor) -> torch.Tensor:
    """``value`` if it is a non-empty 1-D integer tensor on ``like``'s device with ids in ``[0, limit)``."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"Expected `{name}` to be a 1-D integer tensor (got {type(value).__name__})")
    if value.dim() != 1 or value.numel() == 0 or value.dtype.is_floating_point or value.dtype.is_complex \
            or value.dtype == torch.bool:
        raise ValueError(
            f"Expected `{name}` to be a non-empty 1-D integer tensor, one entry per query "
            f"(got shape {list(value.shape)}, dtype {_dtype_name(value.dtype)})"
        )
    if value.device != like.device:
        raise ValueError(f"Expected `{name}` on the model's device {like.device} (got {value.device})")
    low, high = int(value.min()), int(value.max())
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        raise ValueError(f"Expected every id in `{name}` to be in [0, {limit_text}={limit}) (got {bad})")
    return value.long()


class NBFNet(nn.Module):
    r"""Neural Bellman-Ford network for link prediction, the oracle for the compiled model.

    For a batch of queries :math:`(h, q, ?)` over the fact graph with ``R`` relations, the
    graph is augmented with an inverse edge :math:`(v, r + R, u)` for every edge
    :math:`(u, r, v)`, so ``2R`` relations take part. With the query embedding
    :math:`\mathbf{q} = Q[q]` (a table of ``2R`` rows: query ``r + R`` asks for the head
    of relation ``r``):

    .. math::
        \mathbf{b}_v = \mathbf{q}\,[v = h], \qquad \mathbf{h}^{(0)} = \mathbf{b}, \qquad
        \mathbf{h}^{(t)} = \textsc{Layer}_t(\mathbf{h}^{(t-1)}, \mathbf{b}, W^{(t)}_{\mathbf{q}})

    where each :class:`NBFNetLayer` aggregates relation-conditioned messages with the
    boundary :math:`\mathbf{b}` as every node's self message. The relation vectors
    :math:`W^{(t)}_{\mathbf{q}}` (``[2R, dim]``) are :math:`\mathbf{q} A_t^\top + \mathbf{c}_t`
    reshaped when ``dependent`` (one linear map per layer), else a per-layer table shared
    by all queries. The score of every tail :math:`t` is

    .. math::
        s(h, q, t) = \textsc{MLP}([\mathbf{h}^{(1)}_t \Vert \dots \Vert \mathbf{h}^{(T)}_t
            \Vert \mathbf{q}])

    with a two-layer MLP (``Linear(F, F)``, ReLU, ``Linear(F, 1)``). The features are the
    concatenation of every layer's output (NBFNet's ``concat_hidden``, the setting of its
    knowledge-graph experiments) or, with ``concat_hidden=False``, the last layer's.

    Args:
        num_relations (int): ``R``, the number of relations of the fact graph.
        dim (int): feature size of every layer, the query and relation vectors. Default: 32.
        num_layers (int): number of NBFNet layers. Default: 6.
        message (str): ``"distmult"``, ``"transe"`` or ``"rotate"``. Default: ``"distmult"``.
        aggregate (str): ``"sum"``, ``"mean"``, ``"max"``, ``"min"`` or ``"pna"``. Default:
            ``"pna"``.
        dependent (bool): relation vectors computed from the query. Default: True.
        short_cut (bool): each layer adds its input to its output. Default: True.
        layer_norm (bool): each layer applies a LayerNorm before its ReLU. Default: True.
        concat_hidden (bool): score from every layer's output, not only the last. Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Parameters (the state_dict contract): ``query`` = ``nn.Embedding(2R, dim)``;
    ``layers.<t>`` = :class:`NBFNetLayer` ``(dim, 2R)``; ``relations.<t>`` =
    ``nn.Linear(dim, 2R * dim)`` if ``dependent`` else ``nn.Embedding(2R, dim)``; ``mlp.0``
    = ``nn.Linear(F, F)`` and ``mlp.2`` = ``nn.Linear(F, 1)`` with ``F = (num_layers if
    concat_hidden else 1) * dim + dim``.

    Shapes: ``forward(graph, heads, relations)`` with the *fact* graph (at most ``R`` edge
    types; the model adds the inverse edges itself) and ``heads``, ``relations`` 1-D
    integer tensors of one entry per query (``relations`` in ``[0, 2R)``) returns scores
    ``[batch, graph.num_nodes]``, one per candidate tail.
    """

    def __init__(
        self,
        num_relations: int,
        dim: int = 32,
        num_layers: int = 6,
        *,
        message: str = "distmult",
        aggregate: str = "pna",
        dependent: bool = True,
        short_cut: bool = True,
        layer_norm: bool = True,
        concat_hidden: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self._augmented: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # fact graph -> with inverses
        self.num_relations = check_int("num_relations", num_relations)
        self.dim = check_int("dim", dim)
        self.num_layers = check_int("num_layers", num_layers)
        self.message = check_choice("message", message, NBF_MESSAGES)
        self.aggregate = check_choice("aggregate", aggregate, NBF_AGGREGATES)
        self.dependent = check_bool("dependent", dependent)
        self.concat_hidden = check_bool("concat_hidden", concat_hidden)
        factory = {"device": device, "dtype": dtype}
        both = 2 * num_relations  # every relation and its inverse

        self.query = nn.Embedding(both, dim, **factory)
        self.layers = nn.ModuleList(
            NBFNetLayer(dim, both, message=message, aggregate=aggregate, layer_norm=layer_norm,
                        short_cut=short_cut, **factory)
            for _ in range(num_layers)
        )
        if dependent:
            self.relations = nn.ModuleList(nn.Linear(dim, both * dim, **factory) for _ in range(num_layers))
        else:
            self.relations = nn.ModuleList(nn.Embedding(both, dim, **factory) for _ in range(num_layers))
        feature_dim = (num_layers if concat_hidden else 1) * dim + dim
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, feature_dim, **factory),
            nn.ReLU(),
            nn.Linear(feature_dim, 1, **factory),
        )

    def with_inverse_edges(self, graph) -> HeteroGraph:
        """The fact graph plus edge ``(v, u, r + R)`` for every edge ``(u, v, r)``.

        The offset is the model's ``R``, not ``graph.num_etypes``, so a graph whose last
        relations have no edges keeps every relation id in place. Built once per graph.
        """
        if not isinstance(graph, HeteroGraph):
            raise ValueError(f"Expected `graph` to be a pigeon.HeteroGraph (got {type(graph).__name__})")
        if graph.num_etypes > self.num_relations:
            raise ValueError(
                f"Expected `graph` to be the fact graph, with at most num_relations={self.num_relations} "
                f"edge types; the model adds the inverse edges itself (got graph.num_etypes="
                f"{graph.num_etypes})"
            )
        # Memoized per fact graph: the augmented graph's layouts (CSR, compact maps)
        # and the compiled layers' per-graph index arrays are then built once.
        augmented = self._augmented.get(graph)
        if augmented is None:
            augmented = graph.with_reverse_edges(self.num_relations)
            self._augmented[graph] = augmented
        return augmented

    def relation_vectors(self, t: int, query: torch.Tensor) -> torch.Tensor:
        """``[batch, 2R, dim]``: layer ``t``'s vector of every relation for every query."""
        batch, both = query.shape[0], 2 * self.num_relations
        if self.dependent:
            return self.relations[t](query).view(batch, both, self.dim)
        return self.relations[t].weight.unsqueeze(0).expand(batch, both, self.dim)

    def forward(self, graph, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        like = self.query.weight
        augmented = self.with_inverse_edges(graph)
        check_graph_device(graph, like)
        heads = _check_ids("heads", heads, graph.num_nodes, "graph.num_nodes", like)
        relations = _check_ids("relations", relations, 2 * self.num_relations, "2 * num_relations", like)
        if relations.numel() != heads.numel():
            raise ValueError(
                f"Expected `relations` to have one entry per query in `heads` ({heads.numel()}) "
                f"(got {relations.numel()})"
            )
        batch, num_nodes = heads.numel(), graph.num_nodes

        query = self.query(relations)  # [batch, dim]
        at_head = heads.view(batch, 1, 1).expand(batch, 1, self.dim)
        boundary = query.new_zeros(batch, num_nodes, self.dim).scatter(1, at_head, query.unsqueeze(1))

        hidden, outputs = boundary, []
        for t, layer in enumerate(self.layers):
            hidden = layer(augmented, hidden, boundary, self.relation_vectors(t, query))
            outputs.append(hidden)

        features = torch.cat(outputs, dim=-1) if self.concat_hidden else outputs[-1]
        features = torch.cat([features, query.unsqueeze(1).expand(batch, num_nodes, self.dim)], dim=-1)
        return self.mlp(features).squeeze(-1)

    def extra_repr(self) -> str:
        return (
            f"num_relations={self.num_relations}, dim={self.dim}, num_layers={self.num_layers}, "
            f"message={self.message!r}, aggregate={self.aggregate!r}, dependent={self.dependent}, "
            f"concat_hidden={self.concat_hidden}"
        )
