"""One entry point for every graph Pigeon benchmarks on: :func:`load`.

Three kinds of dataset, told apart by :class:`Source`:

* **Real knowledge graphs** (``kinships``, ``umls``, ``nations``) read from the
  TSV files PyKEEN ships (:mod:`pigeon.data.kg`).
* **Synthetic profiles** (``aifb``, ``mutag``, ``bgs``, ``am``, ``mag``, ``wikikg2``,
  ``fb15k``, ``biokg``): random graphs generated locally to match the published
  statistics of the RGNN benchmark graphs; *not the real data*
  (:mod:`pigeon.data.profiles`).
* **Real OGB datasets** (``ogbn-mag``, ``ogbl-biokg``, ``ogbl-wikikg2``) read through
  the ``ogb`` package from files already under ``root``; never downloaded
  (:mod:`pigeon.data.ogb`).

Example::

    ds = load("fb15k", scale=0.1, seed=3)     # synthetic, 10 % of FB15k-237's size
    ds = load("umls")                          # real, with train/valid/test triples
    ds = load("mag", reverse=True)             # ogbn-mag's shape with reverse edges
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import os
from pathlib import Path
from typing import Mapping

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.data.kg import KG_NAMES, load_kg
from pigeon.data.ogb import OGB_NAMES, load_ogb
from pigeon.data.profiles import PROFILES, describe, generate, planted_node_task

__all__ = ["Dataset", "Source", "load", "dataset_names", "source_of"]


class Source(enum.Enum):
    """Where a dataset's graph comes from."""

    KG = "real knowledge graph (PyKEEN's TSV files)"
    PROFILE = "synthetic profile, generated locally"
    OGB = "real OGB dataset, read from disk"


_SOURCES: dict[str, Source] = {
    **{name: Source.KG for name in KG_NAMES},
    **{name: Source.PROFILE for name in PROFILES},
    **{name: Source.OGB for name in OGB_NAMES},
}


def dataset_names() -> tuple[str, ...]:
    """Every name :func:`load` accepts."""
    return tuple(_SOURCES)


def source_of(name: str) -> Source:
    """The :class:`Source` of dataset ``name``."""
    return _SOURCES[_check_name(name)]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset.

    Attributes:
        name (str): the registry name.
        graph (HeteroGraph): the message-passing graph (for knowledge graphs, the
            training triples; with ``reverse=True``, plus reverse relations).
        synthetic (bool): ``True`` for generated stand-ins, ``False`` for real data.
        description (str): where the data comes from, with the published numbers
            for synthetic profiles.
        train, valid, test (Tensor, optional): int64 ``[n, 3]`` rows ``(head,
            relation, tail)`` in global ids, for knowledge graphs and OGB link
            datasets. Relation ids are those of the forward relations.
        entity_names, relation_names (tuple of str, optional): names by id, for the
            knowledge graphs (``relation_names`` lists the forward relations only).
        negatives (mapping, optional): OGB's evaluation candidates,
            ``negatives[split]["head_neg" | "tail_neg"]`` of shape ``[n, k]``.
        node_labels (Tensor, optional): one int64 label per node, -1 where none
            (ogbn-mag).
        node_split (mapping, optional): ``"train"``/``"valid"``/``"test"`` to global
            node ids (ogbn-mag, and profiles loaded with ``node_task=True``).
        node_features (tuple, optional): per node type, a float tensor whose row ``i``
            belongs to the type's ``i``-th node by ascending global id, or None for a
            featureless type (ogbn-mag's paper features; planted ones for profiles).
        target_ntype (int, optional): the node type that ``node_labels`` label.
        num_classes (int, optional): the number of node classes.
    """

    name: str
    graph: HeteroGraph
    synthetic: bool
    description: str
    train: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    test: torch.Tensor | None = None
    entity_names: tuple[str, ...] | None = None
    relation_names: tuple[str, ...] | None = None
    negatives: Mapping[str, Mapping[str, torch.Tensor]] | None = None
    node_labels: torch.Tensor | None = None
    node_split: Mapping[str, torch.Tensor] | None = None
    node_features: tuple | None = None
    target_ntype: int | None = None
    num_classes: int | None = None

    def __repr__(self) -> str:
        kind = "synthetic" if self.synthetic else "real"
        return f"Dataset({self.name!r}, {kind}, {self.graph!r})"


def _check_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in _SOURCES:
        raise ValueError(f"Expected `name` to be one of {list(_SOURCES)} (got {name!r})")
    return name.lower()


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"Expected `scale` to be a number in (0, 1] (got {type(scale).__name__}: {scale!r})")
    scale = float(scale)
    if not (math.isfinite(scale) and 0.0 < scale <= 1.0):
        raise ValueError(f"Expected `scale` to be a number in (0, 1] (got {scale})")
    return scale


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"Expected `seed` to be a non-negative int (got {type(seed).__name__}: {seed!r})")
    return int(seed)


def load(
    name: str,
    *,
    scale: float = 1.0,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    reverse: bool = False,
    node_task: bool = False,
) -> Dataset:
    """Load dataset ``name``.

    Args:
        name (str): one of :func:`dataset_names` (case-insensitive).
        scale (float): for synthetic profiles, the fraction of the published node
            and edge counts to generate, in ``(0, 1]``; counts are exact at 1 and
            rounded below. Real datasets accept only ``1.0``. Default ``1.0``.
        seed (int): seed of a synthetic profile's generator (same seed, same graph).
            Ignored by real datasets. Default ``0``.
        root (str or PathLike, optional): for ``kinships``/``umls``/``nations``, a
            folder with ``train.txt``, ``valid.txt``, ``test.txt`` instead of
            PyKEEN's copy; for OGB datasets, the folder holding e.g. ``ogbl_biokg/``
            (required). Synthetic profiles take none.
        reverse (bool): add a reverse relation per relation (edge ``(u, v, r)``
            gains ``(v, u, r + R)``), as RGNN papers do for ogbn-mag and knowledge
            graphs. Profiles whose published counts already include reverse edges
            (``aifb``, ``mutag``, ``bgs``, ``am``, ``fb15k``) refuse it. Default
            ``False``.
        node_task (bool): for the synthetic profiles with an entity-classification
            task (``aifb``, ``mutag``, ``bgs``, ``am``, ``mag``), plant features, labels
            of the target node type and a random split on the returned graph
            (:func:`pigeon.data.profiles.planted_node_task`; *not* the real labels).
            ogbn-mag always has its real ones. Default ``False``.

    Returns:
        Dataset: the graph and, where the source has them, splits and names.

    Raises:
        ValueError: an unknown ``name`` or an argument out of range.
        FileNotFoundError: real data that is not on disk (nothing is downloaded).
    """
    name = _check_name(name)
    scale = _check_scale(scale)
    seed = _check_seed(seed)
    if not isinstance(reverse, bool):
        raise ValueError(f"Expected `reverse` to be a bool (got {type(reverse).__name__}: {reverse!r})")
    source = _SOURCES[name]
    if source is not Source.PROFILE and scale != 1.0:
        raise ValueError(
            f"Expected `scale` to be 1.0 for the real dataset {name!r} (got {scale}); "
            f"only synthetic profiles ({', '.join(PROFILES)}) can be scaled"
        )

    if not isinstance(node_task, bool):
        raise ValueError(f"Expected `node_task` to be a bool (got {type(node_task).__name__}: {node_task!r})")
    if node_task and (source is not Source.PROFILE or PROFILES[name].target_ntype is None):
        tasks = [p.name for p in PROFILES.values() if p.target_ntype is not None]
        raise ValueError(f"Expected `node_task=True` only for a profile with planted labels, one of {tasks} "
                         f"(got {name!r}{'; ogbn-mag has its real labels' if name == 'ogbn-mag' else ''})")

    if source is Source.PROFILE:
        dataset = _load_profile(name, scale, seed, root, reverse)
        if node_task:
            dataset = _with_planted_task(dataset, seed)
    elif source is Source.KG:
        dataset = _load_kg(name, root)
    else:
        dataset = _load_ogb(name, root)
    if reverse and source is not Source.PROFILE:
        dataset = _with_graph(dataset, dataset.graph.with_reverse_edges(), "reverse relations added")
    return dataset


def _with_graph(dataset: Dataset, graph: HeteroGraph, note: str) -> Dataset:
    return dataclasses.replace(dataset, graph=graph, description=f"{dataset.description} Graph: {note}.")


def _load_profile(name: str, scale: float, seed: int, root, reverse: bool) -> Dataset:
    profile = PROFILES[name]
    if root is not None:
        raise ValueError(
            f"Expected no `root` for the synthetic profile {name!r}: it is generated, not read "
            f"(got root={root!r})"
        )
    if reverse and profile.reverse_pairs:
        raise ValueError(
            f"Expected `reverse=False` for {name!r}: its published counts already include a "
            f"reverse edge per triple ({profile.num_etypes} edge types = 2 x "
            f"{profile.num_etypes // 2} relations)"
        )
    graph = generate(profile, scale, seed)
    description = describe(profile, graph, scale, seed)
    if reverse:
        graph = graph.with_reverse_edges()
        description += (
            f" With reverse edges (reverse=True): {graph.num_edges:,} edges, "
            f"{graph.num_etypes} edge types."
        )
    return Dataset(name=name, graph=graph, synthetic=True, description=description)


def _with_planted_task(dataset: Dataset, seed: int) -> Dataset:
    task = planted_node_task(dataset.name, dataset.graph, seed)
    counts = torch.bincount(task.labels[task.split["test"]], minlength=task.num_classes)
    note = (f" Planted node task (not the real labels): {task.num_classes} classes on node type "
            f"{dataset.graph.ntype_names[task.target_ntype]!r} from a random relational teacher, "
            f"{', '.join(f'{len(v):,} {k}' for k, v in task.split.items())} nodes; the commonest class "
            f"is {float(counts.max()) / max(int(counts.sum()), 1):.1%} of test.")
    return dataclasses.replace(dataset, description=dataset.description + note, node_labels=task.labels,
                               node_split=task.split, node_features=task.features,
                               target_ntype=task.target_ntype, num_classes=task.num_classes)


def _load_kg(name: str, root) -> Dataset:
    kg = load_kg(name, root)
    description = (
        f"{name}: real knowledge graph read from {kg.folder}: {len(kg.entity_names)} entities, "
        f"{len(kg.relation_names)} relations, {kg.train.shape[0]}/{kg.valid.shape[0]}/"
        f"{kg.test.shape[0]} train/valid/test triples; the graph holds the training triples."
    )
    return Dataset(
        name=name,
        graph=kg.graph,
        synthetic=False,
        description=description,
        train=kg.train,
        valid=kg.valid,
        test=kg.test,
        entity_names=kg.entity_names,
        relation_names=kg.relation_names,
    )


def _load_ogb(name: str, root) -> Dataset:
    data = load_ogb(name, Path(root) if root is not None else None)
    graph = data.graph
    description = (
        f"{name}: real OGB data read from {data.folder} with the ogb package's loader: "
        f"{graph.num_nodes:,} nodes in {graph.num_ntypes} node types, {graph.num_edges:,} edges, "
        f"{graph.num_etypes} edge types."
    )
    return Dataset(
        name=name,
        graph=graph,
        synthetic=False,
        description=description,
        train=data.train,
        valid=data.valid,
        test=data.test,
        negatives=data.negatives,
        node_labels=data.node_labels,
        node_split=data.node_split,
        node_features=data.node_features,
        target_ntype=data.target_ntype,
        num_classes=data.num_classes,
    )
