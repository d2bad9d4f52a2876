"""The `pigeon` command line."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _time(fn, repeat: int) -> tuple[float, float, float]:
    """Median, min and max seconds of ``fn()`` over ``repeat`` runs after one warm-up."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples), max(samples)


def _demo_cases(dim: int):
    """(model name, dataset, layer, graph, inputs) for the demo table."""
    from pigeon import reference
    from pigeon.data import load

    aifb = load("aifb", seed=0).graph
    umls = load("umls")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(aifb.num_nodes, dim, generator=gen)
    yield "RGCN", "aifb (synthetic)", reference.RGCN(dim, dim, aifb.num_etypes), aifb, (x,)
    yield "RGAT", "aifb (synthetic)", reference.RGAT(dim, dim, aifb.num_etypes), aifb, (x,)
    yield "HGT", "aifb (synthetic)", reference.HGT(dim, dim, aifb.num_ntypes, aifb.num_etypes), aifb, (x,)

    kg = umls.graph
    batch, kdim = 4, 32
    boundary = torch.randn(batch, kg.num_nodes, kdim, generator=gen)
    relation = torch.randn(batch, kg.num_etypes, kdim, generator=gen)
    layer = reference.NBFNetLayer(kdim, kg.num_etypes, message="distmult", aggregate="pna")
    yield "NBFNet layer", "umls (real)", layer, kg, (boundary, boundary, relation)


def cmd_demo(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    rows = []
    for model, dataset, layer, graph, inputs in _demo_cases(args.dim):
        def forward():
            with torch.no_grad():
                return layer(graph, *inputs)

        def train_step():
            layer.zero_grad()
            layer(graph, *inputs).square().mean().backward()

        infer = _time(forward, args.repeat)
        train = _time(train_step, args.repeat)
        out = forward()
        rows.append((model, dataset, graph.num_nodes, graph.num_edges, graph.num_etypes, infer, train,
                     bool(torch.isfinite(out).all())))

    print(f"Pigeon {__import__('pigeon').__version__} demo: reference layers (plain PyTorch), "
          f"hidden {args.dim}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'model':<13} {'dataset':<17} {'nodes':>8} {'edges':>9} {'rels':>5} " \
             f"{'infer s (min-max)':>22} {'train s (min-max)':>22} finite"
    print(header)
    print("-" * len(header))
    for model, dataset, n, e, r, infer, train, finite in rows:
        print(f"{model:<13} {dataset:<17} {n:>8} {e:>9} {r:>5} "
              f"{infer[0]:>8.4f} ({infer[1]:.4f}-{infer[2]:.4f}) "
              f"{train[0]:>8.4f} ({train[1]:.4f}-{train[2]:.4f}) {'yes' if finite else 'NO'}")
    return 0 if all(row[-1] for row in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pigeon",
        description="Pigeon: a compiler for relational graph neural network kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the reference layers on a real and a synthetic graph and print a table",
        description="Load the UMLS knowledge graph (real, shipped with PyKEEN) and the aifb profile "
                    "(synthetic), run the reference RGCN, RGAT, HGT and NBFNet layers, and print "
                    "inference and training times. Example: pigeon demo --dim 32",
    )
    demo.add_argument("--dim", type=int, default=64, help="hidden size (default: 64)")
    demo.add_argument("--repeat", type=int, default=3, help="timed runs per case after warm-up (default: 3)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
