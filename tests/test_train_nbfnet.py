"""NBFNet training and evaluation (pigeon/train/nbfnet.py): the ranking metric against
OGB's Evaluator, the filter and the edge removal against brute force, the loss against
its formula, a compiled plan reused across the per-step graphs, and short real runs
(determinism, resuming from a checkpoint, the command line, OGB candidates)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pigeon import nn as pnn
from pigeon import reference
from pigeon.data.graph import HeteroGraph
from pigeon.train.nbfnet import (
    EdgeRemover, LinkData, NBFNetConfig, TripleFilter, adversarial_loss, as_queries, load_link_data,
    rank_metrics, train_nbfnet,
)
from test_datasets import _write_biokg, _write_tsv
from test_nbfnet_model import _randomize_

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dim=6, num_layers=2, batch_size=8, num_negative=5, eval_batch_size=16, epochs=2, backend="cpu")


def _random_triples(gen, count, num_nodes, num_relations):
    return torch.stack([torch.randint(0, num_nodes, (count,), generator=gen),
                        torch.randint(0, num_relations, (count,), generator=gen),
                        torch.randint(0, num_nodes, (count,), generator=gen)], dim=1)


def test_rank_metrics_match_ogb_evaluator_with_ties_and_excluded_candidates():
    from ogb.linkproppred import Evaluator

    gen = torch.Generator().manual_seed(3)
    # Scores on a coarse grid, so ties between the answer and candidates are common.
    positive = torch.randint(0, 6, (200,), generator=gen).double()
    negative = torch.randint(0, 6, (200, 30), generator=gen).double()
    excluded = torch.rand(200, 30, generator=gen) < 0.3
    negative = negative.masked_fill(excluded, -math.inf)
    ours = rank_metrics(positive, negative)
    theirs = Evaluator(name="ogbl-biokg").eval({"y_pred_pos": positive, "y_pred_neg": negative})
    # OGB returns 1/rank in float32: equal to 1e-7 relative; a rank off by a half is >1%.
    torch.testing.assert_close(ours["mrr"], theirs["mrr_list"].double(), rtol=1e-6, atol=0)
    for k in (1, 3, 10):
        torch.testing.assert_close(ours[f"hits@{k}"], theirs[f"hits@{k}_list"].double())
    # A candidate excluded with -inf never outranks; an equal score counts half.
    one = rank_metrics(torch.tensor([1.0]), torch.tensor([[2.0, 1.0, -math.inf, 0.0]]))
    assert one["rank"].item() == 2.5


def test_triple_filter_marks_every_true_answer_in_both_directions():
    gen = torch.Generator().manual_seed(4)
    num_nodes, num_relations = 9, 3
    triples = _random_triples(gen, 60, num_nodes, num_relations)
    triples = torch.cat([triples, triples[:7]])  # repeated triples
    known = TripleFilter(triples, num_relations, num_nodes)
    nodes = torch.randint(0, num_nodes, (40,), generator=gen)
    relations = torch.randint(0, 2 * num_relations, (40,), generator=gen)
    want = torch.zeros(40, num_nodes, dtype=torch.bool)
    for q in range(40):
        for h, r, t in triples.tolist():
            if relations[q] == r and nodes[q] == h:
                want[q, t] = True
            if relations[q] == r + num_relations and nodes[q] == t:
                want[q, h] = True
    assert torch.equal(known.mask(nodes, relations), want)
    assert want.any() and not want.all()


def test_edge_remover_drops_every_copy_of_the_batch_triples_and_nothing_else():
    gen = torch.Generator().manual_seed(5)
    triples = _random_triples(gen, 80, 12, 4)
    triples = torch.cat([triples, triples[:10]])
    graph = HeteroGraph(triples[:, 0], triples[:, 2], triples[:, 1], num_nodes=12, num_etypes=4)
    batch = triples[torch.tensor([0, 3, 50])]
    out = EdgeRemover(graph, 4).without(batch)
    kept = {tuple(e) for e in torch.stack([out.src, out.etype, out.dst], 1).tolist()}
    removed = {tuple(e) for e in batch.tolist()}
    assert kept.isdisjoint(removed)
    expected = [tuple(e) for e in triples.tolist() if tuple(e) not in removed]
    assert sorted(torch.stack([out.src, out.etype, out.dst], 1).tolist()) == sorted(map(list, expected))
    assert out.num_nodes == 12 and out.num_etypes == 4
    assert out.num_edges < graph.num_edges - 3  # triple 0 and 3 are repeated


def test_queries_rewrite_head_prediction_as_inverse_tail_queries():
    triples = torch.tensor([[1, 0, 2], [3, 1, 4], [5, 2, 6]])
    nodes, relations, answers = as_queries(triples, num_relations=3, head_from=1)
    assert nodes.tolist() == [1, 4, 6] and relations.tolist() == [0, 4, 5] and answers.tolist() == [2, 3, 5]


def test_adversarial_loss_follows_its_formula_and_never_samples_a_true_answer():
    gen = torch.Generator().manual_seed(6)
    scores = torch.randn(5, 20, dtype=torch.float64, generator=gen)
    answers = torch.randint(0, 20, (5,), generator=gen)
    true = torch.rand(5, 20, generator=gen) < 0.4
    true[torch.arange(5), answers] = True
    temperature = 0.7
    loss = adversarial_loss(scores, answers, true, 6, temperature, torch.Generator().manual_seed(1))
    # The same draw by hand: uniform scores, true answers pushed below every candidate.
    draw = torch.rand(scores.shape, generator=torch.Generator().manual_seed(1)).masked_fill(true, -1.0)
    picked = draw.topk(6, dim=1).indices
    assert not true.gather(1, picked).any()
    neg = scores.gather(1, picked)
    weights = torch.softmax(neg / temperature, dim=1)
    pos = scores.gather(1, answers.view(-1, 1)).squeeze(1)
    want = ((-torch.nn.functional.logsigmoid(pos)) + (weights * -torch.nn.functional.logsigmoid(-neg)).sum(1)) / 2
    torch.testing.assert_close(loss, want.mean(), rtol=1e-12, atol=1e-12)


def test_compiled_nbfnet_reuses_its_plan_across_the_per_step_graphs():
    """Removing a batch's edges gives a new graph each step; NBFNet's decisions read no
    row count, so one plan per layer serves them all, and it stays exact."""
    gen = torch.Generator().manual_seed(7)
    triples = _random_triples(gen, 70, 15, 3)
    graph = HeteroGraph(triples[:, 0], triples[:, 2], triples[:, 1], num_nodes=15, num_etypes=3)
    ref = _randomize_(reference.NBFNet(3, 6, 2, dtype=torch.float64), seed=8)
    model = pnn.NBFNet(3, 6, 2, backend="cpu", dtype=torch.float64)
    model.load_state_dict(ref.state_dict())
    remover = EdgeRemover(graph, 3)
    heads, relations = torch.tensor([0, 4, 9]), torch.tensor([0, 5, 2])
    for step in range(3):
        smaller = remover.without(triples[step * 5:step * 5 + 5])
        torch.testing.assert_close(model(smaller, heads, relations), ref(smaller, heads, relations),
                                   rtol=1e-10, atol=1e-10)
    for layer in model.layers:
        plans = [plan for entries in layer.compiled._plans.values() for _, plan in entries]
        assert len(plans) == 1


def _fixture_kg(folder: Path, seed: int = 8, entities: int = 24, relations: int = 3):
    """A small knowledge graph with structure to learn: relation r links e to e + r + 1."""
    rng = np.random.default_rng(seed)
    triples = [(f"e{h}", f"r{r}", f"e{(h + r + 1) % entities}") for h in range(entities) for r in range(relations)]
    triples += [(f"e{rng.integers(entities)}", f"r{rng.integers(relations)}", f"e{rng.integers(entities)}")
                for _ in range(10)]
    order = rng.permutation(len(triples))
    rows = [triples[i] for i in order]
    _write_tsv(folder, {"train": rows[:60], "valid": rows[60:70], "test": rows[70:]})
    return folder


def test_training_is_reproducible_and_resumes_from_a_checkpoint(tmp_path):
    data_root = _fixture_kg(tmp_path / "kg")
    data = load_link_data("umls", data_root)
    config = NBFNetConfig(dataset="umls", seed=3, **TINY)
    full = train_nbfnet(config, data=data, show_progress=False, log=lambda *_: None)
    again = train_nbfnet(config, data=data, show_progress=False, log=lambda *_: None)
    assert full["test"] == again["test"] and full["history"][-1]["loss"] == again["history"][-1]["loss"]
    for split in ("valid", "test"):
        metrics = full[split]
        assert 0 < metrics["mrr"] <= 1 and 0 <= metrics["hits@1"] <= metrics["hits@3"] <= metrics["hits@10"] <= 1
        assert metrics["queries"] == 2 * (10 if split == "valid" else data.test.shape[0])
    # One epoch, a checkpoint, then the second epoch from it: the same run.
    checkpoint = tmp_path / "run.pt"
    train_nbfnet(config, data=data, epochs=1, checkpoint=checkpoint, show_progress=False, log=lambda *_: None)
    resumed = train_nbfnet(config, data=data, resume=checkpoint, show_progress=False, log=lambda *_: None)
    assert resumed["test"] == full["test"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_lifts_the_filtered_mrr_above_chance(tmp_path, precision):
    data = load_link_data("umls", _fixture_kg(tmp_path / "kg"))
    result = train_nbfnet(NBFNetConfig(seed=0, **{**TINY, "epochs": 6, "dim": 8}), data=data, lr=1e-2,
                          precision=precision, show_progress=False, log=lambda *_: None)
    # 24 candidates: a random scorer's expected filtered MRR is below 0.2.
    assert result["valid"]["mrr"] > 0.35, result["history"]
    assert result["config"]["precision"] == precision


def test_float16_training_scales_the_loss_and_checkpoints_the_scale(tmp_path):
    data = load_link_data("umls", _fixture_kg(tmp_path / "kg"))
    checkpoint = tmp_path / "run.pt"
    result = train_nbfnet(NBFNetConfig(seed=0, **{**TINY, "epochs": 1}), data=data, precision="fp16",
                          checkpoint=checkpoint, show_progress=False, log=lambda *_: None)
    assert math.isfinite(result["history"][0]["loss"]) and 0 < result["test"]["mrr"] <= 1
    state = torch.load(checkpoint, weights_only=False)
    assert state["scaler"]["scale"] > 0   # a GradScaler ran (fp32 and bf16 checkpoint an empty state)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())


def test_training_with_ogb_candidates_ranks_against_them(tmp_path):
    _write_biokg(tmp_path, np.random.default_rng(21))
    data = load_link_data("ogbl-biokg", tmp_path)
    assert data.negatives is not None
    result = train_nbfnet(NBFNetConfig(dataset="ogbl-biokg", **{**TINY, "epochs": 1}), data=data,
                          show_progress=False, log=lambda *_: None)
    assert result["test"]["queries"] == 2 * data.test.shape[0]
    assert 1 <= result["test"]["mean_rank"] <= 1 + data.negatives["test"]["tail_neg"].shape[1]


def test_bad_settings_name_the_argument():
    with pytest.raises(ValueError, match="`num_negative` to be a positive int"):
        NBFNetConfig(num_negative=0).check()
    with pytest.raises(ValueError, match="`backend` to be one of"):
        NBFNetConfig(backend="cuda").check()
    with pytest.raises(ValueError, match="`lr` to be a positive number"):
        NBFNetConfig(lr=float("nan")).check()
    with pytest.raises(ValueError, match=r"Expected `precision` to be one of \['fp32', 'bf16', 'fp16'\] \(got 'fp8'\)"):
        NBFNetConfig(precision="fp8").check()
    with pytest.raises(ValueError, match="link-prediction dataset"):
        load_link_data("aifb")


def test_command_line_writes_the_metrics_json(tmp_path):
    data_root = _fixture_kg(tmp_path / "kg")
    out = tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pigeon", "train", "nbfnet", "--dataset", "umls", "--root", str(data_root),
         "--dim", "6", "--num-layers", "2", "--epochs", "1", "--batch-size", "16", "--backend", "cpu",
         "--no-progress", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the private mode of a temporary file
    assert set(report["valid"]) >= {"mrr", "hits@1", "hits@3", "hits@10"} and report["seconds"] > 0
    assert report["config"]["dataset"] == "umls" and report["config"]["dim"] == 6
    assert "test" in proc.stdout and f"{report['test']['mrr']:.4f}" in proc.stdout
