"""The mini-batch benchmark: sampled training steps of Pigeon's layers and DGL's own on the
same sampled blocks (``pigeon bench --minibatch``, or ``python -m pigeon.bench.minibatch``).

Set-up (issue #15): the ``mag`` profile (ogbn-mag's four node types, its four relations
and their inverses), DGL's ``MultiLayerNeighborSampler`` with fanouts [25, 20] and
batches of 1024 paper seeds, a 2-layer model of hidden width 64 (ReLU between the
layers, a linear classifier, cross-entropy on the profile's planted labels, Adam), and
every node's input a row of one random feature table. Each (model, system) runs in a
process of its own (its peak memory its own), with 1 or 2 data-parallel processes
(gloo, one thread each when there are two, ``DistributedDataParallel``); the sampler's
seed is the same for every run, so every system sees the same seed nodes in the same
batches and nearly the same neighbours (DGL samples on several threads, and its draws
are not repeatable bit for bit across runs: the block sizes differ by a fraction of a
percent).

Systems: ``pigeon`` (``pigeon.nn.RGCN/RGAT/HGT`` on the blocks, backend ``auto``) and
``dgl``: ``RelGraphConv`` (RGCN, the same maths: right-normalised messages, a self-loop,
a bias), ``HeteroGraphConv`` of ``GATConv`` (RGAT; other maths: a softmax per
relation) and ``HGTConv`` (HGT; other maths: no GELU before the output projection).
DGL's homogeneous layers take the block rebuilt as a homogeneous DGL block with edge
and node types, which is counted as conversion, not model time.

Per step it records the sampling time, the conversion time, the model time (forward,
backward, optimizer step, and DDP's all-reduce), and, for Pigeon, the per-batch
overhead: the step on a block seen for the first time less the same step repeated on
that block (the layouts, index arrays and plan lookups a new block costs). Medians,
with the quartiles, over the measured steps; seeds per second; peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from pigeon.bench.harness import describe_machine, git_state

__all__ = ["run_case", "main", "MODELS", "SYSTEMS"]

MODELS = ("rgcn", "rgat", "hgt")
SYSTEMS = ("pigeon", "dgl")
HEADS = 4


class PigeonNet(nn.Module):
    """Two Pigeon layers on blocks, ReLU between, a linear classifier."""

    def __init__(self, kind: str, num_ntypes: int, num_etypes: int, dim: int, classes: int, layers: int = 2):
        super().__init__()
        import pigeon.nn as pnn

        def layer():
            if kind == "rgcn":
                return pnn.RGCN(dim, dim, num_etypes)
            if kind == "rgat":
                return pnn.RGAT(dim, dim // HEADS, num_etypes, heads=HEADS)
            return pnn.HGT(dim, dim, num_ntypes, num_etypes, heads=HEADS)

        self.layers = nn.ModuleList([layer() for _ in range(layers)])
        self.classifier = nn.Linear(dim, classes)

    def forward(self, blocks, x):
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            x = layer(block, x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return self.classifier(x)


class DglNet(nn.Module):
    """DGL's layers for the same model: homogeneous RelGraphConv/HGTConv on blocks with
    edge and node types, or HeteroGraphConv of GATConv on DGL's heterogeneous blocks."""

    def __init__(self, kind: str, canonical_etypes, num_ntypes: int, dim: int, classes: int, layers: int = 2):
        super().__init__()
        from pigeon.interop.dgl import import_dgl

        dgl = import_dgl()
        self.kind = kind
        if kind == "rgcn":
            self.layers = nn.ModuleList([dgl.nn.RelGraphConv(dim, dim, len(canonical_etypes), regularizer=None,
                                                             self_loop=True, bias=True) for _ in range(layers)])
        elif kind == "rgat":
            self.layers = nn.ModuleList([dgl.nn.HeteroGraphConv(
                {c: dgl.nn.GATConv(dim, dim // HEADS, HEADS, allow_zero_in_degree=True) for c in canonical_etypes},
                aggregate="sum") for _ in range(layers)])
        else:
            self.layers = nn.ModuleList([dgl.nn.HGTConv(dim, dim // HEADS, HEADS, num_ntypes, len(canonical_etypes))
                                         for _ in range(layers)])
        self.classifier = nn.Linear(dim, classes)

    def forward(self, graphs, x):
        for i, (layer, g) in enumerate(zip(self.layers, graphs)):
            if self.kind == "rgcn":
                x = layer(g["block"], x, g["etype"], norm=g["norm"])
            elif self.kind == "hgt":
                x = layer(g["block"], x, g["ntype"], g["etype"], presorted=False)
            else:
                out = layer(g["block"], x)
                x = {t: v.flatten(1) for t, v in out.items()}
            if i + 1 < len(self.layers):
                x = {t: F.relu(v) for t, v in x.items()} if isinstance(x, dict) else F.relu(x)
        if isinstance(x, dict):
            x = x[graphs[-1]["seed_type"]]
        return self.classifier(x)


def _homogeneous(dgl, block) -> dict:
    """A Pigeon block as DGL's homogeneous block with edge types, node types and the
    right normalisation ``1 / in_degree`` per edge (what RelGraphConv multiplies by)."""
    g = dgl.create_block((block.src, block.dst), num_src_nodes=block.num_nodes, num_dst_nodes=block.num_dst_nodes)
    degree = torch.bincount(block.dst, minlength=block.num_dst_nodes).clamp(min=1).float()
    return {"block": g, "etype": block.etype, "ntype": block.ntype,
            "norm": (1.0 / degree.index_select(0, block.dst)).unsqueeze(1)}


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"median": None, "q1": None, "q3": None}
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2]}


def _rank(payload: dict) -> dict:
    """One rank of one case: sample, convert, train, time."""
    from pigeon.data import load
    from pigeon.data.sampling import NeighborSampler, SamplingGraph
    from pigeon.interop.dgl import blocks_from_dgl, import_dgl
    from pigeon.runtime.heap import keep_freed_memory
    from pigeon.train.distributed import close_distributed, init_distributed

    dgl = import_dgl()
    heap_pad = keep_freed_memory()   # every system alike: freed pages kept for the next step
    ctx = init_distributed(timeout_s=payload["timeout_s"]) if payload["nproc"] > 1 else None
    torch.set_num_threads(payload["threads"])
    torch.manual_seed(payload["seed"])
    data = load(payload["dataset"], scale=payload["scale"], seed=payload["seed"], reverse=True, node_task=True)
    graph = data.graph
    labels = data.node_labels
    classes = int(labels.max()) + 1
    gen = torch.Generator().manual_seed(payload["seed"])
    features = torch.randn(graph.num_nodes, payload["dim"], generator=gen)
    typed = SamplingGraph(graph)
    sampler = NeighborSampler(typed, payload["fanouts"], seed_ntype=payload["seed_ntype"],
                              batch_size=payload["batch_size"], shuffle=True, seed=payload["seed"],
                              use_ddp=ctx is not None)
    names = typed.names
    if payload["system"] == "pigeon":
        model = PigeonNet(payload["model"], graph.num_ntypes, graph.num_etypes, payload["dim"], classes)
    else:
        model = DglNet(payload["model"], names.canonical_etypes, graph.num_ntypes, payload["dim"], classes)
    trained = model
    if ctx is not None:
        from torch.nn.parallel import DistributedDataParallel

        # DGL's HeteroGraphConv keeps one GATConv per relation: a relation absent from a
        # batch leaves its parameters without gradients, which DDP must be told to expect.
        # Pigeon's typed parameters are stacked tensors, used whatever the batch holds.
        unused = payload["system"] == "dgl" and payload["model"] == "rgat"
        trained = DistributedDataParallel(model, find_unused_parameters=unused)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(inputs, graphs, seeds):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(trained(graphs, inputs), labels[seeds])
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    records = []
    iterator = iter(sampler.loader)
    steps = payload["warmup"] + payload["steps"]
    for index in range(steps):
        started = time.perf_counter()
        batch = next(iterator, None)
        if batch is None:
            iterator = iter(sampler.loader)
            batch = next(iterator)
        sampled = time.perf_counter()
        input_dgl, _, dgl_blocks = batch
        blocks, input_nodes, seeds = blocks_from_dgl(dgl_blocks, names, typed.type_nodes,
                                                      etype_names=graph.etype_names)
        if payload["system"] == "pigeon":
            inputs, graphs = features.index_select(0, input_nodes), blocks
        elif payload["model"] == "rgat":
            inputs = {t: features.index_select(0, typed.type_nodes[names.ntypes.index(t)][ids])
                      for t, ids in input_dgl.items()}
            graphs = [{"block": b, "seed_type": payload["seed_ntype"]} for b in dgl_blocks]
        else:
            inputs, graphs = features.index_select(0, input_nodes), [_homogeneous(dgl, b) for b in blocks]
        converted = time.perf_counter()
        step(inputs, graphs, seeds)
        done = time.perf_counter()
        record = {"sample_s": sampled - started, "convert_s": converted - sampled, "model_s": done - converted,
                  "seeds": int(seeds.numel()), "edges": [int(b.num_edges) for b in blocks],
                  "src_nodes": [int(b.num_nodes) for b in blocks]}
        if payload["system"] == "pigeon" and payload["overhead"]:
            again = time.perf_counter()
            step(inputs, graphs, seeds)          # the same block again: layouts and plans in hand
            record["repeat_model_s"] = time.perf_counter() - again
        if index >= payload["warmup"]:
            records.append(record)
    mine = {"records": records, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rank": ctx.rank if ctx is not None else 0, "threads": torch.get_num_threads(), "heap_pad_mib": heap_pad}
    if ctx is None:
        return {"ranks": [mine]}
    ranks = ctx.gather_objects(mine)
    close_distributed()
    return {"ranks": ranks}


def run_case(model: str, system: str, *, nproc: int = 1, dataset: str = "mag", scale: float = 1.0,
             fanouts=(25, 20), batch_size: int = 1024, dim: int = 64, steps: int = 20, warmup: int = 3,
             seed: int = 0, threads: int | None = None, overhead: bool = True, timeout_s: float = 600.0) -> dict:
    """Run one (model, system) case with ``nproc`` data-parallel processes; return its summary."""
    from pigeon.train.distributed import launch, threads_per_rank

    if model not in MODELS or system not in SYSTEMS:
        raise ValueError(f"Expected `model` in {MODELS} and `system` in {SYSTEMS} (got {model!r}, {system!r})")
    payload = {"model": model, "system": system, "nproc": nproc, "dataset": dataset, "scale": scale,
               "fanouts": list(fanouts), "batch_size": batch_size, "dim": dim, "steps": steps, "warmup": warmup,
               "seed": seed, "seed_ntype": "paper", "overhead": overhead and system == "pigeon",
               "threads": threads or threads_per_rank(nproc), "timeout_s": timeout_s}
    started = time.perf_counter()
    if nproc == 1:   # launch() would run one rank here: its peak memory would be this process's
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            ranks = pool.apply(_rank, (payload,))["ranks"]
    else:
        ranks = launch(_rank, payload, nproc)["ranks"]
    records = [r for rank in ranks for r in rank["records"]]
    model_s = [r["model_s"] for r in records]
    step_s = [r["sample_s"] + r["convert_s"] + r["model_s"] for r in records]
    summary = {
        "model": model, "system": system, "nproc": nproc, "steps": len(records) // nproc,
        "sample_s": _percentiles([r["sample_s"] for r in records]),
        "convert_s": _percentiles([r["convert_s"] for r in records]),
        "model_s": _percentiles(model_s),
        "step_s": _percentiles(step_s),
        "seeds_per_s": sum(r["seeds"] for r in records) / max(sum(step_s) / nproc, 1e-9),
        "peak_rss_gib": max(rank["peak_rss_gib"] for rank in ranks),
        "threads_per_rank": ranks[0]["threads"],
        "heap_pad_mib": ranks[0].get("heap_pad_mib"),
        "block_edges": _percentiles([sum(r["edges"]) for r in records]),
        "first_block_src_nodes": _percentiles([r["src_nodes"][0] for r in records]),
        "wall_s": time.perf_counter() - started,
    }
    if any("repeat_model_s" in r for r in records):
        overheads = [r["model_s"] - r["repeat_model_s"] for r in records]
        summary["overhead_s"] = _percentiles(overheads)
        summary["overhead_share"] = statistics.median(o / s for o, s in zip(overheads, step_s))
    return summary


def _table(results: list[dict]) -> str:
    lines = ["| model | system | procs | sample ms | model ms (q1-q3) | step ms | seeds/s | overhead | peak GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['system']} | {r['nproc']} | {r['error']} | | | | | |")
            continue
        m = r["model_s"]
        share = f"{100 * r['overhead_share']:.1f}%" if "overhead_share" in r else "-"
        lines.append(f"| {r['model']} | {r['system']} | {r['nproc']} | {1e3 * r['sample_s']['median']:.1f} | "
                     f"{1e3 * m['median']:.1f} ({1e3 * m['q1']:.1f}-{1e3 * m['q3']:.1f}) | "
                     f"{1e3 * r['step_s']['median']:.1f} | {r['seeds_per_s']:.0f} | {share} | "
                     f"{r['peak_rss_gib']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pigeon bench --minibatch", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--nprocs", default="1,2", help="data-parallel process counts (default: 1,2)")
    parser.add_argument("--scale", type=float, default=1.0, help="of the mag profile (default: 1.0)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per rank (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring (default: 3)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--markdown", default=None, help="write the table here")
    args = parser.parse_args(argv)
    results = []
    for nproc in (int(n) for n in args.nprocs.split(",")):
        for model in args.models.split(","):
            for system in args.systems.split(","):
                try:
                    result = run_case(model, system, nproc=nproc, scale=args.scale, steps=args.steps,
                                      warmup=args.warmup, batch_size=args.batch_size)
                except Exception as error:   # a baseline that fails is a result, not the end of the run
                    result = {"model": model, "system": system, "nproc": nproc,
                              # a rank's exception ends the message of the one that carries it
                              "error": f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[-1][:160]}"}
                results.append(result)
                print(_table([result]).splitlines()[-1], flush=True)
    command = ["pigeon", "bench", "--minibatch", *(sys.argv[1:] if argv is None else argv)]
    report = {"machine": describe_machine("cpu"), "git": git_state(), "command": command,
              "settings": {"dataset": "mag", "scale": args.scale, "fanouts": [25, 20], "batch_size": args.batch_size,
                           "dim": 64, "layers": 2, "steps": args.steps, "warmup": args.warmup},
              "results": results}
    print(_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(_table(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
