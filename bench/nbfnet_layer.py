"""One NBFNet layer on a large knowledge graph: fused kernels against materialised messages.

For each system (Pigeon's backends, and the plain-PyTorch reference layer) and each
mode (forward; forward + backward), one case runs in its own process: build the
fb15k profile graph (its counts include the inverse edges), one ``NBFNetLayer`` (``dim``, PNA, DistMult by
default) and a batch of queries packed into each node's row, check the output (and,
in training mode, the gradients) against the float64 reference on a small subgraph,
then time ``repeat`` runs after a warm-up. Peak memory is the rise of the process's
resident set (``VmHWM`` after a reset, minus the resident set before the timed runs),
so the imports and the graph do not count. A case that runs out of its memory cap or
time is recorded as such.

    python bench/nbfnet_layer.py --out bench/results/nbfnet-layer-cpu-DATE

writes ``DATE.json`` and ``DATE.md``. The torch backend lowers the layer without fusion,
so it materialises one message per edge and query, as the reference does; the cpu and
triton backends keep messages in registers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("forward", "train")


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _layer(system: str, dim: int, num_relations: int, aggregate: str, message: str, dtype, device):
    import torch

    from pigeon import nn as pnn
    from pigeon import reference

    torch.manual_seed(0)
    ref = reference.NBFNetLayer(dim, num_relations, message=message, aggregate=aggregate, dtype=dtype)
    if system == "reference":
        return ref.to(device)
    layer = pnn.NBFNetLayer(dim, num_relations, message=message, aggregate=aggregate,
                            backend=system.removeprefix("pigeon-"), dtype=dtype)
    layer.load_state_dict(ref.state_dict())
    return layer.to(device)


def _inputs(graph, batch: int, dim: int, dtype, device, seed: int = 1):
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, graph.num_nodes, dim, generator=gen, dtype=dtype)
    boundary = torch.randn(batch, graph.num_nodes, dim, generator=gen, dtype=dtype)
    relation = torch.randn(batch, graph.num_etypes, dim, generator=gen, dtype=dtype)
    return [t.to(device) for t in (x, boundary, relation)]


def _check(system: str, args) -> float:
    """Largest relative error of output and gradients against the float64 reference
    on a 2% scale profile graph (the same code path, small enough for float64)."""
    import torch

    from pigeon.data import load

    graph = load(args.dataset, scale=0.02, seed=0).graph.to(args.device)
    ref = _layer("reference", args.dim, graph.num_etypes, args.aggregate, args.message, torch.float64, args.device)
    got = _layer(system, args.dim, graph.num_etypes, args.aggregate, args.message, torch.float32, args.device)
    got.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    inputs64 = [t.requires_grad_() for t in _inputs(graph, 2, args.dim, torch.float64, args.device)]
    inputs32 = [t.detach().float().requires_grad_() for t in inputs64]
    want, out = ref(graph, *inputs64), got(graph, *inputs32)
    upstream = torch.randn(want.shape, dtype=torch.float64, device=args.device)
    want_grads = torch.autograd.grad(want, inputs64, upstream)
    got_grads = torch.autograd.grad(out, inputs32, upstream.float())
    worst = 0.0
    for a, b in zip((out, *got_grads), (want, *want_grads)):
        worst = max(worst, ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item())
    return worst


def run_case(args) -> dict:
    """One (system, mode) case in this process; prints its JSON result."""
    import torch

    from pigeon.data import load

    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"system": args.system, "mode": args.mode}
    result["max_rel_err"] = _check(args.system, args)
    graph = load(args.dataset, scale=args.scale, seed=0).graph.to(args.device)
    result.update(nodes=graph.num_nodes, edges=graph.num_edges, relations=graph.num_etypes)
    layer = _layer(args.system, args.dim, graph.num_etypes, args.aggregate, args.message, torch.float32, args.device)
    x, boundary, relation = _inputs(graph, args.batch, args.dim, torch.float32, args.device)
    train = args.mode == "train"
    if train:
        x.requires_grad_()
    upstream = torch.randn(args.batch, graph.num_nodes, args.dim, device=args.device) if train else None

    def step():
        if train:
            out = layer(graph, x, boundary, relation)
            out.backward(upstream)
            x.grad = None
            layer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                layer(graph, x, boundary, relation)
        if args.device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: compiles and builds the per-graph indices
    resource.setrlimit(resource.RLIMIT_AS, (int(args.memory_gb * 2**30), resource.RLIM_INFINITY))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        import ctypes
        import gc

        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _rss_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else _rss_mib("VmHWM")) - before
    result.update(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times), max_ms=1e3 * max(times),
                  peak_mib=peak, status="ok")
    return result


def _spawn(system: str, mode: str, args) -> dict:
    command = [sys.executable, __file__, "--case", "--system", system, "--mode", mode,
               "--dataset", args.dataset, "--scale", str(args.scale), "--batch", str(args.batch),
               "--dim", str(args.dim), "--aggregate", args.aggregate, "--message", args.message,
               "--repeat", str(args.repeat), "--memory-gb", str(args.memory_gb), "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"system": system, "mode": mode, "status": "timeout"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    text = proc.stderr[-2000:]
    oom = "out of memory" in text.lower() or "MemoryError" in text or "std::bad_alloc" in text or proc.returncode == -9
    return {"system": system, "mode": mode, "status": "oom" if oom else "error", "returncode": proc.returncode,
            "error": text.strip()[-400:]}


def _markdown(report: dict) -> str:
    c = report["config"]
    lines = [f"# One NBFNet layer on the {c['dataset']} profile (scale {c['scale']})", "",
             f"{report['graph']['nodes']} nodes, {report['graph']['edges']} edges (inverses included), "
             f"{report['graph']['relations']} relations; batch {c['batch']} queries x dim {c['dim']}, "
             f"{c['message']} messages, {c['aggregate']} aggregation, float32; median of {c['repeat']} runs "
             f"after a warm-up, each case in its own process under a {c['memory_gb']:g} GB cap. "
             f"Peak = rise of resident memory during the timed runs.", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['usable_cores']} cores, "
             f"torch {report['machine']['versions']['torch']}, {report['threads']} threads. Date {report['date']}.", "",
             "| system | mode | median ms (min-max) | peak MiB | max rel err | time vs fused | memory vs fused |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['system']} | {row['mode']} | {row['status']} | | | | |")
            continue
        ratio_t = row.get("time_ratio")
        ratio_m = row.get("memory_ratio")
        lines.append(f"| {row['system']} | {row['mode']} | {row['median_ms']:.0f} ({row['min_ms']:.0f}-"
                     f"{row['max_ms']:.0f}) | {row['peak_mib']:.0f} | {row['max_rel_err']:.1e} | "
                     f"{'' if ratio_t is None else f'{ratio_t:.2f}x'} | "
                     f"{'' if ratio_m is None else f'{ratio_m:.1f}x'} |")
    lines += ["", "Ratios are the system's time and peak memory over the fused backend's "
              f"({report['fused']}) in the same mode."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fb15k")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--aggregate", default="pna")
    parser.add_argument("--message", default="distmult")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-gb", type=float, default=16.0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--systems", default=None,
                        help="comma-separated (default: the fused backend of the device, pigeon-torch, reference)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)), flush=True)
        return 0

    import torch

    from pigeon.bench.harness import describe_machine

    fused = "pigeon-triton" if args.device == "cuda" else "pigeon-cpu"
    systems = args.systems.split(",") if args.systems else [fused, "pigeon-torch", "reference"]
    rows = []
    for mode in MODES:
        for system in systems:
            row = _spawn(system, mode, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    by_key = {(r["system"], r["mode"]): r for r in rows}
    for row in rows:
        base = by_key.get((fused, row["mode"]))
        if row["status"] == "ok" and base and base["status"] == "ok":
            row["time_ratio"] = row["median_ms"] / base["median_ms"]
            row["memory_ratio"] = row["peak_mib"] / max(base["peak_mib"], 1e-9)
    graph = next((r for r in rows if r["status"] == "ok"), {})
    report = {
        "config": {k: getattr(args, k) for k in ("dataset", "scale", "batch", "dim", "aggregate", "message",
                                                 "repeat", "memory_gb", "device")},
        "graph": {k: graph.get(k) for k in ("nodes", "edges", "relations")},
        "fused": fused, "rows": rows, "threads": args.threads or torch.get_num_threads(),
        "machine": describe_machine(args.device), "date": time.strftime("%Y-%m-%d"),
    }
    text = _markdown(report)
    print(text)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
        Path(args.out + ".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
