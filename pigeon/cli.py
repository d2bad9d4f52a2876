"""The `pigeon` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pigeon.arguments import (UsageError, graph_datasets, load_graph, one_name, positive_float, positive_int, scale,
                              why_not_a_graph_dataset)
from pigeon.nn.examples import EXAMPLE_LAYERS, example_layer
from pigeon.passes import PASS_NAMES


def cmd_demo(args: argparse.Namespace) -> int:
    """``pigeon bench`` with the demo's settings, writing a report folder."""
    from pigeon.bench.command import run_bench
    from pigeon.bench.systems import default_systems

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: expected a folder for the report (got {args.out!r}, a file)")
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    systems = ",".join(args.systems or [s for s in default_systems(device) if s != "pigeon-torch"])
    argv = ["bench", "--models", ",".join(args.models), "--datasets", "aifb", "--modes", "infer,train",
            "--device", device, "--systems", systems, "--dim", str(args.dim), "--scale", str(args.scale), "--repeat", str(args.repeat),
            "--timeout-s", str(args.timeout_s), "--memory-gb", str(args.memory_gb),
            "--json", str(out / "report.json"), "--markdown", str(out / "report.md"),
            "--plot", str(out / "speedups.png")]
    bench_args = build_parser().parse_args(argv)
    print(f"pigeon demo: {','.join(args.models)} on the aifb profile (synthetic, scale {args.scale}), hidden {args.dim}, "
          f"on {device}: {systems}, each case in its own process. Report: {out}/", flush=True)
    return run_bench(bench_args)


LAYERS = EXAMPLE_LAYERS


def _check_heads(args: argparse.Namespace) -> None:
    """RGAT and HGT split the hidden size over the heads."""
    if args.layer in ("rgat", "hgt") and args.dim % args.heads:
        raise UsageError(f"--dim must be divisible by --heads for {args.layer} (got dim {args.dim}, heads {args.heads})")


def _graph(args: argparse.Namespace):
    """The graph of ``--dataset`` at ``--scale`` (0.02 of a synthetic profile unless given)."""
    return load_graph(args.dataset, args.scale, default_scale=0.02).graph


def _scale_text(args: argparse.Namespace) -> str:
    from pigeon.data.datasets import Source, source_of

    return f" x{0.02 if args.scale is None else args.scale}" if source_of(args.dataset) is Source.PROFILE else ""


def cmd_show_ir(args: argparse.Namespace) -> int:
    from pigeon.ir import format_program
    from pigeon.ir.autodiff import backward_program
    from pigeon.ir.kernel_ir import format_kernel_program
    from pigeon.passes import PassContext, optimize
    from pigeon.passes.choose import decide
    from pigeon.runtime.compiled import resolve_backend, traversal_layout
    from pigeon.runtime.target import machine_target

    _check_heads(args)
    if args.level == 2 and args.after is not None:
        raise UsageError(f"argument --after: shows a level-1 program after a pass (got --level 2 and "
                         f"--after {args.after})")
    graph = _graph(args)
    module, tensors = example_layer(args.layer, graph, args.dim, args.heads)
    compiled = module.compiled
    print(f"# {args.layer} on {args.dataset}{_scale_text(args)}: {graph.num_nodes} nodes, "
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
        seen = {}
        ctx = PassContext(rows)
        backend = resolve_backend(compiled.backend, graph.device)
        options = decide(traced, ctx, compiled.options, machine_target(backend, graph.device), training=True,
                         layout=traversal_layout(backend, compiled.layout))
        optimize(traced, ctx, options, hook=lambda name, p: seen.setdefault(name, p))
        program = seen[args.after]
        for decision in ctx.decisions:
            print(f"# {decision}")
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
    _check_heads(args)
    graph = _graph(args)
    try:
        source = kernel_source(args.layer, args.backend, graph, args.dim, args.heads,
                               DTYPES[args.dtype], args.backward)
    except BackendUnavailable as exc:
        raise UsageError(f"argument --backend: {exc}") from None
    comment = SOURCE_BACKENDS[args.backend]
    print(f"{comment} {args.layer} on {args.dataset}{_scale_text(args)}: {graph.num_nodes} nodes, "
          f"{graph.num_edges} edges, {graph.num_etypes} edge types; hidden {args.dim}, heads {args.heads}; "
          f"{args.backend} backend, {'backward' if args.backward else 'forward'} kernels, {args.dtype}")
    print(source.rstrip("\n"))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pigeon.bench.command import run_bench

    return run_bench(args)


def _add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    """The graph and sizes of ``pigeon show-ir`` and ``show-kernels``."""
    parser.add_argument("--dataset", type=one_name("dataset", graph_datasets, why_not_a_graph_dataset),
                        default="aifb", help="graph profile or dataset (default: aifb)")
    parser.add_argument("--scale", type=scale, default=None,
                        help="size of a synthetic profile, in (0, 1]; real datasets load whole (default: 0.02)")
    parser.add_argument("--dim", type=positive_int, default=16, help="hidden size (default: 16)")
    parser.add_argument("--heads", type=positive_int, default=1, help="attention heads (default: 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pigeon",
        description="Pigeon: a compiler for relational graph neural network kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from pigeon.bench.command import (EXAMPLE as BENCH_EXAMPLE, add_arguments as add_bench_arguments,
                                      models as model_list, systems as system_list)

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
    demo.add_argument("--models", type=model_list, default=("rgcn", "rgat", "hgt"),
                      help="comma-separated (default: rgcn,rgat,hgt)")
    demo.add_argument("--systems", type=system_list, default=None,
                      help="comma-separated, as for pigeon bench (default: the generated backends for this "
                           "device, dgl, pyg; add pigeon-torch for the unfused lowering)")
    demo.add_argument("--dim", type=positive_int, default=64, help="hidden size, in and out (default: 64)")
    demo.add_argument("--scale", type=scale, default=1.0, help="size of the aifb profile, in (0, 1] (default: 1.0)")
    demo.add_argument("--repeat", type=positive_int, default=3,
                      help="timed runs per case after warm-up (default: 3)")
    demo.add_argument("--timeout-s", type=positive_float, default=30.0,
                      help="seconds each case has to its first call; after it, the rest of the case has "
                           "as long as the first call predicts, so a machine doing other work slows a case "
                           "without timing it out. Recorded as a timeout when hit (default: 30)")
    demo.add_argument("--memory-gb", type=positive_float, default=8.0,
                      help="address-space cap per case, recorded as OOM when hit (default: 8)")
    demo.set_defaults(func=cmd_demo, command_parser=demo)

    show = sub.add_parser(
        "show-ir",
        help="print a layer's IR: level 1 (graph dataflow) or level 2 (kernels)",
        description="Compile a built-in layer for a profile graph and print its IR. Level 1 is the traced "
                    "graph-level program (or the program after a pass with --after); level 2 is the "
                    "kernel program the backends run. Example: pigeon show-ir rgat --level 2",
    )
    show.add_argument("layer", choices=LAYERS, help="which layer")
    show.add_argument("--level", type=int, choices=(1, 2), default=1, help="IR level (default: 1)")
    show.add_argument("--after", default=None, choices=PASS_NAMES,
                      help="level 1 only: print the program after this pass (the first run of each)")
    show.add_argument("--backward", action="store_true", help="print the backward program instead")
    _add_graph_arguments(show)
    show.set_defaults(func=cmd_show_ir, command_parser=show)

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
    _add_graph_arguments(kernels)
    kernels.set_defaults(func=cmd_show_kernels, command_parser=kernels)

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
    bench.set_defaults(func=cmd_bench, command_parser=bench)

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
    tune.set_defaults(func=cmd_tune, command_parser=tune)

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
    """Run one command. A mistake in the arguments, found while parsing or after, is one
    line naming the argument after the command's usage, and status 2; anything else
    raised is a bug and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and "--minibatch" in argv:
        # The mini-batch benchmark has options of its own (pigeon/bench/minibatch.py).
        from pigeon.bench.minibatch import main as minibatch_main

        return minibatch_main([a for a in argv[1:] if a != "--minibatch"])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        command = getattr(args, "command_parser", parser)
        command.print_usage(sys.stderr)
        print(f"{command.prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
