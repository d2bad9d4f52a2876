"""Accuracy of mixed-precision training beside float32, on the same seed.

Runs ``pigeon train`` once per precision (``--precision fp32`` and ``bf16`` by default)
for each job, each in its own process with the same seed and threads:

- ``nbfnet``: NBFNet on UMLS with the command's defaults (6 layers of 32, PNA, 4
  epochs); target: bfloat16's filtered test MRR within 0.01 of float32's;
- ``fno``: FNO on Darcy with the command's defaults, for a fixed number of epochs
  (``--fno-epochs``) with no time budget, so both precisions take the same steps;
  target: bfloat16's test relative L2 within 0.2 points (0.002) of float32's.

    python bench/precision_train.py --out bench/results/precision-train-cpu-DATE

writes each run's JSON report and log (``OUT-<job>-<precision>.json``, ``.log``) and
``OUT.md``, the table beside the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("nbfnet", "fno")
#: (metric, how far from float32 bfloat16 may be, the metric's name in the table).
TARGETS = {"nbfnet": ("mrr", 0.01, "test MRR"), "fno": ("rel_l2", 0.002, "test relative L2")}


def _command(job: str, precision: str, args, json_path: Path) -> list[str]:
    command = [sys.executable, "-m", "pigeon", "train", job, "--precision", precision, "--seed", str(args.seed),
               "--json", str(json_path), "--no-progress"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if job == "nbfnet":
        command += ["--dataset", "umls"]
        return command + (["--epochs", "1", "--dim", "8", "--num-layers", "2", "--batch-size", "64"] if args.smoke else [])
    command += ["--problem", "darcy", "--epochs", str(args.fno_epochs), "--time-budget-s", "1e9"]
    if args.smoke:
        command += ["--n-train", "16", "--n-test", "8", "--resolution", "15", "--width", "8", "--modes", "3",
                    "--padding", "3", "--batch-size", "4"]
    return command


def _markdown(report: dict) -> str:
    lines = [f"# Mixed-precision training beside float32 (seed {report['seed']}, {report['threads']} threads)", "",
             f"Commit {report['git']}, {report['date']}. Each run: `{report['commands'][0]}` and the same for the "
             "others (the exact commands are in the JSON).", "",
             "| job | metric | " + " | ".join(report["precisions"]) + " | difference | target | met |",
             "|---|---|" + "---|" * len(report["precisions"]) + "---|---|---|"]
    for job, row in report["rows"].items():
        metric, limit, name = TARGETS[job]
        values = [row.get(p) for p in report["precisions"]]
        cells = " | ".join("failed" if v is None else f"{v:.4f}" for v in values)
        diff = row.get("difference")
        lines.append(f"| {job} | {name} | {cells} | {'' if diff is None else f'{diff:+.4f}'} | within {limit} | "
                     f"{'' if diff is None else ('yes' if abs(diff) <= limit else 'no')} |")
    seconds = {f"{job} {p}": s for job, row in report["rows"].items() for p, s in row.get("seconds", {}).items()}
    lines += ["", "Training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {list(JOBS)}")
    parser.add_argument("--precisions", default="fp32,bf16", help="the first is the baseline (default: fp32,bf16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fno-epochs", type=int, default=37,
                        help="FNO epochs, for every precision (default: 37, what fp32 finished in the committed "
                             "1080 s run)")
    parser.add_argument("--out", required=True, help="prefix of the files written")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny runs that check this script (NBFNet: 1 epoch of a small model; FNO: a 15 x 15 grid)")
    args = parser.parse_args(argv)

    from pigeon.bench.harness import git_state

    jobs, precisions = args.jobs.split(","), args.precisions.split(",")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rows, commands = {}, []
    for job in jobs:
        metric = TARGETS[job][0]
        row = {"seconds": {}}
        for precision in precisions:
            json_path = Path(f"{out}-{job}-{precision}.json")
            command = _command(job, precision, args, json_path)
            commands.append(" ".join(command[2:]))
            print(" ".join(command), flush=True)
            with open(f"{out}-{job}-{precision}.log", "w") as log:
                done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                print(f"{job} {precision} failed (status {done.returncode}): see {out}-{job}-{precision}.log")
                continue
            result = json.loads(json_path.read_text())
            row[precision] = result["test"][metric]
            row["seconds"][precision] = result["seconds"]
        if all(p in row for p in precisions[:2]):
            row["difference"] = row[precisions[1]] - row[precisions[0]]
        rows[job] = row
    state = git_state()
    report = {"rows": rows, "precisions": precisions, "seed": args.seed, "commands": commands,
              "threads": args.threads or "default", "date": time.strftime("%Y-%m-%d"),
              "git": "unknown" if state is None else f"{state['commit'][:12]}{'' if state['clean'] else '-dirty'}"}
    text = _markdown(report)
    print(text)
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
