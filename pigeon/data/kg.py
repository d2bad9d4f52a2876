"""Small knowledge graphs read from TSV triple files, and inverse relations.

Kinships, UMLS and Nations ship inside the PyKEEN wheel as
``pykeen/datasets/<name>/{train,valid,test}.txt``, one ``head<TAB>relation<TAB>tail``
triple a line. We only read those files: PyKEEN is installed with ``--no-deps``
(``make setup`` does it) and never imported, so its folder is found through
:func:`importlib.util.find_spec`, which locates a top-level package without
executing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

import torch

from pigeon.data.graph import HeteroGraph

__all__ = ["KG_NAMES", "SPLITS", "KnowledgeGraph", "pykeen_folder", "read_triples", "load_kg"]

KG_NAMES = ("kinships", "umls", "nations")
SPLITS = ("train", "valid", "test")


class KnowledgeGraph(NamedTuple):
    """A knowledge graph with its splits.

    ``graph`` holds the training triples (``src`` = head, ``dst`` = tail, ``etype`` =
    relation) over every entity and relation of any split. ``train``, ``valid`` and
    ``test`` are int64 tensors of shape ``[n, 3]`` with rows ``(head, relation,
    tail)``. Ids follow the sorted names.
    """

    graph: HeteroGraph
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    entity_names: tuple[str, ...]
    relation_names: tuple[str, ...]
    folder: Path


def pykeen_folder(name: str) -> Path:
    """The folder of PyKEEN's copy of the ``name`` triples (PyKEEN is not imported)."""
    if name not in KG_NAMES:
        raise ValueError(f"Expected `name` to be one of {list(KG_NAMES)} (got {name!r})")
    spec = importlib.util.find_spec("pykeen")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The {name!r} triples ship with the PyKEEN wheel, which is not installed in this "
            f"environment. Install it without its dependencies (we only read its data files): "
            f"`pip install --no-deps pykeen`, which `make setup` runs; or pass `root=` a folder "
            f"holding train.txt, valid.txt and test.txt."
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "datasets" / name
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"PyKEEN is installed at {list(spec.submodule_search_locations)} but has no "
        f"datasets/{name} folder; reinstall it with `pip install --no-deps pykeen` (`make setup`)"
    )


def read_triples(path: Path) -> list[tuple[str, str, str]]:
    """The ``head<TAB>relation<TAB>tail`` triples of a TSV file; blank lines are skipped."""
    triples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise ValueError(
                    f"Expected 3 tab-separated fields (head, relation, tail) at {path}:{number} "
                    f"(got {len(fields)}: {line[:80]!r})"
                )
            triples.append((fields[0], fields[1], fields[2]))
    return triples


def load_kg(name: str, root: str | Path | None = None) -> KnowledgeGraph:
    """Read a knowledge graph's three splits and build the training graph.

    Args:
        name (str): one of :data:`KG_NAMES`; with ``root`` any label.
        root (str or Path, optional): a folder holding ``train.txt``, ``valid.txt``
            and ``test.txt``. Defaults to PyKEEN's copy of ``name``.
    """
    if root is None:
        folder = pykeen_folder(name)
    else:
        folder = Path(root)
        missing = [f"{s}.txt" for s in SPLITS if not (folder / f"{s}.txt").is_file()]
        if missing:
            raise FileNotFoundError(
                f"Expected `root` to be a folder holding train.txt, valid.txt and test.txt "
                f"(got {str(folder)!r}, missing {missing})"
            )
    splits = {s: read_triples(folder / f"{s}.txt") for s in SPLITS}
    entities = sorted({e for rows in splits.values() for h, _, t in rows for e in (h, t)})
    relations = sorted({r for rows in splits.values() for _, r, _ in rows})
    entity_id = {e: i for i, e in enumerate(entities)}
    relation_id = {r: i for i, r in enumerate(relations)}
    tensors = {
        s: torch.tensor(
            [(entity_id[h], relation_id[r], entity_id[t]) for h, r, t in rows], dtype=torch.int64
        ).reshape(-1, 3)
        for s, rows in splits.items()
    }
    train = tensors["train"]
    graph = HeteroGraph(
        train[:, 0],
        train[:, 2],
        train[:, 1],
        num_nodes=len(entities),
        num_etypes=max(len(relations), 1),
        etype_names=relations if relations else None,
        ntype_names=("entity",),
    )
    return KnowledgeGraph(
        graph, tensors["train"], tensors["valid"], tensors["test"], tuple(entities), tuple(relations), folder
    )
