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
