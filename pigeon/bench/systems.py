"""The systems ``pigeon bench`` compares, and how each builds a model.

A system turns a :class:`Workload` (graph, input features, and a
:mod:`pigeon.reference` layer whose weights everyone copies) into a :class:`Runner`:
the library's own layer in its own input format, plus the conversions that let the
worker compare its output with the reference. Conversions run once, before timing;
the timed call is the library's forward alone.

Every system builds the same sizes: ``dim`` in and out, ``heads`` attention heads of
``dim // heads`` each.

==========  ===========================================  =============================
system      RGCN / RGAT / HGT                             same maths as the reference
==========  ===========================================  =============================
pigeon-*    ``pigeon.nn.RGCN/RGAT/HGT(backend=*)``        all three
ref         ``pigeon.reference.*``: plain PyTorch, eager  all three
inductor    the same layers under ``torch.compile``       all three
            (compiled by the first call, outside the
            timed runs)
dgl-ops     DGL's operators: ``segment_mm`` typed         all three
            linears, ``edge_softmax`` over all in-edges,
            ``copy_e_sum`` (:mod:`pigeon.bench.dgl_ops`)
dgl         ``RelGraphConv`` (edges presorted by type),   RGCN only: DGL's RGAT is a
            ``HeteroGraphConv`` over ``GATConv`` (the     softmax per relation, summed;
            usual DGL RGAT), ``HGTConv`` (presorted)      its HGT has no GELU and no
                                                          biases
pyg         ``RGCNConv`` (mean, sorted), ``RGATConv``     RGCN and HGT: ``RGATConv``
            (across-relation), ``HGTConv``                shares attention across
                                                          relations
==========  ===========================================  =============================

Every system but Pigeon's is a *baseline*. A baseline that computes other maths for a
model is timed and shown apart ("other maths"); speedups and the headline are over the
fastest baseline that computes the same maths (:mod:`pigeon.bench.report`).

RGCN everywhere uses the paper's normalisation ``c_{v,r}`` (``norm="relation"``): PyG's
``RGCNConv`` can only do that (mean per relation) or none, and DGL takes any edge
coefficient as an input. The systems of Pigeon's backends come from
``pigeon.runtime.compiled.BACKENDS`` at run time: a new backend appears as
``pigeon-<name>`` without a change here, unless it runs on one device only (one
line in :data:`BACKEND_DEVICES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

MODELS = ("rgcn", "rgat", "hgt")
MODES = ("infer", "train")
DEVICES = ("cpu", "cuda")

# The one device a backend runs on, for backends that cannot run on every device.
BACKEND_DEVICES = {"cpu": "cpu", "triton": "cuda"}
# Backends that only pick one of the others: timing them would time that one twice.
SELECTOR_BACKENDS = ("auto",)

#: Libraries of the baselines: every system's but Pigeon's (``torch``: the reference
#: layers, eager or under ``torch.compile``).
BASELINE_LIBRARIES = ("dgl", "pyg", "torch")


@dataclass(frozen=True)
class Workload:
    """What every system of one case gets: the graph, input features ``x``
    (``[num_nodes, dim]``) and the float32 reference layer whose weights it copies."""

    model: str
    graph: Any
    x: Any
    reference: Any
    dim: int
    heads: int


@dataclass(frozen=True)
class Runner:
    """A system's layer ready to run.

    ``to_native(x)`` turns global features into the layer's input (a tensor or a dict
    per node type; differentiable), ``forward(native)`` is the timed call, and
    ``to_global(out)`` gives ``([num_nodes, dim] tensor, rows)`` where ``rows`` lists the
    nodes the system produced an output for (None: all of them).
    ``reference_names`` is True when ``module`` has the reference's parameter names, so
    parameter gradients can be compared too. ``notes()`` (optional) says what the
    worker should record about how the system ran (e.g. what ``torch.compile`` made).
    """

    module: Any
    to_native: Callable[[Any], Any]
    forward: Callable[[Any], Any]
    to_global: Callable[[Any], tuple[Any, Any]]
    reference_names: bool = False
    notes: Callable[[], dict] | None = None


@dataclass(frozen=True)
class System:
    """One column of the comparison.

    Attributes:
        name: as given to ``--systems``.
        library: ``pigeon``, ``dgl``, ``pyg`` or ``torch`` (the reference layers).
        same_maths: the models whose output must match the reference (others are
            timed but marked ``n/a``).
        build: ``build(workload) -> Runner``; imports the library when called.
        device: the only device the system runs on, or None for any.
    """

    name: str
    library: str
    same_maths: frozenset
    build: Callable[[Workload], Runner]
    device: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.library in BASELINE_LIBRARIES


def available_systems() -> dict[str, System]:
    """Every system this installation can run, by name, Pigeon's backends first."""
    from pigeon.runtime.compiled import BACKENDS

    table = {
        f"pigeon-{backend}": System(
            f"pigeon-{backend}", "pigeon", frozenset(MODELS), _pigeon_builder(backend),
            BACKEND_DEVICES.get(backend),
        )
        for backend in BACKENDS if backend not in SELECTOR_BACKENDS
    }
    table["dgl"] = System("dgl", "dgl", frozenset({"rgcn"}), _build_dgl)
    table["dgl-ops"] = System("dgl-ops", "dgl", frozenset(MODELS), _build_dgl_ops)
    table["pyg"] = System("pyg", "pyg", frozenset({"rgcn", "hgt"}), _build_pyg)
    table["ref"] = System("ref", "torch", frozenset(MODELS), _build_reference)
    table["inductor"] = System("inductor", "torch", frozenset(MODELS), _build_inductor)
    return table


def default_systems(device: str) -> list[str]:
    """Pigeon's backends that run on ``device``, then DGL and PyG (``pigeon demo``'s set)."""
    return [name for name, system in available_systems().items()
            if name in ("dgl", "pyg") or (system.library == "pigeon" and system.device in (None, device))]


def all_systems(device: str) -> list[str]:
    """Pigeon's backends that run on ``device``, then every baseline: what ``pigeon
    bench`` runs without ``--systems``."""
    return [name for name, system in available_systems().items() if system.device in (None, device)]


# ---- the reference layer every system copies --------------------------------------
def make_reference(model: str, graph, dim: int, heads: int):
    """The :mod:`pigeon.reference` layer of ``model`` for ``graph`` (float32, fresh init)."""
    import pigeon.reference as reference

    args, kwargs = _layer_args(model, graph, dim, heads)
    return getattr(reference, _LAYER_CLASS[model])(*args, **kwargs)


_LAYER_CLASS = {"rgcn": "RGCN", "rgat": "RGAT", "hgt": "HGT"}


def _layer_args(model: str, graph, dim: int, heads: int) -> tuple[tuple, dict]:
    if model == "rgcn":
        return (dim, dim, graph.num_etypes), {"norm": "relation"}
    if model == "rgat":
        return (dim, dim // heads, graph.num_etypes), {"heads": heads}
    return (dim, dim, graph.num_ntypes, graph.num_etypes), {"heads": heads}


def _module_forward(module, graph):
    return lambda x: module(graph, x)


def _identity(x):
    return x


def _all_rows(out):
    return out, None


# ---- Pigeon and the reference ------------------------------------------------------
def _pigeon_builder(backend: str) -> Callable[[Workload], Runner]:
    def build(w: Workload) -> Runner:
        import pigeon.nn as pnn

        args, kwargs = _layer_args(w.model, w.graph, w.dim, w.heads)
        module = getattr(pnn, _LAYER_CLASS[w.model])(*args, **kwargs, backend=backend)
        module.load_state_dict(w.reference.state_dict())
        module.to(w.x.device)
        return Runner(module, _identity, _module_forward(module, w.graph), _all_rows, reference_names=True)

    return build


def _build_reference(w: Workload) -> Runner:
    return Runner(w.reference, _identity, _module_forward(w.reference, w.graph), _all_rows,
                  reference_names=True)


def _build_inductor(w: Workload) -> Runner:
    """The reference layer under ``torch.compile`` (inductor, default mode). Compiling
    happens in the first call (and again where a guard fails, e.g. the first call with
    gradients), which the worker makes before it times anything."""
    import copy

    import torch

    module = copy.deepcopy(w.reference)
    compiled = torch.compile(module)
    torch._dynamo.utils.counters.clear()

    def notes() -> dict:
        counters = torch._dynamo.utils.counters
        return {"torch_compile": {"graphs": int(counters["stats"]["unique_graphs"]),
                                  "graph_breaks": int(sum(counters["graph_break"].values())),
                                  "compiled": "in the first call(s), outside the timed runs"}}

    return Runner(module, _identity, lambda x: compiled(w.graph, x), _all_rows, reference_names=True, notes=notes)


def _build_dgl_ops(w: Workload) -> Runner:
    from pigeon.bench.dgl_ops import build_dgl_ops_layer

    layer = build_dgl_ops_layer(w.model, w.graph, w.reference).to(w.x.device)
    return Runner(layer, _identity, layer, _all_rows, reference_names=True)


# ---- graph formats the libraries take ------------------------------------------------
def _sorted_by_etype(graph):
    """``(src, dst, etype, order)`` with edges stably sorted by edge type."""
    import torch

    order = torch.argsort(graph.etype, stable=True)
    return graph.src[order], graph.dst[order], graph.etype[order], order


def _nodes_sorted_by_type(graph) -> bool:
    return bool((graph.ntype[1:] >= graph.ntype[:-1]).all())


@dataclass(frozen=True)
class _Typed:
    """The graph split by type, as DGL heterographs and PyG ``HeteroData`` hold it.

    Node type ``t`` is named ``n{t}`` and relation ``r`` is ``(n{s}, r{r}, n{t})``:
    generated names, because both libraries use them as module keys, which must not
    contain dots. Local node ids are ranks by ascending global id within a type.
    """

    ntypes: list
    relations: list  # (canonical triple, local src, local dst), in relation order
    nodes: list      # global ids of the nodes of each type, ascending

    def split(self, x):
        return {name: x.index_select(0, nodes) for name, nodes in zip(self.ntypes, self.nodes)}

    def join(self, features: dict, like):
        """``features`` per type back to global rows; types missing (or None) are left
        zero and out of ``rows``."""
        import torch

        out = like.new_zeros(like.shape[0], *next(v for v in features.values() if v is not None).shape[1:])
        produced = []
        for name, nodes in zip(self.ntypes, self.nodes):
            value = features.get(name)
            if value is not None:
                out = out.index_copy(0, nodes, value)
                produced.append(nodes)
        rows = torch.cat(produced) if produced else torch.zeros(0, dtype=torch.long)
        return out, (None if rows.numel() == like.shape[0] else rows)


def _typed(graph) -> _Typed:
    import torch

    nodes = [graph.nodes_of_type(t) for t in range(graph.num_ntypes)]
    local = torch.empty(graph.num_nodes, dtype=torch.long, device=graph.src.device)
    for ids in nodes:
        local[ids] = torch.arange(ids.numel(), device=ids.device)
    relations = []
    for r in range(graph.num_etypes):
        mask = graph.etype == r
        src, dst = graph.src[mask], graph.dst[mask]
        ends = []
        for end, ids in (("source", src), ("destination", dst)):
            kinds = torch.unique(graph.ntype[ids]).tolist() or [0]
            if len(kinds) > 1:
                raise ValueError(f"Expected relation {r} to have one {end} node type, as a DGL "
                                 f"heterograph or PyG HeteroData needs (got types {kinds})")
            ends.append(kinds[0])
        relations.append(((f"n{ends[0]}", f"r{r}", f"n{ends[1]}"), local[src], local[dst]))
    return _Typed([f"n{t}" for t in range(graph.num_ntypes)], relations, nodes)


# ---- DGL ---------------------------------------------------------------------------
def _build_dgl(w: Workload) -> Runner:
    import torch

    from pigeon.interop.dgl import import_dgl

    dgl = import_dgl()
    from dgl.nn.pytorch import GATConv, HeteroGraphConv, HGTConv, RelGraphConv

    graph, ref, device = w.graph, w.reference, w.x.device
    src, dst, etype, order = _sorted_by_etype(graph)
    g = dgl.graph((src, dst), num_nodes=graph.num_nodes, idtype=torch.int64, device=device)

    if w.model == "rgcn":
        from pigeon.reference.rgcn import rgcn_edge_norm

        norm = rgcn_edge_norm(graph, "relation", w.x.dtype)[order].unsqueeze(-1)
        conv = RelGraphConv(w.dim, w.dim, graph.num_etypes, regularizer=None, bias=True, self_loop=True)
        with torch.no_grad():
            conv.linear_r.W.copy_(ref.weight)
            conv.loop_weight.copy_(ref.loop_weight)
            conv.h_bias.copy_(ref.bias)
        conv.to(device)
        return Runner(conv, _identity, lambda x: conv(g, x, etype, norm, presorted=True), _all_rows)

    if w.model == "rgat":
        typed = _typed(graph)
        hg = dgl.heterograph(
            {canonical: (s, d) for canonical, s, d in typed.relations},
            num_nodes_dict={name: ids.numel() for name, ids in zip(typed.ntypes, typed.nodes)},
            idtype=torch.int64, device=device,
        )
        width = w.dim // w.heads
        mods = {}
        for r, (canonical, _, _) in enumerate(typed.relations):
            gat = GATConv(w.dim, width, w.heads, allow_zero_in_degree=True)
            with torch.no_grad():
                gat.fc.weight.copy_(ref.weight[r].T)
                gat.attn_l.copy_(ref.att_src[r].unsqueeze(0))
                gat.attn_r.copy_(ref.att_dst[r].unsqueeze(0))
            mods[canonical] = gat
        conv = HeteroGraphConv(mods, aggregate="sum").to(device)

        def to_global(out):
            return typed.join({name: v.flatten(1) for name, v in out.items()}, w.x)

        return Runner(conv, typed.split, lambda x: conv(hg, x), to_global)

    conv = HGTConv(w.dim, w.dim // w.heads, w.heads, graph.num_ntypes, graph.num_etypes,
                   dropout=0.0, use_norm=False)
    conv.eval()
    with torch.no_grad():
        for name in ("k", "q", "v", "a"):
            getattr(conv, f"linear_{name}").W.copy_(getattr(ref, f"{name}_weight"))
        for h in range(w.heads):
            conv.relation_att[h].W.copy_(ref.rel_att[:, h])
            conv.relation_msg[h].W.copy_(ref.rel_msg[:, h])
            conv.relation_pri[h].copy_(ref.rel_pri[:, h])
        conv.skip.copy_(ref.skip)
    conv.to(device)
    presorted = _nodes_sorted_by_type(graph)
    ntype = graph.ntype
    return Runner(conv, _identity, lambda x: conv(g, x, ntype, etype, presorted=presorted), _all_rows)


# ---- PyG ---------------------------------------------------------------------------
def _build_pyg(w: Workload) -> Runner:
    import torch
    from torch_geometric.nn import HGTConv, RGATConv, RGCNConv

    graph, ref, device = w.graph, w.reference, w.x.device
    if w.model == "rgcn":
        src, dst, etype, _ = _sorted_by_etype(graph)
        edge_index = torch.stack([src, dst])
        conv = RGCNConv(w.dim, w.dim, graph.num_etypes, aggr="mean", is_sorted=True)
        with torch.no_grad():
            conv.weight.copy_(ref.weight)
            conv.root.copy_(ref.loop_weight)
            conv.bias.copy_(ref.bias)
        conv.to(device)
        return Runner(conv, _identity, lambda x: conv(x, edge_index, etype), _all_rows)

    if w.model == "rgat":
        edge_index = torch.stack([graph.src, graph.dst])
        conv = RGATConv(w.dim, w.dim // w.heads, graph.num_etypes, heads=w.heads, concat=True,
                        attention_mechanism="across-relation", attention_mode="additive-self-attention")
        conv.eval()
        with torch.no_grad():
            conv.weight.copy_(ref.weight)
            conv.bias.copy_(ref.bias)
        conv.to(device)
        etype = graph.etype
        return Runner(conv, _identity, lambda x: conv(x, edge_index, etype), _all_rows)

    typed = _typed(graph)
    edge_types = [canonical for canonical, _, _ in typed.relations]
    edge_index_dict = {canonical: torch.stack([s, d]) for canonical, s, d in typed.relations}
    conv = HGTConv(w.dim, w.dim, (typed.ntypes, edge_types), heads=w.heads)
    num_etypes = len(edge_types)
    with torch.no_grad():
        for t, name in enumerate(typed.ntypes):
            kqv = conv.kqv_lin.lins[name]
            kqv.weight.copy_(torch.cat([ref.k_weight[t], ref.q_weight[t], ref.v_weight[t]], dim=1).T)
            kqv.bias.copy_(torch.cat([ref.k_bias[t], ref.q_bias[t], ref.v_bias[t]]))
            conv.out_lin.lins[name].weight.copy_(ref.a_weight[t].T)
            conv.out_lin.lins[name].bias.copy_(ref.a_bias[t])
            conv.skip[name].copy_(ref.skip[t : t + 1])
        for r, canonical in enumerate(edge_types):
            conv.p_rel["__".join(canonical)].copy_(ref.rel_pri[r : r + 1])
            for h in range(w.heads):
                # PyG stacks one [d, d] matrix per (head, edge type) at index h * E + r.
                conv.k_rel.weight[h * num_etypes + r].copy_(ref.rel_att[r, h])
                conv.v_rel.weight[h * num_etypes + r].copy_(ref.rel_msg[r, h])
    conv.to(device)
    return Runner(conv, typed.split, lambda x: conv(x, edge_index_dict), lambda out: typed.join(out, w.x))
