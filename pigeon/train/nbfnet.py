"""NBFNet link prediction: training and filtered ranking evaluation (``pigeon train nbfnet``).

Training follows the NBFNet paper's knowledge-graph recipe. Each batch of training
triples ``(h, r, t)`` becomes one query per triple: a tail query ``(h, r, ?)`` for the
first half and, for the second half, the head query rewritten as the inverse tail
query ``(t, r + R, ?)`` (the model knows ``2R`` relations). The triples of the batch
are removed from the fact graph for that step, so the model cannot read the answer
off a direct edge. One forward pass scores every node as the answer; the loss is
binary cross-entropy over the true answer and ``num_negative`` sampled wrong
answers (never a true one: the training triples filter them), the negatives
weighted by a softmax of their own scores (self-adversarial weighting, Sun et al.
2019), so the hardest negatives count most.

Evaluation ranks the true answer of every valid/test query, tail and head, against
the candidates: all entities minus the other true answers of the query in any split
(the *filtered* setting), or the dataset's own candidates when it ships them (OGB).
A rank counts ties as half (the mean of the optimistic and the pessimistic rank),
which is how OGB's ``Evaluator`` computes it; the tests check the two agree.

Data-parallel training (``--nproc N`` or torchrun, :mod:`pigeon.train.distributed`), as
the NBFNet paper trained on 4 GPUs: every rank draws the epoch's order of training
triples from the same seed and takes an equal shard of it (``DistributedSampler``'s
rule), so each step every rank scores its own batch of queries and all take the same
number of steps; the model is wrapped in ``DistributedDataParallel``; negatives are
drawn per rank; evaluation splits the queries among the ranks and sums the metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pigeon.arguments import (UsageError, existing_folder, named_by, one_name, positive_float, positive_int,
                              usage_error)
from pigeon.data.graph import HeteroGraph
from pigeon.train.common import (
    PRECISIONS, CheckpointError, Precision, add_common_arguments, add_precision_argument, progress, resume_from,
    save_checkpoint, start_run, write_report,
)
from pigeon.train.distributed import (
    DistContext, close_distributed, equal_shard, init_distributed, launch, threads_per_rank,
)

__all__ = ["NBFNetConfig", "LinkData", "load_link_data", "TripleFilter", "EdgeRemover",
           "rank_metrics", "evaluate", "train_nbfnet", "add_parsers"]

BACKENDS = ("torch", "cpu", "triton", "auto")
HITS = (1, 3, 10)


@dataclass
class NBFNetConfig:
    """Everything that decides a training run (saved in checkpoints and the JSON report).

    The defaults are the NBFNet paper's knowledge-graph setting scaled to a 2-core CPU:
    6 layers of dimension 32, DistMult messages, PNA aggregation, query-dependent
    relations, Adam at 5e-3, 32 self-adversarial negatives at temperature 0.5.
    """

    dataset: str = "umls"
    root: str | None = None
    dim: int = 32
    num_layers: int = 6
    message: str = "distmult"
    aggregate: str = "pna"
    dependent: bool = True
    batch_size: int = 32
    num_negative: int = 32
    adversarial_temperature: float = 0.5
    lr: float = 5e-3
    epochs: int = 4
    time_budget_s: float | None = None
    eval_batch_size: int = 64
    remove_batch_edges: bool = True
    backend: str = "auto"
    nproc: int = 1
    dist_timeout_s: float = 300.0
    precision: str = "fp32"
    seed: int = 0
    threads: int | None = None
    extra: dict = field(default_factory=dict)

    def check(self) -> "NBFNetConfig":
        positive = {"dim": self.dim, "num_layers": self.num_layers, "batch_size": self.batch_size,
                    "num_negative": self.num_negative, "epochs": self.epochs,
                    "eval_batch_size": self.eval_batch_size, "nproc": self.nproc}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int (got {value!r})")
        for name, value in (("lr", self.lr), ("adversarial_temperature", self.adversarial_temperature)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"Expected `{name}` to be a positive number (got {value!r})")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"Expected `time_budget_s` to be a positive number of seconds or None "
                             f"(got {self.time_budget_s!r})")
        if self.backend not in BACKENDS:
            raise ValueError(f"Expected `backend` to be one of {list(BACKENDS)} (got {self.backend!r})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"Expected `precision` to be one of {list(PRECISIONS)} (got {self.precision!r})")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"Expected `threads` to be a positive int or None (got {self.threads!r})")
        return self


# -- data ---------------------------------------------------------------------------------

@dataclass
class LinkData:
    """A link-prediction dataset: the fact graph (training triples), the ``[n, 3]``
    ``(head, relation, tail)`` splits and, for OGB, the evaluation candidates."""

    name: str
    graph: HeteroGraph
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    num_relations: int
    negatives: dict | None = None

    @property
    def num_nodes(self) -> int:
        return self.graph.num_nodes


def load_link_data(name: str, root=None) -> LinkData:
    """``pigeon.data.load(name, root=root)`` as :class:`LinkData`; ``name`` must be a
    dataset with triples (``umls``, ``kinships``, ``nations``, ``ogbl-biokg``, ...)."""
    from pigeon.data import load

    dataset = load(name, root=root)
    if dataset.train is None or dataset.valid is None or dataset.test is None:
        raise ValueError(f"Expected `dataset` to be a link-prediction dataset with train/valid/test triples "
                         f"(got {name!r}, which has none)")
    num_relations = max(dataset.graph.num_etypes,
                        1 + max(int(s[:, 1].max()) for s in (dataset.train, dataset.valid, dataset.test)
                                if s.numel()))
    return LinkData(name, dataset.graph, dataset.train, dataset.valid, dataset.test, num_relations,
                    dataset.negatives)


def _pair_keys(heads: torch.Tensor, relations: torch.Tensor, num_relations: int) -> torch.Tensor:
    return heads * num_relations + relations


class TripleFilter:
    """The true answers of queries ``(node, relation)`` over ``2R`` relations (a triple
    ``(h, r, t)`` answers ``(h, r)`` with ``t`` and ``(t, r + R)`` with ``h``): a sorted
    table of query keys with the answers of each, for masking candidates."""

    def __init__(self, triples: torch.Tensor, num_relations: int, num_nodes: int):
        h, r, t = triples.unbind(1)
        both = 2 * num_relations
        keys = torch.cat([_pair_keys(h, r, both), _pair_keys(t, r + num_relations, both)])
        answers = torch.cat([t, h])
        order = torch.argsort(keys * num_nodes + answers)
        self.keys, self.answers = keys[order], answers[order]
        self.num_relations, self.num_nodes = both, num_nodes

    def mask(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """``[batch, num_nodes]`` booleans: True where the node is a true answer."""
        query = _pair_keys(heads, relations, self.num_relations)
        start = torch.searchsorted(self.keys, query, side="left")
        end = torch.searchsorted(self.keys, query, side="right")
        counts = end - start
        rows = torch.repeat_interleave(torch.arange(query.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        cols = self.answers[torch.repeat_interleave(start, counts) + offsets]
        mask = torch.zeros(query.numel(), self.num_nodes, dtype=torch.bool)
        mask[rows, cols] = True
        return mask


class EdgeRemover:
    """The fact graph without the edges of some triples (every copy of each), for
    training steps that must not see their own answers."""

    def __init__(self, graph: HeteroGraph, num_relations: int):
        self.graph, self.num_relations = graph, num_relations
        self.keys = (graph.src * num_relations + graph.etype) * graph.num_nodes + graph.dst

    def without(self, triples: torch.Tensor) -> HeteroGraph:
        g = self.graph
        h, r, t = triples.unbind(1)
        drop = torch.isin(self.keys, (h * self.num_relations + r) * g.num_nodes + t)
        keep = ~drop
        return HeteroGraph(g.src[keep], g.dst[keep], g.etype[keep], num_nodes=g.num_nodes, ntype=g.ntype,
                           num_etypes=g.num_etypes, num_ntypes=g.num_ntypes)


def as_queries(triples: torch.Tensor, num_relations: int, head_from: int):
    """Queries ``(node, relation)`` and answers for ``triples``: tail queries for rows
    before ``head_from``, inverse tail queries (head prediction) from there on."""
    h, r, t = triples.unbind(1)
    inverse = torch.arange(triples.shape[0]) >= head_from
    nodes = torch.where(inverse, t, h)
    relations = torch.where(inverse, r + num_relations, r)
    answers = torch.where(inverse, h, t)
    return nodes, relations, answers


# -- metrics ------------------------------------------------------------------------------

def rank_metrics(positive: torch.Tensor, negative: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-query rank of ``positive[i]`` among ``negative[i, :]`` (``-inf`` entries are
    not candidates): ``1 + #{greater} + #{equal} / 2``, OGB's tie rule. Returns the
    per-query ``rank``, reciprocal rank and hits@k indicators."""
    positive = positive.reshape(-1, 1)
    greater = (negative > positive).sum(1).double()
    equal = (negative == positive).sum(1).double()
    optimistic, pessimistic = greater + 1, greater + equal + 1
    rank = (optimistic + pessimistic) / 2
    out = {"rank": rank, "mrr": 1.0 / rank}
    for k in HITS:
        out[f"hits@{k}"] = (rank <= k).double()
    return out


def _summarise(parts: list[dict[str, torch.Tensor]], ctx: DistContext) -> dict[str, float]:
    """Means over the queries of every rank (sums and counts added over the ranks)."""
    keys = ["mrr", *(f"hits@{k}" for k in HITS), "rank"]
    sums = [sum(float(p[key].sum()) for p in parts) for key in keys]
    queries = sum(int(p["rank"].numel()) for p in parts)
    *sums, queries = ctx.sum(sums + [float(queries)])
    means = {key: value / max(queries, 1) for key, value in zip(keys, sums)}
    return {"mrr": means["mrr"], **{f"hits@{k}": means[f"hits@{k}"] for k in HITS}, "mean_rank": means["rank"],
            "queries": int(queries)}


@torch.no_grad()
def evaluate(model, data: LinkData, split: str, *, known: TripleFilter | None = None, batch_size: int = 64,
             show_progress: bool = False, ctx: DistContext | None = None,
             precision: Precision | None = None) -> dict[str, float]:
    """Filtered MRR, hits@1/3/10 and mean rank of ``split``'s tail and head queries.

    Without OGB candidates every entity competes except the query's other true answers
    (``known``, built from all splits when None); with them (``data.negatives``) the
    answer competes against the dataset's ``head_neg``/``tail_neg`` rows, as OGB's
    ``Evaluator`` does. Under ``ctx`` each rank ranks a contiguous share of the triples
    and the sums are added over the ranks. The model scores under ``precision``'s
    autocast (default: float32).
    """
    precision = precision or Precision()
    triples = {"valid": data.valid, "test": data.test, "train": data.train}.get(split)
    if triples is None:
        raise ValueError(f"Expected `split` to be 'valid', 'test' or 'train' (got {split!r})")
    candidates = (data.negatives or {}).get(split)
    if candidates is None and known is None:
        known = TripleFilter(torch.cat([data.train, data.valid, data.test]), data.num_relations, data.num_nodes)
    model.eval()
    device = model.query.weight.device
    graph = data.graph.to(device)
    ctx = ctx or DistContext()
    first, last = (triples.shape[0] * r // ctx.world_size for r in (ctx.rank, ctx.rank + 1))
    parts = []
    starts = range(first, last, batch_size)
    for direction in ("tail", "head"):
        for start in progress(starts, desc=f"{split} {direction}s", enabled=show_progress):
            rows = triples[start:min(start + batch_size, last)]
            nodes, relations, answers = as_queries(rows, data.num_relations, 0 if direction == "head" else len(rows))
            with precision.autocast():
                scores = model(graph, nodes.to(device), relations.to(device))
            scores = scores.float().cpu()
            positive = scores.gather(1, answers.view(-1, 1))
            if candidates is None:
                negative = scores.masked_fill(known.mask(nodes, relations), -math.inf)
            else:
                chosen = candidates[f"{direction}_neg"][start:start + rows.shape[0]]
                negative = scores.gather(1, chosen)
            parts.append(rank_metrics(positive, negative))
    return _summarise(parts, ctx)


# -- training -----------------------------------------------------------------------------

def adversarial_loss(scores: torch.Tensor, answers: torch.Tensor, true_mask: torch.Tensor, num_negative: int,
                     temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Binary cross-entropy of the answer (label 1) and ``num_negative`` sampled wrong
    answers (label 0, drawn uniformly among the nodes ``true_mask`` leaves), the
    negatives weighted by ``softmax(score / temperature)`` (no gradient through the
    weights); the positive and the negatives weigh half each."""
    draw = torch.rand(scores.shape, generator=generator).masked_fill(true_mask, -1.0)
    available = int((~true_mask).sum(1).min())
    if available < 1:
        raise ValueError("Every node is a true answer of some training query: no negative can be sampled")
    negatives = draw.topk(min(num_negative, available), dim=1).indices.to(scores.device)
    positive = scores.gather(1, answers.view(-1, 1).to(scores.device))
    negative = scores.gather(1, negatives)
    weights = torch.softmax(negative.detach() / temperature, dim=1)
    loss_pos = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive), reduction="none").squeeze(1)
    loss_neg = (F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative), reduction="none")
                * weights).sum(1)
    return ((loss_pos + loss_neg) / 2).mean()


def build_model(config: NBFNetConfig, num_relations: int):
    """``pigeon.nn.NBFNet`` for ``config``."""
    import pigeon.nn as pnn

    return pnn.NBFNet(num_relations, config.dim, config.num_layers, message=config.message,
                      aggregate=config.aggregate, dependent=config.dependent, backend=config.backend)


def train_nbfnet(config: NBFNetConfig | None = None, *, data: LinkData | None = None, checkpoint=None,
                 resume=None, json_path=None, show_progress: bool = True, log=print, **overrides) -> dict[str, Any]:
    """Train NBFNet on ``config.dataset`` and evaluate it (see the module docstring).

    Each epoch ends with a validation pass; the model of the best validation MRR is
    kept and evaluated on test at the end. ``time_budget_s`` stops training early (at
    a step boundary; the epoch's validation still runs).

    Args:
        config (NBFNetConfig, optional): the run's settings; keyword ``overrides``
            replace its fields (``train_nbfnet(dataset="kinships", epochs=3)``).
            ``nproc > 1`` spawns that many data-parallel ranks; under torchrun this
            process is one rank.
        data (LinkData, optional): the dataset, instead of loading ``config.dataset``.
        checkpoint (path, optional): saved by rank 0 after every epoch (model,
            optimizer, best model, history, config).
        resume (path, optional): a checkpoint to continue from.
        json_path (path, optional): where rank 0 writes the final metrics.
        show_progress (bool): progress bars on stderr (rank 0). Default: True.
        log (callable): where rank 0's per-epoch lines go. Default: ``print``.

    Returns ``{"valid": {...}, "test": {...}, "seconds": ..., "epochs": ..., "history":
    [...], "config": {...}, "world_size": ..., "steps": ...}`` with MRR, hits@1/3/10 and
    mean rank per split (None on torchrun ranks other than 0).
    """
    config = NBFNetConfig(**{**asdict(config or NBFNetConfig()), **overrides}).check()
    payload = {"config": config, "data": data, "checkpoint": checkpoint, "resume": resume, "json_path": json_path,
               "show_progress": show_progress, "log": log if config.nproc == 1 else print}
    return launch(_nbfnet_rank, payload, config.nproc)


def _nbfnet_rank(payload: dict) -> dict[str, Any] | None:
    config: NBFNetConfig = payload["config"]
    ctx = init_distributed(timeout_s=config.dist_timeout_s)
    try:
        return train_nbfnet_rank(config, ctx, payload)
    finally:
        close_distributed()


def train_nbfnet_rank(config: NBFNetConfig, ctx: DistContext, payload: dict) -> dict[str, Any] | None:
    """One rank's part of a run, in the process group ``ctx`` describes: ``payload`` holds
    :func:`train_nbfnet`'s ``data``, ``checkpoint``, ``resume``, ``json_path``,
    ``show_progress`` and ``log``. Returns the report on rank 0, None elsewhere."""
    log = payload["log"] if ctx.is_main else (lambda *_: None)
    show_progress = payload["show_progress"] and ctx.is_main
    checkpoint, resume = payload["checkpoint"], payload["resume"]
    if config.threads is None and ctx.distributed:
        torch.set_num_threads(threads_per_rank(ctx.local_world_size))
    generator = start_run(config)
    # One order of the training triples for every rank; negatives drawn per rank.
    order_generator = generator
    if ctx.distributed:
        order_generator = torch.Generator().manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed * 7919 + ctx.rank + 1)
    data = payload["data"] or load_link_data(config.dataset, config.root)
    model = build_model(config, data.num_relations)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    precision = Precision(config.precision, model.query.weight.device)
    known_train = TripleFilter(data.train, data.num_relations, data.num_nodes)
    known_all = TripleFilter(torch.cat([data.train, data.valid, data.test]), data.num_relations, data.num_nodes)
    remover = EdgeRemover(data.graph, data.graph.num_etypes)

    first_epoch, history, best, elapsed, steps = 0, [], None, 0.0, 0
    if resume is not None:
        state = resume_from(resume, generator, ("epoch", "history", "best", "seconds"), model=model,
                            optimizer=optimizer)
        precision.load_state_dict(state.get("scaler", {}))
        if ctx.distributed:
            order_generator.set_state(state["order_generator"])
        first_epoch, history, best, elapsed = state["epoch"], state["history"], state["best"], state["seconds"]
        steps = state.get("steps", sum(h["steps"] for h in history))
        log(f"resumed from {resume} after epoch {first_epoch}")
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model)
    else:
        trained = model

    log(f"NBFNet on {data.name}: {data.num_nodes} entities, {data.num_relations} relations, "
        f"{data.train.shape[0]} / {data.valid.shape[0]} / {data.test.shape[0]} triples; "
        f"{config.backend} backend, {config.precision}, {ctx.world_size} rank(s) x {torch.get_num_threads()} threads")
    started = time.perf_counter() - elapsed
    out_of_time = False
    for epoch in range(first_epoch, config.epochs):
        trained.train()
        order = equal_shard(torch.randperm(data.train.shape[0], generator=order_generator), ctx)
        starts = range(0, order.numel(), config.batch_size)
        total, epoch_steps = 0.0, 0
        bar = progress(starts, desc=f"epoch {epoch + 1}/{config.epochs}", enabled=show_progress)
        for start in bar:
            batch = data.train[order[start:start + config.batch_size]]
            nodes, relations, answers = as_queries(batch, data.num_relations, head_from=(batch.shape[0] + 1) // 2)
            graph = remover.without(batch) if config.remove_batch_edges else data.graph
            with precision.autocast():
                scores = trained(graph, nodes, relations)
            loss = adversarial_loss(scores.float(), answers, known_train.mask(nodes, relations), config.num_negative,
                                    config.adversarial_temperature, generator)
            optimizer.zero_grad()
            precision.step(loss, optimizer)
            total, epoch_steps, steps = total + loss.item(), epoch_steps + 1, steps + 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total / epoch_steps:.4f}")
            # Every rank stops at the same step: rank 0's clock decides for all.
            if config.time_budget_s is not None:
                over = time.perf_counter() - started > config.time_budget_s
                if ctx.sum([float(over and ctx.is_main)])[0] > 0:
                    out_of_time = True
                    break
        loss_sum, loss_steps = ctx.sum([total, epoch_steps])
        valid = evaluate(model, data, "valid", known=known_all, batch_size=config.eval_batch_size,
                         show_progress=show_progress, ctx=ctx, precision=precision)
        seconds = time.perf_counter() - started
        mean_loss = loss_sum / max(loss_steps, 1)
        history.append({"epoch": epoch + 1, "loss": mean_loss, "steps": epoch_steps, "valid": valid,
                        "seconds": seconds})
        log(f"epoch {epoch + 1}: loss {mean_loss:.4f}, valid MRR {valid['mrr']:.4f}, "
            f"hits@1 {valid['hits@1']:.4f}, hits@10 {valid['hits@10']:.4f} ({seconds:.0f} s)")
        if best is None or valid["mrr"] > best["valid"]["mrr"]:
            best = {"epoch": epoch + 1, "valid": valid,
                    "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if checkpoint is not None and ctx.is_main:
            extra = {"order_generator": order_generator.get_state()} if ctx.distributed else {}
            save_checkpoint(checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            generator=generator.get_state(), epoch=epoch + 1, history=history, best=best,
                            seconds=seconds, steps=steps, config=asdict(config), scaler=precision.state_dict(),
                            **extra)
        if out_of_time:
            log(f"time budget of {config.time_budget_s:.0f} s reached during epoch {epoch + 1}")
            break

    train_seconds = time.perf_counter() - started
    if best is None:
        raise ValueError(f"Expected at least one epoch to train (got epochs={config.epochs} and a checkpoint "
                         f"that had finished them)")
    in_sync = len(set(ctx.gather_objects(_digest(model)))) == 1
    model.load_state_dict(best["model"])
    test = evaluate(model, data, "test", known=known_all, batch_size=config.eval_batch_size,
                    show_progress=show_progress, ctx=ctx, precision=precision)
    result = {"valid": best["valid"], "test": test, "seconds": train_seconds, "best_epoch": best["epoch"],
              "epochs": len(history), "history": history, "config": asdict(config),
              "threads": torch.get_num_threads(), "world_size": ctx.world_size, "steps": steps,
              "ranks_in_sync": in_sync}
    if not ctx.is_main:
        return None
    log(format_metrics(result))
    if payload["json_path"] is not None:
        write_report(payload["json_path"], result)
    return result


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def format_metrics(result: dict[str, Any]) -> str:
    lines = [f"best epoch {result['best_epoch']} of {result['epochs']}; training and validation took "
             f"{result['seconds']:.0f} s",
             f"{'split':<6} {'MRR':>7} {'hits@1':>7} {'hits@3':>7} {'hits@10':>7} {'queries':>8}"]
    for split in ("valid", "test"):
        m = result[split]
        lines.append(f"{split:<6} {m['mrr']:7.4f} {m['hits@1']:7.4f} {m['hits@3']:7.4f} {m['hits@10']:7.4f} "
                     f"{m['queries']:8d}")
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------

def link_datasets() -> list[str]:
    """The datasets with train/valid/test triples: the knowledge graphs and OGB's link
    datasets (``ogbl-``, OGB's prefix for link prediction)."""
    from pigeon.data.datasets import Source, dataset_names, source_of

    return [name for name in dataset_names()
            if source_of(name) is Source.KG or (source_of(name) is Source.OGB and name.startswith("ogbl-"))]


def _why_not_a_link_dataset(name: str) -> str | None:
    from pigeon.data.datasets import dataset_names

    return "it is a dataset, but has no train/valid/test triples" if name in dataset_names() else None


def _command(args: argparse.Namespace) -> int:
    from pigeon.data.datasets import Source, source_of

    fields = {name for name in NBFNetConfig.__dataclass_fields__ if name != "extra"}
    with named_by(args):
        config = NBFNetConfig(**{name: getattr(args, name) for name in fields if hasattr(args, name)}).check()
    try:
        data = load_link_data(config.dataset, config.root)
    except FileNotFoundError as error:
        flag = "--root" if config.root is not None or source_of(config.dataset) is Source.OGB else "--dataset"
        raise UsageError(f"argument {flag}: {error}") from None
    try:
        train_nbfnet(config, data=data, checkpoint=args.checkpoint, resume=args.resume, json_path=args.json_path,
                     show_progress=not args.no_progress)
    except CheckpointError as error:
        raise usage_error(error, args) from None
    return 0


def add_parsers(subparsers) -> None:
    """``pigeon train nbfnet``."""
    defaults = NBFNetConfig()
    parser = subparsers.add_parser(
        "nbfnet",
        help="train NBFNet for link prediction (UMLS, Kinships, Nations, OGB link datasets)",
        description="Train NBFNet with Pigeon's compiled layers and report filtered MRR and hits@1/3/10 on "
                    "the valid and test splits (tail and head queries). Kinships, UMLS and Nations are "
                    "read from PyKEEN's files (ConvE splits); OGB link datasets train when their files are "
                    "under --root.",
        epilog="example:\n  pigeon train nbfnet --dataset umls --json umls.json\n"
               "  pigeon train nbfnet --dataset kinships --epochs 8 --checkpoint kin.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", type=one_name("link dataset", link_datasets, _why_not_a_link_dataset),
                        default=defaults.dataset, help=f"(default: {defaults.dataset})")
    parser.add_argument("--root", type=existing_folder, default=None,
                        help="folder with the dataset's files (default: the bundled copy)")
    parser.add_argument("--dim", type=positive_int, default=defaults.dim, help=f"(default: {defaults.dim})")
    parser.add_argument("--num-layers", type=positive_int, default=defaults.num_layers,
                        help=f"(default: {defaults.num_layers})")
    parser.add_argument("--message", default=defaults.message, choices=("distmult", "transe", "rotate"),
                        help=f"(default: {defaults.message})")
    parser.add_argument("--aggregate", default=defaults.aggregate, choices=("sum", "mean", "max", "min", "pna"),
                        help=f"(default: {defaults.aggregate})")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        help=f"training triples per step (default: {defaults.batch_size})")
    parser.add_argument("--num-negative", type=positive_int, default=defaults.num_negative,
                        help=f"negatives per query (default: {defaults.num_negative})")
    parser.add_argument("--adversarial-temperature", type=positive_float, default=defaults.adversarial_temperature,
                        help=f"(default: {defaults.adversarial_temperature})")
    parser.add_argument("--lr", type=positive_float, default=defaults.lr,
                        help=f"Adam learning rate (default: {defaults.lr})")
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs, help=f"(default: {defaults.epochs})")
    parser.add_argument("--time-budget-s", type=positive_float, default=None,
                        help="stop training after this many seconds (default: none)")
    parser.add_argument("--eval-batch-size", type=positive_int, default=defaults.eval_batch_size,
                        help=f"(default: {defaults.eval_batch_size})")
    parser.add_argument("--keep-batch-edges", dest="remove_batch_edges", action="store_false",
                        help="do not remove each batch's triples from the graph during training")
    parser.add_argument("--backend", default=defaults.backend, choices=BACKENDS,
                        help=f"Pigeon backend of the layers (default: {defaults.backend})")
    parser.add_argument("--nproc", type=positive_int, default=defaults.nproc,
                        help="data-parallel processes to start on this machine, gloo between them (1 under "
                             "torchrun, which starts them) (default: 1)")
    parser.add_argument("--dist-timeout-s", type=positive_float, default=defaults.dist_timeout_s,
                        help=f"timeout of the process group's collectives (default: {defaults.dist_timeout_s:.0f})")
    add_precision_argument(parser)
    add_common_arguments(parser)
    parser.set_defaults(func=_command, command_parser=parser)
