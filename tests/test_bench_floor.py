"""The benchmark's floor: FLOPs and bytes of Pigeon's kernels, the measured machine,
``floor_s`` in results, and the "x floor" column.

Sizes are tiny (aifb at 2 %, hidden 8 in and 4 out where the shapes must differ) so
the file stays fast on 2 cores. The floors of a real ``pigeon bench`` run are checked
with its other results in ``tests/test_bench.py`` (one run of the command, checked
several ways).
"""

from __future__ import annotations

import re

import pytest
import torch

from pigeon import nn as pnn
from pigeon.bench import Case
from pigeon.bench.floor import Work, add_floor, floor_seconds, kernel_work, machine_work, measure_machine
from pigeon.bench.report import format_markdown, format_table
from pigeon.bench.worker import case_work, prepare
from pigeon.cli import main
from pigeon.data import load
from pigeon.ir.kernel_ir import GemmKernel, ViewKernel
from pigeon.passes.base import RowCounts
from pigeon.runtime.choice import Choice

IN, OUT = 8, 4


@pytest.fixture(scope="module")
def rgcn_plan():
    graph = load("aifb", scale=0.02, seed=0).graph
    module = pnn.RGCN(IN, OUT, graph.num_etypes)
    x = torch.randn(graph.num_nodes, IN, generator=torch.Generator().manual_seed(1))
    return graph, module.compiled.plan(graph, {"x": x, **dict(module.named_parameters())})


# ---- counting -------------------------------------------------------------------------------
def test_rgcn_gemm_flops_are_two_rows_in_out_with_rows_from_the_plan(rgcn_plan):
    graph, plan = rgcn_plan
    rows = RowCounts.from_graph(graph)
    work = kernel_work(plan, graph, "infer")
    assert len(work.kernels) == len(plan.forward_kernels.kernels)
    gemms = [(k, w) for k, w in zip(plan.forward_kernels.kernels, work.kernels) if isinstance(k, GemmKernel)]
    typed = [w for k, w in gemms if k.segment is not None]
    loop = [w for k, w in gemms if k.segment is None]
    assert len(typed) == 1 and len(loop) == 1
    # The typed product runs once per compact (source, edge type) row, or once per edge
    # when the compiler chose not to compact: either way, whatever the row's type.
    typed_kernel = next(k for k, _ in gemms if k.segment is not None)
    typed_rows = rows.of(plan.forward_kernels.buffer(typed_kernel.out).type.space.name)
    assert typed_rows in (graph.compact_src.num_rows, graph.num_edges)
    assert typed[0].flops == 2 * typed_rows * IN * OUT
    assert loop[0].flops == 2 * graph.num_nodes * IN * OUT
    # x @ loop_weight moves x, the weight and the result once each, and no index.
    assert loop[0].bytes == 4 * (graph.num_nodes * IN + IN * OUT + graph.num_nodes * OUT)
    assert work.flops == sum(k.flops for k in work.kernels) > typed[0].flops + loop[0].flops


def test_training_adds_the_backward_kernels_and_its_weight_gradients(rgcn_plan):
    graph, plan = rgcn_plan
    infer, train = kernel_work(plan, graph, "infer"), kernel_work(plan, graph, "train")
    assert len(train.kernels) == len(plan.forward_kernels.kernels) + len(plan.backward_kernels.kernels)
    backward = train.kernels[len(infer.kernels):]
    assert train.flops == infer.flops + sum(k.flops for k in backward)
    assert train.bytes == infer.bytes + sum(k.bytes for k in backward)
    # dLoop = x^T dOut over every node row: 2 * nodes * in * out.
    pairs = zip(plan.backward_kernels.kernels, backward)
    grads = [w for k, w in pairs if isinstance(k, GemmKernel) and k.weight_grad and k.segment is None]
    assert [w.flops for w in grads] == [2 * graph.num_nodes * IN * OUT]
    with pytest.raises(ValueError, match="Expected `mode` to be 'infer' or 'train' \\(got 'eval'\\)"):
        kernel_work(plan, graph, "eval")


def test_bytes_are_at_least_the_inputs_weights_and_outputs(rgcn_plan):
    graph, plan = rgcn_plan
    work = kernel_work(plan, graph, "infer")
    floats = graph.num_nodes * IN + graph.num_etypes * IN * OUT + IN * OUT + OUT + graph.num_nodes * OUT
    assert work.bytes >= 4 * floats
    # Every kernel moves at least what it writes.
    program = plan.forward_kernels
    for kernel, share in zip(program.kernels, work.kernels):
        if isinstance(kernel, GemmKernel):
            out = program.buffer(kernel.out).type
            assert share.bytes >= 4 * RowCounts.from_graph(graph).of(out.space.name) * out.numel
        if isinstance(kernel, ViewKernel):
            assert share.bytes == 0   # on a plain graph the destinations are every node: a view
        else:
            assert share.bytes > 0


# ---- the machine floor ----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["rgcn", "rgat", "hgt"])
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_the_machine_floor_is_at_most_the_plan_floor(model, mode):
    case = Case("pigeon-torch", model, "aifb", mode, dim=IN, heads=2, scale=0.05, seed=1)
    _, workload, runner, _ = prepare(case)
    work, machine = case_work(case, workload, runner)
    assert 0 < machine.flops <= work.flops and 0 < machine.bytes <= work.bytes
    # Bytes: x, every weight and the output once (twice over in training, for their
    # gradients), and one source index per edge.
    graph = workload.graph
    floats = graph.num_nodes * IN * 2 + sum(p.numel() for p in runner.module.parameters())
    assert machine.bytes == 4 * floats * (2 if mode == "train" else 1) + graph.num_edges * graph.index_dtype.itemsize
    # FLOPs: the fewest over every setting of the cost model's decisions, so forcing a
    # decision never does fewer.
    compiled, tensors = runner.module.compiled, {"x": workload.x, **dict(runner.module.named_parameters())}
    for reorder in (False, True):
        for compact in (False, True):
            plan = compiled.plan(graph, tensors, Choice(reorder, compact), mode=mode)
            assert kernel_work(plan, graph, mode).flops >= machine.flops
    with pytest.raises(ValueError, match="`mode`"):
        machine_work(compiled, graph, tensors, "eval")


def test_add_floor_sets_both_floors():
    machine = {"matmul_gflops": 100.0, "bandwidth_gbs": 10.0}
    result = {"flops": 20 * 10**9, "bytes": 10**9, "machine_flops": 10**9, "machine_bytes": 10**8}
    add_floor(result, machine)
    assert result["floor_s"] == pytest.approx(0.2) and result["machine_floor_s"] == pytest.approx(0.01)
    assert result["machine_floor_bound"] == "compute"


# ---- the floor ----------------------------------------------------------------------------
def test_the_floor_is_the_larger_of_compute_and_memory_time():
    machine = {"matmul_gflops": 100.0, "bandwidth_gbs": 10.0}
    assert floor_seconds(Work(flops=20 * 10**9, bytes=10**9), machine) == pytest.approx((0.2, "compute"))
    seconds, bound = floor_seconds(Work(flops=10**9, bytes=3 * 10**9), machine)
    assert bound == "memory" and seconds == pytest.approx(0.3)

    result = {"flops": 20 * 10**9, "bytes": 10**9}
    add_floor(result, machine)
    assert result["floor_s"] == pytest.approx(0.2) and result["floor_bound"] == "compute"
    for result, rates in [({"flops": 1, "bytes": 1}, None), ({"status": "OOM"}, machine)]:
        add_floor(result, rates)
        assert "floor_s" not in result and "floor_bound" not in result


def test_measuring_the_machine_gives_rates_and_restores_the_thread_count():
    before = torch.get_num_threads()
    measured = measure_machine(1, matmul_size=128, copy_mib=4, repeat=2)
    assert torch.get_num_threads() == before
    assert measured["threads"] == 1 and measured["matmul_size"] == 128 and measured["copy_mib"] == 4
    assert measured["matmul_gflops"] > 0 and measured["bandwidth_gbs"] > 0


# ---- the report ---------------------------------------------------------------------------
def _report(results: list[dict], measured: dict | None) -> dict:
    machine = {"cpu": "cpu", "usable_cores": 2, "memory_gib": 1, "gpu": None,
               "versions": {"torch": "t", "dgl": "d", "torch_geometric": "p", "pigeon": "0"}}
    if measured is not None:
        machine["measured"] = measured
    return {"created": "now", "command": "pigeon bench", "results": results, "machine": machine,
            "config": {"dim": 8, "heads": 1, "scale": 1.0, "device": "cpu", "repeat": 1, "warmup": 1,
                       "threads": None}}


def _result(system: str, median: float, **extra) -> dict:
    result = {"system": system, "model": "rgcn", "dataset": "aifb", "mode": "infer", "dim": 8, "heads": 1,
              "scale": 1.0, "device": "cpu", "status": "ok", "error": None, "check": {"status": "ok"},
              "median_s": median, "min_s": median, "max_s": median, "peak_mib": 500.0, "first_call_s": median}
    result.update(extra)
    return result


def test_the_table_shows_the_floor_and_each_systems_multiple_of_it():
    floor = {"flops": 10**6, "bytes": 10**6, "floor_s": 0.002, "floor_bound": "memory"}
    measured = {"matmul_gflops": 123.4, "bandwidth_gbs": 0.5, "threads": 2}
    report = _report([_result("pigeon-torch", 0.010, **floor), _result("dgl", 0.500, **floor)], measured)
    table = format_table(report)
    assert "floor ms" in table and "x floor" in table
    assert "matmul 123.4 GFLOP/s, copy 0.5 GB/s (2 threads)" in table
    pigeon_row = next(line for line in table.splitlines() if "pigeon-torch" in line)
    dgl_row = next(line for line in table.splitlines() if line.lstrip().startswith("dgl"))
    # floor 2 ms, bound by memory; then median / floor, then peak MiB.
    assert re.search(r"\b2 memory\s+5\.0\s+500\b", pigeon_row), pigeon_row
    assert re.search(r"\b2 memory\s+250\s+500\b", dgl_row), dgl_row
    markdown = format_markdown(report)
    assert "| floor ms | x floor |" in markdown and "| 2 memory | 5.0 |" in markdown


def test_results_without_a_floor_still_show(tmp_path, capsys):
    report = _report([_result("pigeon-torch", 0.010, floor_error="KeyError: 'x'"), _result("dgl", 0.5)], None)
    table = format_table(report)
    assert "x floor" in table and "measured" not in table
    assert "pigeon-torch rgcn aifb infer: no floor: KeyError: 'x'" in table
    assert "| 50.00x vs dgl |  |  |  |  | 500 |" in format_markdown(report)
    # A results file saved before the floor existed.
    assert main(["bench", "--from-json", "bench/results/cpu-2026-11-26.json"]) == 0
    assert "x floor" in capsys.readouterr().out
