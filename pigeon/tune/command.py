"""``pigeon tune``: tune a built-in layer on a dataset, or show / clear the tuning cache."""

from __future__ import annotations

import argparse
import math

from pigeon.arguments import (UsageError, graph_datasets, load_graph, one_name, positive_float, positive_int, scale,
                              why_not_a_graph_dataset)

MODELS = ("rgcn", "rgat", "hgt")

EXAMPLE = """examples:
  pigeon tune rgat --dataset aifb --backend cpu --mode train --budget-s 60
  pigeon tune hgt --dataset mutag --scale 0.1 --mode infer
  pigeon tune --show
  pigeon tune --clear"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", choices=MODELS, help="which layer to tune (not needed with "
                        "--show or --clear)")
    parser.add_argument("--dataset", type=one_name("dataset", graph_datasets, why_not_a_graph_dataset),
                        default="aifb", help="graph profile or dataset (default: aifb)")
    parser.add_argument("--scale", type=scale, default=None,
                        help="size of a synthetic profile, in (0, 1]; real datasets load whole (default: 1.0)")
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "triton", "torch"),
                        help="backend to tune (default: auto, cpu on a CPU, triton on a GPU)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where the graph, weights and input live (default: cpu); with cuda, "
                             "backend auto is triton")
    parser.add_argument("--mode", default="train", choices=("train", "infer"),
                        help="objective: forward+backward or forward only (default: train)")
    parser.add_argument("--budget-s", type=positive_float, default=60.0,
                        help="seconds after which no new candidate starts (default: 60)")
    parser.add_argument("--dim", type=positive_int, default=64, help="hidden size, in and out (default: 64)")
    parser.add_argument("--heads", type=positive_int, default=2, help="attention heads of rgat/hgt (default: 2)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"),
                        help="element type (default: float32)")
    parser.add_argument("--show", action="store_true", help="list the tuning cache's entries and exit")
    parser.add_argument("--clear", action="store_true", help="delete every tuning cache entry and exit")


def _bucket_text(bucket: dict) -> str:
    def approx(b: int, per_octave: int) -> str:
        return "0" if b < 0 else f">={2 ** (b / per_octave):.3g}"

    return (f"nodes {approx(bucket['nodes'], 2)}, edges {approx(bucket['edges'], 2)}, "
            f"etypes {approx(bucket['etypes'], 1)}, compaction {approx(bucket['compaction_ratio'], 4)}")


def show(cache) -> int:
    entries = cache.entries()
    if not entries:
        print(f"tuning cache {cache.root}: empty")
        return 0
    print(f"tuning cache {cache.root}: {len(entries)} entries")
    for e in entries:
        what, where, s = e.key["what"], e.key["where"], e.summary
        speed = s.get("speedup", math.nan)
        print(f"- {e.path.name}: {what['layer']} {what['backend']} {what['mode']} {what['dtype']} on "
              f"{_bucket_text(what['graph'])} [{where['device']}, pigeon {where['pigeon']}]\n"
              f"    chosen: {e.choice.describe()} ({speed:.2f}x over the default, "
              f"{s.get('candidates', '?')} candidates)")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import torch

    from pigeon.tune.cache import TuneCache

    cache = TuneCache()
    if args.clear:
        print(f"tuning cache {cache.root}: removed {cache.clear()} entries")
        return 0
    if args.show:
        return show(cache)
    if args.model is None:
        raise UsageError(f"argument model: give a layer to tune (one of {', '.join(MODELS)}), or --show / --clear")
    from pigeon.nn.examples import example_layer
    from pigeon.tune import tune

    if args.model in ("rgat", "hgt") and args.dim % args.heads:
        raise UsageError(f"--dim must be divisible by --heads for {args.model} (got dim {args.dim}, "
                         f"heads {args.heads})")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda needs a CUDA device, and torch sees none")
    if args.backend == "cpu" and args.device != "cpu":
        raise UsageError(f"--backend cpu runs on CPU tensors (got --device {args.device})")
    graph = load_graph(args.dataset, args.scale, default_scale=1.0).graph.to(args.device)
    dtype = getattr(torch, args.dtype)
    module, tensors = example_layer(args.model, graph, args.dim, args.heads, backend=args.backend)
    module = module.to(args.device, dtype)
    tensors["x"] = tensors["x"].to(args.device)
    print(f"pigeon tune: {args.model} on {args.dataset}{'' if args.scale is None else f' x{args.scale}'}: {graph.num_nodes} nodes, "
          f"{graph.num_edges} edges, {graph.num_etypes} edge types; hidden {args.dim}, {args.dtype}, "
          f"{args.mode}, budget {args.budget_s:g} s")
    result = tune(module, graph, tensors["x"].to(dtype), mode=args.mode, budget_s=args.budget_s)
    print(f"stored in {result.path}")
    return 0
