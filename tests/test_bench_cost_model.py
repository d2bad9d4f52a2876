"""``bench/cost_model.py``: the cost model's pick against every measured program variant.

Tiny sizes (aifb at 2 %, hidden 8, one timing each): what is checked is the bookkeeping
(every setting of the decisions measured once, the pick, the estimates mirroring
``decide``), never a speed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pigeon.bench import Case

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cost_model_bench", ROOT / "bench" / "cost_model.py")
cost_model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cost_model)

SETTINGS = {f"reorder={r} compact={c}" for r in ("off", "on") for c in ("off", "on")}


@pytest.mark.parametrize("model,mode", [("rgcn", "train"), ("hgt", "infer")])
def test_every_setting_is_measured_once_and_the_pick_is_the_compilers_plan(model, mode, monkeypatch):
    monkeypatch.setenv("PIGEON_AUTOTUNE", "0")
    case = Case("pigeon-cpu", model, "aifb", mode, dim=8, heads=2, scale=0.02, seed=1)
    result = cost_model.run_case(case, "cpu", rounds=2, repeat=1)
    covered = [s for v in result["variants"] for s in v["settings"]]
    assert sorted(covered) == sorted(SETTINGS), "each setting of the decisions belongs to one measured program"
    assert [v["is_pick"] for v in result["variants"]] == [True] + [False] * (len(result["variants"]) - 1)
    assert result["pick"] == result["variants"][0]["settings"]
    assert sum(v["is_best"] for v in result["variants"]) == 1
    for v in result["variants"]:
        assert v["status"] == "ok" and len(v["rounds_ms"]) == 2 and v["measured_ms"] > 0 and v["estimate_ms"] > 0
    best = min(v["measured_ms"] for v in result["variants"])
    assert result["pick_over_best"] == pytest.approx(result["variants"][0]["measured_ms"] / best)
    assert result["within"] == (result["pick_over_best"] <= 1.1)
    # The estimates here are decide()'s: the cheapest setting is among the compiler's pick.
    assert result["decided_by"] == "cost model" and result["estimates_agree_with_plan"]
    assert result["graph"]["repeats"] > 1


def test_the_summary_counts_the_picks_within_ten_percent():
    def case(ratio, error=False):
        if error:
            return {"dataset": "aifb", "repeats": None, "skew": None, "model": "rgcn", "mode": "infer", "error": "x"}
        return {"dataset": "aifb", "repeats": 2.0, "skew": 1.0, "model": "hgt", "mode": "train",
                "pick_over_best": ratio, "within": ratio <= 1.1, "pick_is_best": ratio == 1.0,
                "loss": ratio - 1.0, "estimates_agree_with_plan": True}

    s = cost_model.summary([case(1.0), case(1.05), case(1.5), case(1.0), case(0, error=True)])
    assert s["cases"] == 4 and s["errors"] == 1
    assert s["within_share"] == 0.75 and not s["meets_target"] and s["pick_is_best_share"] == 0.5
    assert s["mean_loss_when_not_best"] == pytest.approx((0.05 + 0.5) / 2)
    assert s["geomean_pick_over_best"] == pytest.approx(math.exp((math.log(1.05) + math.log(1.5)) / 4))
    assert s["worst"] == {"case": "hgt aifb[repeats 2, skew 1] train", "pick_over_best": 1.5}


def test_the_script_writes_json_and_markdown_with_provenance(tmp_path):
    stem = tmp_path / "cm"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "cost_model.py"), "--datasets", "aifb",
                          "--structure", "aifb", "--repeats", "2", "--skews", "1", "--models", "rgcn",
                          "--modes", "infer", "--scale", "0.02", "--dim", "8", "--rounds", "1", "--repeat", "1",
                          "--out", str(stem)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    report = json.loads(stem.with_suffix(".json").read_text())
    assert report["schema"] == cost_model.SCHEMA and len(report["cases"]) == 2
    assert [c["repeats"] for c in report["cases"]] == [None, 2.0]
    p = report["provenance"]
    assert len(p["commit"]) == 40 and p["tuning_cache"]["state"] == "fresh-empty" and p["load_at_end"]
    assert report["summary"]["cases"] == 2 and 0 <= report["summary"]["within_share"] <= 1
    markdown = stem.with_suffix(".md").read_text()
    assert "the pick within 10% of the measured best" in markdown and "rgcn aifb[repeats 2, skew 1] infer" in markdown
