"""Compiled layers: a layer function becomes a callable that runs generated kernels,
forward and backward, inside one ``torch.autograd.Function`` (:func:`pigeon.compile`,
in :mod:`pigeon.compiler`, makes them).

The pipeline per (shapes, dtype, graph row counts): trace → optimise → differentiate
the optimised forward → optimise the backward → lower both to level 2 → bind a
backend. Plans are cached, so a second call on the same graph does none of it. A
backward that needs only some gradients runs a program specialised to them
(:meth:`Plan.backward_for`). Under ``torch.compile`` a call is the ``torch.library``
operators of :mod:`pigeon.runtime.ops`, which run the same plans.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import torch
from torch.autograd.function import once_differentiable

from pigeon.data.graph import HeteroGraph
from pigeon.frontend.lang import Layer
from pigeon.ir.autodiff import backward_program, saved_name
from pigeon.ir.builder import verify
from pigeon.ir.graph_ir import GLOBAL, Op, Program
from pigeon.ir.graph_ir import replace as replace_node
from pigeon.ir.kernel_ir import BufferRole, GemmKernel, KernelProgram, ViewKernel, verify_kernels
from pigeon.passes import Options, PassContext, RowCounts, optimize
from pigeon.passes.dce import keep_outputs
from pigeon.passes.base import bucket
from pigeon.passes.choose import Variants
from pigeon.passes.lower import lower
from pigeon.runtime.choice import Choice
from pigeon.runtime.cpu_backend import CpuExecutor
from pigeon.runtime.heap import keep_freed_memory
from pigeon.runtime.ops import call_layer_op, register_layer
from pigeon.runtime.precision import CastCache, autocast_dtype, call_dtype, check_storage, element_size
from pigeon.runtime.profiling import RANGE_PREFIX, layer_range
from pigeon.runtime.target import machine_target
from pigeon.runtime.torch_backend import TorchExecutor



def _triton_executor(program: KernelProgram, configs: Mapping[str, Any] | None = None):
    """The Triton backend, imported on first use (Triton is an optional dependency)."""
    try:
        from pigeon.runtime.triton_backend import TritonExecutor
    except ImportError as err:
        raise ImportError(f"backend='triton' needs the triton package ({err}); "
                          "install pigeon[triton], or use backend='torch' or 'cpu'") from err
    return TritonExecutor(program, configs)


#: Executors by backend name; "auto" picks one per call from the tensors' device.
EXECUTORS = {"torch": TorchExecutor, "cpu": CpuExecutor, "triton": _triton_executor}
BACKENDS = (*EXECUTORS, "auto")

#: The traversal layouts each backend has, the first its default. Only Triton has
#: edge-parallel traversals; its default (None) walks the CSR of the destination or the
#: source and runs traversals grouped by another map edge-parallel where they allow it.
TRAVERSAL_LAYOUTS = {"torch": ("csr",), "cpu": ("csr",), "triton": (None, "csr", "coo")}


def traversal_layout(backend: str, layout: str | None) -> str | None:
    """The layout argument of the lowering for ``backend`` when ``layout`` is forced (or
    None): an error where the backend has no such traversals."""
    supported = TRAVERSAL_LAYOUTS[backend]
    if layout is None:
        return supported[0]
    if layout not in supported:
        raise ValueError(f"Expected `layout` to be one the {backend!r} backend has, {[v for v in supported if v]} "
                         f"(got {layout!r}): layout='coo' forces edge-parallel traversals with atomics, which "
                         "only backend='triton' generates")
    return layout


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``."""
    if backend != "auto":
        if backend == "cpu" and device.type != "cpu":
            raise ValueError(f"backend='cpu' runs on CPU tensors (got tensors on {device})")
        return backend
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        return "triton"
    raise ValueError(f"backend='auto' has no backend for {device}; pass backend='torch' to run the unfused "
                     "torch lowering there")


def autotune_enabled() -> bool:
    """Whether compiled layers apply tuned choices from the cache (``PIGEON_AUTOTUNE=0``
    turns it off)."""
    return os.environ.get("PIGEON_AUTOTUNE", "1") != "0"


def _training(tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether a call computes gradients: grad mode on and some floating tensor requiring them."""
    return torch.is_grad_enabled() and any(isinstance(v, torch.Tensor) and v.requires_grad for v in tensors.values())


def _wanted(tensors: Mapping[str, torch.Tensor]) -> frozenset[str] | None:
    """The names of the tensors whose gradients a training call computes (a first layer's
    input features need none), or None when no tensor says (the operators of
    :mod:`pigeon.runtime.ops` run below autograd): then every gradient counts."""
    names = frozenset(name for name, v in tensors.items() if isinstance(v, torch.Tensor) and v.requires_grad)
    return names or None


def default_save_budget() -> int:
    """Bytes of forward values one compiled layer keeps for its backward pass before it
    recomputes the largest instead: ``PIGEON_SAVE_BUDGET_GB``, else a sixteenth of the
    machine's memory (a model of a few layers then keeps a quarter of it at most)."""
    given = os.environ.get("PIGEON_SAVE_BUDGET_GB")
    if given:
        try:
            budget = float(given)
        except ValueError:
            raise ValueError(f"Expected PIGEON_SAVE_BUDGET_GB to be a number of GiB (got {given!r})") from None
        return int(budget * 2**30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 16


def _over_budget(program: KernelProgram, saved: tuple[tuple[str, str], ...], ctx: PassContext,
                 budget: int, elem: int) -> dict[str, int]:
    """The forward buffers to recompute instead of saving, largest first, until what is
    left fits ``budget`` bytes (rows of the graph's row counts, ``elem`` bytes per
    element: the storage dtype's): with their sizes, a buffer's views (charged to it,
    0 bytes each) dropped with it. Empty when everything fits."""
    root = {}
    for kernel in program.kernels:
        if isinstance(kernel, ViewKernel):
            root[kernel.out] = root.get(kernel.a, kernel.a)
    sizes: dict[str, int] = {}
    for buffer, _ in saved:
        owner = root.get(buffer, buffer)
        t = program.buffer(owner).type
        sizes[owner] = (1 if t.space == GLOBAL else ctx.count(t.space.name)) * t.numel * elem
    total, dropped = sum(sizes.values()), {}
    for owner, size in sorted(sizes.items(), key=lambda item: -item[1]):
        if total <= budget:
            break
        if program.buffer(owner).role is not BufferRole.TEMP:
            continue   # an input or an output is held anyway
        total -= size
        dropped[owner] = size
        dropped.update({view: 0 for view, source in root.items() if source == owner})
    return dropped


def _executor(backend: str, program: KernelProgram, configs: tuple[tuple[str, Any], ...]):
    if not configs:
        return EXECUTORS[backend](program)
    if backend == "torch":
        raise ValueError(f"Expected no kernel configs for backend='torch', which generates no kernels "
                         f"(got configs for {[name for name, _ in configs]})")
    return EXECUTORS[backend](program, dict(configs))


#: How a compiled layer asks for a tuned choice: ``lookup(compiled, graph, tensors,
#: backend, dtype, mode)`` returns the stored :class:`Choice` or None. The tuning cache
#: provides one (:func:`pigeon.tune.cache.cached_choice`); the runtime imports no tuner.
ChoiceLookup = Callable[["Compiled", HeteroGraph, Mapping[str, torch.Tensor], str, torch.dtype, str], "Choice | None"]


@dataclass
class Plan:
    """Everything compiled for one signature: both programs at both levels."""

    forward: Program
    backward: Program
    forward_kernels: KernelProgram
    backward_kernels: KernelProgram
    decisions: list[str]
    run_forward: Callable
    run_backward: Callable
    saved: tuple[tuple[str, str], ...]   # (forward buffer, backward input) kept for backward
    choice: Choice = field(default_factory=Choice)   # what it was built with (a tuned one from the cache)
    backend: str = "torch"                # the backend its executors run on
    layout: str | None = None             # the traversal layout both programs were lowered with
    name: str = "layer"                   # the layer's name, for profiler ranges
    verify: bool = False                  # verify the programs built later (specialised backwards)
    # Backward programs for subsets of the gradients, built on first use: by the set of
    # gradients they compute, and by the set of inputs asked for (the lookup per call).
    _specialised: dict = field(default_factory=dict, repr=False, compare=False)
    _backwards: dict = field(default_factory=dict, repr=False, compare=False)

    def execute_forward(self, graph: HeteroGraph, values: Mapping[str, torch.Tensor], dtype: torch.dtype,
                        keep: tuple[str, ...] = ()):
        """Run the forward kernels: (outputs by name, the buffers named in ``keep``), in a
        profiler range ``pigeon.<layer>.forward`` with one range per kernel inside.
        ``dtype`` is the storage dtype of every value (:mod:`pigeon.runtime.precision`)."""
        scope = f"{RANGE_PREFIX}{self.name}.forward"
        with layer_range(scope), _no_autocast(graph.device):
            return self.run_forward(graph, values, dtype, keep=keep, scope=scope)

    def execute_backward(self, graph: HeteroGraph, values: Mapping[str, torch.Tensor], dtype: torch.dtype,
                         needed: frozenset[str]) -> dict[str, torch.Tensor]:
        """Run the backward kernels that the gradients of ``needed`` (names of inputs and
        parameters) depend on: ``grad_<name>`` by name, for those of ``needed`` the outputs
        depend on (see :meth:`backward_for`)."""
        _, run = self.backward_for(needed)
        scope = f"{RANGE_PREFIX}{self.name}.backward"
        with layer_range(scope), _no_autocast(graph.device):
            grads, _ = run(graph, values, dtype, scope=scope)
        return grads

    def backward_for(self, needed: frozenset[str]) -> tuple[KernelProgram, Callable]:
        """The level-2 backward program computing only the gradients of ``needed``, and its
        executor: the backward program without the other gradients' outputs, dead code
        eliminated before lowering, so that the kernels whose results nobody reads (the
        weight-gradient GEMMs of frozen weights, the input gradient of a first layer)
        are not emitted. Built once per set; the full program when every gradient is needed.
        Kernel configs tuned for the full program carry over to the kernels that
        compute the same thing."""
        found = self._backwards.get(needed)
        if found is None:
            found = self._backwards[needed] = self._specialise(needed)
        return found

    def _specialise(self, needed: frozenset[str]) -> tuple[KernelProgram, Callable]:
        outputs = {node.attr("name") for node in self.backward.outputs()}
        key = frozenset(outputs & {f"grad_{name}" for name in needed})
        if key == outputs:
            return self.backward_kernels, self.run_backward
        if key not in self._specialised:
            program = keep_outputs(self.backward, key)
            kernels = lower(program, self.layout)
            if self.verify:
                verify(program)
                verify_kernels(kernels)
            configs = _carried_configs(self.backward_kernels, dict(self.choice.backward), kernels)
            self._specialised[key] = kernels, _executor(self.backend, kernels, tuple(configs.items()))
        return self._specialised[key]


def _no_autocast(device: torch.device):
    """Autocast off for the kernels: they store in the call's dtype and compute in its
    compute dtype by themselves, where autocast would cast the torch ops some of them
    run (the torch backend, dense kernels) to dtypes of its own lists."""
    if autocast_dtype(device) is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def _kernel_shape(program: KernelProgram, kernel) -> object:
    """``kernel`` with its buffers' names replaced by their types: equal for kernels that
    compute the same thing in two programs whose temporaries are numbered differently."""
    if isinstance(kernel, GemmKernel):
        named = {name: str(program.buffer(name).type) for name in (kernel.out, kernel.a, kernel.w)}
        return replace(kernel, out=named[kernel.out], a=named[kernel.a], w=named[kernel.w])
    unnamed = tuple(replace_node(n, attrs=()) if n.op in (Op.INPUT, Op.OUTPUT) else n for n in kernel.body.nodes)
    return replace(kernel, body=Program(unnamed, kernel.body.maps))


def _carried_configs(full: KernelProgram, configs: dict[str, Any], part: KernelProgram) -> dict[str, Any]:
    """The configs of ``full``'s kernels (by name, ``k3``), renamed for the kernels of
    ``part`` that compute the same thing."""
    if not configs:
        return {}
    unused = [(i, _kernel_shape(full, k)) for i, k in enumerate(full.kernels) if f"k{i}" in configs]
    carried = {}
    for j, kernel in enumerate(part.kernels):
        shape = _kernel_shape(part, kernel)
        match = next((entry for entry in unused if entry[1] == shape), None)
        if match is not None:
            unused.remove(match)
            carried[f"k{j}"] = configs[f"k{match[0]}"]
    return carried


class _Apply(torch.autograd.Function):
    """Forward runs the forward kernels; backward runs the backward kernels that the
    gradients asked for depend on. Once differentiable: the backward kernels are not
    themselves differentiated, so a second backward through them is an error."""

    @staticmethod
    def forward(ctx, plan: Plan, graph: HeteroGraph, names: tuple[str, ...], dtype, *tensors):
        values = dict(zip(names, tensors))
        outputs, kept = plan.execute_forward(graph, values, dtype, keep=tuple(b for b, _ in plan.saved))
        ctx.plan, ctx.graph, ctx.names, ctx.dtype = plan, graph, names, dtype
        ctx.output_names = tuple(outputs)
        ctx.save_for_backward(*tensors, *(kept[b] for b, _ in plan.saved))
        return tuple(outputs.values())

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outputs):
        saved = ctx.saved_tensors
        values = dict(zip(ctx.names, saved))
        values.update(zip((name for _, name in ctx.plan.saved), saved[len(ctx.names):]))
        for name, grad in zip(ctx.output_names, grad_outputs):
            values[f"grad_{name}"] = grad.contiguous()
        needed = frozenset(name for name, need in zip(ctx.names, ctx.needs_input_grad[4:]) if need)
        grads = ctx.plan.execute_backward(ctx.graph, values, ctx.dtype, needed)
        return (None, None, None, None, *(grads.get(f"grad_{n}") if n in needed else None for n in ctx.names))


#: What a copy of a compiled layer plans again rather than carries (loaded libraries do
#: not pickle), and its operator handle, which a copy gets anew.
_UNPICKLED = ("_plans", "_tuned", "_traced", "_variants", "_backwards", "_backward_notes", "_built", "_casts",
              "op_handle")


class Compiled:
    """A compiled layer: call it as ``fn(graph, **tensors)`` with inputs and parameters by
    name (see :func:`compile`)."""

    def __init__(self, layer: Layer, backend: str, options: Options, layout: str | None, config: dict,
                 lookup: ChoiceLookup | None = None, save_budget: int | None = None):
        if not isinstance(layer, Layer):
            raise TypeError(f"Expected `layer` to be a function decorated with @pigeon.layer (got {type(layer).__name__})")
        if backend not in BACKENDS:
            raise ValueError(f"Expected `backend` to be one of {list(BACKENDS)} (got {backend!r})")
        self.layer, self.backend, self.options, self.layout, self.config = layer, backend, options, layout, config
        self.lookup = lookup
        self.save_budget = default_save_budget() if save_budget is None else save_budget
        # Shapes and backend -> [(row counts the passes read, plan)]: a plan is reused for
        # any graph that agrees on the counts its decisions depended on.
        self._plans: dict[tuple, list[tuple[tuple, Plan]]] = {}
        # What plans are made of, by what it was made from (none of it depends on a graph).
        self._variants: dict[tuple, Variants] = {}
        self._backwards: dict[tuple, tuple] = {}
        self._backward_notes: dict[tuple, tuple[str, ...]] = {}
        self._built: dict[tuple, Plan] = {}
        # Per signature, dtype and mode, per bucket of graph sizes: the tuning lookup's answer.
        self._tuned: dict[tuple, dict[tuple, Choice]] = {}
        # Parameters cast to a call's storage dtype, reused while they are unchanged.
        self._casts = CastCache()
        # How the torch.library operators name this layer under torch.compile (pigeon.runtime.ops).
        self.op_handle = register_layer(self)
        self._traced: dict[tuple, Program] = {}

    def __getstate__(self) -> dict:
        # Plans hold loaded libraries, which do not pickle: a copy plans again.
        return {k: v for k, v in self.__dict__.items() if k not in _UNPICKLED}

    def __setstate__(self, state: dict) -> None:
        # A copy (copy.deepcopy of a module, an unpickled one) is an operator's layer of its own.
        self.__dict__.update(state, **{name: {} for name in _UNPICKLED if name not in ("op_handle", "_casts")})
        self._casts = CastCache()
        self.op_handle = register_layer(self)

    # -- planning ------------------------------------------------------------------------
    def _shapes(self, graph: HeteroGraph, tensors: dict[str, torch.Tensor]):
        rows = {"node": graph.num_nodes, "etype": graph.num_etypes, "ntype": graph.num_ntypes}
        inputs, params = {}, {}
        for name in self.layer.input_names:
            if name not in tensors:
                raise TypeError(f"{self.layer.name}: missing input `{name}`")
            space = self.layer.input_spaces[name].name
            inputs[name] = self._row_shape(name, tensors[name], rows[space], space)
        for name, kind in self.layer.param_kinds.items():
            if name not in tensors:
                if name in self.layer.optional_params:
                    continue
                raise TypeError(f"{self.layer.name}: missing parameter `{name}`")
            value = tensors[name]
            if kind.space == GLOBAL:
                params[name] = tuple(value.shape)
            else:
                params[name] = self._row_shape(name, value, rows[kind.space.name], kind.space.name)
        unknown = sorted(set(tensors) - set(self.layer.input_names) - set(self.layer.param_kinds))
        if unknown:
            raise TypeError(f"{self.layer.name}: unknown tensors {unknown}; it takes "
                            f"{self.layer.input_names + list(self.layer.param_kinds)}")
        return inputs, params

    @staticmethod
    def _row_shape(name: str, value, rows: int, space: str) -> tuple[int, ...]:
        if not isinstance(value, torch.Tensor) or value.dim() < 1 or value.shape[0] != rows:
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"Expected `{name}` to have one row per {space} ({rows}) (got {got})")
        return tuple(value.shape[1:])

    def trace(self, graph: HeteroGraph, tensors: dict[str, torch.Tensor]) -> tuple[Program, RowCounts]:
        """The traced level-1 program for these tensors, and the graph's row counts."""
        inputs, params = self._shapes(graph, tensors)
        return self.layer.trace(inputs, params, **self.config), RowCounts.from_graph(graph)

    def plan(self, graph: HeteroGraph, tensors: dict[str, torch.Tensor], choice: Choice | None = None,
             mode: str | None = None) -> Plan:
        """The cached plan for these shapes and this graph's row counts (built on a miss).

        ``choice`` builds it with those decisions and kernel configs; None asks the
        layer's tuning lookup (:data:`ChoiceLookup`, the tuning cache's for layers from
        :func:`pigeon.compile`) for a tuned choice for this program, graph, dtype and mode
        (training when gradients are on and a tensor requires them) and uses the cost
        model's defaults on a miss, without a lookup, or always when ``PIGEON_AUTOTUNE=0``.
        Nothing is tuned here: :func:`pigeon.tune` fills the cache. ``mode`` (``"train"`` or
        ``"infer"``) overrides the mode read from the tensors (the operators of
        :mod:`pigeon.runtime.ops` run below autograd, where no tensor requires a gradient).
        """
        inputs, params = self._shapes(graph, tensors)
        backend = resolve_backend(self.backend, graph.device)
        dtype = call_dtype(tensors, self.layer.input_names, graph.device)
        tuned = choice is None and autotune_enabled()
        if choice is None:
            choice = self._cached_choice(inputs, params, graph, tensors, backend, dtype, mode) if tuned else Choice()
        training = mode == "train" if mode is not None else _training(tensors)
        grads = _wanted(tensors) if training else None   # what the cost model charges the backward for
        key = (tuple(sorted(inputs.items())), tuple(sorted(params.items())), backend, dtype, choice, training, grads)
        candidates = self._plans.setdefault(key, [])
        for read, plan in candidates:
            if all(bucket(RowCounts.count_of(graph, name)) == value for name, value in read):
                return plan
        ctx = PassContext(graph=graph)
        try:
            plan = self._build(key, ctx, backend, dtype, choice, training, grads)
        except ValueError as err:
            # A cached choice tuned on a graph of the same buckets whose cost-model decisions
            # differed names kernels this program does not have: keep its decisions only.
            if not tuned or not (choice.forward or choice.backward):
                raise
            warnings.warn(f"pigeon: the tuned kernel configs for {self.layer.name} do not fit the program "
                          f"built for this graph ({err}); running with default configs. Run pigeon.tune on "
                          "this graph to tune it.", RuntimeWarning, stacklevel=3)
            ctx = PassContext(graph=graph)
            plain = replace(choice, forward=(), backward=())
            plan = self._build(key[:4] + (plain, training, grads), ctx, backend, dtype, plain, training, grads)
        candidates.append((tuple(sorted(ctx.read.items())), plan))
        return plan

    def _cached_choice(self, inputs: dict, params: dict, graph: HeteroGraph, tensors: dict[str, torch.Tensor],
                       backend: str, dtype: torch.dtype, mode: str | None = None) -> Choice:
        """The lookup's answer, asked once per signature, dtype, mode and bucket of the
        graph's sizes (nodes, destinations, edges, types): the lookup's own key reads
        statistics that cost a sort, which the sampled blocks of a mini-batch run must not
        pay batch after batch. ``mode`` None: training when a tensor requires gradients."""
        if self.lookup is None:
            return Choice()
        if mode is None:
            mode = "train" if _training(tensors) else "infer"
        memo = self._tuned.setdefault((tuple(sorted(inputs.items())), tuple(sorted(params.items())), backend,
                                       dtype, mode), {})
        sizes = tuple(bucket(n) for n in (graph.num_nodes, graph.num_dst_nodes, graph.num_edges,
                                          graph.num_etypes, graph.num_ntypes))
        if sizes not in memo:
            memo[sizes] = self.lookup(self, graph, tensors, backend, dtype, mode) or Choice()
        return memo[sizes]

    def with_backend(self, backend: str) -> "Compiled":
        """The same layer, options and tuning lookup, compiled for ``backend``."""
        return Compiled(self.layer, backend, self.options, self.layout, self.config, self.lookup, self.save_budget)

    def with_options(self, **changes) -> "Compiled":
        """The same layer, backend and tuning lookup, with these compiler options changed
        (fields of :class:`~pigeon.passes.pipeline.Options`, e.g. ``sink=True``)."""
        return Compiled(self.layer, self.backend, replace(self.options, **changes), self.layout, self.config,
                        self.lookup, self.save_budget)

    def forget_tuned(self) -> None:
        """Drop the tuning cache's remembered answers, so the next :meth:`plan` reads the
        cache again (:func:`pigeon.tune` calls it after storing a choice)."""
        self._tuned.clear()

    def _build(self, key: tuple, ctx: PassContext, backend: str, dtype: torch.dtype, choice: Choice,
               training: bool, grads: frozenset[str] | None = None) -> Plan:
        """The plan for ``ctx``'s graph. What it is made of does not depend on the graph
        but through the decisions (the cost model's, and which forward values the save
        budget keeps), so the programs of every variant, the backward programs and the plans
        are cached by what they were made from: a graph of new sizes costs the cost model's
        sums and a lookup, and builds only when a decision differs."""
        inputs, params = dict(key[0]), dict(key[1])
        # Decisions forced at compile() win over a tuned choice; the cost model settles the rest.
        options = replace(self.options,
                          reorder=choice.reorder if self.options.reorder is None else self.options.reorder,
                          compact=choice.compact if self.options.compact is None else self.options.compact)
        layout = traversal_layout(backend, self.layout if self.layout is not None else choice.layout)
        variant_key = (key[0], key[1], backend, options, layout, training, grads)
        if variant_key not in self._variants:
            traced = self.layer.trace(inputs, params, **self.config)
            self._variants[variant_key] = Variants(traced, options, layout, training, grads)
        variants = self._variants[variant_key]
        elem = element_size(dtype)   # bytes a stored value takes, for the cost model and the save budget
        options = variants.decide(ctx, machine_target(backend, ctx.graph.device), elem)
        forward, forward_kernels, _ = variants.lowered(options)
        ctx.decisions.extend(variants.notes(options))
        # Values the forward kernels write to memory anyway are kept for the backward pass
        # instead of recomputed; values that live only inside a fused kernel are recomputed.
        # Over the save budget, the largest are recomputed too.
        written = frozenset(int(b.name[1:]) for b in forward_kernels.buffers if b.role in (BufferRole.TEMP, BufferRole.OUTPUT))
        backward, backward_kernels, saved = self._backward(variant_key, forward, written, options, layout)
        recomputed: dict[str, int] = {}
        # A backward that no longer reads a value may read others to recompute it: repeat.
        while dropped := _over_budget(forward_kernels, saved, ctx, self.save_budget, elem):
            recomputed.update(dropped)
            written = written - {int(name[1:]) for name in dropped}
            backward, backward_kernels, saved = self._backward(variant_key, forward, written, options, layout)
        if recomputed:
            ctx.note(f"save: {len(recomputed)} forward value(s) of {sum(recomputed.values()) / 2**30:.2f} GiB "
                     f"recomputed in the backward pass, over the save budget of {self.save_budget / 2**30:.2f} GiB")
        ctx.decisions.extend(self._backward_notes[(variant_key, options, written)])
        built_key = (key, options, layout, written)
        if built_key not in self._built:
            if options.verify:
                verify_kernels(forward_kernels)
                verify_kernels(backward_kernels)
            self._built[built_key] = Plan(
                forward, backward, forward_kernels, backward_kernels, ctx.decisions,
                _executor(backend, forward_kernels, choice.forward),
                _executor(backend, backward_kernels, choice.backward), saved, choice,
                backend=backend, layout=layout, name=self.layer.name, verify=options.verify)
        return self._built[built_key]

    def _backward(self, variant_key: tuple, forward: Program, written: frozenset[int], options: Options, layout):
        """The backward program given the forward values it may read, lowered, and the
        forward buffers it does read (cached: it depends on no graph)."""
        cache_key = (variant_key, options, written)
        if cache_key not in self._backwards:
            scratch = PassContext()
            backward = optimize(backward_program(forward, written), scratch, options)
            self._backward_notes[cache_key] = tuple(f"backward: {note}" for note in scratch.decisions)
            backward_kernels = lower(backward, layout)
            readers = backward.users()
            used = {n.attr("name") for n in backward.inputs() if readers[n.id]}
            saved = tuple((f"%{i}", saved_name(i)) for i in sorted(written) if saved_name(i) in used)
            self._backwards[cache_key] = (backward, backward_kernels, saved)
        return self._backwards[cache_key]

    # -- calling -------------------------------------------------------------------------
    def __call__(self, graph: HeteroGraph, **tensors: torch.Tensor):
        return self.call(graph, tensors)

    def call(self, graph: HeteroGraph, tensors: dict[str, torch.Tensor], choice: Choice | None = None):
        """``fn(graph, **tensors)``, with the plan built for ``choice`` (see :meth:`plan`).

        The call runs in one storage dtype (:func:`~pigeon.runtime.precision.call_dtype`:
        the autocast dtype under ``torch.autocast``, else the inputs'); floating tensors
        in another are cast to it once per call, a parameter's cast reused while the
        parameter is unchanged, and gradients come back in each tensor's own dtype.

        Under ``torch.compile`` the call is the torch.library operators of
        :mod:`pigeon.runtime.ops`, which plan and check at run time, as here."""
        if not isinstance(graph, HeteroGraph):
            raise TypeError(f"Expected `graph` to be a pigeon.HeteroGraph (got {type(graph).__name__})")
        dtype = self.check_call(graph, tensors)
        tensors = self._casts.cast_all(tensors, dtype)
        if torch.compiler.is_compiling():
            if choice is not None:
                raise ValueError("Expected no `choice` under torch.compile (got one): tuned choices come from the "
                                 "tuning cache there")
            return call_layer_op(self, graph, tensors)
        if graph.device.type == "cpu":
            keep_freed_memory()   # once per process: the next call's buffers reuse this one's pages
        plan = self.plan(graph, tensors, choice)
        names = tuple(tensors)
        outputs = _Apply.apply(plan, graph, names, dtype, *(tensors[n] for n in names))
        names_out = [n.attr("name") for n in plan.forward.outputs()]
        return outputs[0] if names_out == ["out"] else dict(zip(names_out, outputs))

    def check_call(self, graph: HeteroGraph, tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
        """The call's storage dtype (:func:`~pigeon.runtime.precision.call_dtype`); an
        error unless every tensor is floating and they and the graph share one device."""
        given = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        devices = {v.device for v in given.values()} | {graph.device}
        if len(devices) != 1:
            raise ValueError(f"Expected the graph and every tensor on one device (got {sorted(map(str, devices))})")
        for name, value in given.items():
            if not value.is_floating_point():
                raise ValueError(f"Expected `{name}` to be a floating tensor (got {value.dtype})")
        dtype = call_dtype(tensors, self.layer.input_names, graph.device)
        check_storage(dtype, self.backend)
        return dtype

    def traced_for(self, tensors: Mapping[str, torch.Tensor]) -> Program:
        """The traced level-1 program for the row shapes of ``tensors`` (their rows are
        not checked here: :meth:`plan` checks them against a graph). What the operators'
        fake implementation reads the layer's outputs from."""
        inputs = {n: tuple(int(d) for d in tensors[n].shape[1:]) for n in self.layer.input_names if n in tensors}
        params = {}
        for name, kind in self.layer.param_kinds.items():
            if name in tensors:
                shape = tensors[name].shape if kind.space == GLOBAL else tensors[name].shape[1:]
                params[name] = tuple(int(d) for d in shape)
        key = (tuple(sorted(inputs.items())), tuple(sorted(params.items())))
        if key not in self._traced:
            self._traced[key] = self.layer.trace(inputs, params, **self.config)
        return self._traced[key]
