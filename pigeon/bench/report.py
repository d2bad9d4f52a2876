"""What a run shows: the table, its Markdown, the PNG chart and ``--compare``.

All of it reads the results document (the ``--json`` file), so a saved run can be
shown again with ``pigeon bench --from-json FILE``. Speedups are over the best
baseline: the fastest finished result of the same case (same dataset and structure,
model and mode) among the baselines (every system but Pigeon's: DGL, PyG, the
reference layers eager and under ``torch.compile``) that compute the same maths as the
reference; above 1 means faster than it. Baselines that compute other maths are shown
apart and never enter a speedup or the headline. The headline is, per Pigeon system,
the geometric mean of those speedups over the cases. "x floor" is a result's median
over its case's floor, "x machine" over its machine floor (:mod:`pigeon.bench.floor`);
results saved before these existed show those cells empty.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import math

from pigeon.bench.harness import KEY_FIELDS, SCHEMA, case_key, dataset_label

GROUP_FIELDS = ("dataset", "model", "mode", "dim", "heads", "scale", "device", "repeats", "skew")


def library_of(system: str) -> str:
    return "pigeon" if system.startswith("pigeon-") else system


def is_baseline(result: dict) -> bool:
    return library_of(result["system"]) != "pigeon"


def same_maths(result: dict) -> bool:
    """Whether the result's system computes the reference's maths for its model (files
    from before the field existed: its check was not ``n/a``)."""
    if "same_maths" in result:
        return bool(result["same_maths"])
    return (result.get("check") or {}).get("status") != "n/a"


def group_of(result: dict) -> tuple:
    return tuple(result.get(f) for f in GROUP_FIELDS)


def _group_label(result: dict) -> str:
    return f"{result['model']} {dataset_label(result['dataset'], result.get('repeats'), result.get('skew'))} {result['mode']}"


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
    """The fastest finished same-maths baseline result of each case group."""
    best: dict[tuple, dict] = {}
    for r in results:
        if r["status"] != "ok" or not is_baseline(r) or not same_maths(r):
            continue
        group = group_of(r)
        if group not in best or r["median_s"] < best[group]["median_s"]:
            best[group] = r
    return best


def speedup(result: dict, best: dict[tuple, dict]) -> tuple[float, str] | None:
    """``(best baseline median / this median, baseline name)`` for a finished Pigeon result."""
    if result["status"] != "ok" or is_baseline(result):
        return None
    baseline = best.get(group_of(result))
    if baseline is None:
        return None
    return baseline["median_s"] / result["median_s"], baseline["system"]


def headline(results: list[dict]) -> dict[str, dict]:
    """Per Pigeon system: the geometric mean of its speedups over the best same-maths
    baseline (``geomean``), how many cases it covers (``cases``), the weakest and
    strongest (``min``/``max``, each ``(speedup, case, baseline)``) and the cases of the
    system without a same-maths baseline that finished (``uncovered``)."""
    best = best_baselines(results)
    out: dict[str, dict] = {}
    for r in results:
        if is_baseline(r) or r["status"] != "ok":
            continue
        entry = out.setdefault(r["system"], {"ratios": [], "uncovered": []})
        value = speedup(r, best)
        if value is None:
            entry["uncovered"].append(_group_label(r))
        else:
            entry["ratios"].append((value[0], _group_label(r), value[1]))
    for entry in out.values():
        ratios = entry.pop("ratios")
        entry["cases"] = len(ratios)
        entry["geomean"] = math.exp(sum(math.log(v) for v, _, _ in ratios) / len(ratios)) if ratios else None
        entry["min"] = min(ratios) if ratios else None
        entry["max"] = max(ratios) if ratios else None
    return out


def format_headline(results: list[dict]) -> list[str]:
    """The headline, one line per Pigeon system."""
    lines = []
    for system, entry in headline(results).items():
        if entry["geomean"] is None:
            lines.append(f"{system}: no case has a same-maths baseline that finished")
            continue
        low, high = entry["min"], entry["max"]
        line = (f"{system}: {entry['geomean']:.2f}x geometric mean over {entry['cases']} cases against the best "
                f"same-maths baseline of each; weakest {low[0]:.2f}x ({low[1]}, vs {low[2]}), strongest "
                f"{high[0]:.2f}x ({high[1]}, vs {high[2]})")
        if entry["uncovered"]:
            line += f"; {len(entry['uncovered'])} case(s) without one: {', '.join(entry['uncovered'])}"
        lines.append(line)
    return lines


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
    if is_baseline(r) and not same_maths(r):
        return "other maths"
    if best.get(group_of(r)) is r:
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


def _times_floor_cell(r: dict, key: str = "floor_s") -> str:
    """Median over a floor: how many times the least possible time this system took."""
    if r["status"] != "ok" or not r.get(key):
        return ""
    ratio = r["median_s"] / r[key]
    return f"{ratio:.1f}" if ratio < 100 else f"{ratio:.0f}"


def _machine_floor_cell(r: dict) -> str:
    if r.get("machine_floor_s") is None:
        return ""
    return f"{format_ms(r['machine_floor_s'])} {r['machine_floor_bound']}"


def _load_cell(r: dict) -> str:
    busy = r.get("other_cores_busy")
    return f"{busy:.1f}" if busy is not None else ""


COLUMNS = ("model", "mode", "system", "median ms (min-max)", "speedup", "floor ms", "x floor", "machine floor ms",
           "x machine", "peak MiB", "first call ms", "other load", "check")
RIGHT_ALIGNED = (3, 5, 6, 7, 8, 9, 10, 11)


def _rows(results: list[dict]) -> list[tuple[dict, list[str]]]:
    best = best_baselines(results)
    return [(r, [r["model"], r["mode"], r["system"], time_cell(r), _speedup_cell(r, best), _floor_cell(r),
                 _times_floor_cell(r), _machine_floor_cell(r), _times_floor_cell(r, "machine_floor_s"),
                 _memory_cell(r), _first_cell(r), _load_cell(r), _check_cell(r)])
            for r in results]


def _dataset_line(dataset: str, results: list[dict]) -> str:
    graph = next((r["graph"] for r in results if r.get("graph")), None)
    if graph is None:
        return dataset
    kind = "synthetic profile" if graph["synthetic"] else "real"
    line = (f"{dataset} ({kind}): {_count(graph['nodes'], 'node')}, {_count(graph['edges'], 'edge')}, "
            f"{_count(graph['etypes'], 'edge type')}, {_count(graph['ntypes'], 'node type')}")
    if graph.get("repeats") is not None:
        line += (f"; measured: {graph['repeats']:.2f} edges per (source, edge type) pair, the busiest tenth of "
                 f"the pairs holds {graph['top_decile_share']:.0%} of the edges")
    return line


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _by_dataset(results: list[dict]) -> dict[str, list[dict]]:
    """Results by dataset, a structure-sweep point counting as a dataset of its own."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[dataset_label(r["dataset"], r.get("repeats"), r.get("skew"))].append(r)
    return groups


def _errors(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        label = f"{r['system']} {_group_label(r)}"
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


def provenance_lines(report: dict) -> list[str]:
    """What the run's numbers depend on besides the code: the commit and tree, threads,
    the tuning cache, the cost model's rates and the other load (files from before the
    provenance block give nothing)."""
    p = report.get("provenance")
    if not p:
        return []
    tree = "clean tree" if p["clean"] else "UNCOMMITTED CHANGES (not a result to quote)" if p["clean"] is False \
        else "no git checkout"
    v, t, tuning = p["versions"], p["threads"], p["tuning_cache"]
    lines = [f"commit {p['commit'] or '?'}, {tree}; torch {v['torch']}, dgl {v['dgl']}, torch_geometric "
             f"{v['torch_geometric']}; {t['per_case']} threads per case (OMP_NUM_THREADS "
             f"{t['OMP_NUM_THREADS'] or 'unset'}, OMP_WAIT_POLICY {t['OMP_WAIT_POLICY'] or 'unset'})"]
    if p.get("heap_pad_mib"):
        lines.append(f"C heap padded by {p['heap_pad_mib']} MiB in every case's process, every system alike "
                     "(freed pages reused by the next call; pigeon.runtime.heap)")
    if tuning["state"] == "tuned":
        lines.append(f"tuning cache: read ({tuning['entries']} entries in {tuning['cache']}, digest {tuning['digest']})")
    else:
        lines.append("tuning cache: fresh and empty (PIGEON_AUTOTUNE=0 in every case: the cost model decides)")
    rates = p.get("cost_model_rates")
    if rates:
        lines.append(f"cost model planned with {rates['matmul_gflops']:g} GFLOP/s and {rates['bandwidth_gbs']:g} GB/s "
                     f"({rates['fixed_by']})")
    load = [f"other load at start: load average {p['load_at_start'].get('loadavg_1min')}, "
            f"{p['load_at_start'].get('other_cores_busy', '?')} cores busy"]
    if p.get("load_at_end"):
        load.append(f"at end: {p['load_at_end'].get('loadavg_1min')}, {p['load_at_end'].get('other_cores_busy', '?')}")
    if p.get("max_other_cores_busy_in_timed_runs") is not None:
        load.append(f"at most {p['max_other_cores_busy_in_timed_runs']} cores busy with other work during any "
                    "case's timed runs")
    lines.append("; ".join(load))
    return lines


def other_maths(results: list[dict]) -> list[tuple[str, str, str, str]]:
    """Rows ``(case, baseline, its median, each Pigeon system's speedup over it)`` for the
    baselines that compute other maths: shown apart, never in a speedup or the headline."""
    pigeon: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        if not is_baseline(r) and r["status"] == "ok":
            pigeon[group_of(r)].append(r)
    rows = []
    for r in results:
        if not is_baseline(r) or same_maths(r):
            continue
        ours = ", ".join(f"{p['system']} {r['median_s'] / p['median_s']:.2f}x" for p in pigeon[group_of(r)]
                         if r["status"] == "ok")
        rows.append((_group_label(r), r["system"], time_cell(r), ours))
    return rows


def structure_table(results: list[dict]) -> tuple[list[str], list[list[str]]] | None:
    """The structure sweep as ``(header, rows)``: per Pigeon system, model and mode, the
    speedup over the best same-maths baseline at each sweep point (None: no sweep)."""
    points = list(dict.fromkeys((r["dataset"], r["repeats"], r.get("skew")) for r in results
                                if r.get("repeats") is not None))
    if not points:
        return None
    best = best_baselines(results)
    cells: dict[tuple, dict[tuple, str]] = defaultdict(dict)
    measured: dict[tuple, str] = {}
    for r in results:
        if r.get("repeats") is None:
            continue
        point = (r["dataset"], r["repeats"], r.get("skew"))
        if r.get("graph") and point not in measured:
            measured[point] = f"{r['graph']['repeats']:.2f} / {r['graph']['top_decile_share']:.0%}"
        value = speedup(r, best)
        if value is not None:
            cells[(r["system"], r["model"], r["mode"])][point] = f"{value[0]:.2f}x"
    header = ["system", "model", "mode"] + [dataset_label(*point) for point in points]
    rows = [["measured: repeats / top 10% share", "", ""] + [measured.get(point, "") for point in points]]
    for (system, model, mode), by_point in cells.items():
        rows.append([system, model, mode] + [by_point.get(point, "-") for point in points])
    return header, rows


LEGEND = ("speedup: the median of the fastest baseline that computes the same maths (dgl, dgl-ops, pyg, ref, "
          "inductor; see 'check') over this system's; above 1 is faster. A baseline marked 'other maths' "
          "computes a different layer: it is listed apart and in no speedup. floor ms: the least time this "
          "machine could take for the kernels Pigeon's plan runs for the case, max(FLOPs / measured matmul "
          "rate, bytes / measured copy bandwidth), and which term binds (compute or memory); the same for "
          "every system of a case. machine floor ms: the same bound for each input, weight and output "
          "moved once and the FLOPs of the cheapest plan the rewrites can reach, at most the floor. x floor, "
          "x machine: median / floor, 1 being out of reach. peak MiB: high water mark of resident memory "
          "during the timed runs (the whole process: libraries, graph, weights and activations). first "
          "call: includes compilation (Pigeon, torch.compile) and format conversion (DGL). other load: "
          "cores that other processes kept busy during the timed runs; where it is well above 0, the times "
          "are not to be trusted. check: output, and in train mode gradients, against pigeon.reference in "
          "float64 (ok, MISMATCH, n/a where the system computes different maths).")


def _text_table(header: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    lines = ["  ".join(name.ljust(w) for name, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
              for row in rows]
    return lines


def format_table(report: dict) -> str:
    """The plain-text table printed at the end of a run."""
    results = report["results"]
    lines = [f"pigeon bench: {len(results)} cases; {_config_line(report)}",
             f"machine: {_machine_line(report)}", *provenance_lines(report)]
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
    sweep = structure_table(results)
    if sweep:
        header, rows = sweep
        lines += ["", "structure sweep: speedup over the best same-maths baseline at each point"]
        lines += _text_table(header, rows, tuple(range(3, len(header))))
    others = other_maths(results)
    if others:
        lines += ["", "other maths (not in any speedup or the headline): Pigeon's speedup over each"]
        lines += _text_table(["case", "baseline", "median ms", "Pigeon over it"], [list(r) for r in others])
    headlines = format_headline(results)
    if headlines:
        lines += ["", "headline (same maths, against the best of every baseline):"] + [f"  {h}" for h in headlines]
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
        lines = [f"profile: {r['system']} {_group_label(r)} "
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
           *(f"- {line}" for line in provenance_lines(report)),
           load_line.rstrip("\n"),
           f"- {LEGEND}\n"]
    headlines = format_headline(results)
    if headlines:
        out.append("## Headline (same maths, against the best of every baseline)\n")
        out += [f"- {h}" for h in headlines] + [""]
    for dataset, group in _by_dataset(results).items():
        out.append(f"## {_dataset_line(dataset, group)}\n")
        out += _markdown_table(list(COLUMNS), [cells for _, cells in _rows(group)], RIGHT_ALIGNED)
    sweep = structure_table(results)
    if sweep:
        out.append("## Structure sweep: speedup over the best same-maths baseline at each point\n")
        out += _markdown_table(*sweep, tuple(range(3, len(sweep[0]))))
    others = other_maths(results)
    if others:
        out.append("## Other maths (not in any speedup or the headline)\n")
        out += _markdown_table(["case", "baseline", "median ms", "Pigeon over it"], [list(r) for r in others])
    errors = _errors(results)
    if errors:
        out.append("## Failures\n")
        out += [f"- {e}" for e in errors] + [""]
    return "\n".join(line for line in out if line is not None) + "\n"


def _markdown_table(header: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return lines + [""]


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
        label = f"{r['system']} {_group_label(r)}"
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
    """A horizontal bar chart of each Pigeon system's speedup over the best same-maths baseline."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    results = report["results"]
    best = best_baselines(results)
    bars = []
    for r in results:
        value = speedup(r, best)
        if value is not None:
            bars.append((f"{_group_label(r)}\n{r['system']} vs {value[1]}", value[0]))
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
        ax.set_xlabel("speedup over the best same-maths baseline (log scale; right of 1 is faster)")
    else:
        ax.text(0.5, 0.5, "no speedup to show: no Pigeon system and same-maths baseline both finished a case",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_title(f"pigeon bench: {_config_line(report)}\n{report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
