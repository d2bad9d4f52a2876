"""The machine the cost model plans for: its measured rates, and what each backend reaches.

:func:`measure_machine` times a dense float32 matrix multiply and a large copy.
:func:`machine_target` measures once per machine and thread count and keeps the result
in ``PIGEON_CACHE_DIR/machine-*.json`` (a few seconds saved in every later process),
then gives the :class:`~pigeon.passes.cost.Target` of a backend: the C and Triton
generators fuse, and the torch backend pays the interpreter's dispatch per op and a
matmul call per type of a segmented GEMM.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time

import torch

from pigeon.passes.cost import Target
from pigeon.paths import cache_dir

__all__ = ["measure_machine", "machine_target", "device_name", "MEASURE_FORMAT"]

#: Bumped when what is measured changes: older files are measured again.
MEASURE_FORMAT = 1


def _seconds(fn, repeat: int, best: bool) -> float:
    fn()  # first touch: page faults and thread start-up are not the rate
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return min(times) if best else statistics.median(times)


def measure_machine(threads: int | None = None, *, matmul_size: int = 2048, copy_mib: int = 256,
                    repeat: int = 5, best: bool = False) -> dict:
    """The float32 matrix-multiply rate and the memory bandwidth of this machine.

    Args:
        threads (int, optional): torch threads while measuring (the cases' ``--threads``);
            restored afterwards. Default: torch's current setting.
        matmul_size (int): side of the square ``torch.matmul``. Default: 2048.
        copy_mib (int): size of the tensor ``copy_`` copies, in MiB; bandwidth counts the
            bytes read plus the bytes written. Default: 256.
        repeat (int): timed runs of each, after one untimed; the median counts, or with
            ``best`` the fastest (what the machine can do, less what other work took). Default: 5.
        best (bool): the fastest run instead of the median. Default: False.

    Returns ``{"matmul_gflops", "bandwidth_gbs", "threads", "matmul_size", "copy_mib"}``
    (GFLOP/s and GB/s, 10^9 per second), as stored in ``report["machine"]["measured"]``.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(matmul_size, matmul_size, generator=generator)
        b = torch.randn(matmul_size, matmul_size, generator=generator)
        product = torch.empty(matmul_size, matmul_size)
        seconds = _seconds(lambda: torch.matmul(a, b, out=product), repeat, best)
        gflops = 2 * matmul_size**3 / seconds / 1e9

        source = torch.ones(copy_mib * 2**20 // 4)
        target = torch.empty_like(source)
        seconds = _seconds(lambda: target.copy_(source), repeat, best)
        bandwidth = 2 * source.nbytes / seconds / 1e9
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return {"matmul_gflops": round(gflops, 2), "bandwidth_gbs": round(bandwidth, 2), "threads": used,
            "matmul_size": matmul_size, "copy_mib": copy_mib}


def device_name(device: torch.device) -> str:
    """What a measurement was taken on: the GPU's name, or the CPU's model and the
    number of threads torch uses (the C kernels use as many)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def _machine_key(device: torch.device) -> str:
    return hashlib.sha256(f"{MEASURE_FORMAT} {device.type} {device_name(device)}".encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _measured(key: str) -> dict:
    """The machine's rates, read from the cache folder or measured (the fastest of several
    runs, so that other work on the machine at that moment weighs little) and stored there."""
    path = cache_dir() / f"machine-{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    rates = measure_machine(matmul_size=1024, copy_mib=64, repeat=7, best=True)
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(rates, f)
    os.replace(tmp, path)  # atomic: parallel processes see the whole file or none
    return rates


def machine_target(backend: str, device: torch.device) -> Target:
    """The :class:`Target` the cost model plans with for ``backend`` on ``device``
    (``PIGEON_COST_RATES="gflops,gbs"`` fixes the rates instead of measuring them)."""
    given = os.environ.get("PIGEON_COST_RATES")
    if given:
        try:
            gflops, gbs = (float(v) for v in given.split(","))
        except ValueError:
            raise ValueError(f"Expected PIGEON_COST_RATES to be 'GFLOPS,GBS', two numbers (got {given!r})") from None
    elif device.type == "cuda":
        gflops, gbs = 50_000.0, 2_000.0   # not measured on a GPU: the order of an H100's fp32 (TF32 off)
    else:
        rates = _measured(_machine_key(device))
        gflops, gbs = rates["matmul_gflops"], rates["bandwidth_gbs"]
    if backend == "torch":
        # Op by op through the interpreter, a matmul call per type, no fusion.
        return Target(gflops, gbs, gemm_rows_half=256.0, elementwise_gflops=2.0, kernel_s=20e-6, op_s=30e-6,
                      looped_gemms="all")
    if backend == "triton":
        return Target(gflops, gbs, gemm_rows_half=64.0, elementwise_gflops=gflops / 8, kernel_s=10e-6, op_s=0.0,
                      looped_gemms="none")
    # cpu: generated C for every typed GEMM, per-head ones included. Rows of 64 to 256
    # bytes through an index map reach about a third of the streaming rate on 2 threads
    # (the generated kernels on the 2-core development machine: bench/cost_model.py).
    return Target(gflops, gbs, indexed_efficiency=0.35, looped_gemms="none")
