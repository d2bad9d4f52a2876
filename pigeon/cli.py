"""The `pigeon` command line."""

from __future__ import annotations

import argparse
import sys

import torch

from pigeon.nn.examples import EXAMPLE_LAYERS, example_layer


def cmd_demo(args: argparse.Namespace) -> int:
    """``pigeon bench`` with the demo's settings, writing a report folder."""
    from pathlib import Path

    import torch

    from pigeon.bench.command import run_bench
    from pigeon.bench.systems import default_systems

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    systems = args.systems or ",".join(s for s in default_systems(device) if s != "pigeon-torch")
    argv = ["bench", "--models", args.models, "--datasets", "aifb", "--modes", "infer,train",
            "--device", device, "--systems", systems, "--dim", str(args.dim), "--scale", str(args.scale), "--repeat", str(args.repeat),
            "--timeout-s", str(args.timeout_s), "--memory-gb", str(args.memory_gb),
            "--json", str(out / "report.json"), "--markdown", str(out / "report.md"),
            "--plot", str(out / "speedups.png")]
    bench_args = build_parser().parse_args(argv)
    print(f"pigeon demo: {args.models} on the aifb profile (synthetic, scale {args.scale}), hidden {args.dim}, "
          f"on {device}: {systems}, each case in its own process. Report: {out}/", flush=True)
    return run_bench(bench_args)


LAYERS = EXAMPLE_LAYERS


def cmd_show_ir(args: argparse.Namespace) -> int:
    from pigeon.data import load
    from pigeon.ir import format_program
    from pigeon.ir.autodiff import backward_program
    from pigeon.ir.kernel_ir import format_kernel_program
    from pigeon.passes import PASS_NAMES, PassContext, optimize

    graph = load(args.dataset, scale=args.scale, seed=0).graph
    module, tensors = example_layer(args.layer, graph, args.dim, args.heads)
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


# Backends whose executors generate source code, and how a line comment starts in it.
SOURCE_BACKENDS = {"triton": "#", "cpu": "//"}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot be built in this process."""


def kernel_source(layer: str, backend: str, graph, dim: int, heads: int,
                  dtype: torch.dtype = torch.float32, backward: bool = False) -> str:
    """The generated source of ``layer``'s forward (or, with ``backward``, backward)
    kernels on ``backend`` for ``graph``: what ``pigeon show-kernels`` prints.

    Only plans: nothing is compiled or launched, so Triton source renders on a
    machine without a GPU. Raises :class:`BackendUnavailable` when ``backend`` is
    not registered or its imports fail in this process.
    """
    from pigeon.runtime.compiled import EXECUTORS

    if backend not in SOURCE_BACKENDS:
        raise ValueError(f"Expected `backend` to be one of {list(SOURCE_BACKENDS)} (got {backend!r})")
    if backend not in EXECUTORS:
        raise BackendUnavailable(f"the {backend!r} backend is not registered in "
                                 f"pigeon.runtime.compiled.EXECUTORS (it has {list(EXECUTORS)})")
    module, tensors = example_layer(layer, graph, dim, heads, backend=backend)
    tensors = {name: value.to(dtype) for name, value in tensors.items()}   # planned for the dtype it renders
    try:
        plan = module.compiled.plan(graph, tensors)
    except ImportError as exc:
        raise BackendUnavailable(f"the {backend!r} backend cannot be built in this process: {exc}") from exc
    executor = plan.run_backward if backward else plan.run_forward
    return executor.source(dtype)


def cmd_show_kernels(args: argparse.Namespace) -> int:
    from pigeon.data import load

    graph = load(args.dataset, scale=args.scale, seed=0).graph
    try:
        source = kernel_source(args.layer, args.backend, graph, args.dim, args.heads,
                               DTYPES[args.dtype], args.backward)
    except BackendUnavailable as exc:
        raise SystemExit(f"pigeon show-kernels: {exc}") from None
    comment = SOURCE_BACKENDS[args.backend]
    print(f"{comment} {args.layer} on {args.dataset} x{args.scale}: {graph.num_nodes} nodes, "
          f"{graph.num_edges} edges, {graph.num_etypes} edge types; hidden {args.dim}, heads {args.heads}; "
          f"{args.backend} backend, {'backward' if args.backward else 'forward'} kernels, {args.dtype}")
    print(source.rstrip("\n"))
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
        help="benchmark RGCN, RGAT and HGT on the aifb profile against DGL and PyG",
        description="The main job in one command: compile RGCN, RGAT and HGT with every Pigeon backend "
                    "this machine has, check each against the reference layers, time inference and "
                    "training on the aifb profile (synthetic, no download) against DGL and PyG, print "
                    "the table (median and spread, speedup over the best baseline, peak memory, "
                    "check) and write a report folder (report.json, report.md, speedups.png). Each "
                    "case runs in its own process; a baseline that runs out of memory or time is "
                    "recorded as such. `pigeon bench` runs any other set of cases.",
        epilog="example:\n  pigeon demo\n  pigeon demo --out /tmp/demo --repeat 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="pigeon-demo", help="report folder (default: ./pigeon-demo)")
    demo.add_argument("--models", default="rgcn,rgat,hgt", help="comma-separated (default: rgcn,rgat,hgt)")
    demo.add_argument("--systems", default=None,
                      help="comma-separated, as for pigeon bench (default: the generated backends for this "
                           "device, dgl, pyg; add pigeon-torch for the unfused lowering)")
    demo.add_argument("--dim", type=int, default=64, help="hidden size, in and out (default: 64)")
    demo.add_argument("--scale", type=float, default=1.0, help="size of the aifb profile (default: 1.0)")
    demo.add_argument("--repeat", type=int, default=3, help="timed runs per case after warm-up (default: 3)")
    demo.add_argument("--timeout-s", type=float, default=30.0,
                      help="time limit per case, recorded as a timeout when hit (default: 30)")
    demo.add_argument("--memory-gb", type=float, default=8.0,
                      help="address-space cap per case, recorded as OOM when hit (default: 8)")
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

    kernels = sub.add_parser(
        "show-kernels",
        help="print the generated kernel source of a layer (Triton or C)",
        description="Compile a built-in layer for a profile graph and print the source code its "
                    "backend generates: the Triton module (--backend triton) or the C file with "
                    "OpenMP (--backend cpu) of the forward kernels, or of the backward kernels with "
                    "--backward. Nothing is compiled or run, so the Triton source prints on a "
                    "machine without a GPU. GEMMs the CPU backend hands to torch are not in its "
                    "C file.",
        epilog="example:\n  pigeon show-kernels rgat --backend triton\n"
               "  pigeon show-kernels hgt --backend cpu --backward --dtype float64",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kernels.add_argument("layer", choices=LAYERS, help="which layer")
    kernels.add_argument("--backend", choices=tuple(SOURCE_BACKENDS), default="triton",
                         help="whose source to print (default: triton)")
    kernels.add_argument("--backward", action="store_true", help="print the backward kernels instead")
    kernels.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                         help="element type the kernels are generated for (default: float32)")
    kernels.add_argument("--dataset", default="aifb", help="graph profile or dataset (default: aifb)")
    kernels.add_argument("--scale", type=float, default=0.02, help="profile scale (default: 0.02)")
    kernels.add_argument("--dim", type=int, default=16, help="hidden size (default: 16)")
    kernels.add_argument("--heads", type=int, default=1, help="attention heads (default: 1)")
    kernels.set_defaults(func=cmd_show_kernels)

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

    from pigeon.tune.command import EXAMPLE as TUNE_EXAMPLE, add_arguments as add_tune_arguments, cmd_tune

    tune = sub.add_parser(
        "tune",
        help="autotune a layer's kernel configs and compiler decisions on a graph; show or clear the cache",
        description="Search the compiler decisions (reordering, compact materialization, CSR or COO "
                    "traversals) and every generated kernel's launch config for one layer on one graph, "
                    "check each candidate against the default, time it, print the ranked table and store "
                    "the fastest in the tuning cache under PIGEON_CACHE_DIR, where compiled layers find it "
                    "(PIGEON_AUTOTUNE=0 turns that off).",
        epilog=TUNE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_tune_arguments(tune)
    tune.set_defaults(func=cmd_tune)

    from pigeon.train import add_train_parsers

    train = sub.add_parser(
        "train",
        help="train a model end to end (NBFNet link prediction, neural operators)",
        description="Train and evaluate a model with Pigeon's compiled layers; each model has its "
                    "own sub-command. `pigeon train MODEL --help` lists its options.",
    )
    add_train_parsers(train.add_subparsers(dest="model", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
