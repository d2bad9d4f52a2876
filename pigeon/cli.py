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


LAYERS = ("rgcn", "rgat", "hgt", "nbfnet")


def _example_layer(name: str, graph, dim: int, heads: int):
    """A compiled ``pigeon.nn`` layer and the tensors its compiled function takes."""
    from pigeon import nn as pnn

    gen = torch.Generator().manual_seed(0)
    if name == "nbfnet":
        module = pnn.NBFNetLayer(dim, graph.num_etypes, aggregate="pna")
        batch = 2
        tensors = {
            "x": torch.randn(graph.num_nodes, batch, dim, generator=gen),
            "boundary": torch.randn(graph.num_nodes, batch, dim, generator=gen),
            "relation": torch.randn(graph.num_etypes, batch, dim, generator=gen),
        }
        params = {n.replace(".", "_"): p for n, p in module.named_parameters()}
        return module, {**tensors, **params}
    module = {
        "rgcn": lambda: pnn.RGCN(dim, dim, graph.num_etypes),
        "rgat": lambda: pnn.RGAT(dim, dim // heads, graph.num_etypes, heads=heads),
        "hgt": lambda: pnn.HGT(dim, dim, graph.num_ntypes, graph.num_etypes, heads=heads),
    }[name]()
    return module, {"x": torch.randn(graph.num_nodes, dim, generator=gen), **dict(module.named_parameters())}


def cmd_show_ir(args: argparse.Namespace) -> int:
    from pigeon.data import load
    from pigeon.ir import format_program
    from pigeon.ir.autodiff import backward_program
    from pigeon.ir.kernel_ir import format_kernel_program
    from pigeon.passes import PASS_NAMES, PassContext, optimize

    graph = load(args.dataset, scale=args.scale, seed=0).graph
    module, tensors = _example_layer(args.layer, graph, args.dim, args.heads)
    compiled = module.compiled
    print(f"# {args.layer} on {args.dataset} x{args.scale}: {graph.num_nodes} nodes, "
          f"{graph.num_edges} edges, {graph.num_etypes} edge types; hidden {args.dim}")
    if args.level == 2:
        plan = compiled.plan(graph, tensors)
        print(format_kernel_program(plan.backward_kernels if args.backward else plan.forward_kernels))
        for decision in plan.decisions:
            print(f"# {decision}")
        return 0
    traced, rows = compiled.trace(graph, tensors)
    if args.after is None:
        program = traced
    else:
        if args.after not in PASS_NAMES:
            raise SystemExit(f"pigeon show-ir: --after must be one of {list(PASS_NAMES)} (got {args.after!r})")
        seen = {}
        optimize(traced, PassContext(rows), compiled.options, hook=lambda name, p: seen.setdefault(name, p))
        program = seen[args.after]
    if args.backward:
        program = backward_program(program)
    print(format_program(program))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pigeon.bench.command import run_bench

    return run_bench(args)


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

    show = sub.add_parser(
        "show-ir",
        help="print a layer's IR: level 1 (graph dataflow) or level 2 (kernels)",
        description="Compile a built-in layer for a profile graph and print its IR. Level 1 is the traced "
                    "graph-level program (or the program after a pass with --after); level 2 is the "
                    "kernel program the backends run. Example: pigeon show-ir rgat --level 2",
    )
    show.add_argument("layer", choices=LAYERS, help="which layer")
    show.add_argument("--level", type=int, choices=(1, 2), default=1, help="IR level (default: 1)")
    show.add_argument("--after", default=None, help="level 1 only: print the program after this pass "
                      "(cse, reorder, dce, compact, simplify; the first run of each)")
    show.add_argument("--backward", action="store_true", help="print the backward program instead")
    show.add_argument("--dataset", default="aifb", help="graph profile or dataset (default: aifb)")
    show.add_argument("--scale", type=float, default=0.02, help="profile scale (default: 0.02)")
    show.add_argument("--dim", type=int, default=16, help="hidden size (default: 16)")
    show.add_argument("--heads", type=int, default=1, help="attention heads (default: 1)")
    show.set_defaults(func=cmd_show_ir)

    from pigeon.bench.command import EXAMPLE as BENCH_EXAMPLE, add_arguments as add_bench_arguments

    bench = sub.add_parser(
        "bench",
        help="time Pigeon's backends against DGL and PyG, each case in its own process",
        description="Benchmark relational GNN layers: every combination of --systems, --models, "
                    "--datasets and --modes is a case, timed (median and min-max of --repeat runs "
                    "after a warm-up) with its peak memory and a correctness check against "
                    "pigeon.reference. Prints a table with each Pigeon system's speedup over the best "
                    "of DGL and PyG; optionally writes JSON, Markdown and a PNG chart.",
        epilog=BENCH_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
