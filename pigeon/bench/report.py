"""What a run shows: the table, its Markdown, the PNG chart and ``--compare``.

All of it reads the results document (the ``--json`` file), so a saved run can be
shown again with ``pigeon bench --from-json FILE``. Speedups are over the best
baseline: the fastest DGL or PyG result of the same case (same dataset, model and
mode) that finished; above 1 means faster than it. "x floor" is a result's median over
its case's floor (:mod:`pigeon.bench.floor`); results saved before the floor existed
show those cells empty.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from pigeon.bench.harness import KEY_FIELDS, SCHEMA, case_key
from pigeon.bench.systems import BASELINE_LIBRARIES

GROUP_FIELDS = ("dataset", "model", "mode", "dim", "heads", "scale", "device")


def library_of(system: str) -> str:
    return "pigeon" if system.startswith("pigeon-") else system


def load_report(path: str | os.PathLike) -> dict:
    """A results document written by ``pigeon bench --json``."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Expected {path} to be a pigeon bench results file ({exc})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        got = report.get("schema") if isinstance(report, dict) else type(report).__name__
        raise ValueError(f"Expected {path} to have schema {SCHEMA!r} (got {got!r})")
    return report


def save_report(report: dict, path: str | os.PathLike) -> None:
    """Write atomically, so a run stopped half-way leaves the last complete file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)


# ---- speedups -----------------------------------------------------------------------
def best_baselines(results: list[dict]) -> dict[tuple, dict]:
    """The fastest finished DGL/PyG result of each case group."""
    best: dict[tuple, dict] = {}
    for r in results:
        if r["status"] != "ok" or library_of(r["system"]) not in BASELINE_LIBRARIES:
            continue
        group = tuple(r[f] for f in GROUP_FIELDS)
        if group not in best or r["median_s"] < best[group]["median_s"]:
            best[group] = r
    return best


def speedup(result: dict, best: dict[tuple, dict]) -> tuple[float, str] | None:
    """``(best baseline median / this median, baseline name)`` for a finished Pigeon result."""
    if result["status"] != "ok" or library_of(result["system"]) != "pigeon":
        return None
    baseline = best.get(tuple(result[f] for f in GROUP_FIELDS))
    if baseline is None:
        return None
    return baseline["median_s"] / result["median_s"], baseline["system"]


# ---- cells ------------------------------------------------------------------------
def format_ms(seconds: float) -> str:
    """Seconds as milliseconds with three significant digits (whole ms from 100 on)."""
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def time_cell(r: dict) -> str:
    """A result's median and min-max in ms, or its status."""
    if r["status"] == "ok":
        return f"{format_ms(r['median_s'])} ({format_ms(r['min_s'])}-{format_ms(r['max_s'])})"
    if r["status"] == "error":
        return "error"
    return r["status"]


def _speedup_cell(r: dict, best: dict) -> str:
    value = speedup(r, best)
    if value is not None:
        return f"{value[0]:.2f}x vs {value[1]}"
    group = tuple(r[f] for f in GROUP_FIELDS)
    if best.get(group) is r:
        return "best baseline"
    return ""


def _check_cell(r: dict) -> str:
    check = r.get("check")
    if not check:
        return "-"
    if check["status"] == "mismatch":
        return f"MISMATCH {check['max_rel_err']:.1e} ({check['worst']})"
    return check["status"]


def _memory_cell(r: dict) -> str:
    return f"{r['peak_mib']:.0f}" if r["status"] == "ok" else ""


def _first_cell(r: dict) -> str:
    return format_ms(r["first_call_s"]) if r.get("first_call_s") is not None else ""


def _floor_cell(r: dict) -> str:
    """The case's floor in ms and the term that binds it."""
    if r.get("floor_s") is None:
        return ""
    return f"{format_ms(r['floor_s'])} {r['floor_bound']}"


def _times_floor_cell(r: dict) -> str:
    """Median over floor: how many times the least possible time this system took."""
    if r["status"] != "ok" or not r.get("floor_s"):
        return ""
    ratio = r["median_s"] / r["floor_s"]
    return f"{ratio:.1f}" if ratio < 100 else f"{ratio:.0f}"


def _load_cell(r: dict) -> str:
    busy = r.get("other_cores_busy")
    return f"{busy:.1f}" if busy is not None else ""


COLUMNS = ("model", "mode", "system", "median ms (min-max)", "speedup", "floor ms", "x floor", "peak MiB",
           "first call ms", "other load", "check")
RIGHT_ALIGNED = (3, 5, 6, 7, 8, 9)


def _rows(results: list[dict]) -> list[tuple[dict, list[str]]]:
    best = best_baselines(results)
    return [(r, [r["model"], r["mode"], r["system"], time_cell(r), _speedup_cell(r, best), _floor_cell(r),
                 _times_floor_cell(r), _memory_cell(r), _first_cell(r), _load_cell(r), _check_cell(r)])
            for r in results]


def _dataset_line(dataset: str, results: list[dict]) -> str:
    graph = next((r["graph"] for r in results if r.get("graph")), None)
    if graph is None:
        return dataset
    kind = "synthetic profile" if graph["synthetic"] else "real"
    return (f"{dataset} ({kind}): {_count(graph['nodes'], 'node')}, {_count(graph['edges'], 'edge')}, "
            f"{_count(graph['etypes'], 'edge type')}, {_count(graph['ntypes'], 'node type')}")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _by_dataset(results: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[r["dataset"]].append(r)
    return groups


def _errors(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        label = f"{r['system']} {r['model']} {r['dataset']} {r['mode']}"
        if r["status"] != "ok" and r.get("error"):
            lines.append(f"{label}: {r['status']}: {r['error']}")
        if r.get("floor_error"):
            lines.append(f"{label}: no floor: {r['floor_error']}")
    return lines


def _machine_line(report: dict) -> str:
    m, v = report["machine"], report["machine"]["versions"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    measured = m.get("measured")
    rates = (f"; measured: float32 matmul {measured['matmul_gflops']:.1f} GFLOP/s, copy "
             f"{measured['bandwidth_gbs']:.1f} GB/s ({measured['threads']} threads)") if measured else ""
    return (f"{m['cpu']}, {m['usable_cores']} cores, {m['memory_gib']} GiB{gpu}; torch {v['torch']}, "
            f"dgl {v['dgl']}, torch_geometric {v['torch_geometric']}, pigeon {v['pigeon']} "
            f"({v.get('pigeon_commit') or 'no git'}){rates}")


def _config_line(report: dict) -> str:
    c = report["config"]
    threads = f", threads {c['threads']}" if c.get("threads") else ""
    return (f"hidden {c['dim']}, heads {c['heads']}, scale {c['scale']}, device {c['device']}, "
            f"median of {c['repeat']} after {c['warmup']} warm-up{threads}")


LEGEND = ("speedup: the best baseline's median (fastest of dgl, pyg) over this system's; above 1 is "
          "faster. floor ms: the least time this machine could take for the kernels Pigeon runs "
          "for the case, max(FLOPs / measured matmul rate, bytes / measured copy bandwidth), and "
          "which term binds (compute or memory); the same for every system of a case. x floor: "
          "median / floor, 1 being out of reach. peak MiB: high water mark of resident memory during the timed runs (the whole "
          "process: libraries, graph, weights and activations). first call: includes compilation "
          "(Pigeon) and format conversion (DGL). other load: cores that other processes kept busy "
          "during the timed runs; where it is well above 0, the times are not to be trusted. check: output, and in train mode gradients, "
          "against pigeon.reference in float64 (ok, MISMATCH, n/a where the library computes "
          "different maths, oracle for the reference itself).")


def format_table(report: dict) -> str:
    """The plain-text table printed at the end of a run."""
    results = report["results"]
    lines = [f"pigeon bench: {len(results)} cases; {_config_line(report)}",
             f"machine: {_machine_line(report)}"]
    for dataset, group in _by_dataset(results).items():
        rows = _rows(group)
        widths = [max(len(COLUMNS[i]), *(len(cells[i]) for _, cells in rows)) for i in range(len(COLUMNS))]
        lines += ["", _dataset_line(dataset, group),
                  "  ".join(name.ljust(w) for name, w in zip(COLUMNS, widths)).rstrip(),
                  "  ".join("-" * w for w in widths)]
        previous = None
        for r, cells in rows:
            shown = list(cells)
            if previous is not None and (r["model"], r["mode"]) == previous:
                shown[0] = shown[1] = ""
            previous = (r["model"], r["mode"])
            lines.append("  ".join(c.rjust(w) if i in RIGHT_ALIGNED else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(shown, widths))).rstrip())
    errors = _errors(results)
    if errors:
        lines += ["", "failures:"] + [f"  {e}" for e in errors]
    return "\n".join(lines)


def format_profiles(report: dict) -> str:
    """Per profiled case (``--profile``), the time of each range Pigeon opened, per step:
    the layer's forward and backward, and indented under each, its kernels with their
    share of it. Empty when no case was profiled."""
    blocks = []
    for r in report["results"]:
        rows = r.get("profile")
        if not rows:
            continue
        device = any(row["device_s"] > 0 for row in rows)
        key = "device_s" if device else "cpu_s"
        header = f"{'range':<72} {'calls':>5} {'ms/step':>9} {'share':>6}"
        lines = [f"profile: {r['system']} {r['model']} {r['dataset']} {r['mode']} "
                 f"({'device' if device else 'host'} time per step, mean of {r['repeat']} steps)", header,
                 "-" * len(header)]
        scopes: dict[str, list[dict]] = {}
        for row in rows:
            scopes.setdefault(row["name"].partition("/")[0], [])
            if "/" in row["name"]:
                scopes[row["name"].partition("/")[0]].append(row)
        totals = {row["name"]: row for row in rows if "/" not in row["name"]}
        for scope, kernels in scopes.items():
            total = totals.get(scope)
            if total is not None:
                lines.append(f"{scope[:72]:<72} {total['calls']:>5g} {total[key] * 1e3:>9.3f}")
            for row in sorted(kernels, key=_kernel_index):
                share = f"{row[key] / total[key]:.0%}" if total and total[key] > 0 else ""
                name = "  " + row["name"].partition("/")[2]
                lines.append(f"{name[:72]:<72} {row['calls']:>5g} {row[key] * 1e3:>9.3f} {share:>6}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _kernel_index(row: dict) -> int:
    """3 for ``pigeon.rgcn.forward/k3: ...``."""
    label = row["name"].partition("/")[2]
    number = label[1:].partition(":")[0]
    return int(number) if number.isdigit() else -1


def format_markdown(report: dict) -> str:
    """The report as Markdown: how it was made, then one table per dataset."""
    results = report["results"]
    load = report.get("load_average")
    load_line = f"- load average (1 min) at start / end: {load['start']} / {load['end']}\n" if load else ""
    out = [f"# pigeon bench, {report['created']}\n",
           f"```\n{report['command']}\n```\n",
           f"- machine: {_machine_line(report)}",
           f"- {_config_line(report)}",
           load_line.rstrip("\n"),
           f"- {LEGEND}\n"]
    for dataset, group in _by_dataset(results).items():
        out.append(f"## {_dataset_line(dataset, group)}\n")
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "|".join("---:" if i in RIGHT_ALIGNED else "---" for i in range(len(COLUMNS))) + "|")
        for _, cells in _rows(group):
            out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        out.append("")
    errors = _errors(results)
    if errors:
        out.append("## Failures\n")
        out += [f"- {e}" for e in errors] + [""]
    return "\n".join(line for line in out if line is not None) + "\n"


def format_compare(new: dict, old: dict, old_name: str) -> str:
    """Per case found in both: old and new medians and their ratio."""
    previous = {case_key(r): r for r in old["results"]}
    lines = [f"compared with {old_name} ({old['created']}, {old['machine']['cpu']}):"]
    if old["machine"]["cpu"] != new["machine"]["cpu"]:
        lines.append(f"  note: another CPU ({old['machine']['cpu']} then, {new['machine']['cpu']} now)")
    header = f"  {'case':<42} {'old ms':>10} {'new ms':>10}  new/old"
    lines += [header, "  " + "-" * (len(header) - 2)]
    unmatched = 0
    for r in new["results"]:
        before = previous.get(case_key(r))
        if before is None:
            unmatched += 1
            continue
        label = f"{r['system']} {r['model']} {r['dataset']} {r['mode']}"
        old_cell = format_ms(before["median_s"]) if before["status"] == "ok" else before["status"]
        new_cell = format_ms(r["median_s"]) if r["status"] == "ok" else r["status"]
        if r["status"] == "ok" and before["status"] == "ok":
            ratio = r["median_s"] / before["median_s"]
            verdict = "faster" if ratio < 1 else "slower" if ratio > 1 else "same"
            ratio_cell = f"{ratio:.2f}x ({verdict})"
        else:
            ratio_cell = "-"
        lines.append(f"  {label:<42} {old_cell:>10} {new_cell:>10}  {ratio_cell}")
    if unmatched:
        lines.append(f"  {unmatched} case(s) not in {old_name} (matched on {', '.join(KEY_FIELDS)})")
    return "\n".join(lines)


def write_plot(report: dict, path: str | os.PathLike) -> None:
    """A horizontal bar chart of each Pigeon system's speedup over the best baseline."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    results = report["results"]
    best = best_baselines(results)
    bars = []
    for r in results:
        value = speedup(r, best)
        if value is not None:
            bars.append((f"{r['model']} {r['dataset']} {r['mode']}\n{r['system']} vs {value[1]}", value[0]))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * max(len(bars), 1)))
    if bars:
        labels, values = zip(*reversed(bars))
        colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
        ax.barh(range(len(values)), values, color=colors)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.2f}x", va="center", fontsize=8)
        ax.set_xlabel("speedup over the best of DGL and PyG (log scale; right of 1 is faster)")
    else:
        ax.text(0.5, 0.5, "no speedup to show: no Pigeon system and baseline both finished a case",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_title(f"pigeon bench: {_config_line(report)}\n{report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
