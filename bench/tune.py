"""Tuned vs default: ``python bench/tune.py [--datasets aifb,mutag] [--budget-s 60] [--device cuda]``.

``--device cpu`` (default) tunes the cpu backend; ``--device cuda`` tunes the triton
backend on the GPU (run from the checkout with ``PYTHONPATH=.``, as
``bench/gpu_check.sh`` does), timing with CUDA synchronisation around each run.

On a machine shared with other jobs, run it with ``OMP_WAIT_POLICY=PASSIVE``: with
OpenMP's default active waiting, a thread descheduled by another job makes every
parallel region (each per-type matmul is one) wait a scheduler time slice, and a
forward pass that takes 25 ms takes seconds.

For every model, dataset and mode: ``pigeon.tune`` searches the compiler decisions and
the C kernels' OpenMP schedules within the budget (its cache in a fresh folder, so
nothing is reused from an earlier run), then the default and the chosen candidate are
timed again, alternately, ``--repeat`` rounds each (so machine load hits both alike),
and the medians give the speedup. Writes ``bench/results/tune-cpu-<date>.{json,md}``.

Where the tuner keeps the default (nothing was faster by more than its threshold), the
table says so: that is a result about the cost model, not a failure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine(device: str = "cpu") -> dict:
    from pigeon.runtime.target import device_name

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpu = {"gpu": device_name(torch.device("cuda"))} if device == "cuda" else {}
    return {"cpu": device_name(torch.device("cpu")), **gpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "loadavg_at_start": load,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)")}


def paired_medians(run_a, run_b, repeat: int, sync=lambda: None) -> tuple[float, float]:
    """Medians of ``repeat`` alternating timings of ``run_a`` and ``run_b`` (one warm-up
    each); ``sync`` waits for the device before and after each run."""
    run_a(), run_b()
    a, b = [], []
    for _ in range(repeat):
        for run, times in ((run_a, a), (run_b, b)):
            sync()
            start = time.perf_counter()
            run()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def run_case(model: str, dataset: str, scale: float, mode: str, budget_s: float, dim: int, heads: int,
             repeat: int, device: str = "cpu") -> dict:
    import pigeon
    from pigeon.nn.examples import example_layer
    from pigeon.runtime.choice import Choice
    from pigeon.tune.measure import Workload

    backend = "triton" if device == "cuda" else "cpu"
    graph = pigeon.data.load(dataset, scale=scale, seed=0).graph.to(device)
    module, tensors = example_layer(model, graph, dim, heads, backend=backend)
    module.to(device)
    tensors = {**tensors, **dict(module.named_parameters()), "x": tensors["x"].to(device)}
    result = pigeon.tune(module, graph, tensors["x"], mode=mode, budget_s=budget_s, backend=backend,
                         progress=False, verbose=False)
    work = Workload(module.compiled, graph, tensors, mode)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    default_s, tuned_s = paired_medians(lambda: work.step(Choice()), lambda: work.step(result.chosen), repeat,
                                        sync)
    default_plan = module.compiled.plan(graph, work.tensors, Choice())
    chosen_plan = module.compiled.plan(graph, work.tensors, result.chosen)
    failed = [m for m in result.measured if m.status != "ok"]
    return {
        "model": model, "dataset": dataset, "scale": scale, "mode": mode,
        "graph": {"nodes": graph.num_nodes, "edges": graph.num_edges, "etypes": graph.num_etypes,
                  "compaction_ratio": graph.stats().compaction_ratio},
        "budget_s": budget_s, "search_s": result.elapsed_s, "candidates": len(result.measured),
        "failed": [{"candidate": m.choice.describe(), "status": m.status} for m in failed],
        "stopped_by_budget": result.stopped_by_budget,
        "chosen": result.chosen.describe(), "chosen_is_default": result.chosen == Choice(),
        "tuner_default_ms": result.default_s * 1e3, "tuner_chosen_ms": result.chosen_s * 1e3,
        "default_ms": default_s * 1e3, "tuned_ms": tuned_s * 1e3, "speedup": default_s / tuned_s,
        "default_decisions": default_plan.decisions, "chosen_decisions": chosen_plan.decisions,
        "table": result.rows()[:10],
    }


def _decisions(decisions: list[str]) -> str:
    kinds = [d.split(":", 1)[0] for d in decisions]
    return ", ".join(f"{k} x{kinds.count(k)}" for k in dict.fromkeys(kinds)) or "none"


def markdown(report: dict) -> str:
    m = report["machine"]
    backend = "triton backend on " + m["gpu"] if m.get("gpu") else "cpu backend"
    lines = [f"# Tuned vs default, {backend} ({report['date']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, OMP_WAIT_POLICY "
             f"{m['OMP_WAIT_POLICY']}; load average at start "
             f"{tuple(round(x, 1) for x in m['loadavg_at_start'] or ())}. {report['conditions']}", "",
             f"Each case: `pigeon.tune` with a {report['budget_s']:g} s budget (float32, hidden "
             f"{report['dim']}, heads {report['heads']}), then default and tuned timed alternately, "
             f"{report['repeat']} rounds, medians. Speedup = default / tuned.", "",
             "| model | dataset | mode | default ms | tuned ms | speedup | candidates | tuner chose | "
             "rewrites (default -> tuned) |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    for c in report["cases"]:
        chose = "default (nothing faster)" if c["chosen_is_default"] else f"`{c['chosen']}`"
        if c["stopped_by_budget"]:
            chose += " [budget hit]"
        rewrites = f"{_decisions(c['default_decisions'])} -> {_decisions(c['chosen_decisions'])}"
        # The same plan timed twice: the ratio is the measurement's noise, not a speedup.
        speed = f"1 (same plan; A/A {c['speedup']:.2f})" if c["chosen_is_default"] else f"{c['speedup']:.2f}x"
        lines.append(f"| {c['model']} | {c['dataset']} x{c['scale']:g} | {c['mode']} | {c['default_ms']:.1f} | "
                     f"{c['tuned_ms']:.1f} | {speed} | {c['candidates']} | {chose} | {rewrites} |")
    lines += ["", "Rewrites count the cost model's decisions in the forward and backward programs "
              "(`reorder`, `reorder_chain`, `compact`). A candidate that disagreed with the default or did "
              "not build is listed in the JSON under `failed`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/tune.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="rgcn,rgat,hgt")
    parser.add_argument("--datasets", default="aifb,mutag", help="comma-separated; name:scale for a fraction")
    parser.add_argument("--modes", default="infer,train")
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--conditions", default="", help="free text for the report (e.g. other jobs running)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cpu: the cpu backend; cuda: the triton backend on the GPU (default: cpu)")
    parser.add_argument("--out", default=None, help="report stem (default bench/results/tune-<cpu|cuda>-<date>)")
    parser.add_argument("--merge", action="store_true", help="add to the cases of an existing report")
    args = parser.parse_args(argv)

    os.environ["PIGEON_CACHE_DIR"] = tempfile.mkdtemp(prefix="pigeon-tune-bench-")
    date = datetime.date.today().isoformat()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/tune.py: --device cuda needs a CUDA device, and torch sees none")
    stem = Path(args.out) if args.out else RESULTS / f"tune-{args.device}-{date}"
    report = {"date": date, "machine": machine(args.device), "budget_s": args.budget_s, "dim": args.dim,
              "heads": args.heads, "repeat": args.repeat, "conditions": args.conditions, "cases": []}
    json_path = stem.with_suffix(".json")
    if args.merge and json_path.exists():
        report["cases"] = json.loads(json_path.read_text())["cases"]
    for spec in args.datasets.split(","):
        dataset, _, scale = spec.partition(":")
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                print(f"{model} {dataset} {mode} ...", flush=True)
                case = run_case(model, dataset, float(scale or 1.0), mode, args.budget_s, args.dim, args.heads,
                                args.repeat, args.device)
                print(f"  default {case['default_ms']:.1f} ms, tuned {case['tuned_ms']:.1f} ms "
                      f"({case['speedup']:.2f}x), chose {case['chosen']}", flush=True)
                report["cases"] = [c for c in report["cases"] if (c["model"], c["dataset"], c["mode"])
                                   != (model, dataset, mode)] + [case]
                stem.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(json.dumps(report, indent=1, default=str))
                stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
