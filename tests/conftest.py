"""Shared test configuration."""

import os
from pathlib import Path

import pytest

# Verify the IR after every pass of every compile in the suite (a broken pass fails at the pass).
os.environ.setdefault("PIGEON_VERIFY", "1")
# Fill every output a generated kernel writes with NaN before it runs: an element it skips fails.
os.environ.setdefault("PIGEON_POISON", "1")

# The cost model plans with fixed rates (a 2-core CI machine's float32 GFLOP/s and GB/s)
# instead of a measurement taken while the suite loads the machine: the plans the tests
# compile, and the decisions they check, are then the same on every run and machine.
# tests/test_bench_floor.py tests the measurement itself.
os.environ.setdefault("PIGEON_COST_RATES", "150,30")

# Without a GPU, Triton kernels run through Triton's interpreter on CPU tensors. It must be
# on before anything imports triton (torch_geometric does, in test_reference.py): kernels
# jitted before it was set fail in the interpreter.
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# pytest-xdist runs one worker per core: each worker's torch and OpenMP threads share
# its core's share, instead of every worker spinning a thread per core at each barrier
# while the others compute. (Tests of threading set their thread counts themselves;
# subprocesses the tests start choose their own.)
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))

from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis: a fixed, modest budget so the suite stays fast on 2 cores; CI derandomizes
# so a red run can be replayed exactly.
settings.register_profile(
    "pigeon",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("pigeon")


@pytest.fixture(scope="session", autouse=True)
def pigeon_cache(tmp_path_factory):
    """One cache folder for the run (compiled C libraries, Triton modules, tuning entries,
    operator data), shared by pytest-xdist's workers, whose every write to it is a rename
    of a whole file; and not the user's ``~/.cache/pigeon``, whose tuning entries would
    change the programs the tests compile. A ``PIGEON_CACHE_DIR`` set by the caller is kept."""
    if "PIGEON_CACHE_DIR" in os.environ:
        yield Path(os.environ["PIGEON_CACHE_DIR"])
        return
    # A worker's base folder is <the run's folder>/<worker id>: its parent is shared.
    run = tmp_path_factory.getbasetemp()
    folder = (run.parent if os.environ.get("PYTEST_XDIST_WORKER") else run) / "pigeon-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIGEON_CACHE_DIR", str(folder))
        yield folder


# The slowest tests (each 10-45 s on a 2-core machine under the suite's load: subprocess
# runs of the command line, spawned ranks, torch.compile) start first. pytest-xdist hands
# tests out in collection order, so a slow test collected last would run alone at the end
# while the other workers sit idle.
SLOW_FIRST = (
    "test_bench.py::test_bench_command_writes_results_markdown_chart_and_provenance",
    "test_distributed.py::test_two_ranks_match_one_process_and_train_rgat_hgt_and_nbfnet",
    "test_bench.py::test_a_structure_run_reports_the_speedup_at_each_point",
    "test_cli.py::test_demo_benchmarks_pigeon_against_a_baseline_and_writes_a_report",
    "test_distributed.py::test_command_line_trains_rgcn_on_two_processes_far_above_chance",
    "test_bench.py::test_every_system_runs_each_model_and_matches_the_reference_where_the_maths_is_the_same",
    "test_distributed.py::test_torchrun_environment_with_two_nodes_on_loopback",
    "test_triton_backend.py::test_float32",
    "test_bench_minibatch.py::test_minibatch_benchmark_runs_pigeon_and_dgl_on_the_same_blocks",
    "test_bench.py::test_a_baseline_out_of_memory_and_a_hang_are_recorded_and_the_run_goes_on",
    "test_train_nbfnet.py::test_training_is_reproducible_and_resumes_from_a_checkpoint",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.nodeid.split("/")[-1]
        for i, slow in enumerate(SLOW_FIRST):
            if name == slow or name.startswith(slow + "["):
                return i
        return len(SLOW_FIRST)

    items.sort(key=rank)   # stable: the rest keep their order
