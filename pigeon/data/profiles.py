"""Synthetic stand-ins for the graphs that RGNN papers benchmark on.

The real AIFB, MUTAG, BGS, AM, ogbn-mag, ogbl-wikikg2, FB15k-237 and ogbl-biokg
graphs are large downloads. For kernel work what matters is their *shape*: node
and edge counts, the number of relations, how unequal the relations are and how
often one ``(source, relation)`` pair repeats. A :class:`Profile` records the
published statistics of one graph and :func:`generate` builds a random graph that
matches them. **These graphs are generated locally; they are not the real data**
(use the ``ogbn-mag``, ``ogbl-biokg`` and ``ogbl-wikikg2`` loaders in
:mod:`pigeon.data.ogb` for that).

How a graph is generated (vectorised with NumPy; every random draw comes from
generators seeded by ``(seed, profile name)``, never from global state):

1. Node counts per node type are exact at ``scale=1`` and rounded (largest
   remainder, at least one node per type) below it. Node types own contiguous
   id blocks in the order the profile lists them.
2. Relation sizes are the published ones where known (ogbn-mag), otherwise
   Zipf-distributed (size of the k-th largest relation proportional to
   ``1 / k**zipf_exponent``, ranks assigned to relations at random, at least one
   edge each). At ``scale < 1`` the edge total ``round(num_edges * scale)`` is
   shared among relations in proportion to their scale-1 sizes.
3. Each node gets a Pareto "popularity". Each relation picks a subset of its
   source type and of its destination type, sized by a mean degree drawn per
   relation: popular nodes are likelier to be picked, and nodes no subset has
   used yet are mixed in so that few nodes end up isolated. The subset is ranked
   by popularity; every member gets one edge and the remaining endpoints follow
   a Zipf law over the ranks. Hubs therefore recur across relations and a
   relation's edges concentrate on few sources: repeated ``(src, etype)`` pairs,
   the thing compact materialization exploits, come out as in real graphs.
4. Duplicate ``(src, dst, etype)`` triples are redrawn (real triple stores hold
   none); only a relation too dense for its subsets keeps a few.
5. Profiles whose published numbers count a reverse edge per triple (DGL's RDF
   datasets, FB15k-237 as RGNN papers use it) are generated as forward relations
   followed by their reverses (relation ``r + R`` reverses relation ``r``).

Edges come grouped by relation, as in OGB's per-relation files.

**Planted node labels** (:func:`planted_node_task`, ``load(name, node_task=True)``) give
the entity-classification profiles (``aifb``, ``mutag``, ``bgs``, ``am``, ``mag``) a
task whose answer is known to be learnable from the graph. They are *not* the real
labels. With ``C`` the profile's published class count:

1. Every node type with a feature width gets fixed random features
   ``X_t ~ N(0, 1)`` (``[n_t, F_t]``); the others are featureless (a model must learn
   embeddings for them), as ogbn-mag's authors, institutions and fields are.
2. A fixed random relational teacher maps them to class scores: ``h_v = X_v A_t /
   sqrt(F_t)`` for a featured node of type ``t`` (0 for a featureless one), then
   ``s_v = h_v + sum_{(u, r, v)} h_u B_r / deg(v)`` over all in-edges (``deg`` the
   in-degree over all relations: the ``"right"`` norm of an RGCN layer), with
   ``A_t ~ N(0, 1)`` ``[F_t, C]`` and ``B_r ~ N(0, 1) / sqrt(C)`` ``[C, C]``.
3. The label of each node of the target type is ``argmax_c s_v``; other nodes get -1.
   A one-layer linear RGCN represents the teacher exactly, so a model that learns
   reaches high accuracy, while one that ignores the graph or the features stays near
   chance (the share of the commonest class).
4. The target nodes are split at random, 60 % train, 20 % valid, 20 % test.

Every draw comes from generators seeded by ``(seed, profile name)``, separate from the
graph's, so the same ``(profile, scale, seed)`` gives the same task.

**Structure** (``generate(..., structure=Structure(repeats, skew))``, the benchmark's
structure sweep) replaces steps 3 and 4 with degrees set exactly, so that a speedup
can be read as a function of the graph's structure rather than at one point:

* ``repeats``: the mean number of edges per ``(source, edge type)`` pair (what compact
  materialization saves), and per ``(destination, edge type)`` pair, so the reverse
  relations of the RDF profiles have it too. The profile's pairs are shared among its
  relations in proportion to their sizes. A relation may hold at most ``repeats``
  times as many edges as its smaller end type has nodes; larger Zipf shares are capped
  there and the rest goes to the other relations.
* ``skew``: the Zipf exponent of the source degrees. Within a relation, the source of
  rank ``i`` (by node popularity, so hubs recur across relations) gets ``1 + extra_i``
  edges with ``extra_i`` proportional to ``(i + 1) ** -skew`` (largest remainder, no
  sampling: the degrees follow the law exactly), at most one edge to each destination
  the relation uses. The destinations get ``repeats`` edges each (to rounding): Zipf
  hubs at both ends would force repeated ``(src, dst)`` pairs, which triple stores do
  not hold. So in the RDF profiles the forward relations are skewed at their sources
  and their reverses at their destinations. ``skew=0`` gives every pair ``repeats``
  edges (to rounding).

Sources and destinations are paired at random; a repeated ``(src, dst)`` pair is
broken by swapping destinations between edges (which keeps every degree).
:func:`structure_stats` measures what was made.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from pigeon.data.graph import HeteroGraph

__all__ = ["Relation", "Profile", "PROFILES", "NodeTask", "Structure", "generate", "describe", "scaled_count",
           "planted_node_task", "structure_stats"]


@dataclass(frozen=True)
class Relation:
    """One edge type of a profile.

    Args:
        name (str): the relation name.
        src_type (int): index of the source node type in the profile.
        dst_type (int): index of the destination node type in the profile.
        num_edges (int, optional): the published edge count at ``scale=1``; ``None``
            draws a Zipf share of the profile's edges.
    """

    name: str
    src_type: int = 0
    dst_type: int = 0
    num_edges: int | None = None


@dataclass(frozen=True)
class Profile:
    """Published statistics of one benchmark graph.

    Args:
        name (str): the name :func:`pigeon.data.load` knows it by.
        source (str): where the numbers come from, quoted in descriptions.
        ntype_names (tuple of str): node type names, in id-block order.
        ntype_sizes (tuple of int): nodes per type at ``scale=1``.
        num_edges (int): published edge count, reverse edges included when
            ``reverse_pairs``.
        num_etypes (int): published number of edge types, likewise.
        relations (tuple of Relation): the forward relations. Empty means
            ``num_etypes`` (halved when ``reverse_pairs``) relations ``r0, r1, ...``
            between nodes of type 0.
        reverse_pairs (bool): the published counts include one reverse edge per
            triple, in relations of their own.
        zipf_exponent (float): skew of the relation sizes that are not published.
        target_ntype (int, optional): the node type an entity-classification task
            labels (None: the profile has no node task).
        num_classes (int): the published class count of that task.
        feature_dims (tuple of int or None): planted feature width per node type, None
            for a featureless type.
    """

    name: str
    source: str
    ntype_names: tuple[str, ...]
    ntype_sizes: tuple[int, ...]
    num_edges: int
    num_etypes: int
    relations: tuple[Relation, ...] = ()
    reverse_pairs: bool = False
    zipf_exponent: float = 1.0
    target_ntype: int | None = None
    num_classes: int = 0
    feature_dims: tuple[int | None, ...] = ()

    @property
    def num_nodes(self) -> int:
        return sum(self.ntype_sizes)

    @property
    def forward_relations(self) -> tuple[Relation, ...]:
        """The relations generated before any reverse edges are added."""
        if self.relations:
            return self.relations
        count = self.num_etypes // 2 if self.reverse_pairs else self.num_etypes
        return tuple(Relation(f"r{k}") for k in range(count))

    @property
    def num_forward_edges(self) -> int:
        return self.num_edges // 2 if self.reverse_pairs else self.num_edges

    def __post_init__(self):
        if len(self.ntype_names) != len(self.ntype_sizes):
            raise ValueError(
                f"Profile {self.name!r}: expected one size per node type "
                f"({len(self.ntype_names)} names, got {len(self.ntype_sizes)} sizes)"
            )
        if self.reverse_pairs and (self.num_edges % 2 or self.num_etypes % 2):
            raise ValueError(
                f"Profile {self.name!r}: reverse_pairs needs even edge and edge-type counts "
                f"(got {self.num_edges} edges, {self.num_etypes} edge types)"
            )
        for r in self.relations:
            if not (0 <= r.src_type < len(self.ntype_names) and 0 <= r.dst_type < len(self.ntype_names)):
                raise ValueError(
                    f"Profile {self.name!r}: relation {r.name!r} names node types "
                    f"({r.src_type}, {r.dst_type}), expected indices below {len(self.ntype_names)}"
                )
        generated = len(self.forward_relations) * (2 if self.reverse_pairs else 1)
        if generated != self.num_etypes:
            raise ValueError(
                f"Profile {self.name!r}: expected {self.num_etypes} edge types, "
                f"the relations give {generated}"
            )
        if self.target_ntype is not None and (
            not 0 <= self.target_ntype < len(self.ntype_names) or self.num_classes < 2
            or len(self.feature_dims) != len(self.ntype_names)
        ):
            raise ValueError(
                f"Profile {self.name!r}: a node task needs a target node type below "
                f"{len(self.ntype_names)}, at least 2 classes and one feature width per node type "
                f"(got target {self.target_ntype}, {self.num_classes} classes, {len(self.feature_dims)} widths)"
            )
        published = [r.num_edges for r in self.forward_relations]
        if all(n is not None for n in published) and sum(published) != self.num_forward_edges:
            raise ValueError(
                f"Profile {self.name!r}: relation sizes sum to {sum(published)}, "
                f"expected {self.num_forward_edges}"
            )


def _apportion(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder).

    When ``total`` allows it, parts whose share falls below ``minimum`` get exactly
    ``minimum`` and the rest is shared among the others, so large parts stay
    within one of their proportional share. Ties go to the lower index.
    """
    weights = np.asarray(weights, dtype=np.float64)
    fixed = np.zeros(weights.size, dtype=bool)
    if minimum > 0 and total >= minimum * weights.size:
        while True:
            free = np.where(fixed, 0.0, weights)
            free_total = total - minimum * int(fixed.sum())
            quota = free / max(free.sum(), 1e-300) * free_total
            below = ~fixed & (quota < minimum)
            if not below.any():
                break
            fixed |= below
    free = np.where(fixed, 0.0, weights)
    rest = total - minimum * int(fixed.sum())
    if rest == 0 or free.sum() == 0.0:
        return np.where(fixed, minimum, 0).astype(np.int64)
    quota = free / free.sum() * rest
    counts = np.floor(quota).astype(np.int64)
    short = rest - int(counts.sum())
    if short:
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[:short]] += 1
    return np.where(fixed, minimum, counts)


@dataclass(frozen=True)
class Structure:
    """Degrees set exactly instead of drawn (the module docstring's **Structure**).

    Args:
        repeats (float): mean edges per ``(source, edge type)`` pair and per
            ``(destination, edge type)`` pair, at least 1.
        skew (float): Zipf exponent of the degrees within a relation, at least 0
            (0: every pair has ``repeats`` edges, to rounding).
    """

    repeats: float
    skew: float

    def __post_init__(self):
        for name, value, low in (("repeats", self.repeats, 1.0), ("skew", self.skew, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < low:
                raise ValueError(f"Expected `{name}` to be a finite number of at least {low:g} (got {value!r})")

    @property
    def label(self) -> str:
        return f"repeats {self.repeats:g}, skew {self.skew:g}"


# ---- the profiles ------------------------------------------------------------------
# DGL's RDF datasets (AIFBDataset, MUTAGDataset, BGSDataset, AMDataset) insert a
# reverse edge and relation for every triple by default (insert_reverse=True; DGL's
# docs give AIFB as 7,262 nodes and 48,810 edges "including reverse edges"). The
# counts RGNN system papers quote are those of the DGL heterographs: their edge types
# are *canonical* (source type, relation, destination type) triples, 104 for AIFB of
# 78 relation names (Hector's dataset scripts note "aifb 104 (unique edge type names 78
# canonical edge types 104)", "mutag 50 (unique edge type names 46)"; Graphiler's
# print 104, 50, 122 and 108), so each edge type joins one pair of node types.
#
# Node types are the entity classes DGL parses from the URIs: 7 for AIFB, 5 for MUTAG,
# 27 for BGS and 7 for AM, as the dataset tables of Graphiler (Xie et al., MLSys 2022)
# and Hector (Wu et al., ASPLOS 2024) give them. The first type is the one DGL labels
# (``predict_category``: Personen, d, Lexicon/NamedRockUnit, proxy). What is not
# published, and so chosen here: the other types' names (``type1``...), each type's
# size (Zipf shares of the published node total, the k-th type's share proportional to
# 1/k, the labelled type first) and which pair of types each relation joins (drawn once
# per profile from a generator seeded by its name: the k-th of the first T relations
# starts at type k, so every type has edges, and every other end is drawn in proportion
# to the types' sizes). Relation sizes are Zipf shares as before.
_RDF_SOURCE = (
    "the R-GCN entity-classification benchmark (Schlichtkrull et al., 2018) as packaged "
    "by DGL with a reverse edge per triple, the statistics RGNN system papers quote "
    "(edge types are DGL's canonical edge types; node type counts from the Graphiler and "
    "Hector dataset tables; type sizes and which types each relation joins are not "
    "published and are chosen as pigeon/data/profiles.py says)"
)


# Entity classification on them labels the entities of one class (AIFB's research
# groups, MUTAG's molecules...): 4, 2, 2 and 11 classes. The planted task labels the
# first node type (the labelled class's type) and gives every type 16 planted features.
_RDF_FEATURES = 16


def _zipf_type_sizes(total: int, count: int) -> tuple[int, ...]:
    """``total`` nodes over ``count`` types, the k-th type's share proportional to 1/k."""
    weights = 1.0 / np.arange(1, count + 1)
    return tuple(int(n) for n in _apportion(total, weights, minimum=1))


def _rdf_schema(name: str, sizes: tuple[int, ...], relations: int) -> tuple["Relation", ...]:
    """``relations`` forward relations, each joining one (source type, destination type)
    pair drawn once from a generator seeded by ``name`` (see the comment above)."""
    rng = np.random.default_rng(zlib.crc32(f"{name} schema".encode()))
    share = np.asarray(sizes, dtype=np.float64) / sum(sizes)
    count = len(sizes)
    out = []
    for r in range(relations):
        src = r if r < count else int(rng.choice(count, p=share))
        dst = int(rng.choice(count, p=share))
        out.append(Relation(f"r{r}", src, dst))
    return tuple(out)


def _rdf(name: str, nodes: int, edges: int, etypes: int, ntypes: int, labelled: str,
         classes: int) -> Profile:
    sizes = _zipf_type_sizes(nodes, ntypes)
    return Profile(
        name=name,
        source=_RDF_SOURCE,
        ntype_names=(labelled, *(f"type{t}" for t in range(1, ntypes))),
        ntype_sizes=sizes,
        num_edges=edges,
        num_etypes=etypes,
        relations=_rdf_schema(name, sizes, etypes // 2),
        reverse_pairs=True,
        target_ntype=0,
        num_classes=classes,
        feature_dims=(_RDF_FEATURES,) * ntypes,
    )


_MAG_TYPES = ("paper", "author", "institution", "field_of_study")
_PAPER, _AUTHOR, _INSTITUTION, _FIELD = range(4)

# A schema modelled on ogbl-biokg's: many drug-drug side-effect relations, the
# protein-protein interaction kinds, function-function, and 5 relations between
# distinct types, 51 in all. How the real 51 split among those groups is in the
# data files, not in the OGB paper; so is each relation's size, hence Zipf shares.
_BIOKG_TYPES = ("disease", "drug", "function", "protein", "sideeffect")
_DISEASE, _DRUG, _FUNCTION, _PROTEIN, _SIDEEFFECT = range(5)
_BIOKG_RELATIONS = (
    Relation("disease-protein", _DISEASE, _PROTEIN),
    Relation("drug-disease", _DRUG, _DISEASE),
    *(Relation(f"drug-drug_{k}", _DRUG, _DRUG) for k in range(38)),
    Relation("drug-protein", _DRUG, _PROTEIN),
    Relation("drug-sideeffect", _DRUG, _SIDEEFFECT),
    Relation("function-function", _FUNCTION, _FUNCTION),
    Relation("protein-function", _PROTEIN, _FUNCTION),
    *(
        Relation(f"protein-protein_{kind}", _PROTEIN, _PROTEIN)
        for kind in ("activation", "binding", "catalysis", "expression", "inhibition", "ptmod", "reaction")
    ),
)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        _rdf("aifb", nodes=7_262, edges=48_810, etypes=104, ntypes=7, labelled="Personen", classes=4),
        _rdf("mutag", nodes=27_163, edges=148_100, etypes=50, ntypes=5, labelled="d", classes=2),
        _rdf("bgs", nodes=94_806, edges=672_884, etypes=122, ntypes=27, labelled="NamedRockUnit", classes=2),
        _rdf("am", nodes=881_680, edges=5_668_682, etypes=108, ntypes=7, labelled="proxy", classes=11),
        Profile(
            name="mag",
            source="ogbn-mag (Hu et al., 2020, Open Graph Benchmark), without reverse edges",
            ntype_names=_MAG_TYPES,
            ntype_sizes=(736_389, 1_134_649, 8_740, 59_965),
            num_edges=21_111_007,
            num_etypes=4,
            relations=(
                Relation("affiliated_with", _AUTHOR, _INSTITUTION, 1_043_998),
                Relation("writes", _AUTHOR, _PAPER, 7_145_660),
                Relation("cites", _PAPER, _PAPER, 5_416_271),
                Relation("has_topic", _PAPER, _FIELD, 7_505_078),
            ),
            # ogbn-mag's task: the venue of each paper (349 classes) from 128 paper features.
            target_ntype=_PAPER,
            num_classes=349,
            feature_dims=(128, None, None, None),
        ),
        Profile(
            name="wikikg2",
            source="ogbl-wikikg2 (Hu et al., 2020, Open Graph Benchmark), training edges",
            ntype_names=("entity",),
            ntype_sizes=(2_500_604,),
            num_edges=16_109_182,
            num_etypes=535,
        ),
        Profile(
            name="fb15k",
            source=(
                "FB15k-237 (Toutanova and Chen, 2015): 14,541 entities, 237 relations, "
                "310,116 triples over all splits, with a reverse edge per triple"
            ),
            ntype_names=("entity",),
            ntype_sizes=(14_541,),
            num_edges=620_232,
            num_etypes=474,
            reverse_pairs=True,
        ),
        Profile(
            name="biokg",
            source="ogbl-biokg (Hu et al., 2020, Open Graph Benchmark), training edges",
            ntype_names=_BIOKG_TYPES,
            ntype_sizes=(10_687, 10_533, 45_085, 17_499, 9_969),
            num_edges=4_762_678,
            num_etypes=51,
            relations=_BIOKG_RELATIONS,
        ),
    )
}

# Shape of the generator, shared by every profile. A relation's mean out-degree
# per active source (and in-degree per active target) is drawn log-uniformly from
# _DEGREE_RANGE; the Zipf exponents over its ranked sources and targets from
# _SRC_SKEW and _DST_SKEW; node popularity is Pareto with shape _POPULARITY.
_DEGREE_RANGE = (1.5, 8.0)
_SRC_SKEW = (0.7, 1.1)
_DST_SKEW = (0.5, 1.0)
_POPULARITY = 1.5
_DEDUP_ROUNDS = 8


def scaled_count(count: int, scale: float) -> int:
    """``count * scale`` rounded to the nearest integer (halves round up)."""
    return int(math.floor(count * scale + 0.5))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values. (``np.unique`` hashes int64 keys and is ~50x slower.)"""
    values = np.sort(values)
    keep = np.empty(values.size, dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _zipf_ranks(rng: np.random.Generator, size: int, exponent: float, count: int) -> np.ndarray:
    """``count`` ranks in ``[0, size)`` with ``P(rank k)`` roughly ``∝ (k + 1) ** -exponent``.

    Inverse-CDF sampling of the continuous power law on ``[1, size + 1)``;
    ``exponent=0`` is uniform.
    """
    # float32 halves the cost of the powers; its 24-bit mantissa resolves ranks
    # far beyond the largest node type.
    u = rng.random(count, dtype=np.float32)
    top = np.float32(size + 1.0)
    if abs(exponent - 1.0) < 1e-9:
        x = np.power(top, u)
    else:
        a = float(1.0 - exponent)  # a Python float keeps the arithmetic in float32
        x = np.power(1.0 + u * (top**a - 1.0), 1.0 / a)
    return np.minimum(x.astype(np.int64) - 1, size - 1)


def _sorted_uniforms(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` uniform draws on ``[0, 1)``, ascending, in O(count): normalised
    partial sums of exponential gaps are distributed as sorted uniforms."""
    partial = np.cumsum(rng.standard_exponential(count + 1))
    return partial[:-1] / partial[-1]


def _isin_sorted(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(query.size, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return sorted_keys[pos] == query


class _NodeBlock:
    """The id block of one node type: popularity, and a queue of nodes to cover.

    Nodes are handled by *popularity position* (0 = most popular), so a sorted set
    of positions is already ranked. Relation subsets mix positions drawn by
    popularity with positions taken in turn from a random permutation, so that
    together they touch every node the edge budget allows (real triple stores have
    few isolated nodes).
    """

    def __init__(self, rng: np.random.Generator, start: int, size: int):
        self.start, self.size = start, size
        popularity = rng.pareto(_POPULARITY, size) + 1.0
        self.by_popularity = np.argsort(-popularity, kind="stable")
        cdf = np.cumsum(popularity[self.by_popularity])
        self.cdf = cdf / cdf[-1]
        self.cover_order = rng.permutation(size)
        self.cover_next = 0

    def ranked_subset(self, rng: np.random.Generator, want: int, fresh: int) -> np.ndarray:
        """About ``want`` global ids of this type, ``fresh`` of them not yet covered,
        most popular first."""
        if 2 * want >= self.size:
            return self.by_popularity + self.start
        taken = np.sort(self.cover_order[self.cover_next : self.cover_next + fresh])
        self.cover_next += taken.size
        # Sorted queries into a CDF whose mass sits at its start keep the binary
        # searches cache-friendly, and give sorted (= ranked) positions.
        picks = np.searchsorted(self.cdf, _sorted_uniforms(rng, want - taken.size), side="right")
        picks = np.minimum(picks, self.size - 1)
        positions = _sorted_unique(np.concatenate([taken, picks]))
        return self.by_popularity[positions] + self.start


def _relation_sizes(profile: Profile, rng: np.random.Generator, scale: float) -> np.ndarray:
    relations = profile.forward_relations
    published = [r.num_edges for r in relations]
    if all(n is not None for n in published):
        full = np.asarray(published, dtype=np.int64)
    else:
        ranks = rng.permutation(len(relations)) + 1.0
        full = _apportion(profile.num_forward_edges, ranks**-profile.zipf_exponent, minimum=1)
    if scale == 1.0:
        return full
    total = scaled_count(profile.num_forward_edges, scale)
    return _apportion(total, full.astype(np.float64), minimum=0)


def _node_sizes(profile: Profile, scale: float) -> np.ndarray:
    full = np.asarray(profile.ntype_sizes, dtype=np.int64)
    if scale == 1.0:
        return full
    total = scaled_count(profile.num_nodes, scale)
    if total < len(full):
        raise ValueError(
            f"Expected `scale` to leave at least one node per node type of {profile.name!r} "
            f"({len(full)} types), got scale={scale} giving {total} nodes"
        )
    return _apportion(total, full.astype(np.float64), minimum=1)


def _subset_sizes(
    rng: np.random.Generator, sizes: np.ndarray, src_size: np.ndarray, dst_size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How many sources and targets each relation draws its edges among."""
    low, high = np.log(_DEGREE_RANGE[0]), np.log(_DEGREE_RANGE[1])
    out_degree = np.exp(rng.uniform(low, high, sizes.size))
    in_degree = np.exp(rng.uniform(low, high, sizes.size))
    want_src = np.minimum(src_size, np.ceil(sizes / out_degree)).astype(np.int64)
    want_dst = np.minimum(dst_size, np.ceil(sizes / in_degree)).astype(np.int64)
    # Leave room for distinct pairs, twice the edges, where the node types allow.
    cramped = want_src * want_dst < 2 * sizes
    need_dst = np.ceil(2 * sizes / np.maximum(want_src, 1)).astype(np.int64)
    want_dst = np.where(cramped, np.minimum(dst_size, need_dst), want_dst)
    need_src = np.ceil(2 * sizes / np.maximum(want_dst, 1)).astype(np.int64)
    want_src = np.where(cramped, np.minimum(src_size, np.maximum(want_src, need_src)), want_src)
    return want_src, want_dst


def _fresh_quotas(wants: np.ndarray, types: np.ndarray, type_sizes: np.ndarray) -> np.ndarray:
    """Per subset, how many not-yet-covered nodes of its type it takes.

    Each type's nodes are shared among the subsets on that type in proportion to
    their sizes, never more than a subset holds.
    """
    fresh = np.zeros_like(wants)
    for t, size in enumerate(type_sizes.tolist()):
        on_type = np.flatnonzero(types == t)
        demand = int(wants[on_type].sum())
        if demand:
            fresh[on_type] = _apportion(min(size, demand), wants[on_type].astype(np.float64), minimum=0)
    return np.minimum(fresh, wants)


def _pair_keys(
    rng: np.random.Generator, count: int, num_src: int, num_dst: int, src_skew: float, dst_skew: float
) -> np.ndarray:
    """``count`` sorted keys ``src_rank * num_dst + dst_rank``, distinct where possible.

    Every rank below ``count`` appears at least once on each side (each node of
    the subsets gets an edge); the remaining endpoints follow the Zipf laws. A
    duplicate pair is redrawn; hubs saturate first, so after ``_DEDUP_ROUNDS``
    rounds the remainder is drawn uniformly, and only a relation denser than its
    subsets keeps duplicates.
    """
    def draw(m: int, s_skew: float, d_skew: float) -> np.ndarray:
        return _zipf_ranks(rng, num_src, s_skew, m) * num_dst + _zipf_ranks(rng, num_dst, d_skew, m)

    cover_src = min(num_src, count)
    cover_dst = min(num_dst, count)
    src_rank = np.concatenate([np.arange(cover_src), _zipf_ranks(rng, num_src, src_skew, count - cover_src)])
    dst_rank = np.concatenate([np.arange(cover_dst), _zipf_ranks(rng, num_dst, dst_skew, count - cover_dst)])
    keys = _sorted_unique(src_rank * num_dst + rng.permutation(dst_rank))
    for skews in [(src_skew, dst_skew)] * _DEDUP_ROUNDS + [(0.0, 0.0)] * _DEDUP_ROUNDS:
        if keys.size == count:
            return keys
        fresh = _sorted_unique(draw(count - keys.size, *skews))
        fresh = fresh[~_isin_sorted(keys, fresh)]
        keys = np.sort(np.concatenate([keys, fresh]), kind="stable")
    return np.sort(np.concatenate([keys, draw(count - keys.size, 0.0, 0.0)]), kind="stable")


def _drawn_edges(rng: np.random.Generator, blocks: list, src_types: np.ndarray, dst_types: np.ndarray,
                 rel_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sources and destinations of every relation, in relation order, from the
    profiles' laws (steps 3 and 4 of the module docstring)."""
    node_sizes = np.array([b.size for b in blocks], dtype=np.int64)
    want_src, want_dst = _subset_sizes(rng, rel_sizes, node_sizes[src_types], node_sizes[dst_types])
    fresh = _fresh_quotas(
        np.concatenate([want_src, want_dst]), np.concatenate([src_types, dst_types]), node_sizes
    )
    count_rel = len(rel_sizes)
    fresh_src, fresh_dst = fresh[:count_rel], fresh[count_rel:]
    src_skew = rng.uniform(*_SRC_SKEW, count_rel)
    dst_skew = rng.uniform(*_DST_SKEW, count_rel)

    num_edges = int(rel_sizes.sum())
    src = np.empty(num_edges, dtype=np.int64)
    dst = np.empty(num_edges, dtype=np.int64)
    offset = 0
    for r, count in enumerate(rel_sizes.tolist()):
        if count == 0:
            continue
        sources = blocks[src_types[r]].ranked_subset(rng, int(want_src[r]), int(fresh_src[r]))
        targets = blocks[dst_types[r]].ranked_subset(rng, int(want_dst[r]), int(fresh_dst[r]))
        keys = _pair_keys(rng, count, sources.size, targets.size, src_skew[r], dst_skew[r])
        src[offset : offset + count] = sources[keys // targets.size]
        dst[offset : offset + count] = targets[keys % targets.size]
        offset += count
    return src, dst


# ---- set structure (the benchmark's structure sweep) ------------------------------
_SWAP_ROUNDS = 64


def _capped_sizes(sizes: np.ndarray, caps: np.ndarray, structure: Structure, name: str) -> np.ndarray:
    """``sizes`` with none above its cap, the excess shared among the others in
    proportion to their sizes (the total is kept)."""
    total = int(sizes.sum())
    if int(caps.sum()) < total:
        raise ValueError(
            f"Expected {name!r} to fit {structure.label}: its relations hold at most "
            f"{int(caps.sum()):,} edges at that mean (repeats x the smaller end type's nodes), "
            f"{total:,} are needed; use larger repeats or a larger scale"
        )
    sizes = sizes.copy()
    while True:
        over = sizes > caps
        if not over.any():
            return sizes
        excess = int((sizes[over] - caps[over]).sum())
        sizes[over] = caps[over]
        room = sizes < caps
        sizes[room] += _apportion(excess, np.maximum(sizes[room], 1).astype(np.float64), minimum=0)


def _law_degrees(count: int, edges: int, skew: float, cap: int) -> np.ndarray:
    """``count`` degrees summing to ``edges``, each in ``[1, cap]``: one each, and the
    rest in proportion to ``(rank + 1) ** -skew`` (largest remainder); what a cap cuts
    goes to the ranks below it, in the same proportions."""
    weights = np.arange(1, count + 1, dtype=np.float64) ** -skew
    degrees = np.ones(count, dtype=np.int64)
    rest = edges - count
    free = np.ones(count, dtype=bool)
    while rest > 0:
        degrees[free] += _apportion(rest, weights[free], minimum=0)
        over = degrees > cap
        rest = int((degrees[over] - cap).sum())
        degrees[over] = cap
        free &= degrees < cap
    return degrees


def _pairs_per_relation(sizes: np.ndarray, ends: np.ndarray, repeats: float) -> np.ndarray:
    """The distinct sources (or destinations) of each relation: the profile's
    ``round(edges / repeats)`` shared in proportion to the relation sizes, at least one
    per relation with edges and at most its edges or its end type's nodes."""
    total = int(sizes.sum())
    wanted = max(1, int(math.floor(total / repeats + 0.5)))
    has_edges = sizes > 0
    pairs = np.zeros_like(sizes)
    pairs[has_edges] = _apportion(wanted, sizes[has_edges].astype(np.float64), minimum=1)
    return np.clip(pairs, np.minimum(1, sizes), np.minimum(sizes, ends))


def _distinct_destinations(rng: np.random.Generator, src: np.ndarray, dst: np.ndarray, width: int) -> bool:
    """Break repeated ``(src, dst)`` pairs in place by swapping destinations: each
    repeated edge ``(s, d)`` and a random other edge ``(s', d')`` become ``(s, d')`` and
    ``(s', d)`` where neither pair exists yet. A swap keeps every degree. Returns whether
    every pair is distinct in the end."""
    count = src.size
    for _ in range(_SWAP_ROUNDS):
        keys = src * width + dst
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        later = sorted_keys[1:] == sorted_keys[:-1]
        if not later.any():
            return True
        repeated = order[1:][later]
        others = np.setdiff1d(np.arange(count), repeated, assume_unique=True)
        if others.size == 0:
            return False
        take = min(repeated.size, others.size)
        repeated = rng.permutation(repeated)[:take]
        partners = rng.choice(others, take, replace=False)
        mine, theirs = src[repeated] * width + dst[partners], src[partners] * width + dst[repeated]
        # Neither new pair may exist already, or be made twice in this round.
        fresh = ~_isin_sorted(sorted_keys, mine) & ~_isin_sorted(sorted_keys, theirs) & (mine != theirs)
        made = np.concatenate([mine[fresh], theirs[fresh]])
        _, first, seen = np.unique(made, return_index=True, return_counts=True)
        once = np.zeros(made.size, dtype=bool)
        once[first[seen == 1]] = True
        fresh[np.flatnonzero(fresh)] &= once[: fresh.sum()] & once[fresh.sum():]
        i, j = repeated[fresh], partners[fresh]
        dst[i], dst[j] = dst[j].copy(), dst[i].copy()
    keys = np.sort(src * width + dst)
    return not (keys[1:] == keys[:-1]).any()


def _greedy_destinations(rng: np.random.Generator, out_degree: np.ndarray, in_degree: np.ndarray) -> np.ndarray:
    """Destinations for sources ``0, 1, ...`` with these degrees and every pair distinct,
    where random pairing and swaps did not get there (a relation nearly as dense as its
    sources times its destinations): each source in turn, the largest first, takes the
    destinations with the most edges left (ties at random), which succeeds whenever the
    degrees allow distinct pairs (Gale-Ryser)."""
    remaining = in_degree.astype(np.float64)
    dst = np.empty(int(out_degree.sum()), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(out_degree)[:-1]])
    for source in np.argsort(-out_degree, kind="stable"):
        degree = int(out_degree[source])
        chosen = np.argpartition(-(remaining + 0.5 * rng.random(remaining.size)), degree - 1)[:degree]
        remaining[chosen] -= 1
        dst[starts[source] : starts[source] + degree] = chosen
    return dst


def _structured_edges(rng: np.random.Generator, blocks: list, src_types: np.ndarray, dst_types: np.ndarray,
                      rel_sizes: np.ndarray, structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """Sources and destinations of every relation, in relation order, with the degrees
    of ``structure`` (see the module docstring)."""
    node_sizes = np.array([b.size for b in blocks], dtype=np.int64)
    k_src = _pairs_per_relation(rel_sizes, node_sizes[src_types], structure.repeats)
    k_dst = _pairs_per_relation(rel_sizes, node_sizes[dst_types], structure.repeats)
    srcs, dsts = [], []
    for r, count in enumerate(rel_sizes.tolist()):
        if count == 0:
            continue
        src_block, dst_block = blocks[src_types[r]], blocks[dst_types[r]]
        ks, kd = int(k_src[r]), int(k_dst[r])
        # Room for distinct (src, dst) pairs: ks * kd >= count, within the types' sizes.
        kd = min(dst_block.size, max(kd, -(-count // ks)))
        ks = min(src_block.size, max(ks, -(-count // kd)))
        # Skewed sources and even destinations: such degrees always admit distinct pairs
        # (skew on both sides does not: Zipf hubs at both ends would need repeated pairs).
        out_degree = _law_degrees(ks, count, structure.skew, cap=kd)
        in_degree = _law_degrees(kd, count, 0.0, cap=ks)
        # Popularity positions, most popular first: rank 0 is the relation's hub.
        src_rank = np.sort(rng.choice(src_block.size, ks, replace=False))
        dst_rank = np.sort(rng.choice(dst_block.size, kd, replace=False))
        src_local = np.repeat(np.arange(ks), out_degree)
        dst_local = rng.permutation(np.repeat(np.arange(kd), in_degree))
        if not _distinct_destinations(rng, src_local, dst_local, kd):
            dst_local = _greedy_destinations(rng, out_degree, in_degree)
        srcs.append(src_block.by_popularity[src_rank[src_local]] + src_block.start)
        dsts.append(dst_block.by_popularity[dst_rank[dst_local]] + dst_block.start)
    return np.concatenate(srcs), np.concatenate(dsts)


def structure_stats(graph: HeteroGraph) -> dict:
    """What a graph's structure is, measured: ``repeats``, edges per distinct
    ``(source, edge type)`` pair; ``dst_repeats``, the same per ``(destination, edge
    type)``; ``top_decile_share``, the share of edges held by the 10 % of ``(source,
    edge type)`` pairs with the most (0.1 when every pair has as many); ``duplicates``,
    edges that repeat an earlier ``(src, dst, edge type)``."""
    if graph.num_edges == 0:
        return {"repeats": 0.0, "dst_repeats": 0.0, "top_decile_share": 0.0, "duplicates": 0}
    etype = graph.etype.numpy()
    src_key = graph.src.numpy() * graph.num_etypes + etype
    counts = _run_lengths(np.sort(src_key))
    dst_pairs = _sorted_unique(graph.dst.numpy() * graph.num_etypes + etype).size
    triples = _sorted_unique(src_key * graph.num_nodes + graph.dst.numpy()).size
    top = np.sort(counts)[::-1][: max(1, math.ceil(0.1 * counts.size))]
    return {"repeats": graph.num_edges / counts.size, "dst_repeats": graph.num_edges / dst_pairs,
            "top_decile_share": float(top.sum()) / graph.num_edges, "duplicates": graph.num_edges - triples}


def _run_lengths(sorted_keys: np.ndarray) -> np.ndarray:
    """How many times each distinct value of ``sorted_keys`` occurs."""
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    return np.diff(np.append(starts, sorted_keys.size))


def generate(profile: Profile | str, scale: float = 1.0, seed: int = 0,
             structure: Structure | None = None) -> HeteroGraph:
    """Generate the synthetic graph of ``profile`` (see the module docstring).

    Args:
        profile (Profile or str): the profile, or its name in :data:`PROFILES`.
        scale (float): fraction of the published node and edge counts, in
            ``(0, 1]``. Default ``1.0`` (exact counts).
        seed (int): seed of the generator; the same ``(profile, scale, seed)``
            always gives the same graph. Default ``0``.
        structure (Structure, optional): set the mean repeats per ``(node, edge
            type)`` pair and the degree skew exactly instead of drawing degrees from
            the profile's laws (relation sizes above what the repeats allow are
            capped). Default None.

    Returns:
        HeteroGraph: ``round(num_nodes * scale)`` nodes, ``round(num_edges * scale)``
        edges (twice the rounded forward count for ``reverse_pairs`` profiles) and
        exactly ``num_etypes`` edge types, with names.
    """
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"Expected `profile` to be one of {sorted(PROFILES)} (got {profile!r})")
        profile = PROFILES[profile]
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"Expected `scale` to be a number in (0, 1] (got {scale})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Expected `seed` to be a non-negative int (got {seed!r})")
    if structure is not None and not isinstance(structure, Structure):
        raise ValueError(f"Expected `structure` to be a pigeon.data.profiles.Structure or None "
                         f"(got {type(structure).__name__})")
    # Independent streams for sizes, nodes and edges keep the scale-1 relation sizes
    # (which smaller scales are proportional to) independent of the scale.
    sequence = np.random.SeedSequence([seed, zlib.crc32(profile.name.encode())])
    size_rng, node_rng, edge_rng = (np.random.default_rng(s) for s in sequence.spawn(3))

    relations = profile.forward_relations
    rel_sizes = _relation_sizes(profile, size_rng, scale)
    node_sizes = _node_sizes(profile, scale)
    starts = np.concatenate([[0], np.cumsum(node_sizes)[:-1]])
    blocks = [_NodeBlock(node_rng, int(s), int(n)) for s, n in zip(starts, node_sizes)]

    src_types = np.array([r.src_type for r in relations])
    dst_types = np.array([r.dst_type for r in relations])
    if structure is None:
        src, dst = _drawn_edges(edge_rng, blocks, src_types, dst_types, rel_sizes)
    else:
        caps = np.floor(structure.repeats * np.minimum(node_sizes[src_types], node_sizes[dst_types]))
        rel_sizes = _capped_sizes(rel_sizes, caps.astype(np.int64), structure, profile.name)
        src, dst = _structured_edges(edge_rng, blocks, src_types, dst_types, rel_sizes, structure)
    src, dst = torch.from_numpy(src), torch.from_numpy(dst)
    etype = torch.repeat_interleave(torch.arange(len(relations), dtype=torch.int64), torch.from_numpy(rel_sizes))

    ntype = torch.repeat_interleave(
        torch.arange(len(node_sizes), dtype=torch.int64), torch.from_numpy(node_sizes)
    )
    if len(profile.ntype_names) > 1:
        names = [(profile.ntype_names[r.src_type], r.name, profile.ntype_names[r.dst_type]) for r in relations]
    else:
        names = [r.name for r in relations]
    graph = HeteroGraph(
        src,
        dst,
        etype,
        num_nodes=int(node_sizes.sum()),
        ntype=ntype,
        num_etypes=len(relations),
        num_ntypes=len(profile.ntype_names),
        etype_names=names,
        ntype_names=profile.ntype_names,
    )
    return graph.with_reverse_edges() if profile.reverse_pairs else graph


def describe(profile: Profile, graph: HeteroGraph, scale: float, seed: int) -> str:
    """A description naming the published numbers and what was generated."""
    nodes = f"{profile.num_nodes:,} nodes"
    if len(profile.ntype_names) > 1:
        parts = ", ".join(f"{n} {s:,}" for n, s in zip(profile.ntype_names, profile.ntype_sizes))
        nodes += f" in {len(profile.ntype_names)} node types ({parts})"
    edges = f"{profile.num_edges:,} edges in {profile.num_etypes} edge types"
    if all(r.num_edges is not None for r in profile.forward_relations):
        parts = "; ".join(
            f"{profile.ntype_names[r.src_type]}-{r.name}-{profile.ntype_names[r.dst_type]} {r.num_edges:,}"
            for r in profile.forward_relations
        )
        edges += f" ({parts})"
    return (
        f"Synthetic stand-in for {profile.name!r}, generated locally: NOT the real data. "
        f"Published statistics ({profile.source}): {nodes}; {edges}. "
        f"Generated at scale={scale}, seed={seed}: {graph.num_nodes:,} nodes, "
        f"{graph.num_edges:,} edges, {graph.num_etypes} edge types."
    )


# ---- planted node labels ------------------------------------------------------------
_SPLIT_SHARES = (0.6, 0.2)  # train, valid; test is the rest


@dataclass(frozen=True)
class NodeTask:
    """An entity-classification task on a graph.

    Attributes:
        target_ntype (int): the node type whose nodes carry labels.
        num_classes (int): the number of classes.
        labels (Tensor): int64, one per node of the graph, -1 for nodes without a label.
        split (dict): ``"train"``/``"valid"``/``"test"`` to int64 global node ids.
        features (tuple): per node type, a float tensor ``[nodes of the type, width]``
            whose row ``i`` belongs to the type's ``i``-th node by ascending global id,
            or None for a featureless type.
    """

    target_ntype: int
    num_classes: int
    labels: torch.Tensor
    split: dict
    features: tuple


def planted_node_task(profile: Profile | str, graph: HeteroGraph, seed: int = 0) -> NodeTask:
    """The planted features, labels and split of ``profile`` on ``graph`` (the profile's
    generated graph; see the module docstring for the teacher).

    Raises:
        ValueError: the profile has no node task (``target_ntype`` None).
    """
    if isinstance(profile, str):
        profile = PROFILES[profile]
    if profile.target_ntype is None:
        tasks = [p.name for p in PROFILES.values() if p.target_ntype is not None]
        raise ValueError(f"Expected a profile with a node classification task, one of {tasks} "
                         f"(got {profile.name!r})")
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
        [seed, zlib.crc32(profile.name.encode()), zlib.crc32(b"planted")]).generate_state(1)[0]))
    num_classes = profile.num_classes
    ntype = graph.ntype
    local = torch.empty(graph.num_nodes, dtype=torch.int64)  # a node's rank within its type
    features, projections = [], []
    for t, width in enumerate(profile.feature_dims):
        nodes = graph.nodes_of_type(t)
        local[nodes] = torch.arange(nodes.numel())
        if width is None:
            features.append(None)
            projections.append(None)
            continue
        features.append(torch.randn(nodes.numel(), width, generator=gen))
        projections.append(torch.randn(width, num_classes, generator=gen) / math.sqrt(width))
    mixing = torch.randn(graph.num_etypes, num_classes, num_classes, generator=gen) / math.sqrt(num_classes)

    # Only target nodes need scores; a message is linear in the sender's features, so
    # each (relation, sender type) sums raw features into the targets first and
    # multiplies by A_t B_r once (never an [edges, classes] tensor: ogbn-mag has 349).
    target_type = profile.target_ntype
    targets = graph.nodes_of_type(target_type)
    x_target = features[target_type]
    scores = (x_target @ projections[target_type] if x_target is not None
              else torch.zeros(targets.numel(), num_classes))
    into_target = ntype.index_select(0, graph.dst) == target_type
    degree = torch.bincount(local[graph.dst[into_target]], minlength=targets.numel()).clamp(min=1)
    sender_type = ntype.index_select(0, graph.src)
    for r in range(graph.num_etypes):
        on_relation = into_target & (graph.etype == r)
        for t, x in enumerate(features):
            if x is None:
                continue
            eids = torch.nonzero(on_relation & (sender_type == t)).flatten()
            if eids.numel() == 0:
                continue
            summed = torch.zeros(targets.numel(), x.shape[1])
            for chunk in eids.split(1 << 20):
                rows = x.index_select(0, local.index_select(0, graph.src[chunk]))
                summed.index_add_(0, local.index_select(0, graph.dst[chunk]), rows)
            scores += (summed / degree.unsqueeze(1)) @ (projections[t] @ mixing[r])

    labels = torch.full((graph.num_nodes,), -1, dtype=torch.int64)
    labels[targets] = scores.argmax(1)
    order = targets[torch.randperm(targets.numel(), generator=gen)]
    num_train = int(_SPLIT_SHARES[0] * targets.numel())
    num_valid = int(_SPLIT_SHARES[1] * targets.numel())
    split = {"train": order[:num_train], "valid": order[num_train:num_train + num_valid],
             "test": order[num_train + num_valid:]}
    return NodeTask(profile.target_ntype, num_classes, labels, split, tuple(features))
