"""Autotuning: the search (with a deterministic fake score and clock), the space, the
cache (hit, miss, corrupt and stale entries, each warned about once), real tuning runs
on the CPU backend and on Triton's interpreter, and ``pigeon tune --show/--clear``.

Every test points ``PIGEON_CACHE_DIR`` at its own folder, so none reads or writes the
user's cache (compiled C libraries land there too, so a fresh folder also means fresh
compiles)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

import pigeon
from pigeon import nn as pnn
from pigeon import reference
from pigeon.codegen.c import CConfig
from pigeon.codegen.c import default_config as c_default
from pigeon.codegen.triton import TritonConfig
from pigeon.codegen.triton_gemm import GemmConfig
from pigeon.ir.kernel_ir import TraversalKernel, format_kernel_program
from pigeon.runtime.choice import Choice
from pigeon.runtime.cpu_backend import CpuExecutor
from pigeon.runtime.triton_backend import TritonExecutor
from pigeon.tune.cache import TuneCache, tune_key
from pigeon.tune.measure import CandidateFailed, Workload, cpu_timer
from pigeon.tune.space import KernelSpace, c_space, gemm_space, kernel_spaces, program_variants, triton_space
from pigeon.tune.tuner import search

# fp64 throughout: the compiled layers agree with the reference to rounding (~1e-12 on
# sums of a few dozen terms), so 1e-10 leaves room for reordered sums and nothing else.
F64 = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PIGEON_AUTOTUNE", raising=False)
    return tmp_path / "cache"


def _graph(num_nodes=24, num_edges=100, num_etypes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    etype = torch.randint(0, num_etypes, (num_edges,), generator=gen)
    return pigeon.HeteroGraph(src, dst, etype, num_nodes=num_nodes, num_etypes=num_etypes)


def _rgat(graph, backend="cpu", **options):
    torch.manual_seed(0)
    return pnn.RGAT(4, 2, graph.num_etypes, heads=2, backend=backend, **options).double()


def _x(graph, dim=4, seed=1):
    return torch.randn(graph.num_nodes, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _fast_timer(run):
    return cpu_timer(run, warmup=0, repeat=1)


# ---- the search ------------------------------------------------------------------------

class _Clock:
    """A clock that advances one second per reading."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 1.0
        return self.t


def _fake_problem():
    default = Choice()
    variants = [default, Choice(compact=False), Choice(compact=True, layout="coo")]
    space = KernelSpace("k0", "forward", "traversal", (CConfig(), CConfig("static", 0), CConfig("guided", 4),
                                                       CConfig("dynamic", 64)))
    times = {default: 10.0, variants[1]: 8.0, variants[2]: 9.0}
    spaces_seen = []

    def spaces_of(choice):
        spaces_seen.append(choice)
        return [space]

    def score(choice):
        if choice in times:
            return times[choice]
        config = dict(choice.forward)["k0"]
        if config.schedule == "guided":
            raise CandidateFailed("does not compile: fake")
        return {"static": 5.0, "dynamic": 7.95}[config.schedule]

    return variants, space, spaces_of, score, spaces_seen


def test_search_picks_the_fastest_variant_then_the_fastest_config_per_kernel():
    variants, space, spaces_of, score, spaces_seen = _fake_problem()
    outcome = search(variants, spaces_of, score, budget_s=100, min_gain=0.02, clock=_Clock())
    assert spaces_seen == [variants[1]]   # kernel configs are searched on the fastest variant
    assert outcome.chosen == Choice(compact=False, forward=(("k0", CConfig("static", 0)),))
    seconds = [m.seconds for m in outcome.measured]
    assert seconds == sorted(seconds) and seconds[0] == 5.0
    failed = [m for m in outcome.measured if m.status != "ok"]
    assert len(failed) == 1 and failed[0].seconds == math.inf and "does not compile" in failed[0].status
    assert len(outcome.measured) == 3 + 3 and not outcome.stopped_by_budget


def test_a_gain_below_the_threshold_keeps_the_incumbent():
    variants, space, spaces_of, score, _ = _fake_problem()

    def slow_static(choice):
        value = score(choice)
        return 7.9 if value == 5.0 else value   # 1.25 % faster than the 8.0 incumbent

    outcome = search(variants, spaces_of, slow_static, budget_s=100, min_gain=0.02, clock=_Clock())
    assert outcome.chosen == variants[1]


def test_a_winner_that_is_not_faster_when_re_timed_is_dropped():
    variants, _, spaces_of, score, _ = _fake_problem()
    timed = []

    def confirm(default, winner):
        timed.append((default, winner))
        return 10.0, 9.9   # 1 % faster: noise

    outcome = search(variants, spaces_of, score, budget_s=100, clock=_Clock(), confirm=confirm)
    assert timed == [(Choice(), Choice(compact=False, forward=(("k0", CConfig("static", 0)),)))]
    assert outcome.chosen == Choice() and outcome.confirmed == (10.0, 9.9, False)
    kept = search(variants, spaces_of, score, budget_s=100, clock=_Clock(), confirm=lambda d, w: (10.0, 6.0))
    assert kept.chosen == timed[0][1] and kept.confirmed == (10.0, 6.0, True)


def test_the_budget_stops_the_search_but_the_default_is_always_measured():
    variants, _, spaces_of, score, spaces_seen = _fake_problem()
    outcome = search(variants, spaces_of, score, budget_s=0, clock=_Clock())
    assert [m.choice for m in outcome.measured] == [Choice()]
    assert outcome.chosen == Choice() and outcome.stopped_by_budget and spaces_seen == []


def test_a_failing_default_is_an_error():
    def score(choice):
        raise CandidateFailed("does not compile: fake")

    with pytest.raises(RuntimeError, match="default candidate failed.*fake"):
        search([Choice()], lambda c: [], score, budget_s=10, clock=_Clock())


# ---- the space -------------------------------------------------------------------------

def test_c_space_is_clamped_deduplicated_and_keeps_the_default():
    graph = _graph()
    module = _rgat(graph)
    plan = module.compiled.plan(graph, {"x": _x(graph), **dict(module.named_parameters())}, Choice())
    traversal = next(k for k in plan.forward_kernels.kernels if isinstance(k, TraversalKernel))
    space = c_space(traversal, rows=3)
    assert space[0] == c_default(traversal)
    assert len(set(space)) == len(space)
    assert all(c.chunk <= 3 for c in space[1:])
    assert {c.schedule for c in space} == {"static", "dynamic", "guided"}
    assert c_space(traversal, rows=3, keep=lambda c: False) == (c_default(traversal),)


def test_triton_and_gemm_spaces_never_exceed_the_padded_problem():
    graph = _graph()
    module = _rgat(graph, backend="triton")
    plan = module.compiled.plan(graph, {"x": _x(graph), **dict(module.named_parameters())}, Choice())
    traversal = next(k for k in plan.forward_kernels.kernels if isinstance(k, TraversalKernel))
    space = triton_space(traversal, rows=100, longest_group=5)
    assert len(set(space)) == len(space)
    assert {c.block for c in space[1:]} == {16}   # a group of 5 rows pads to 8, blocks start at 16
    gemms = gemm_space(False, rows=24, n=8, k=20, dtype=torch.float64)
    assert len(set(gemms)) == len(gemms)
    assert all(c.BLOCK_N == 16 and c.BLOCK_K in (16, 32) and c.BLOCK_M <= 32 for c in gemms[1:])
    wide = gemm_space(False, rows=4096, n=256, k=256, dtype=torch.float64)
    assert all(c.BLOCK_M * c.BLOCK_N <= 64 * 64 for c in wide[1:])
    assert gemm_space(True, rows=24, n=8, k=20, dtype=torch.float32, keep=lambda c: False)[1:] == ()


def test_configs_are_checked_where_they_are_given():
    graph = _graph()
    module = _rgat(graph)
    program = module.compiled.plan(graph, {"x": _x(graph), **dict(module.named_parameters())}, Choice()).forward_kernels
    gemm = next(f"k{i}" for i, k in enumerate(program.kernels) if not isinstance(k, TraversalKernel))
    with pytest.raises(ValueError, match="Expected `schedule` to be one of .* \\(got 'fast'\\)"):
        CConfig("fast")
    with pytest.raises(ValueError, match="Expected `block` to be a positive power of two \\(got 24\\)"):
        TritonConfig(24)
    with pytest.raises(ValueError, match="Expected `BLOCK_M` to be a power of two of at least 16 \\(got 8\\)"):
        GemmConfig(8, 16, 16)
    with pytest.raises(ValueError, match=f"traversal kernel names of this program .* \\(got '{gemm}'"):
        CpuExecutor(program, {gemm: CConfig()})
    with pytest.raises(ValueError, match=f"Expected `configs\\['{gemm}'\\]` to be GemmConfig"):
        TritonExecutor(program, {gemm: TritonConfig(16)})
    with pytest.raises(ValueError, match="Expected no kernel configs for backend='torch'"):
        pigeon.compile(pnn.functional.rgat, heads=2, backend="torch").plan(
            graph, {"x": _x(graph), **dict(module.named_parameters())}, Choice(forward=(("k0", CConfig()),)))


def test_program_variants_are_distinct_programs_and_respect_forced_decisions():
    graph = _graph()
    module = _rgat(graph)
    tensors = {"x": _x(graph), **dict(module.named_parameters())}
    variants = program_variants(module.compiled, graph, tensors, "train")
    assert variants[0] == Choice() and 1 < len(variants) <= 9
    texts = set()
    for v in variants:
        plan = module.compiled.plan(graph, tensors, v)
        texts.add(format_kernel_program(plan.forward_kernels) + format_kernel_program(plan.backward_kernels))
    assert len(texts) == len(variants)
    # The C backend has no edge-parallel traversals: no variant asks for them.
    assert all(v.layout != "coo" for v in variants)
    forced = _rgat(graph, reorder=False, compact=False, layout="csr")
    assert program_variants(forced.compiled, graph, tensors, "train") == [Choice()]


def test_kernel_spaces_name_every_c_traversal():
    graph = _graph()
    module = _rgat(graph)
    plan = module.compiled.plan(graph, {"x": _x(graph), **dict(module.named_parameters())}, Choice())
    spaces = kernel_spaces(plan.forward_kernels, "forward", "cpu", graph, torch.float64)
    traversals = [f"k{i}" for i, k in enumerate(plan.forward_kernels.kernels) if isinstance(k, TraversalKernel)]
    assert [s.name for s in spaces] == traversals and all(len(s.candidates) > 1 for s in spaces)
    assert kernel_spaces(plan.forward_kernels, "forward", "torch", graph, torch.float64) == []


# ---- the cache ---------------------------------------------------------------------------

def _key(graph, mode="train"):
    module = _rgat(graph)
    tensors = {"x": _x(graph), **dict(module.named_parameters())}
    traced, _ = module.compiled.trace(graph, tensors)
    default = module.compiled.plan(graph, tensors, Choice())
    return tune_key(module.compiled, traced, default, graph, "cpu", torch.float64, mode)


def test_cache_hit_miss_and_similar_graphs_share_an_entry():
    graph = _graph()
    cache = TuneCache()
    key = _key(graph)
    assert cache.lookup(key) is None
    choice = Choice(compact=False, forward=(("k1", CConfig("guided", 4)),))
    path = cache.store(key, choice, {"speedup": 1.5})
    entry = cache.lookup(key)
    assert entry.choice == choice and entry.summary["speedup"] == 1.5 and entry.path == path
    # One more (repeated) edge: same buckets, same entry. Another mode or a much larger graph: a miss.
    src, dst, etype = graph.src, graph.dst, graph.etype
    similar = pigeon.HeteroGraph(torch.cat([src, src[:1]]), torch.cat([dst, dst[:1]]), torch.cat([etype, etype[:1]]),
                                 num_nodes=graph.num_nodes, num_etypes=graph.num_etypes)
    assert cache.lookup(_key(similar)).choice == choice
    assert cache.lookup(_key(graph, mode="infer")) is None
    assert cache.lookup(_key(_graph(num_nodes=200, num_edges=900))) is None


def _lookups_warn_once(cache, key, match):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.lookup(key) is None
        assert cache.lookup(key) is None
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and match in messages[0], messages


def test_a_corrupt_entry_is_ignored_with_one_warning():
    graph = _graph()
    cache = TuneCache()
    key = _key(graph)
    path = cache.store(key, Choice(compact=False), {})
    path.write_text(path.read_text()[:40])
    _lookups_warn_once(cache, key, "corrupt")
    # A rewrite re-arms the warning; a well-formed file with a malformed choice is corrupt too.
    cache.store(key, Choice(compact=False), {})
    data = {"key": key, "choice": {"reorder": "yes", "compact": None, "layout": None, "forward": [], "backward": []},
            "summary": {}}
    path.write_text(json.dumps(data))
    _lookups_warn_once(cache, key, "`reorder` must be null or a boolean")


def test_a_stale_entry_is_ignored_with_one_warning():
    graph = _graph()
    cache = TuneCache()
    key = _key(graph)
    path = cache.store(key, Choice(compact=False), {})
    data = json.loads(path.read_text())
    data["key"]["where"]["pigeon"] = "0.0.1"
    path.write_text(json.dumps(data))
    _lookups_warn_once(cache, key, "stale (pigeon '0.0.1' -> '0.1.0')")


# ---- measuring and tuning for real -----------------------------------------------------------

def test_a_candidate_that_disagrees_or_does_not_compile_is_reported_not_fatal(monkeypatch):
    graph = _graph()
    module = _rgat(graph)
    work = Workload(module.compiled, graph, {"x": _x(graph), **dict(module.named_parameters())}, "train")
    _, want = work.measure(Choice(), _fast_timer, None)
    assert len(want) == 1 + 1 + len(list(module.parameters()))   # output, then every gradient
    off = [w + 1e-6 * w.abs().max() for w in want]
    with pytest.raises(CandidateFailed, match="disagrees with the default: output off by"):
        work.measure(Choice(), _fast_timer, off)
    monkeypatch.setenv("CC", "false")   # every new library fails to build
    plan = module.compiled.plan(graph, work.tensors, Choice())
    name = next(f"k{i}" for i, k in enumerate(plan.forward_kernels.kernels) if isinstance(k, TraversalKernel))
    with pytest.raises(CandidateFailed, match="does not compile: CompilerError"):
        work.measure(Choice(forward=((name, CConfig("guided", 7)),)), _fast_timer, want)


def test_cpu_tuning_run_and_the_choice_applied_by_a_fresh_module(isolated_cache, monkeypatch):
    graph = _graph()
    module = _rgat(graph)
    x = _x(graph)
    result = pigeon.tune(module, graph, x, mode="train", budget_s=4, backend="cpu", timer=_fast_timer,
                         progress=False, verbose=False)
    assert result.chosen_s <= result.default_s
    assert all(m.status == "ok" for m in result.measured)   # every candidate agreed with the default
    assert len(result.measured) >= 2 and Choice() in [m.choice for m in result.measured]
    assert "chosen" in result.table() and result.path.exists()
    assert TuneCache().lookup(result.key).choice == result.chosen

    # Store a choice that changes decisions and kernel configs; a fresh module must apply it.
    tensors = {"x": x, **dict(module.named_parameters())}
    variant = Choice(reorder=False, compact=False)
    plan = module.compiled.plan(graph, tensors, variant)
    configs = tuple((f"k{i}", CConfig("static", 2)) for i, k in enumerate(plan.forward_kernels.kernels)
                    if isinstance(k, TraversalKernel))
    tuned = Choice(reorder=False, compact=False, forward=configs)
    TuneCache().store(result.key, tuned, {})
    fresh = _rgat(graph)
    fresh_tensors = {"x": x.clone().requires_grad_(), **dict(fresh.named_parameters())}
    assert fresh.compiled.plan(graph, fresh_tensors).choice == tuned
    assert "schedule(static, num_groups < 128 ? 1 : 2)" in fresh.compiled.plan(graph, fresh_tensors).run_forward.source(torch.float64)
    # ... and still compute the layer: forward and gradients against the reference.
    ref = reference.RGAT(4, 2, graph.num_etypes, heads=2).double()
    ref.load_state_dict(fresh.state_dict())
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    got, want = fresh(graph, xs[0]), ref(graph, xs[1])
    torch.testing.assert_close(got, want, **F64)
    seed = torch.randn(got.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got_grads = torch.autograd.grad(got, [xs[0], *fresh.parameters()], seed)
    want_grads = torch.autograd.grad(want, [xs[1], *ref.parameters()], seed)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **F64)
    # PIGEON_AUTOTUNE=0: the cost model's defaults, the cache is not read.
    monkeypatch.setenv("PIGEON_AUTOTUNE", "0")
    off = _rgat(graph)
    assert off.compiled.plan(graph, {"x": x.clone().requires_grad_(), **dict(off.named_parameters())}).choice == Choice()
    # Inference looks up its own entry: none was stored, so the defaults.
    monkeypatch.delenv("PIGEON_AUTOTUNE")
    with torch.no_grad():
        assert fresh.compiled.plan(graph, {"x": x, **dict(fresh.named_parameters())}).choice == Choice()


def test_cached_configs_that_do_not_fit_the_program_are_dropped_with_a_warning():
    graph = _graph()
    TuneCache().store(_key(graph), Choice(compact=False, forward=(("k99", CConfig("guided", 4)),)), {})
    module = _rgat(graph)
    x = _x(graph).requires_grad_()
    with pytest.warns(RuntimeWarning, match="tuned kernel configs for rgat do not fit"):
        plan = module.compiled.plan(graph, {"x": x, **dict(module.named_parameters())})
    assert plan.choice == Choice(compact=False)   # the decisions still apply
    ref = reference.RGAT(4, 2, graph.num_etypes, heads=2).double()
    ref.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(graph, x), ref(graph, x), **F64)


def test_triton_tuning_run_under_the_interpreter():
    graph = _graph(num_nodes=12, num_edges=30, num_etypes=2)
    torch.manual_seed(0)
    module = pnn.RGCN(4, 4, graph.num_etypes, backend="triton").double()

    def tiny(config):   # one alternative per kernel: 16 rows per block or tile
        if isinstance(config, TritonConfig):
            return config.block == 16 and config.num_warps == 4 and config.num_stages == 3
        return config.BLOCK_M == 16 and config.num_warps == 4 and config.num_stages == 3

    result = pigeon.tune(module, graph, _x(graph), mode="infer", budget_s=30, keep=tiny, timer=_fast_timer,
                         progress=False, verbose=False)
    assert all(m.status == "ok" for m in result.measured)
    assert not result.stopped_by_budget
    configs = [c for m in result.measured for _, c in m.choice.forward]
    assert {type(c) for c in configs} == {TritonConfig, GemmConfig}
    assert all((c.block if isinstance(c, TritonConfig) else c.BLOCK_M) == 16 for c in configs)
    assert result.key["what"]["backend"] == "triton" and result.path.exists()


def test_cli_show_and_clear(isolated_cache):
    graph = _graph()
    TuneCache().store(_key(graph), Choice(compact=False, forward=(("k1", CConfig("guided", 4)),)),
                      {"speedup": 1.25, "candidates": 7})
    env = {**os.environ, "PIGEON_CACHE_DIR": str(isolated_cache)}

    def pigeon_tune(*args):
        done = subprocess.run([sys.executable, "-m", "pigeon", "tune", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = pigeon_tune("--show")
    assert "1 entries" in shown and "rgat cpu train float64" in shown
    assert "compact=False fwd.k1[guided,4] (1.25x over the default, 7 candidates)" in shown
    assert "removed 1 entries" in pigeon_tune("--clear")
    assert "empty" in pigeon_tune("--show")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a CUDA device")
def test_cli_device_cuda_without_a_gpu_says_so(isolated_cache):
    env = {**os.environ, "PIGEON_CACHE_DIR": str(isolated_cache)}
    done = subprocess.run([sys.executable, "-m", "pigeon", "tune", "rgcn", "--device", "cuda"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--device cuda needs a CUDA device" in done.stderr
