"""Data-parallel training on torch.distributed, with ranks spawned on 127.0.0.1 (gloo).

Each rank runs one OpenMP/torch thread. What is checked: the ranks' parameters are
bit-identical after training; one DDP step on two half-batches equals one step of a
single process on the whole batch (float64, every neighbour taken, no dropout); a rank
that raises ends the run within seconds with its error; the torchrun environment path
(two nodes of one process each, on loopback) runs; RGCN (through the command line),
RGAT and HGT train on two processes far above chance on planted labels. Spawning a rank
costs seconds (importing torch and DGL), so several runs share one process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pigeon.train.distributed import DistContext, equal_shard, free_port, launch
from pigeon.train.entity import EntityConfig, load_entity_data, train_entity

from pigeon.train.nbfnet import NBFNetConfig, load_link_data

from dist_workers import failing_worker, runs_worker
from test_train_entity import small_task
from test_train_nbfnet import TINY, _fixture_kg

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}


# RGCN on a quarter of the aifb profile, as quick as learning allows (chosen on valid).
CLI = ["--dataset", "aifb", "--scale", "0.25", "--fanouts", "10,10", "--batch-size", "64", "--hidden", "32",
       "--lr", "0.05", "--dropout", "0", "--backend", "reference", "--threads", "1", "--no-progress"]


def test_command_line_trains_rgcn_on_two_processes_far_above_chance(tmp_path):
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, "-m", "pigeon", "train", "rgcn", *CLI, "--nproc", "2", "--epochs", "2",
                          "--json", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["ranks_in_sync"], "bit-identical parameters on both ranks"
    assert report["test"]["accuracy"] > report["chance"]["accuracy"] + 0.2
    assert report["threads"]["per_rank"] == 1
    assert set(report["time_split"]) == {"sampling", "conversion", "forward", "backward", "optimizer",
                                         "communication"}
    assert report["seeds_per_s"] > 0 and report["steps"] > 0
    assert len(report["provenance"]["commit"]) == 40 and report["provenance"]["command"][1:3] == ["train", "rgcn"]


def test_two_ranks_match_one_process_and_train_rgat_hgt_and_nbfnet(tmp_path):
    """One process group (spawning ranks costs seconds each) for four runs:

    * one DDP step on two half-batches against one single-process step on the whole
      batch: every neighbour taken and no dropout make both deterministic, so the
      parameters agree to 1e-10 in float64;
    * RGAT and HGT trained for 6 epochs as the command line would, far above chance,
      the ranks' parameters bit-identical at the end;
    * NBFNet on a small knowledge graph, its query batches sharded over the ranks, every
      valid/test query ranked once over the two ranks, parameters bit-identical.
    """
    data = small_task(7)
    data.split["train"] = data.split["train"][:16]
    step = {"backend": "reference", "fanouts": (-1, -1), "epochs": 1, "max_steps": 1, "hidden": 8, "heads": 2,
            "dropout": 0.0, "dtype": "float64", "threads": 1}
    single = train_entity(data=data, batch_size=16, checkpoint=tmp_path / "one.pt", show_progress=False,
                          log=lambda *a: None, **step)
    # mutag at a tenth: 713 labelled training nodes, two classes (HGT overfits aifb's 420
    # at a quarter scale: tests/test_train_entity.py).
    mutag = load_entity_data("mutag", scale=0.1)
    kg = load_link_data("umls", _fixture_kg(tmp_path / "kg"))
    quick = {"fanouts": (10, 10), "batch_size": 64, "hidden": 32, "heads": 2, "lr": 0.05, "dropout": 0.0,
             "backend": "reference", "threads": 1, "epochs": 6, "nproc": 2}
    runs = [("step", EntityConfig(batch_size=8, nproc=2, **step).check(),
             {"data": data, "checkpoint": tmp_path / "two.pt"}),
            ("rgat", EntityConfig(model="rgat", **quick).check(), {"data": mutag}),
            ("hgt", EntityConfig(model="hgt", **quick).check(), {"data": mutag}),
            ("nbfnet", NBFNetConfig(nproc=2, seed=1, **TINY).check(), {"data": kg})]
    reports = launch(runs_worker, runs, 2)

    double = reports["step"]
    assert (single["world_size"], single["steps"]) == (1, 1)
    assert (double["world_size"], double["steps"]) == (2, 1)
    assert double["time_split"]["communication"] > 0, "the gradients went through the all-reduce"
    one = torch.load(tmp_path / "one.pt", weights_only=False)["model"]
    two = torch.load(tmp_path / "two.pt", weights_only=False)["model"]
    assert set(one) == set(two)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-10, atol=1e-10)
    for model in ("rgat", "hgt"):
        report = reports[model]
        assert report["world_size"] == 2 and report["ranks_in_sync"], model
        assert report["test"]["accuracy"] > report["chance"]["accuracy"] + 0.15, (model, report["test"])
    nbfnet = reports["nbfnet"]
    assert nbfnet["world_size"] == 2 and nbfnet["ranks_in_sync"]
    assert nbfnet["valid"]["queries"] == 2 * kg.valid.shape[0] and nbfnet["test"]["queries"] == 2 * kg.test.shape[0]
    per_rank = -(-kg.train.shape[0] // 2)
    assert nbfnet["steps"] == TINY["epochs"] * -(-per_rank // TINY["batch_size"])


def test_a_rank_that_raises_ends_the_run_with_its_error():
    import torch.multiprocessing as mp

    started = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 fails on purpose"):
        launch(failing_worker, None, 2)
    assert time.perf_counter() - started < 60, "ended by the launcher, far within the group's 300 s timeout"


def test_equal_shards_and_argument_checks(monkeypatch):
    items = torch.arange(7)
    shards = [equal_shard(items, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert [s.numel() for s in shards] == [3, 3, 3]
    assert set(torch.cat(shards).tolist()) == set(range(7))
    with pytest.raises(ValueError, match=r"`nproc` to be a positive int"):
        launch(failing_worker, None, 0)
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"`nproc` to be 1 under torchrun"):
        launch(failing_worker, None, 2)


def test_torchrun_environment_with_two_nodes_on_loopback(tmp_path):
    """Two ranks started as torchrun starts them on two machines of one process each
    (``--nnodes 2 --nproc-per-node 1``): its variables set, rendezvous at rank 0's
    address on loopback, no --nproc."""
    port = free_port()
    out = tmp_path / "run.json"
    command = [sys.executable, "-m", "pigeon", "train", "rgcn", *CLI,
               "--epochs", "1", "--max-steps", "2", "--json", str(out)]
    procs = []
    for rank in (0, 1):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "GROUP_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["steps"] == 2 and report["ranks_in_sync"]
