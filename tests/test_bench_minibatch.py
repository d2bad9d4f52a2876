"""The mini-batch benchmark (``pigeon bench --minibatch``) end to end on a tiny mag
profile: Pigeon's compiled layers and DGL's on the same sampled blocks, the per-batch
overhead measured, and the results file with its provenance."""

from __future__ import annotations

import json

import pytest

from pigeon.cli import main


# DGL's warning class would travel to pytest-xdist's controller, which imports dgl to
# rebuild it, without the graphbolt stub pigeon.interop.dgl.import_dgl puts first.
@pytest.mark.filterwarnings("ignore:Dataloader CPU affinity")
def test_minibatch_benchmark_runs_pigeon_and_dgl_on_the_same_blocks(tmp_path, capsys):
    out = tmp_path / "mb.json"
    # RGCN only: RGAT and HGT on sampled blocks are trained in tests/test_distributed.py.
    status = main(["bench", "--minibatch", "--models", "rgcn", "--systems", "pigeon,dgl", "--nprocs", "1",
                   "--scale", "0.002", "--steps", "2", "--warmup", "1", "--batch-size", "16", "--json", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["command"][:3] == ["pigeon", "bench", "--minibatch"]
    assert len(report["git"]["commit"]) == 40 and "clean" in report["git"]
    results = {(r["model"], r["system"]): r for r in report["results"]}
    assert set(results) == {("rgcn", "pigeon"), ("rgcn", "dgl")}
    for (model, system), r in results.items():
        assert "error" not in r, (model, system, r.get("error"))
        assert r["steps"] == 2 and r["model_s"]["median"] > 0 and r["seeds_per_s"] > 0
        # the same sampler seed: the same seed nodes, nearly the same neighbours (DGL's
        # threaded sampling is not repeatable bit for bit, and the second layer's edges
        # follow the first layer's picks: a few percent on a graph this small)
        same = results[(model, "pigeon")]["block_edges"]["median"]
        assert abs(r["block_edges"]["median"] - same) <= 0.05 * same
        assert ("overhead_share" in r) == (system == "pigeon")
    assert "| rgcn | pigeon | 1 |" in capsys.readouterr().out


def test_minibatch_help_names_its_own_options(capsys):
    try:
        main(["bench", "--minibatch", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "--nprocs" in capsys.readouterr().out
