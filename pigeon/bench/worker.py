"""One benchmark case, in a process of its own: ``python -m pigeon.bench.worker``.

The steps, in order:

1. import torch, Pigeon and the system's library, and run a little of each so that
   thread pools and lazily made native state exist;
2. cap the process's memory (CPU: ``RLIMIT_AS``, the address space, to
   ``memory_gb``; what step 1 mapped, 0.6 to 1.2 GiB, counts against it). On the CPU
   the cap is lifted for the check of step 5 (its float64 oracle is not the system's
   memory) and set again after it;
3. load the dataset (for a structure-sweep case, generate its profile with the case's
   structure), draw the features and the reference layer's weights (seeded), and let
   the system build its layer with those weights;
4. the first call (timed on its own: it includes Pigeon's compilation, the inductor
   system's ``torch.compile`` and DGL's format conversions);
5. the check: the output (and in ``train`` mode the gradients of the input and,
   for Pigeon, of every parameter) against :mod:`pigeon.reference` in float64;
6. ``warmup`` untimed runs, then ``repeat`` timed runs; peak memory is the high
   water mark of those runs (the check's float64 copies are freed first and do not
   count): resident set size on the CPU, ``torch.cuda.max_memory_allocated`` on GPU.
   Beside the times goes how many cores other processes kept busy meanwhile: on a
   shared machine, OpenMP threads that wait for a descheduled peer at every barrier
   can make a layer of many small kernels ten times slower, and this says when.
7. with ``--profile``, for Pigeon's systems: ``repeat`` more runs under
   ``torch.profiler``, and the time of each kernel's range (:func:`profile_kernels`);
8. the work of the case: ``flops`` and ``bytes`` of the kernels Pigeon's plan runs
   for this model and graph (:func:`pigeon.bench.floor.kernel_work`), and
   ``machine_flops`` and ``machine_bytes`` of the machine floor
   (:func:`pigeon.bench.floor.machine_work`), whatever the system, so that every
   system of a case is measured against the same floors.

Beside the measurements go what the case ran with: torch's and OpenMP's threads,
whether compiled layers read the tuning cache (``autotune``), whether the system
computes the reference's maths for the model (``same_maths``), the graph's measured
structure, and for the inductor system what ``torch.compile`` made.

``train`` is one forward and backward of the layer with the input requiring a
gradient, as in a layer inside a network. The result is written as JSON to
``--out``; any exception becomes ``OOM`` or ``error`` there.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import errno
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from pigeon.bench.harness import Case, is_out_of_memory

# float32 against the float64 oracle, per tensor, relative to its largest magnitude.
# Rounding of float32 sums over the in-edges of a hub (or, for weight gradients, over
# all edges) stays below ~1e-5 of that scale; a wrong coefficient, a missing term or a
# mishandled row moves it by far more than 1e-3.
CHECK_TOLERANCE = 1e-3


def _rss_mib(field: str) -> float | None:
    """``VmRSS``, ``VmHWM`` or ``VmSize`` of this process, in MiB (None without /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_ticks() -> tuple[int, int] | None:
    """``(busy ticks of the whole machine, ticks of this process)`` from /proc."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return busy, int(own[11]) + int(own[12])  # utime and stime, all threads
    except (OSError, IndexError, ValueError):
        return None


def _other_cores_busy(before, after, seconds: float) -> float | None:
    """Cores that other processes kept busy on average between two :func:`_cpu_ticks`."""
    if before is None or after is None or seconds <= 0:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    others = (after[0] - before[0]) - (after[1] - before[1])
    return round(max(others, 0) / ticks / seconds, 2)


def _reset_peak_rss() -> bool:
    """Reset the kernel's high water mark of resident memory (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Return freed heap pages to the kernel, so the check's buffers leave the RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _load_libraries(library: str, torch) -> None:
    """Import what the case needs and run a little of it, so that threads, thread
    stacks and lazily made native state (OpenMP, BLAS, DGL's LIBXSMM registry) exist
    before the memory cap: start-up is not the workload."""
    import numpy.random  # noqa: F401  (imported lazily by the graph generators)

    a = torch.rand(512, 512)
    (a @ a).add_(1).sum()
    if library == "dgl":
        from pigeon.interop.dgl import import_dgl

        dgl = import_dgl()
        import dgl.nn.pytorch  # noqa: F401

        tiny = dgl.graph((torch.tensor([0, 1]), torch.tensor([1, 0])))
        dgl.ops.copy_u_sum(tiny, torch.rand(2, 4))
    elif library == "pyg":
        import torch_geometric.nn  # noqa: F401


def _cap_memory(case: Case, torch) -> None:
    if case.device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, case.memory_gb * 2**30 / total))
        return
    # CUDA maps a huge address space, so RLIMIT_AS is for the CPU only.
    limit = int(case.memory_gb * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _uncap_memory() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """``("OOM" | "error", one line)`` for an exception raised by a case."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".strip()[:300]
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return "OOM", line
    if is_out_of_memory(str(exc)):
        return "OOM", line
    return "error", line


# ---- building the case ------------------------------------------------------------
def _perturb_constants(module, generator, torch) -> None:
    """Add noise to parameters that start constant (zero biases, unit gates and priors),
    so that the check sees a dropped bias or gate."""
    with torch.no_grad():
        for param in module.parameters():
            if param.numel() and bool(param.min() == param.max()):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def _leaves(value, requires_grad: bool):
    """``value`` (a tensor or a dict of tensors) as fresh leaves."""
    if isinstance(value, dict):
        return {name: _leaves(v, requires_grad) for name, v in value.items()}
    return value.detach().requires_grad_(requires_grad)


def _tensors(value) -> list:
    """The tensors of an output or input: a tensor, or the non-None values of a dict."""
    if isinstance(value, dict):
        return [v for v in value.values() if v is not None]
    return [value]


class _Clock:
    """Seconds of one call: ``perf_counter`` on the CPU, CUDA events on a GPU."""

    def __init__(self, torch, device: str):
        self.torch, self.cuda = torch, device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def time(self, fn) -> float:
        if self.cuda:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            self.torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin


def relative_errors(value, truth) -> dict:
    """``rel_err``: ``||value - truth|| / ||truth||``; ``max_rel_err``: the largest
    difference over the largest magnitude of ``truth``; in float64. A missing value
    where the truth has one is infinitely wrong."""
    if value is None or truth is None:
        missing = float("inf") if (value is None) != (truth is None) else 0.0
        return {"rel_err": missing, "max_rel_err": missing}
    diff = value.double() - truth
    norm, scale = truth.norm().item(), truth.abs().max().item() if truth.numel() else 0.0
    rel = diff.norm().item() / norm if norm > 0 else diff.norm().item()
    peak = diff.abs().max().item() / scale if scale > 0 else (diff.abs().max().item() if diff.numel() else 0.0)
    return {"rel_err": rel, "max_rel_err": peak}


def make_step(runner, native, train: bool, generator):
    """The timed call: the system's forward under ``no_grad``, or its forward and backward
    for one random output gradient (drawn from ``generator`` on the first call, then kept)."""
    import torch

    out_grads: list = []

    def step():
        if not train:
            with torch.no_grad():
                runner.forward(native)
            return
        outputs = _tensors(runner.forward(native))
        if not out_grads:
            out_grads.extend(torch.randn(o.shape, generator=generator).to(o.device) for o in outputs)
        torch.autograd.backward(outputs, out_grads)

    return step


def check_against_reference(system, runner, workload, train: bool, generator, tolerance: float = CHECK_TOLERANCE,
                            measure: str = "max_rel_err") -> dict:
    """Compare the system with the float64 reference on the same weights and inputs:
    the output, and with ``train`` the gradients of the input and (for layers with the
    reference's parameter names) of every parameter, for one random output gradient
    drawn from ``generator``."""
    import torch

    if workload.model not in system.same_maths:
        return {"status": "n/a", "note": f"{system.name}'s {workload.model} is different maths"}
    graph, x = workload.graph, workload.x
    oracle = copy.deepcopy(workload.reference).double()
    x64 = x.detach().double().requires_grad_(train)
    x32 = x.detach().clone().requires_grad_(train)
    expected = oracle(graph, x64)
    got, rows = runner.to_global(runner.forward(runner.to_native(x32)))
    if rows is not None:
        expected, got = expected.index_select(0, rows), got.index_select(0, rows)

    pairs = {"output": (got, expected)}
    if train:
        seed = torch.randn(expected.shape, generator=generator, dtype=torch.float64).to(x.device)
        (expected * seed).sum().backward()
        (got * seed.float()).sum().backward()
        pairs["grad x"] = (x32.grad, x64.grad)
        if runner.reference_names:
            theirs = dict(oracle.named_parameters())
            for name, param in runner.module.named_parameters():
                pairs[f"grad {name}"] = (param.grad, theirs[name].grad)

    errors = {name: relative_errors(value, truth) for name, (value, truth) in pairs.items()}
    worst = max(errors, key=lambda name: errors[name][measure])
    ok = all(e[measure] <= tolerance for e in errors.values())   # NaN fails
    result = {"status": "ok" if ok else "mismatch", "max_rel_err": max(e["max_rel_err"] for e in errors.values()),
              "rel_err": max(e["rel_err"] for e in errors.values()), "measure": measure, "worst": worst,
              "tolerance": tolerance, "errors": errors, "rows_compared": int(expected.shape[0])}
    runner.module.zero_grad(set_to_none=True)
    return result


def load_graph(case: Case):
    """``(graph, synthetic)`` of ``case``: the dataset as :func:`pigeon.data.load` gives
    it, or for a structure-sweep case (``repeats`` set) its profile generated with that
    structure (:class:`pigeon.data.profiles.Structure`)."""
    from pigeon.data import load
    from pigeon.data.profiles import PROFILES, Structure, generate

    if case.repeats is None:
        dataset = load(case.dataset, scale=case.scale, seed=case.seed)
        return dataset.graph, dataset.synthetic
    if case.dataset not in PROFILES:
        raise ValueError(f"Expected a synthetic profile for a structure case, one of {sorted(PROFILES)} "
                         f"(got dataset {case.dataset!r})")
    return generate(case.dataset, case.scale, case.seed, Structure(case.repeats, case.skew or 0.0)), True


def prepare(case: Case):
    """``(system, workload, runner)`` for ``case``: the dataset, seeded features and
    reference weights, and the system's layer built from them."""
    import torch

    from pigeon.bench.systems import Workload, available_systems, make_reference

    system = available_systems().get(case.system)
    if system is None:
        raise ValueError(f"unknown system {case.system!r}; this installation has {sorted(available_systems())}")
    if system.device is not None and system.device != case.device:
        raise ValueError(f"{system.name} runs on {system.device} only (got device {case.device!r})")
    graph, synthetic = load_graph(case)
    graph = graph.to(case.device)
    generator = torch.Generator().manual_seed(case.seed)
    torch.manual_seed(case.seed)
    reference = make_reference(case.model, graph, case.dim, case.heads)
    _perturb_constants(reference, generator, torch)
    reference.to(case.device)
    x = torch.randn(graph.num_nodes, case.dim, generator=generator).to(case.device)
    workload = Workload(case.model, graph, x, reference, case.dim, case.heads)
    return system, workload, system.build(workload), synthetic


def case_work(case: Case, workload, runner):
    """``(plan work, machine work)``, the :class:`pigeon.bench.floor.Work` of the
    kernels Pigeon's plan runs for ``case`` and of the machine floor: from the system's
    own compiled layer when it has one (its plan is cached by then), else from a layer
    of Pigeon's generated backend for the device (the cost model plans for the backend,
    so every system of a case gets the floor of the plan Pigeon's generated backend
    runs; pigeon-torch where that backend is missing)."""
    from pigeon.bench.floor import kernel_work, machine_work
    from pigeon.bench.systems import available_systems

    module = runner.module
    if not hasattr(module, "compiled"):
        systems = available_systems()
        generated = "pigeon-triton" if case.device == "cuda" else "pigeon-cpu"
        module = systems[generated if generated in systems else "pigeon-torch"].build(workload).module
    tensors = {"x": workload.x, **dict(module.named_parameters())}
    plan = module.compiled.plan(workload.graph, tensors, mode=case.mode)
    return (kernel_work(plan, workload.graph, case.mode),
            machine_work(module.compiled, workload.graph, tensors, case.mode))


def describe_graph(graph, synthetic: bool) -> dict:
    """What the results file says of a case's graph: its counts and its measured
    structure (:func:`pigeon.data.profiles.structure_stats`)."""
    from pigeon.data.profiles import structure_stats

    stats = structure_stats(graph.to("cpu"))
    return {"nodes": graph.num_nodes, "edges": graph.num_edges, "etypes": graph.num_etypes,
            "ntypes": graph.num_ntypes, "synthetic": synthetic, "repeats": round(stats["repeats"], 3),
            "top_decile_share": round(stats["top_decile_share"], 3)}


def measure(case: Case, record=lambda result: None) -> dict:
    """Run ``case`` in this process and return what was measured (never raises).

    ``record(result)`` is called with the partial result as each stage ends, so that
    a process killed half-way (by the kernel, or a native crash) leaves what it had
    and the stage it died in.
    """
    result: dict = {"status": "error", "error": None, "stage": "import"}

    def reached(stage: str) -> None:
        result["stage"] = stage
        record(result)

    capped = False
    try:
        import torch

        from pigeon.bench.systems import available_systems

        system = available_systems().get(case.system)
        if case.threads is not None:
            torch.set_num_threads(case.threads)
        _load_libraries(system.library if system else "", torch)
        result["threads"] = torch.get_num_threads()
        result["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
        result["autotune"] = os.environ.get("PIGEON_AUTOTUNE", "1") != "0"
        result["import_rss_mib"] = _rss_mib("VmRSS")
        result["import_vm_mib"] = _rss_mib("VmSize")
        _cap_memory(case, torch)
        capped = True
        # Every system alike: freed pages kept for the next call (what Pigeon's layers ask
        # for on their first CPU call), so no system's times hold page faults the others'
        # do not. After the cap, so that the pad's address space counts against it.
        from pigeon.runtime.heap import keep_freed_memory

        result["heap_pad_mib"] = keep_freed_memory() if case.device == "cpu" else 0
        reached("build")

        system, workload, runner, synthetic = prepare(case)
        result["same_maths"] = case.model in system.same_maths
        result["graph"] = describe_graph(workload.graph, synthetic)
        reached("first call")

        train = case.mode == "train"
        generator = torch.Generator().manual_seed(case.seed + 1)
        native = _leaves(runner.to_native(workload.x), requires_grad=train)
        inputs = _tensors(native)
        step = make_step(runner, native, train, generator)

        def reset_grads():
            runner.module.zero_grad(set_to_none=True)
            for tensor in inputs:
                tensor.grad = None

        clock = _Clock(torch, case.device)
        result["first_call_s"] = clock.time(step)
        reset_grads()
        reached("check")
        # The cap is the system's budget: the float64 oracle beside it (on the am profile,
        # gigabytes) runs without it, and is freed before the cap is set again.
        if case.device == "cpu":
            _uncap_memory()
        result["check"] = check_against_reference(system, runner, workload, train, generator)
        if case.device == "cpu":
            _release_freed_memory()
            _cap_memory(case, torch)
        reached("timing")

        for _ in range(case.warmup):
            reset_grads()
            step()
        reset_grads()
        clock.sync()
        _release_freed_memory()
        if case.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            peak_source = "torch.cuda.max_memory_allocated"
        else:
            peak_source = "VmHWM" if _reset_peak_rss() else "ru_maxrss (includes the check)"
        result["setup_rss_mib"] = _rss_mib("VmRSS")

        times = []
        ticks, begin = _cpu_ticks(), time.perf_counter()
        for _ in range(case.repeat):
            reset_grads()
            times.append(clock.time(step))
        result["other_cores_busy"] = _other_cores_busy(ticks, _cpu_ticks(), time.perf_counter() - begin)
        if case.device == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
        elif peak_source == "VmHWM":
            peak = _rss_mib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result.update(status="ok", times_s=times, median_s=statistics.median(times), min_s=min(times),
                      max_s=max(times), peak_mib=peak, peak_source=peak_source)
        if runner.notes is not None:
            result.update(runner.notes())
        if case.profile and system.library == "pigeon":
            reached("profile")
            result["profile"] = profile_kernels(step, reset_grads, case.repeat, clock)
        reached("floor")
        try:
            work, machine = case_work(case, workload, runner)
            result.update(flops=work.flops, bytes=work.bytes, machine_flops=machine.flops,
                          machine_bytes=machine.bytes)
        except Exception as exc:  # the timing stands; the missing floor is recorded with its cause
            result["floor_error"] = classify_exception(exc)[1]
    except Exception as exc:  # every failure is the case's result, recorded below
        result["status"], result["error"] = classify_exception(exc)
    if capped:
        _uncap_memory()
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["stage"] = "done"
    return result


def profile_kernels(step, reset, repeat: int, clock) -> list[dict]:
    """Run ``step`` ``repeat`` times under ``torch.profiler`` and return one row per
    Pigeon range (a layer's forward or backward, and each kernel inside it: see
    :mod:`pigeon.runtime.profiling`), in the order they first ran: ``name``,
    ``calls`` per step, and per step the host time ``cpu_s`` and, on a GPU, the device
    time ``device_s`` of the kernels the range launched."""
    from torch.profiler import ProfilerActivity, profile

    from pigeon.runtime.profiling import RANGE_PREFIX

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if clock.cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(repeat):
            reset()
            step()
        clock.sync()
    rows: dict[str, dict] = {}
    for event in prof.events():
        if not event.name.startswith(RANGE_PREFIX):
            continue
        row = rows.setdefault(event.name, {"name": event.name, "calls": 0, "cpu_s": 0.0, "device_s": 0.0})
        row["calls"] += 1
        row["cpu_s"] += event.cpu_time_total / 1e6
        row["device_s"] += getattr(event, "device_time_total", 0.0) / 1e6
    for row in rows.values():
        row["calls"] /= repeat
        row["cpu_s"] /= repeat
        row["device_s"] /= repeat
    return list(rows.values())


def _write(result: dict, path: str) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pigeon.bench.worker",
                                     description="Run one benchmark case (pigeon bench starts this).")
    parser.add_argument("--case", required=True, help="the case as JSON (the fields of pigeon.bench.Case)")
    parser.add_argument("--out", required=True, help="where to write the result as JSON")
    args = parser.parse_args(argv)
    case = Case(**json.loads(args.case))
    if case.threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(case.threads))
    _write(measure(case, record=lambda partial: _write(partial, args.out)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
