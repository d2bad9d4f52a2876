"""Peak memory and time of forward + backward in float32 against bfloat16, on the cpu
backend or, with ``--device cuda``, on the triton backend on the GPU.

Cases: RGCN, RGAT and HGT on the bgs profile (``--graph`` for another, e.g. am, for
full-graph training memory; ``dim`` in and out, one head), and one
NBFNet layer (PNA aggregation, DistMult messages) on the fb15k profile with a batch of
16 queries of ``nbfnet_dim`` features packed into each node's row. Each (case, dtype)
runs in its own process: build the graph, the layer and its inputs, with inputs and
parameters stored in the dtype (``layer.to(dtype)``), then one untimed forward +
backward (compiling, building the graph's indices), then ``repeat`` timed ones. Peak
memory is the rise of the process's resident set during the timed runs (``VmHWM``
after a reset, minus the resident set before them, with glibc's mmap threshold fixed
so that freed tensors leave the resident set), so imports, the graph, its indices, the
inputs and the weights do not count: what is counted is what a step allocates,
activations, saved values, gradients and temporaries (the whole process's high water
mark is reported beside it, ``peak_total_mib``). Every case also checks its output
and gradients against the float64 reference on a 2% scale graph of the same profile
(norm-wise relative error; bfloat16 keeps 8 significant bits, u = 2^-8 = 0.0039).

On the GPU (``--device cuda``, the triton backend, what ``bench/gpu_check.sh`` runs),
peak memory is the rise of ``torch.cuda.max_memory_allocated`` over what was allocated
before the timed runs, and each run is timed between device synchronisations.

    python bench/precision.py --out bench/results/precision-cpu-DATE

writes ``DATE.json`` and ``DATE.md``: per case, both dtypes' median time and peak
memory, and bfloat16's ratio to float32 for each (target: memory <= 0.6).

Time is what it is on the machine it ran on: a CPU without bfloat16 arithmetic (no
AVX512-BF16 or AMX) converts every element it loads, and torch's bfloat16 matmuls may be
slower than its float32 ones there. The machine's CPU flags are in the report.
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
CASES = {"rgcn": "bgs", "rgat": "bgs", "hgt": "bgs", "nbfnet": "fb15k"}
DTYPES = ("float32", "bfloat16")
BACKENDS = {"cpu": "cpu", "cuda": "triton"}


def _dataset(model: str, args) -> str:
    """The profile a case runs on: ``--graph`` for RGCN, RGAT and HGT, fb15k for NBFNet."""
    return CASES[model] if model == "nbfnet" else args.graph


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _layer(model: str, graph, args, dtype, reference: bool = False):
    """The layer of ``model`` for ``graph`` (the reference layer when ``reference``), in
    ``dtype`` on ``args.device``."""
    import torch

    from pigeon import nn as pnn
    from pigeon import reference as ref

    torch.manual_seed(0)
    library = ref if reference else pnn
    options = {} if reference else {"backend": BACKENDS[args.device]}
    if model == "rgcn":
        layer = library.RGCN(args.dim, args.dim, graph.num_etypes, norm="relation", **options)
    elif model == "rgat":
        layer = library.RGAT(args.dim, args.dim, graph.num_etypes, heads=1, **options)
    elif model == "hgt":
        layer = library.HGT(args.dim, args.dim, graph.num_ntypes, graph.num_etypes, heads=1, **options)
    else:
        layer = library.NBFNetLayer(args.nbfnet_dim, graph.num_etypes, aggregate="pna", message="distmult", **options)
    return layer.to(args.device, dtype)


def _inputs(model: str, graph, args, dtype, batch: int, seed: int = 1):
    """The layer's inputs (requiring gradients) and an upstream gradient for its output."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    if model == "nbfnet":
        dim = args.nbfnet_dim
        shapes = [(batch, graph.num_nodes, dim), (batch, graph.num_nodes, dim), (batch, graph.num_etypes, dim)]
        out = (batch, graph.num_nodes, dim)
    else:
        shapes, out = [(graph.num_nodes, args.dim)], (graph.num_nodes, args.dim)
    inputs = [torch.randn(s, generator=gen).to(args.device, dtype).requires_grad_() for s in shapes]
    return inputs, torch.randn(out, generator=gen).to(args.device, dtype)


def _check(model: str, dtype, args) -> float:
    """Largest norm-wise relative error of the output and every gradient against the
    float64 reference on a 2% scale graph of the case's profile."""
    import torch

    from pigeon.data import load

    graph = load(_dataset(model, args), scale=0.02, seed=0).graph.to(args.device)
    layer = _layer(model, graph, args, dtype)
    ref = _layer(model, graph, args, torch.float64, reference=True)
    ref.load_state_dict(layer.state_dict())
    inputs, upstream = _inputs(model, graph, args, dtype, batch=2)
    wide = [x.detach().double().requires_grad_() for x in inputs]
    got, want = layer(graph, *inputs), ref(graph, *wide)
    got_grads = torch.autograd.grad(got, [*inputs, *layer.parameters()], upstream, allow_unused=True)
    want_grads = torch.autograd.grad(want, [*wide, *ref.parameters()], upstream.double(), allow_unused=True)
    worst = 0.0
    for a, b in zip((got, *got_grads), (want, *want_grads)):
        if a is not None and b is not None and b.norm() > 0:
            worst = max(worst, ((a.double() - b).norm() / b.norm()).item())
    return worst


def run_case(args) -> dict:
    """One (model, dtype) case in this process."""
    import ctypes
    import gc

    import torch

    from pigeon.data import load

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    result = {"model": args.model, "dataset": _dataset(args.model, args), "dtype": args.dtype}
    result["max_rel_err"] = _check(args.model, dtype, args)
    graph = load(_dataset(args.model, args), scale=args.scale, seed=0).graph.to(args.device)
    result.update(nodes=graph.num_nodes, edges=graph.num_edges, relations=graph.num_etypes)
    layer = _layer(args.model, graph, args, dtype)
    inputs, upstream = _inputs(args.model, graph, args, dtype, batch=args.batch)

    def step():
        out = layer(graph, *inputs)
        out.backward(upstream)
        for x in inputs:
            x.grad = None
        layer.zero_grad(set_to_none=True)

    step()  # warm-up: compiles, builds the graph's indices
    gc.collect()
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        resource.setrlimit(resource.RLIMIT_AS, (int(args.memory_gb * 2**30), resource.RLIM_INFINITY))
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _rss_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mib("VmHWM")
    result.update(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times), max_ms=1e3 * max(times),
                  peak_mib=peak - before, peak_total_mib=peak, status="ok")
    return result


def _spawn(model: str, dtype: str, args) -> dict:
    command = [sys.executable, __file__, "--case", "--device", args.device, "--model", model, "--dtype", dtype,
               "--graph", args.graph, "--scale", str(args.scale),
               "--dim", str(args.dim), "--nbfnet-dim", str(args.nbfnet_dim), "--batch", str(args.batch),
               "--repeat", str(args.repeat), "--memory-gb", str(args.memory_gb)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    # glibc raises its mmap threshold as large blocks are freed, up to 32 MiB; after that,
    # freed tensors below it stay resident and the high water mark counts allocator slack,
    # differently for tensors of half the size. At its default of 128 KiB, fixed, every
    # large tensor is mapped and unmapped, and the resident set follows what is live.
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"model": model, "dataset": _dataset(model, args), "dtype": dtype, "status": "timeout"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    text = proc.stderr[-2000:]
    oom = "out of memory" in text.lower() or "MemoryError" in text or "std::bad_alloc" in text or proc.returncode == -9
    return {"model": model, "dataset": _dataset(model, args), "dtype": dtype, "status": "oom" if oom else "error",
            "returncode": proc.returncode, "error": text.strip()[-400:]}


def _cpu_flags() -> list[str]:
    """The CPU's bfloat16 and half-precision features (what bfloat16 time depends on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "f16c", "avx2"))


def _markdown(report: dict) -> str:
    c = report["config"]
    gpu = c.get("device") == "cuda"   # reports of 2026-12-02 predate --device
    where = "the triton backend on the GPU" if gpu else "the cpu backend"
    peak = "rise of torch.cuda.max_memory_allocated" if gpu else "rise of resident memory"
    cap = "" if gpu else f" under a {c['memory_gb']:g} GB cap"
    lines = [f"# float32 against bfloat16 on {where} (scale {c['scale']})", "",
             f"Forward + backward of one layer, inputs and parameters stored in the dtype; RGCN, RGAT, HGT "
             f"(dim {c['dim']}, one head) on {c.get('graph', 'bgs')}, the NBFNet layer (PNA, DistMult, batch {c['batch']} x dim "
             f"{c['nbfnet_dim']}) on fb15k; median of {c['repeat']} runs after a warm-up, each case in its own "
             f"process{cap}. Peak = {peak} during the timed runs "
             "(what a step allocates: not the imports, graph, inputs or weights). max rel err: output and "
             "gradients against float64 on a 2% graph.", "",
             f"Machine: {report['machine'].get('gpu') or report['machine']['cpu']}, "
             f"{report['machine']['usable_cores']} cores, CPU flags "
             f"{', '.join(report['cpu_flags']) or 'unknown'}; torch {report['machine']['versions']['torch']}, "
             f"{report['threads']} threads; commit {report['git']}. Date {report['date']}.", "",
             "| model | graph | dtype | median ms (min-max) | peak MiB | max rel err | time vs fp32 | memory vs fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        head = f"| {row['model']} | {row['dataset']} | {row['dtype']} |"
        if row["status"] != "ok":
            lines.append(f"{head} {row['status']} | | | | |")
            continue
        time_ratio, memory_ratio = row.get("time_ratio"), row.get("memory_ratio")
        lines.append(f"{head} {row['median_ms']:.0f} ({row['min_ms']:.0f}-{row['max_ms']:.0f}) | "
                     f"{row['peak_mib']:.0f} | {row['max_rel_err']:.1e} | "
                     f"{'' if time_ratio is None else f'{time_ratio:.2f}x'} | "
                     f"{'' if memory_ratio is None else f'{memory_ratio:.2f}x'} |")
    totals = [f"{r['model']} {r['dtype']} {r['peak_total_mib'] / 1024:.2f} GiB" for r in report["rows"]
              if "peak_total_mib" in r]
    if totals:
        lines += ["", "Peak of the whole process (graph, inputs, weights and the step; high water mark): "
                  + ", ".join(totals) + "."]
    met = [r for r in report["rows"] if r.get("memory_ratio") is not None]
    if met:
        passed = sum(r["memory_ratio"] <= 0.6 for r in met)
        lines += ["", f"Target bfloat16 peak memory <= 0.6x float32: met in {passed} of {len(met)} cases."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, of {list(CASES)}")
    parser.add_argument("--device", choices=list(BACKENDS), default="cpu",
                        help="cpu (the cpu backend) or cuda (the triton backend) (default: cpu)")
    parser.add_argument("--graph", default="bgs", help="the profile RGCN, RGAT and HGT run on (default: bgs; "
                                                     "NBFNet runs on fb15k)")
    parser.add_argument("--scale", type=float, default=1.0, help="profile scale (default: 1, the full graphs)")
    parser.add_argument("--dim", type=int, default=64, help="RGCN/RGAT/HGT width (default: 64)")
    parser.add_argument("--nbfnet-dim", type=int, default=32, help="NBFNet width (default: 32)")
    parser.add_argument("--batch", type=int, default=16, help="NBFNet queries per row (default: 16)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-gb", type=float, default=16.0, help="address-space cap of a cpu case")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)), flush=True)
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("Expected a CUDA device for --device cuda (torch.cuda.is_available() is False)")
    models = args.models.split(",")
    unknown = sorted(set(models) - set(CASES))
    if unknown:
        parser.error(f"Expected --models among {list(CASES)} (got {unknown})")
    rows = []
    for model in models:
        for dtype in DTYPES:
            row = _spawn(model, dtype, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
            text = _write(rows, args)   # after every case: a run killed later keeps these
    print(text)
    return 0


def _write(rows: list[dict], args) -> str:
    """The report of the rows so far (bfloat16's ratios to float32 added), written to
    ``args.out`` when given; returns its markdown."""
    import torch

    from pigeon.bench.harness import describe_machine, git_state

    by_key = {(r["model"], r["dtype"]): r for r in rows}
    for row in rows:
        base = by_key.get((row["model"], "float32"))
        if row["dtype"] != "float32" and row["status"] == "ok" and base and base["status"] == "ok":
            row["time_ratio"] = row["median_ms"] / base["median_ms"]
            row["memory_ratio"] = row["peak_mib"] / max(base["peak_mib"], 1e-9)
    state = git_state()
    report = {
        "config": {k: getattr(args, k) for k in ("device", "graph", "scale", "dim", "nbfnet_dim", "batch", "repeat",
                                                 "memory_gb")},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": rows, "threads": args.threads or torch.get_num_threads(), "cpu_flags": _cpu_flags(),
        "machine": describe_machine(args.device), "date": time.strftime("%Y-%m-%d"),
        "git": "unknown" if state is None else f"{state['commit'][:12]}{'' if state['clean'] else '-dirty'}",
    }
    text = _markdown(report)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
        Path(args.out + ".md").write_text(text)
    return text

if __name__ == "__main__":
    sys.exit(main())
