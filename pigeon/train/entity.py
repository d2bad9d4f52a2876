"""Entity classification with RGCN, RGAT or HGT (``pigeon train rgcn|rgat|hgt``).

The model (:class:`EntityClassifier`) embeds every node by its type: featured types
through a linear map of their features (widths may differ per type), featureless ones
through a learned embedding per node. Then ``layers`` relational layers of width
``hidden``, each followed by ReLU and dropout, and a linear classifier on the target
nodes. Edge types are the graph's canonical ``(source type, relation, destination
type)`` types: two relations with one name between different node types are two edge
types with their own weights. Training minimises cross-entropy with Adam.

Mini-batches (``--fanouts``) come from DGL's neighbour sampler through
:class:`pigeon.data.sampling.NeighborSampler`: one Pigeon block per layer, input rows
gathered per batch from the feature store. ``--full-graph`` trains on the whole graph
instead, one step per epoch. Evaluation of a sampled run is layer-wise full-neighbour
inference (:func:`layerwise_inference`): each layer over all nodes in chunks, every
neighbour taken, as DGL's and PyG's ``inference`` methods do, exactly the full-graph
output. The epoch kept is the one of best validation accuracy; test accuracy is read
once, for it.

Data-parallel runs (``--nproc N`` or torchrun, :mod:`pigeon.train.distributed`) give
each rank an equal shard of the training seeds (DGL's ``use_ddp``), so every rank takes
the same number of steps; the model is wrapped in ``DistributedDataParallel``, whose
all-reduce is timed by a communication hook; metrics are summed over the ranks; rank 0
writes checkpoints and the report. Typed parameters are stacked per layer (one tensor
for all relations), so a relation absent from a batch needs no
``find_unused_parameters``.

The backends: ``reference`` runs :mod:`pigeon.reference` (plain PyTorch); ``auto``,
``cpu``, ``triton`` and ``torch`` run :mod:`pigeon.nn`'s compiled layers, which must
support blocks for sampled training.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pigeon.data.graph import HeteroGraph
from pigeon.train.common import (
    add_common_arguments, load_checkpoint, progress, save_checkpoint, seed_everything, write_report,
)
from pigeon.train.distributed import (
    DistContext, close_distributed, equal_shard, init_distributed, launch, threads_per_rank,
)

__all__ = ["EntityConfig", "EntityData", "EntityClassifier", "load_entity_data", "layerwise_inference",
           "full_graph_inference", "train_entity", "add_parsers", "MODELS", "BACKENDS"]

MODELS = ("rgcn", "rgat", "hgt")
BACKENDS = ("auto", "cpu", "triton", "torch", "reference")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TIME_PARTS = ("sampling", "conversion", "forward", "backward", "optimizer", "communication")


@dataclass
class EntityConfig:
    """Everything that decides an entity-classification run (saved in checkpoints and
    the JSON report). ``fanouts`` lists one fanout per layer, input layer first
    (DGL's order; -1 takes every neighbour); ``full_graph`` trains without sampling.

    Batch size (per rank) and learning rate were chosen on the aifb profile's validation
    split for short runs (2 epochs, global batches of 512 and 2048, learning rates 0.01
    and 0.03: HGT reached 0.64 valid accuracy at 512 and 0.03, 0.55 at 0.01, 0.48 at 2048)."""

    model: str = "rgcn"
    dataset: str = "aifb"
    root: str | None = None
    scale: float = 1.0
    data_seed: int = 0
    fanouts: tuple = (25, 20)
    full_graph: bool = False
    batch_size: int = 256
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    num_bases: int | None = None
    dropout: float = 0.2
    lr: float = 0.03
    weight_decay: float = 0.0
    epochs: int = 10
    max_steps: int | None = None
    eval_batch_size: int = 8192
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "float32"
    nproc: int = 1
    sampler_workers: int = 0
    dist_timeout_s: float = 300.0
    seed: int = 0
    threads: int | None = None

    def check(self) -> "EntityConfig":
        if self.model not in MODELS:
            raise ValueError(f"Expected `model` to be one of {list(MODELS)} (got {self.model!r})")
        if self.backend not in BACKENDS:
            raise ValueError(f"Expected `backend` to be one of {list(BACKENDS)} (got {self.backend!r})")
        if self.dtype not in DTYPES:
            raise ValueError(f"Expected `dtype` to be one of {list(DTYPES)} (got {self.dtype!r})")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"Expected `device` to be 'cpu' or 'cuda' (got {self.device!r})")
        positive = {"batch_size": self.batch_size, "layers": self.layers, "hidden": self.hidden,
                    "heads": self.heads, "epochs": self.epochs, "eval_batch_size": self.eval_batch_size,
                    "nproc": self.nproc}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Expected `{name}` to be a positive int (got {value!r})")
        for name in ("max_steps", "threads", "num_bases"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Expected `{name}` to be a positive int or None (got {value!r})")
        if not isinstance(self.sampler_workers, int) or self.sampler_workers < 0:
            raise ValueError(f"Expected `sampler_workers` to be a non-negative int (got {self.sampler_workers!r})")
        if self.model in ("rgat", "hgt") and self.hidden % self.heads:
            raise ValueError(f"Expected `hidden` to be divisible by heads={self.heads} for {self.model} "
                             f"(got hidden={self.hidden})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Expected `dropout` in [0, 1) (got {self.dropout!r})")
        for name in ("lr", "dist_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"Expected `{name}` to be a positive number (got {value!r})")
        if not self.full_graph:
            self.fanouts = tuple(self.fanouts)
            if len(self.fanouts) != self.layers:
                raise ValueError(f"Expected one fanout per layer ({self.layers} layers) (got fanouts "
                                 f"{list(self.fanouts)}; pass --fanouts with {self.layers} values or --layers "
                                 f"{len(self.fanouts)})")
        return self


# -- data ---------------------------------------------------------------------------------

@dataclass
class EntityData:
    """A node-classification dataset: the graph, per-type inputs, labels and split."""

    name: str
    graph: HeteroGraph
    features: tuple
    labels: torch.Tensor
    split: dict
    target_ntype: int
    num_classes: int
    description: str = ""

    def chance(self, split: str = "test") -> float:
        """The accuracy of always answering the commonest class of ``split``."""
        labels = self.labels[self.split[split]]
        if labels.numel() == 0:
            return 0.0
        return float(torch.bincount(labels, minlength=self.num_classes).max()) / labels.numel()


def load_entity_data(name: str, *, scale: float = 1.0, seed: int = 0, root=None) -> EntityData:
    """ogbn-mag with its labels, split and paper features (reverse edges added, as RGNN
    papers train on it), or a synthetic profile with planted labels
    (``pigeon.data.load(name, node_task=True)``)."""
    from pigeon.data import load

    if name == "ogbn-mag":
        dataset = load(name, root=root, reverse=True)
    else:
        dataset = load(name, scale=scale, seed=seed, root=root, node_task=True)
    if dataset.node_labels is None or dataset.node_split is None:
        raise ValueError(f"Expected a node-classification dataset (got {name!r}, which has no node labels)")
    return EntityData(name, dataset.graph, tuple(dataset.node_features), dataset.node_labels,
                      dict(dataset.node_split), dataset.target_ntype, dataset.num_classes, dataset.description)


# -- model --------------------------------------------------------------------------------

class EntityClassifier(nn.Module):
    """Per-type input embeddings, ``num_layers`` relational layers, a linear classifier.

    Each layer is followed by ReLU and dropout; RGAT layers also get a linear skip from
    the destination's own row (RGAT sums over in-neighbours only).

    Args:
        kind (str): ``"rgcn"``, ``"rgat"`` or ``"hgt"``.
        num_ntypes, num_etypes (int): type counts of the graph.
        widths (sequence): feature width per node type, None for a featureless type.
        type_sizes (sequence of int): nodes per type (rows of a featureless type's embedding).
        hidden (int): width of every layer.
        num_classes (int): classes of the target type.
        num_layers (int): relational layers. Default 2.
        heads (int): attention heads of RGAT and HGT. Default 4.
        num_bases (int, optional): RGCN's basis decomposition.
        dropout (float): after every layer's ReLU, and on the inputs. Default 0.2.
        backend (str): ``"reference"`` for :mod:`pigeon.reference` layers, else the
            :mod:`pigeon.nn` backend. Default ``"auto"``.
        dtype: of the parameters.

    ``forward(blocks, inputs)`` takes one graph per layer (blocks, or the full graph
    repeated) and :class:`~pigeon.data.sampling.NodeInputs` of the first one's sources,
    and returns logits for the last one's destinations.
    """

    def __init__(self, kind: str, num_ntypes: int, num_etypes: int, widths, type_sizes, hidden: int,
                 num_classes: int, *, num_layers: int = 2, heads: int = 4, num_bases: int | None = None,
                 dropout: float = 0.2, backend: str = "auto", dtype=torch.float32):
        super().__init__()
        self.kind, self.backend, self.hidden = kind, backend, hidden
        encoders = []
        for width, size in zip(widths, type_sizes):
            if width is None:
                embedding = nn.Embedding(max(size, 1), hidden, dtype=dtype)
                nn.init.normal_(embedding.weight, std=1.0 / math.sqrt(hidden))
                encoders.append(embedding)
            else:
                encoders.append(nn.Linear(width, hidden, dtype=dtype))
        self.encoders = nn.ModuleList(encoders)
        self.layers = nn.ModuleList(
            [self._layer(kind, num_ntypes, num_etypes, hidden, heads, num_bases, backend, dtype)
             for _ in range(num_layers)])
        # RGAT's output is a weighted sum over in-neighbours only: a node's own row enters
        # through the attention scores alone. A linear skip from the destination's own
        # row gives it what RGCN's self-loop and HGT's skip give theirs.
        self.skips = (nn.ModuleList([nn.Linear(hidden, hidden, dtype=dtype) for _ in range(num_layers)])
                      if kind == "rgat" else None)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes, dtype=dtype)

    @staticmethod
    def _layer(kind, num_ntypes, num_etypes, hidden, heads, num_bases, backend, dtype) -> nn.Module:
        if backend == "reference":
            import pigeon.reference as layers

            options = {"dtype": dtype}
        else:
            import pigeon.nn as layers

            options = {"dtype": dtype, "backend": backend}
        if kind == "rgcn":
            return layers.RGCN(hidden, hidden, num_etypes, num_bases=num_bases, **options)
        if kind == "rgat":
            return layers.RGAT(hidden, hidden // heads, num_etypes, heads=heads, **options)
        return layers.HGT(hidden, hidden, num_ntypes, num_etypes, heads=heads, **options)

    def encode(self, inputs) -> torch.Tensor:
        """The first layer's input rows. Every encoder runs in every step (on no rows when
        the batch has none of its type), so DDP sees every parameter used."""
        param = self.classifier.weight
        out = param.new_zeros(inputs.num_nodes, self.hidden)
        for t, encoder in enumerate(self.encoders):
            rows = inputs.rows[t].to(param.device)
            if isinstance(encoder, nn.Embedding):
                value = encoder(inputs.local[t].to(param.device))
            else:
                value = encoder(inputs.features[t].to(device=param.device, dtype=param.dtype))
            out = out.index_copy(0, rows, value)
        return out

    def apply_layer(self, index: int, block: HeteroGraph, h: torch.Tensor) -> torch.Tensor:
        """Layer ``index`` on ``block``, then ReLU and dropout."""
        out = self.layers[index](block, h)
        if out.shape[0] != block.num_dst_nodes:
            raise RuntimeError(
                f"Expected layer {index} ({type(self.layers[index]).__module__}.{self.kind}, backend "
                f"{self.backend!r}) to return one row per destination of its block ({block.num_dst_nodes}) "
                f"(got {out.shape[0]} rows): this backend does not run blocks yet; use --backend reference "
                f"or --full-graph")
        if self.skips is not None:
            out = out + self.skips[index](h[: block.num_dst_nodes])
        return self.dropout(F.relu(out))

    def forward(self, blocks, inputs) -> torch.Tensor:
        if len(blocks) != len(self.layers):
            raise ValueError(f"Expected one graph per layer ({len(self.layers)}) (got {len(blocks)})")
        h = self.dropout(self.encode(inputs))
        for index, block in enumerate(blocks):
            h = self.apply_layer(index, block, h)
        return self.classifier(h)


# -- inference ----------------------------------------------------------------------------

@torch.no_grad()
def full_graph_inference(model: EntityClassifier, graph: HeteroGraph, store, nodes: torch.Tensor,
                         device=torch.device("cpu")) -> torch.Tensor:
    """Logits of ``nodes`` from the model on the whole graph (every layer on every node)."""
    model.eval()
    g = graph.to(device)
    logits = model([g] * len(model.layers), store.gather(torch.arange(graph.num_nodes)))
    return logits[nodes.to(device)]


@torch.no_grad()
def layerwise_inference(model: EntityClassifier, sampling_graph, store, nodes: torch.Tensor, *,
                        chunk_size: int = 8192, ctx: DistContext | None = None,
                        device=torch.device("cpu"), show_progress: bool = False) -> torch.Tensor:
    """Logits of ``nodes`` by layer-wise full-neighbour inference.

    Layer ``l`` runs over all nodes in chunks of ``chunk_size`` destinations, each chunk a
    one-layer block with every in-neighbour (DGL's full-neighbour sampler), reading the
    previous layer's outputs of all nodes; the last layer runs on ``nodes`` only. Every
    node's output is computed once per layer, not once per seed that reaches it, and
    equals the full-graph output. Under ``ctx`` each rank computes a shard of every
    layer's chunks and the ranks exchange the results.
    """
    from pigeon.data.sampling import NeighborSampler

    ctx = ctx or DistContext()
    model.eval()
    graph = sampling_graph.graph
    param = model.classifier.weight
    h = None
    for index in range(len(model.layers)):
        last = index == len(model.layers) - 1
        targets = nodes if last else torch.arange(graph.num_nodes)
        mine = _contiguous_shard(targets, ctx)
        out = param.new_zeros(targets.numel() if last else graph.num_nodes, model.hidden)
        row_of = torch.empty(graph.num_nodes, dtype=torch.int64)
        row_of[targets] = torch.arange(targets.numel())
        computed = param.new_zeros(mine.numel(), model.hidden)
        if mine.numel():
            sampler = NeighborSampler(sampling_graph, [-1], seeds=mine, batch_size=chunk_size, shuffle=False,
                                      use_ddp=False)
            position = torch.empty(graph.num_nodes, dtype=torch.int64)
            position[mine] = torch.arange(mine.numel())
            for mb in progress(sampler, desc=f"inference layer {index + 1}", enabled=show_progress):
                block = mb.blocks[0].to(device)
                x = model.encode(store.gather(mb.input_nodes)) if h is None else h[mb.input_nodes.to(device)]
                computed[position[mb.seeds].to(device)] = model.apply_layer(index, block, x)
        out[row_of[targets].to(device)] = _exchange(computed, targets.numel(), ctx)
        h = out
    return model.classifier(h)


def _contiguous_shard(items: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    bounds = [items.numel() * r // ctx.world_size for r in range(ctx.world_size + 1)]
    return items[bounds[ctx.rank]:bounds[ctx.rank + 1]]


def _exchange(mine: torch.Tensor, total: int, ctx: DistContext) -> torch.Tensor:
    """Every rank's contiguous shard, joined in rank order (an all-gather of padded parts)."""
    if not ctx.distributed:
        return mine
    import torch.distributed as dist

    sizes = [total * (r + 1) // ctx.world_size - total * r // ctx.world_size for r in range(ctx.world_size)]
    longest = max(sizes)
    padded = mine.new_zeros(longest, mine.shape[1])
    padded[: mine.shape[0]] = mine
    comm = padded if dist.get_backend() == "nccl" else padded.cpu()
    parts = [torch.empty_like(comm) for _ in range(ctx.world_size)]
    dist.all_gather(parts, comm)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(mine.device)


# -- training -----------------------------------------------------------------------------

class _CommTimer:
    """The state of :func:`_timed_allreduce`: world size and seconds spent so far."""

    def __init__(self, world_size: int):
        self.world_size, self.seconds = world_size, 0.0


def _timed_allreduce(state: _CommTimer, bucket):
    """A DDP communication hook: an all-reduce (mean) of each gradient bucket, run to
    completion and timed, so that communication is its own line of the time split
    (and backward's time excludes it)."""
    import torch.distributed as dist

    started = time.perf_counter()
    tensor = bucket.buffer()
    dist.all_reduce(tensor)
    tensor.div_(state.world_size)
    state.seconds += time.perf_counter() - started
    future = torch.futures.Future()
    future.set_result(tensor)
    return future


def _evaluate(model, data: EntityData, config: EntityConfig, sampling_graph, store, ctx, device,
              splits=("valid",), show_progress=False) -> dict[str, dict[str, float]]:
    """Accuracy on ``splits``, counts summed over the ranks."""
    nodes = torch.cat([data.split[s] for s in splits])
    if config.full_graph:
        logits = full_graph_inference(model, data.graph, store, nodes, device)
    else:
        logits = layerwise_inference(model, sampling_graph, store, nodes, chunk_size=config.eval_batch_size,
                                     ctx=ctx, device=device, show_progress=show_progress and ctx.is_main)
    correct = (logits.argmax(1).cpu() == data.labels[nodes]).double()
    out, start = {}, 0
    for split in splits:
        count = data.split[split].numel()
        out[split] = {"accuracy": float(correct[start:start + count].mean()) if count else 0.0, "nodes": count}
        start += count
    return out


def _parameters_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_model(config: EntityConfig, data: EntityData, store) -> EntityClassifier:
    return EntityClassifier(config.model, data.graph.num_ntypes, data.graph.num_etypes, store.widths,
                            store.type_sizes(), config.hidden, data.num_classes, num_layers=config.layers,
                            heads=config.heads, num_bases=config.num_bases, dropout=config.dropout,
                            backend=config.backend, dtype=DTYPES[config.dtype])


def _rank_worker(payload: dict) -> dict | None:
    """One rank of a run: everything :func:`train_entity` does, in this process."""
    config: EntityConfig = payload["config"]
    ctx = init_distributed(device=config.device, timeout_s=config.dist_timeout_s)
    try:
        return train_rank(config, ctx, payload)
    finally:
        close_distributed()


def train_rank(config: EntityConfig, ctx: DistContext, payload: dict) -> dict | None:
    """One rank's part of a run, in the process group ``ctx`` describes: ``payload`` holds
    :func:`train_entity`'s ``data``, ``checkpoint``, ``resume``, ``json_path``,
    ``show_progress`` and ``log``. Returns the report on rank 0, None elsewhere."""
    from pigeon.data.sampling import FeatureStore, NeighborSampler, SamplingGraph
    from pigeon.interop.dgl import import_dgl

    log = payload["log"] if ctx.is_main else (lambda *_: None)
    show_progress = payload["show_progress"] and ctx.is_main
    threads = threads_per_rank(ctx.local_world_size, config.sampler_workers, config.threads)
    torch.set_num_threads(threads)
    import_dgl().utils.set_num_threads(threads)
    seed_everything(config.seed)
    device = ctx.device

    data = payload.get("data") or load_entity_data(config.dataset, scale=config.scale, seed=config.data_seed,
                                                   root=config.root)
    store = FeatureStore(data.graph, data.features)
    model = build_model(config, data, store).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    first_epoch, history, best, elapsed, steps = 0, [], None, 0.0, 0
    if payload.get("resume") is not None:
        state = load_checkpoint(payload["resume"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, history, best = state["epoch"], state["history"], state["best"]
        elapsed, steps = state["seconds"], state["steps"]
        log(f"resumed from {payload['resume']} after epoch {first_epoch}")
    # Dropout and sampling differ per rank; the parameters start equal (DDP broadcasts rank 0's).
    torch.manual_seed(config.seed * 7919 + ctx.rank + 1)
    comm = _CommTimer(ctx.world_size)
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        trained.register_comm_hook(comm, _timed_allreduce)
    else:
        trained = model

    graph = data.graph
    train_nodes = data.split["train"]
    # One order for every rank (same seed): DGL's use_ddp deals contiguous shards of it.
    order = train_nodes[torch.randperm(train_nodes.numel(), generator=torch.Generator().manual_seed(config.seed))]
    sampling_graph = SamplingGraph(graph)
    if config.full_graph:
        sampler = None
        steps_per_epoch = 1
    else:
        sampler = NeighborSampler(sampling_graph, list(config.fanouts), seeds=order,
                                  seed_ntype=data.target_ntype, batch_size=config.batch_size,
                                  num_workers=config.sampler_workers, seed=config.seed * 7919 + ctx.rank,
                                  use_ddp=ctx.distributed)
        steps_per_epoch = len(sampler)
    if config.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    full_graph = graph.to(device) if config.full_graph else None
    full_inputs = store.gather(torch.arange(graph.num_nodes)) if config.full_graph else None
    labels = data.labels.to(device)

    log(f"{config.model.upper()} on {data.name}: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges, "
        f"{graph.num_etypes} edge types, {data.num_classes} classes; {train_nodes.numel():,} / "
        f"{data.split['valid'].numel():,} / {data.split['test'].numel():,} train/valid/test nodes; "
        f"{'full graph' if config.full_graph else f'fanouts {list(config.fanouts)}, batch {config.batch_size}'}; "
        f"backend {config.backend}; {ctx.world_size} rank(s) x {threads} thread(s), "
        f"{config.sampler_workers} sampler worker(s)")
    times = dict.fromkeys(TIME_PARTS, 0.0)
    seeds_done = 0
    started = time.perf_counter() - elapsed
    for epoch in range(first_epoch, config.epochs):
        trained.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
            batches = iter(sampler)
        total_loss, epoch_steps = 0.0, 0
        bar = progress(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", enabled=show_progress)
        for _ in bar:
            tick = time.perf_counter()
            if sampler is None:
                seeds = equal_shard(order, ctx)
                blocks, inputs = [full_graph] * config.layers, full_inputs
                times["conversion"] += time.perf_counter() - tick
            else:
                mb = next(batches)
                times["sampling"] += sampler.last_sample_s
                converting = time.perf_counter()
                blocks = [b.to(device) for b in mb.blocks]
                inputs = store.gather(mb.input_nodes)
                seeds = mb.seeds
                times["conversion"] += sampler.last_convert_s + time.perf_counter() - converting
            tick = time.perf_counter()
            logits = trained(blocks, inputs)
            if sampler is None:
                logits = logits[seeds.to(device)]
            loss = F.cross_entropy(logits, labels[seeds.to(device)])
            times["forward"] += time.perf_counter() - tick
            tick = time.perf_counter()
            optimizer.zero_grad()
            comm_before = comm.seconds
            loss.backward()
            times["backward"] += time.perf_counter() - tick - (comm.seconds - comm_before)
            tick = time.perf_counter()
            optimizer.step()
            times["optimizer"] += time.perf_counter() - tick
            total_loss += loss.item()
            epoch_steps += 1
            steps += 1
            seeds_done += seeds.numel()
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total_loss / epoch_steps:.4f}")
        if sampler is not None:
            del batches
        loss_sum, loss_count = ctx.sum([total_loss, epoch_steps])
        metrics = _evaluate(model, data, config, sampling_graph, store, ctx, device, show_progress=show_progress)
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(loss_count, 1), "steps": epoch_steps,
                        "valid": metrics["valid"], "seconds": seconds})
        log(f"epoch {epoch + 1}: loss {loss_sum / max(loss_count, 1):.4f}, valid accuracy "
            f"{metrics['valid']['accuracy']:.4f} ({seconds:.1f} s)")
        if best is None or metrics["valid"]["accuracy"] > best["valid"]["accuracy"]:
            best = {"epoch": epoch + 1, "valid": metrics["valid"], "model": copy.deepcopy(model.state_dict())}
        if payload.get("checkpoint") is not None and ctx.is_main:
            save_checkpoint(payload["checkpoint"], model=model.state_dict(), optimizer=optimizer.state_dict(),
                            epoch=epoch + 1, history=history, best=best, seconds=seconds, steps=steps,
                            config=asdict(config))
        ctx.barrier()

    train_seconds = time.perf_counter() - started
    if best is None:
        raise ValueError(f"Expected at least one epoch to train (got epochs={config.epochs} and a checkpoint "
                         f"that had finished them)")
    times["communication"] = comm.seconds
    time_sums = ctx.sum([times[k] for k in TIME_PARTS] + [float(seeds_done)])
    digests = ctx.gather_objects(_parameters_digest(model))
    final_model_digest = digests[0]
    model.load_state_dict(best["model"])
    test = _evaluate(model, data, config, sampling_graph, store, ctx, device, splits=("test",),
                     show_progress=show_progress)["test"]
    result = {
        "valid": best["valid"], "test": test,
        "chance": {"accuracy": data.chance("test"), "classes": data.num_classes},
        "seconds": train_seconds, "world_size": ctx.world_size, "steps": steps,
        "time_split": {k: v / ctx.world_size for k, v in zip(TIME_PARTS, time_sums)},
        "seeds_per_s": time_sums[-1] / max(train_seconds, 1e-9),
        "threads": {"per_rank": threads, "sampler_workers": config.sampler_workers,
                    "per_sampler_worker": 1 if config.sampler_workers else 0},
        "ranks_in_sync": len(set(digests)) == 1, "parameters_sha256": final_model_digest,
        "best_epoch": best["epoch"], "epochs": len(history), "history": history, "config": asdict(config),
    }
    if not ctx.is_main:
        return None
    log(format_result(result))
    if payload.get("json_path") is not None:
        write_report(payload["json_path"], result)
    return result


def format_result(result: dict[str, Any]) -> str:
    split = result["time_split"]
    parts = ", ".join(f"{k} {v:.1f}" for k, v in split.items())
    return (f"best epoch {result['best_epoch']} of {result['epochs']}: valid accuracy "
            f"{result['valid']['accuracy']:.4f}, test accuracy {result['test']['accuracy']:.4f} "
            f"(chance {result['chance']['accuracy']:.4f}); {result['steps']} steps on {result['world_size']} "
            f"rank(s) in {result['seconds']:.1f} s, {result['seeds_per_s']:.0f} seeds/s; seconds per rank: {parts}")


def train_entity(config: EntityConfig | None = None, *, data: EntityData | None = None, checkpoint=None,
                 resume=None, json_path=None, show_progress: bool = True, log=print, **overrides) -> dict | None:
    """Train and evaluate an entity classifier (see the module docstring).

    Args:
        config (EntityConfig, optional): the run's settings; keyword ``overrides``
            replace its fields (``train_entity(model="hgt", epochs=3)``).
        data (EntityData, optional): the dataset, instead of loading ``config.dataset``
            (passed to spawned ranks by pickling).
        checkpoint (path, optional): written by rank 0 after every epoch (atomically).
        resume (path, optional): a checkpoint to continue from.
        json_path (path, optional): where rank 0 writes the report.
        show_progress (bool): progress bars on rank 0. Default: True.
        log (callable): rank 0's log lines. Default: ``print``.

    With ``config.nproc > 1`` the ranks are spawned here; under torchrun this process is
    one rank. Returns rank 0's report (None on other torchrun ranks): ``valid``/``test``
    accuracy, ``chance``, ``seconds``, ``world_size``, ``steps``, ``time_split``
    (seconds per rank), ``seeds_per_s``, ``threads``, ``ranks_in_sync`` (the parameters
    of every rank hash alike at the end), ``history`` and ``config``.
    """
    config = EntityConfig(**{**asdict(config or EntityConfig()), **overrides}).check()
    payload = {"config": config, "data": data, "checkpoint": checkpoint, "resume": resume,
               "json_path": json_path, "show_progress": show_progress,
               "log": log if config.nproc == 1 else print}
    return launch(_rank_worker, payload, config.nproc)


# -- command line -------------------------------------------------------------------------

def _command(args: argparse.Namespace) -> int:
    from pigeon.data.sampling import parse_fanouts

    fields = {name for name in EntityConfig.__dataclass_fields__ if name != "fanouts"}
    values = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    if not args.full_graph:
        values["fanouts"] = tuple(parse_fanouts(args.fanouts))
    train_entity(EntityConfig(**values), checkpoint=args.checkpoint, resume=args.resume, json_path=args.json_path,
                 show_progress=not args.no_progress)
    return 0


def add_parsers(subparsers) -> None:
    """``pigeon train rgcn``, ``pigeon train rgat`` and ``pigeon train hgt``."""
    defaults = EntityConfig()
    for model in MODELS:
        parser = subparsers.add_parser(
            model,
            help=f"train {model.upper()} for entity classification (planted labels on aifb/mutag/bgs/am/mag "
                 f"profiles, ogbn-mag)",
            description=f"Train {model.upper()} for entity classification on sampled mini-batches (DGL's "
                        f"neighbour sampler) or the full graph, on one or several processes, and report "
                        f"valid/test accuracy beside chance. Synthetic profiles get planted labels "
                        f"(pigeon.data.profiles.planted_node_task); ogbn-mag trains on its real labels when "
                        f"its files are under --root.",
            epilog=f"examples:\n  pigeon train {model} --dataset aifb --epochs 5 --json out.json\n"
                   f"  pigeon train {model} --dataset mag --scale 0.05 --fanouts 25,20 --nproc 2\n"
                   f"  torchrun --nproc-per-node 2 -m pigeon train {model} --dataset aifb",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(model=model)
        parser.add_argument("--dataset", default=defaults.dataset,
                            help=f"aifb, mutag, bgs, am, mag (planted labels) or ogbn-mag (default: {defaults.dataset})")
        parser.add_argument("--root", default=None, help="folder holding ogbn_mag/ (OGB's layout)")
        parser.add_argument("--scale", type=float, default=defaults.scale,
                            help=f"fraction of a synthetic profile's size (default: {defaults.scale})")
        parser.add_argument("--data-seed", type=int, default=defaults.data_seed,
                            help="seed of the synthetic graph and its planted labels (default: 0)")
        parser.add_argument("--fanouts", default=",".join(map(str, defaults.fanouts)),
                            help="neighbours sampled per layer, input layer first, -1 for all "
                                 f"(default: {','.join(map(str, defaults.fanouts))})")
        parser.add_argument("--full-graph", action="store_true", help="train on the whole graph, no sampling")
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                            help=f"seeds per step and rank (default: {defaults.batch_size})")
        parser.add_argument("--layers", type=int, default=defaults.layers, help=f"(default: {defaults.layers})")
        parser.add_argument("--hidden", type=int, default=defaults.hidden, help=f"(default: {defaults.hidden})")
        if model != "rgcn":
            parser.add_argument("--heads", type=int, default=defaults.heads, help=f"(default: {defaults.heads})")
        else:
            parser.add_argument("--num-bases", type=int, default=None, help="basis decomposition (default: none)")
        parser.add_argument("--dropout", type=float, default=defaults.dropout, help=f"(default: {defaults.dropout})")
        parser.add_argument("--lr", type=float, default=defaults.lr, help=f"Adam learning rate (default: {defaults.lr})")
        parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="(default: 0)")
        parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"(default: {defaults.epochs})")
        parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch (default: none)")
        parser.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size,
                            help=f"destinations per chunk of layer-wise inference (default: {defaults.eval_batch_size})")
        parser.add_argument("--backend", default=defaults.backend, choices=BACKENDS,
                            help="Pigeon backend of the layers, or 'reference' for the plain-PyTorch layers "
                                 f"(default: {defaults.backend})")
        parser.add_argument("--device", default=defaults.device, choices=("cpu", "cuda"),
                            help="cpu (gloo between ranks) or cuda (NCCL, one GPU per rank) (default: cpu)")
        parser.add_argument("--dtype", default=defaults.dtype, choices=tuple(DTYPES), help="(default: float32)")
        parser.add_argument("--nproc", type=int, default=defaults.nproc,
                            help="processes to start on this machine (1 under torchrun) (default: 1)")
        parser.add_argument("--sampler-workers", type=int, default=defaults.sampler_workers,
                            help="sampler processes per rank, one thread each (default: 0: sample in the rank)")
        parser.add_argument("--dist-timeout-s", type=float, default=defaults.dist_timeout_s,
                            help=f"timeout of the process group's collectives (default: {defaults.dist_timeout_s:.0f})")
        add_common_arguments(parser)
        parser.set_defaults(func=_command)
