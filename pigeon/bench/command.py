"""``pigeon bench``: argument types and the command (the parser lives in pigeon/cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from pigeon.arguments import (UsageError, existing_file, graph_datasets, name_list, non_negative_int,
                              output_file, positive_float, positive_int, scale, why_not_a_graph_dataset)
from pigeon.bench.floor import add_floor
from pigeon.bench.harness import Config, new_report, run_cases
from pigeon.bench.provenance import finish_report
from pigeon.bench.report import (format_compare, format_markdown, format_profiles, format_table, load_report,
                                 save_report, write_plot)
from pigeon.bench.systems import DEVICES, MODELS, MODES, BACKEND_DEVICES, all_systems, available_systems

EXAMPLE = """\
example:
  pigeon bench --models rgcn,rgat --datasets aifb --systems pigeon-torch,dgl,pyg \\
      --dim 64 --repeat 5 --json out.json --markdown out.md --plot out.png
  pigeon bench --from-json new.json --compare old.json   # ratios per case, nothing run
  pigeon bench --models hgt --systems pigeon-cpu --profile   # time per generated kernel
  pigeon bench --datasets aifb --structure --repeats 1,2,4,8 --skews 0,1   # speedup by graph structure

Each case (system x model x dataset x mode) runs in its own process under a memory cap
and a time limit; one that runs out of memory, crashes or hangs is recorded as OOM,
error or timeout and the run goes on. Before timing, each system's output is checked
against pigeon.reference (float64) where it computes the same maths. The exit status
is 1 if any check found a mismatch, 0 otherwise. Speedups and the headline are over the
fastest baseline that computes the same maths; other maths is shown apart."""


def _why_no_system(name: str) -> str | None:
    if name.startswith("pigeon-"):
        from pigeon.runtime.compiled import BACKENDS

        return f"the {name[7:]!r} backend is not in pigeon.runtime.compiled.BACKENDS {BACKENDS}"
    return None


models = name_list("model", lambda: MODELS)
modes = name_list("mode", lambda: MODES)
datasets = name_list("dataset", graph_datasets, why_not_a_graph_dataset)
systems = name_list("system", lambda: list(available_systems()), _why_no_system)


def _config(args: argparse.Namespace) -> Config:
    return Config(
        models=args.models, datasets=args.datasets, modes=args.modes,
        systems=args.systems or tuple(all_systems(args.device)),
        dim=args.dim, heads=args.heads, scale=args.scale, seed=args.seed, repeat=args.repeat,
        warmup=args.warmup, memory_gb=args.memory_gb, timeout_s=args.timeout_s, device=args.device,
        threads=args.threads, profile=args.profile,
        repeats=args.repeats if args.structure else (), skews=args.skews if args.structure else (),
        tuned=args.tuned,
    )


def numbers(kind: str, low: float):
    """An argparse type: comma-separated numbers of at least ``low``."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers for {kind} (got {text!r})") from None
        if not values or any(not v >= low for v in values):
            raise argparse.ArgumentTypeError(f"expected {kind} of at least {low:g} each (got {text!r})")
        return tuple(dict.fromkeys(values))

    parse.__name__ = f"{kind} list"
    return parse


def _command_line(config: Config, args: argparse.Namespace) -> list[str]:
    """Every option spelled out, so that the recorded command reruns the same cases."""
    argv = ["bench"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None or value is False:
            continue
        flag = "--" + field.name.replace("_", "-")
        if value is True:
            argv.append(flag)
            continue
        if value == ():
            continue
        if field.name == "repeats":
            argv.append("--structure")
        argv += [flag, ",".join(f"{v:g}" if isinstance(v, float) else v for v in value)
                 if isinstance(value, tuple) else str(value)]
    for flag in ("json", "markdown", "plot", "compare"):
        if getattr(args, flag):
            argv += [f"--{flag}", getattr(args, flag)]
    return argv


def _check_setup(config: Config) -> str | None:
    """What stops this run before it starts, or None."""
    if config.dim % config.heads:
        return f"--dim must be divisible by --heads (got dim {config.dim}, heads {config.heads})"
    if config.scale != 1.0:
        from pigeon.data.datasets import Source, source_of

        real = [name for name in config.datasets if source_of(name) is not Source.PROFILE]
        if real:
            return (f"--scale applies to synthetic profiles only, and {', '.join(real)} is real data, loaded "
                    f"whole (got --scale {config.scale}); run it in a separate pigeon bench without --scale")
    if config.repeats:
        from pigeon.data.profiles import PROFILES

        real = [name for name in config.datasets if name not in PROFILES]
        if real:
            return (f"--structure generates synthetic profiles, and {', '.join(real)} is not one "
                    f"(profiles: {', '.join(PROFILES)})")
    named = available_systems()
    wrong = [s for s in config.systems if named[s].device not in (None, config.device)]
    if wrong:
        return (f"{', '.join(wrong)} run(s) on {named[wrong[0]].device} only (got --device {config.device}); "
                f"devices of Pigeon's backends: {BACKEND_DEVICES}")
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--device cuda, but torch sees no CUDA device"
    return None


def run_bench(args: argparse.Namespace) -> int:
    """Run (or, with --from-json, load) the benchmark and print and write its reports."""
    old = None
    try:
        if args.compare:
            old = load_report(args.compare)
        if args.plot:
            import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install matplotlib, or the package's [test] extra)") from None
    except ValueError as exc:
        raise UsageError(f"argument --compare: {exc}") from None

    if args.from_json:
        try:
            report = load_report(args.from_json)
        except ValueError as exc:
            raise UsageError(f"argument --from-json: {exc}") from None
    else:
        config = _config(args)
        problem = _check_setup(config)
        if problem:
            raise UsageError(problem)
        report = new_report(config, _command_line(config, args))
        report["load_average"] = {"start": round(os.getloadavg()[0], 2), "end": None}

        def keep(result: dict) -> None:
            add_floor(result, report["machine"]["measured"])
            report["results"].append(result)
            if args.json:
                save_report(report, args.json)

        run_cases(config.cases(), progress=not args.no_progress, on_result=keep)
        report["load_average"]["end"] = round(os.getloadavg()[0], 2)
        finish_report(report)
        if args.json:
            save_report(report, args.json)

    print(format_table(report))
    profiles = format_profiles(report)
    if profiles:
        print()
        print(profiles)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(format_markdown(report))
    if args.plot:
        write_plot(report, args.plot)
    if old is not None:
        print()
        print(format_compare(report, old, args.compare))
    mismatched = any((r.get("check") or {}).get("status") == "mismatch" for r in report["results"])
    return 1 if mismatched else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``pigeon bench``'s options (pigeon/cli.py calls this in its parser block)."""
    names = list(available_systems())
    parser.add_argument("--models", type=models, default=MODELS,
                        help=f"comma-separated, from {', '.join(MODELS)} (default: all)")
    parser.add_argument("--datasets", type=datasets, default=("aifb",),
                        help="comma-separated names pigeon.data.load knows, e.g. aifb,mutag,bgs,am "
                             "(synthetic profiles) or umls (default: aifb)")
    parser.add_argument("--modes", type=modes, default=MODES,
                        help="infer (forward, no grad) and/or train (forward and backward) (default: both)")
    parser.add_argument("--systems", type=systems, default=None,
                        help=f"comma-separated, from {', '.join(names)}; pigeon-<backend> exists for each "
                             "backend in pigeon.runtime.compiled.BACKENDS (default: Pigeon's backends "
                             "for --device and every baseline)")
    parser.add_argument("--dim", type=positive_int, default=64, help="hidden size, in and out (default: 64)")
    parser.add_argument("--heads", type=positive_int, default=1,
                        help="attention heads for RGAT and HGT, each dim/heads wide (default: 1)")
    parser.add_argument("--scale", type=scale, default=1.0,
                        help="size of synthetic profiles relative to the published graph (default: 1.0)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="graph, features and weights (default: 0)")
    parser.add_argument("--repeat", type=positive_int, default=5,
                        help="timed runs per case; the table shows their median and min-max (default: 5)")
    parser.add_argument("--warmup", type=non_negative_int, default=1,
                        help="untimed runs after the first call and the check (default: 1)")
    parser.add_argument("--memory-gb", type=positive_float, default=12.0,
                        help="memory cap per case in GiB: address space on the CPU, a share of the "
                             "GPU's memory with --device cuda; a case over it is recorded as OOM (default: 12)")
    parser.add_argument("--timeout-s", type=positive_float, default=600.0,
                        help="seconds each case has to its first call, start-up included; after it, the "
                             "rest of the case has as long as the first call predicts (at least until the "
                             "limit). Recorded as timeout, with how busy other processes kept the machine "
                             "(default: 600)")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch and OpenMP threads per case (default: torch's choice, one per core)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile Pigeon's systems (torch.profiler, the timed step --repeat times) and "
                             "print the time of each generated kernel, forward and backward, per case")
    parser.add_argument("--minibatch", action="store_true",
                        help="run the mini-batch benchmark instead (sampled training steps on the mag profile, "
                             "Pigeon against DGL, 1 and 2 processes); its options: pigeon bench --minibatch --help")
    parser.add_argument("--structure", action="store_true",
                        help="the structure sweep: each dataset's profile generated at every --repeats and "
                             "--skews point instead of as published; the tables give the speedup per point")
    parser.add_argument("--repeats", type=numbers("repeats", 1.0), default=(1.0, 2.0, 4.0, 8.0),
                        help="with --structure: mean edges per (node, edge type) pair (default: 1,2,4,8)")
    parser.add_argument("--skews", type=numbers("skews", 0.0), default=(0.0, 1.0),
                        help="with --structure: Zipf exponents of the source degrees (default: 0,1)")
    parser.add_argument("--tuned", action="store_true",
                        help="let Pigeon's layers read the tuning cache (default: as with a fresh, empty cache: "
                             "the cost model decides; the results file records which)")
    parser.add_argument("--json", metavar="FILE", type=output_file, default=None,
                        help="write every result, the machine and the command here (default: none); "
                             "rewritten after each case")
    parser.add_argument("--markdown", metavar="FILE", type=output_file, default=None, help="write the table as Markdown (default: none)")
    parser.add_argument("--plot", metavar="FILE.png", type=output_file, default=None,
                        help="write a bar chart of Pigeon's speedups over the best baseline (default: none)")
    parser.add_argument("--compare", metavar="OLD.json", type=existing_file, default=None,
                        help="also print the ratio new/old of the median time of each case found in OLD.json")
    parser.add_argument("--from-json", metavar="FILE", type=existing_file, default=None,
                        help="run nothing: show the results saved in FILE (with --markdown, --plot, --compare)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
