"""Time the CPU backend's generated typed GEMM against torch's, on this machine.

A case is one typed GEMM over the edges of a random graph, typed by edge type: the
forward ``out[e] = A[src[e]] @ W[etype[e]]``, the data gradient
``dA[src[e]] += dOut[e] @ W[etype[e]]^T`` or the weight gradient
``dW[t] = sum over the edges e of type t of A[src[e]]^T dOut[e]``, with ``heads`` weight
matrices per type of width ``64 / heads`` (one plain ``[64, 64]`` matrix per type for one
head), as RGCN, RGAT and HGT run them. Edge types own ``rows`` rows each on average
(1, one row per type as HGT's per-pair products, to 100,000), ``min(104, 131072 // rows)``
types, all alike (``uniform``) or Zipf-distributed (``zipf``: the k-th type ~ 1/k).

Two systems on the same operands: ``c``, the generated C kernel
(``CpuExecutor.run_gemm``), and ``torch``, the torch backend's GEMM
(``TorchExecutor.gemm``: one batched product when every type owns as many rows, else a
matmul, or an einsum per head, per type). The ``cpu takes`` column says which of the two
the CPU backend runs for the case (``CpuExecutor.gemm_in_c``).

Each runs once untimed, then ``--repeat`` times, the two interleaved; the table gives the
median and the min-max spread, the C kernel's GFLOP/s and its share of the float32
``torch.matmul`` rate measured on the same threads
(:func:`pigeon.runtime.target.measure_machine`). Writes
``bench/results/gemm-cpu-<date>.{json,md}`` with the commit, whether the tree was clean,
and the load average before and after. Run it alone on a quiet machine
(``flock /tmp/pigeon-heavy.lock``): other work on the cores shows in the spread. On a
busy machine ``--threads 1 --clock thread`` times CPU time, which waiting for the cores
does not inflate (caches shared with the other work still do).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import pigeon
from pigeon.bench.harness import cpu_model, git_state
from pigeon.ir.graph_ir import EDGE, ETYPE, ETYPE_OF_EDGE, NODE, SRC, TensorType
from pigeon.ir.kernel_ir import Buffer, BufferRole, GemmKernel, KernelProgram, SegmentLayout
from pigeon.runtime.cpu_backend import CpuExecutor
from pigeon.runtime.target import measure_machine

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 64                                # K = N = 64 over all heads
ROWS_PER_TYPE = (1, 8, 64, 512, 8192, 100_000)
HEADS = (1, 2, 4)
DIRECTIONS = ("forward", "data_grad", "weight_grad")
MAX_ROWS = 131_072                        # types = min(104, MAX_ROWS // rows): an RDF graph's 104 relations


def type_sizes(rows: int, types: int, dist: str, gen: torch.Generator) -> list[int]:
    """Rows of each type: ``rows`` each, or Zipf shares of ``rows * types`` (every type at
    least one row, so the mean stays ``rows``), in a shuffled order."""
    total = rows * types
    if dist == "uniform" or types == 1:
        sizes = [rows] * types
    else:
        share = 1.0 / torch.arange(1, types + 1, dtype=torch.float64)
        sizes = (1 + (total - types) * share / share.sum()).floor().long()
        sizes[0] += total - int(sizes.sum())
        sizes = sizes.tolist()
    return [sizes[i] for i in torch.randperm(types, generator=gen).tolist()]


def case_graph(sizes: list[int], gen: torch.Generator) -> pigeon.HeteroGraph:
    """Edges with these type sizes in a random order, between uniform random endpoints of
    a quarter as many nodes (each source repeats about four times)."""
    edges = sum(sizes)
    nodes = max(edges // 4, 1)
    etype = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    etype = etype[torch.randperm(edges, generator=gen)]
    src = torch.randint(0, nodes, (edges,), generator=gen)
    dst = torch.randint(0, nodes, (edges,), generator=gen)
    return pigeon.HeteroGraph(src, dst, etype, nodes, torch.zeros(nodes, dtype=torch.long), num_etypes=len(sizes))


def case_program(direction: str, heads: int) -> KernelProgram:
    """One GEMM kernel over edges typed by edge type, and the types of its buffers."""
    d = WIDTH // heads
    mid = (heads,) if heads > 1 else ()
    layout = dict(segment=ETYPE_OF_EDGE, layout=SegmentLayout.COO_ETYPE, batched=heads > 1)
    if direction == "forward":
        kernel = GemmKernel("out", "a", "w", a_gather=SRC, **layout)
        types = {"a": TensorType(NODE, (*mid, d)), "w": TensorType(ETYPE, (*mid, d, d)),
                 "out": TensorType(EDGE, (*mid, d))}
    elif direction == "data_grad":
        kernel = GemmKernel("out", "a", "w", transpose_w=True, scatter=SRC, **layout)
        types = {"a": TensorType(EDGE, (*mid, d)), "w": TensorType(ETYPE, (*mid, d, d)),
                 "out": TensorType(NODE, (*mid, d))}
    else:
        kernel = GemmKernel("out", "a", "w", a_gather=SRC, weight_grad=True, **layout)
        types = {"a": TensorType(NODE, (*mid, d)), "w": TensorType(EDGE, (*mid, d)),
                 "out": TensorType(ETYPE, (*mid, d, d))}
    buffers = tuple(Buffer(name, t, BufferRole.OUTPUT if name == "out" else BufferRole.INPUT)
                    for name, t in types.items())
    return KernelProgram(buffers, (kernel,), (kernel.layout.value,), (("out", "out"),))


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def seconds(fn, clock) -> float:
    begin = clock()
    fn()
    return clock() - begin


def run_case(rows: int, dist: str, heads: int, direction: str, repeat: int, seed: int,
             clock=time.perf_counter) -> dict:
    gen = torch.Generator().manual_seed(seed)
    types = max(1, min(104, MAX_ROWS // rows))
    sizes = type_sizes(rows, types, dist, gen)
    graph = case_graph(sizes, gen)
    program = case_program(direction, heads)
    kernel = program.kernels[0]
    space_rows = {NODE: graph.num_nodes, EDGE: graph.num_edges, ETYPE: graph.num_etypes}
    env = {b.name: torch.randn(space_rows[b.type.space], *b.type.shape, generator=gen)
           for b in program.buffers if b.role is BufferRole.INPUT}
    executor = CpuExecutor(program, poison=False)
    library = executor.library(torch.float32)
    library.pigeon_set_threads(torch.get_num_threads())
    rendered = executor.rendered[0]
    systems = {
        "c": lambda: executor.run_gemm(library, rendered, kernel, graph, env, torch.float32),
        "torch": lambda: executor.gemms.gemm(kernel, graph, env),
    }
    want = systems["torch"]()
    got = systems["c"]()
    error = float((got - want).norm() / want.norm())
    result = {"rows": rows, "dist": dist, "heads": heads, "direction": direction, "types": types,
              "total_rows": graph.num_edges, "largest_type": max(sizes),
              "gflop": 2 * graph.num_edges * WIDTH * (WIDTH // heads) / 1e9,
              "cpu_takes": "c" if executor.gemm_in_c(kernel, rendered, graph) else "torch",
              "rel_err": error, "systems": {}}
    # Interleaved, so that load arriving during the case weighs on both systems.
    times = {name: [] for name in systems}
    for _ in range(repeat):
        for name, fn in systems.items():
            times[name].append(seconds(fn, clock))
    for name, ts in times.items():
        result["systems"][name] = {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts),
                                   "max_ms": 1e3 * max(ts)}
    return result


def markdown(report: dict) -> str:
    m = report["machine"]
    git = report["git"] or {"commit": "unknown", "clean": False}
    rate = m["matmul"]["matmul_gflops"]
    lines = [
        f"# Typed GEMMs on CPU: generated C against torch ({report['date']})", "",
        f"Commit {git['commit'][:12]}{'' if git['clean'] else ' (uncommitted changes)'}. Machine: {m['cpu']}, "
        f"{m['threads']} threads, {m['cores']} cores; torch {m['torch']}; load average {m['load_before']} before, "
        f"{m['load_after']} after. float32, K = N = {WIDTH} over all heads, edges typed by edge type, A gathered "
        f"by source (the data gradient scatter-adds into sources). Median of {report['repeat']} runs "
        f"[min-max], {'elapsed' if report['clock'] == 'wall' else 'CPU'} time. `torch.matmul` rate on these "
        f"threads ({m['matmul']['matmul_size']}^2): {rate:.1f} GFLOP/s.", "",
        "| rows/type | types | dist | heads | direction | C ms | torch ms | torch / C | C GFLOP/s | "
        "% of matmul | cpu takes |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        c, t = r["systems"]["c"], r["systems"]["torch"]
        gflops = r["gflop"] / (c["median_ms"] / 1e3)
        lines.append(
            f"| {r['rows']} | {r['types']} | {r['dist']} | {r['heads']} | {r['direction']} | "
            f"{c['median_ms']:.3f} [{c['min_ms']:.3f}-{c['max_ms']:.3f}] | "
            f"{t['median_ms']:.3f} [{t['min_ms']:.3f}-{t['max_ms']:.3f}] | {t['median_ms'] / c['median_ms']:.2f} | "
            f"{gflops:.3g} | {100 * gflops / rate:.0f} | {r['cpu_takes']} |")
    worst = max(r["rel_err"] for r in report["results"])
    lines += ["", f"Largest relative error of C against torch: {worst:.1e}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies every rows-per-type count (a smoke test: 0.01)")
    parser.add_argument("--rows", type=int, nargs="*", default=list(ROWS_PER_TYPE))
    parser.add_argument("--heads", type=int, nargs="*", default=list(HEADS))
    parser.add_argument("--directions", nargs="*", default=list(DIRECTIONS), choices=DIRECTIONS)
    parser.add_argument("--dists", nargs="*", default=["uniform", "zipf"], choices=["uniform", "zipf"])
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall: elapsed time; thread: CPU time of the calling thread, which time "
                             "spent waiting for other work's turn on the cores does not count (--threads 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    for heads in args.heads:
        if heads < 1 or WIDTH % heads:
            parser.error(f"--heads: expected divisors of {WIDTH} (got {heads})")

    if args.clock == "thread" and args.threads != 1:
        parser.error(f"--clock thread: expected --threads 1, the one thread it times (got {args.threads})")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    matmul = measure_machine(args.threads)
    results = []
    for rows in args.rows:
        scaled = max(1, round(rows * args.scale))
        for dist in args.dists:
            if dist == "zipf" and max(1, min(104, MAX_ROWS // scaled)) == 1:
                continue   # one type: nothing to skew
            for heads in args.heads:
                for direction in args.directions:
                    r = run_case(scaled, dist, heads, direction, args.repeat, args.seed, CLOCKS[args.clock])
                    c, t = r["systems"]["c"]["median_ms"], r["systems"]["torch"]["median_ms"]
                    print(f"rows {scaled:>6} {dist:<7} heads {heads} {direction:<11} C {c:8.3f} ms  "
                          f"torch {t:8.3f} ms  cpu takes {r['cpu_takes']}", flush=True)
                    results.append(r)
    date = datetime.date.today().isoformat()
    report = {
        "date": date, "git": git_state(), "repeat": args.repeat, "scale": args.scale, "clock": args.clock,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(), "matmul": matmul,
                    "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"gemm-cpu-{date}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
