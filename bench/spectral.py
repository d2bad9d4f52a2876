"""Time ``pigeon.nn.SpectralConv`` forward + backward against the einsum reference on CPU.

Systems, each with the same weights:

* ``reference``: :class:`pigeon.reference.SpectralConv` (``rfftn``, one complex
  ``torch.einsum``, ``irfftn``), the way FNO code is usually written;
* ``pigeon-fft``: :class:`pigeon.nn.SpectralConv` with ``path="fft"`` (the per-mode
  contraction compiled as a typed GEMM, real block weights, on ``--backend``);
* ``pigeon-dft``: the same layer with ``path="dft"`` (truncated DFT as basis GEMMs).

A case is one forward and one backward (to the input and both weight parts) of a batch.
Each system runs ``--warmup`` times, then ``--repeat`` timed times; the report gives the
median and the min-max spread, and the relative error of the output against the
reference. The rule of :func:`pigeon.nn.spectral.choose_path` is read off these
numbers: the "work ratio" column is ``sum(2 m s) / sum(s log2 s)`` over the axes, and
DFT wins where the ratio is below the break-even the table shows.

Writes ``bench/results/spectral-<backend>-<date>.{json,md}``. Run it alone on the
machine (``flock /tmp/pigeon-heavy.lock .venv/bin/python bench/spectral.py``): the
load average before and after is recorded, so a disturbed run shows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from pigeon import nn as pnn
from pigeon import reference
from pigeon.bench.harness import cpu_model

ROOT = Path(__file__).resolve().parents[1]

# (dim, batch, width, spatial, modes): the FNO paper's Burgers and Darcy sizes (Darcy also
# padded to 96 and on the 43-point coarse grid), plus mode counts around the break-even.
CASES = [
    (1, 20, 64, (256,), 16),
    (1, 20, 64, (1024,), 16),
    (1, 20, 64, (256,), 4),
    (1, 20, 64, (256,), 64),
    (1, 20, 64, (1024,), 64),
    (2, 20, 32, (85, 85), 12),
    (2, 20, 32, (96, 96), 12),
    (2, 20, 32, (64, 64), 12),
    (2, 20, 32, (48, 48), 12),
    (2, 20, 32, (85, 85), 4),
    (2, 20, 32, (85, 85), 24),
]


def work_ratio(spatial, modes) -> float:
    dft = sum(2 * m * s for m, s in zip(modes, spatial))
    fft = sum(s * max(math.log2(s), 1.0) for s in spatial)
    return dft / fft


def time_case(layer, x, upstream, warmup: int, repeat: int) -> list[float]:
    def step():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(upstream)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def run_case(case, backend: str, warmup: int, repeat: int) -> dict:
    dim, batch, width, spatial, modes = case
    torch.manual_seed(0)
    ref = reference.SpectralConv(width, width, modes, dim)
    systems = {"reference": ref}
    for path in ("fft", "dft"):
        layer = pnn.SpectralConv(width, width, modes, dim, backend=backend, path=path)
        layer.load_state_dict(ref.state_dict())
        systems[f"pigeon-{path}"] = layer
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, width, *spatial, generator=gen, requires_grad=True)
    upstream = torch.randn(batch, width, *spatial, generator=gen)
    with torch.no_grad():
        want = ref(x)
    result = {"dim": dim, "batch": batch, "width": width, "spatial": list(spatial),
              "modes": list(ref.modes), "work_ratio": work_ratio(spatial, ref.modes),
              "auto_path": pnn.spectral.choose_path(tuple(spatial), ref.modes), "systems": {}}
    for name, layer in systems.items():
        with torch.no_grad():
            got = layer(x)
        times = time_case(layer, x, upstream, warmup, repeat)
        result["systems"][name] = {
            "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
            "rel_err": float((got - want).norm() / want.norm()),
        }
    return result


def case_label(r: dict) -> str:
    grid = "x".join(str(s) for s in r["spatial"])
    return f"{r['dim']}-D b{r['batch']} w{r['width']} s={grid} m={'x'.join(map(str, r['modes']))}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# SpectralConv forward+backward on CPU ({report['date']})", "",
        f"Machine: {m['cpu']}, {m['threads']} torch threads, {m['cores']} cores; torch {m['torch']}; "
        f"load average {m['load_before']} before, {m['load_after']} after. Backend of the typed GEMM: "
        f"`{report['backend']}`. Median of {report['repeat']} runs after {report['warmup']} warm-up runs "
        f"[min-max]; float32.", "",
        "| case | work ratio | reference ms | pigeon fft ms | pigeon dft ms | ref / fft | ref / dft | "
        "faster path | auto |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report["results"]:
        s = r["systems"]
        cells = [f"{s[n]['median_ms']:.1f} [{s[n]['min_ms']:.1f}-{s[n]['max_ms']:.1f}]"
                 for n in ("reference", "pigeon-fft", "pigeon-dft")]
        ref = s["reference"]["median_ms"]
        faster = "dft" if s["pigeon-dft"]["median_ms"] < s["pigeon-fft"]["median_ms"] else "fft"
        lines.append(f"| {case_label(r)} | {r['work_ratio']:.2f} | {' | '.join(cells)} | "
                     f"{ref / s['pigeon-fft']['median_ms']:.2f} | {ref / s['pigeon-dft']['median_ms']:.2f} | "
                     f"{faster} | {r['auto_path']} |")
    worst = max(v["rel_err"] for r in report["results"] for v in r["systems"].values())
    if report.get("note"):
        lines += ["", f"Conditions: {report['note']}"]
    lines += ["", f"Largest relative error of an output against the reference: {worst:.1e}.",
              "Work ratio = sum(2 m s) / sum(s log2 s) over the axes: `path=\"auto\"` takes the DFT path "
              f"when it is at most {pnn.spectral._DFT_OVER_FFT}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cpu", choices=("torch", "cpu"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cases", default=None, help="comma-separated case indices (default: all)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--note", default=None, help="what else ran on the machine, kept in the report")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="rewrite the Markdown of an earlier report with the current path rule; time nothing")
    args = parser.parse_args()
    if args.render is not None:
        path = Path(args.render)
        report = json.loads(path.read_text())
        if args.note is not None:
            report["note"] = args.note
        for r in report["results"]:
            r["auto_path"] = pnn.spectral.choose_path(tuple(r["spatial"]), tuple(r["modes"]))
        path.write_text(json.dumps(report, indent=2) + "\n")
        path.with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases = CASES if args.cases is None else [CASES[int(i)] for i in args.cases.split(",")]
    date = datetime.date.today().isoformat()
    report = {
        "date": date, "note": args.note, "backend": args.backend, "warmup": args.warmup, "repeat": args.repeat,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_before": round(os.getloadavg()[0], 2)},
        "results": [],
    }
    for case in cases:
        result = run_case(case, args.backend, args.warmup, args.repeat)
        report["results"].append(result)
        s = result["systems"]
        print(f"{case_label(result):<36} " + "  ".join(f"{n} {v['median_ms']:8.1f} ms" for n, v in s.items()),
              flush=True)
    report["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"spectral-{args.backend}-{date}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
