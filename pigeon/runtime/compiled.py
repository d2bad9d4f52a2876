"""``pigeon.compile``: a layer function becomes a callable that runs generated kernels,
forward and backward, inside one ``torch.autograd.Function``.

The pipeline per (shapes, dtype, graph row counts): trace → optimise → differentiate
the optimised forward → optimise the backward → lower both to level 2 → bind a
backend. Plans are cached, so a second call on the same graph does none of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from pigeon.data.graph import HeteroGraph
from pigeon.frontend.lang import Layer
from pigeon.ir.autodiff import backward_program, saved_name
from pigeon.ir.graph_ir import GLOBAL, Program
from pigeon.ir.kernel_ir import BufferRole, KernelProgram
from pigeon.passes import Options, PassContext, RowCounts, optimize
from pigeon.passes.lower import lower
from pigeon.runtime.cpu_backend import CpuExecutor
from pigeon.runtime.torch_backend import TorchExecutor



def _triton_executor(program: KernelProgram):
    """The Triton backend, imported on first use (Triton is an optional dependency)."""
    try:
        from pigeon.runtime.triton_backend import TritonExecutor
    except ImportError as err:
        raise ImportError(f"backend='triton' needs the triton package ({err}); "
                          "install pigeon[triton], or use backend='torch' or 'cpu'") from err
    return TritonExecutor(program)


#: Executors by backend name; "auto" picks one per call from the tensors' device.
EXECUTORS = {"torch": TorchExecutor, "cpu": CpuExecutor, "triton": _triton_executor}
BACKENDS = (*EXECUTORS, "auto")


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


class _Apply(torch.autograd.Function):
    """Forward runs the forward kernels; backward runs the backward kernels."""

    @staticmethod
    def forward(ctx, plan: Plan, graph: HeteroGraph, names: tuple[str, ...], dtype, *tensors):
        values = dict(zip(names, tensors))
        outputs, kept = plan.run_forward(graph, values, dtype, keep=tuple(b for b, _ in plan.saved))
        ctx.plan, ctx.graph, ctx.names, ctx.dtype = plan, graph, names, dtype
        ctx.output_names = tuple(outputs)
        ctx.save_for_backward(*tensors, *(kept[b] for b, _ in plan.saved))
        return tuple(outputs.values())

    @staticmethod
    def backward(ctx, *grad_outputs):
        saved = ctx.saved_tensors
        values = dict(zip(ctx.names, saved))
        values.update(zip((name for _, name in ctx.plan.saved), saved[len(ctx.names):]))
        for name, grad in zip(ctx.output_names, grad_outputs):
            values[f"grad_{name}"] = grad.contiguous()
        grads, _ = ctx.plan.run_backward(ctx.graph, values, ctx.dtype)
        return (None, None, None, None, *(grads.get(f"grad_{n}") for n in ctx.names))


class Compiled:
    """A compiled layer: call it as ``fn(graph, **tensors)`` with inputs and parameters by
    name (see :func:`compile`)."""

    def __init__(self, layer: Layer, backend: str, options: Options, layout: str | None, config: dict):
        if not isinstance(layer, Layer):
            raise TypeError(f"Expected `layer` to be a function decorated with @pigeon.layer (got {type(layer).__name__})")
        if backend not in BACKENDS:
            raise ValueError(f"Expected `backend` to be one of {list(BACKENDS)} (got {backend!r})")
        self.layer, self.backend, self.options, self.layout, self.config = layer, backend, options, layout, config
        self._plans: dict[tuple, Plan] = {}

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

    def plan(self, graph: HeteroGraph, tensors: dict[str, torch.Tensor]) -> Plan:
        """The cached plan for these shapes and this graph's row counts (built on a miss)."""
        inputs, params = self._shapes(graph, tensors)
        rows = RowCounts.from_graph(graph)
        backend = resolve_backend(self.backend, graph.device)
        key = (tuple(sorted(inputs.items())), tuple(sorted(params.items())), rows, backend)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build(self.layer.trace(inputs, params, **self.config), rows, backend)
            self._plans[key] = plan
        return plan

    def _build(self, traced: Program, rows: RowCounts, backend: str) -> Plan:
        ctx = PassContext(rows)
        forward = optimize(traced, ctx, self.options)
        forward_kernels = lower(forward, self.layout)
        # Values the forward kernels write to memory anyway are kept for the backward pass
        # instead of recomputed; values that live only inside a fused kernel are recomputed.
        written = frozenset(int(b.name[1:]) for b in forward_kernels.buffers if b.role in (BufferRole.TEMP, BufferRole.OUTPUT))
        backward = optimize(backward_program(forward, written), ctx, self.options)
        backward_kernels = lower(backward, self.layout)
        readers = backward.users()
        used = {n.attr("name") for n in backward.inputs() if readers[n.id]}
        saved = tuple((f"%{i}", saved_name(i)) for i in sorted(written) if saved_name(i) in used)
        executor = EXECUTORS[backend]
        return Plan(forward, backward, forward_kernels, backward_kernels, ctx.decisions,
                    executor(forward_kernels), executor(backward_kernels), saved)

    # -- calling -------------------------------------------------------------------------
    def __call__(self, graph: HeteroGraph, **tensors: torch.Tensor):
        if not isinstance(graph, HeteroGraph):
            raise TypeError(f"Expected `graph` to be a pigeon.HeteroGraph (got {type(graph).__name__})")
        floats = {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        dtypes = {v.dtype for v in floats.values()}
        if len(dtypes) != 1:
            raise ValueError(f"Expected every tensor in one floating dtype (got {sorted(map(str, dtypes))})")
        devices = {v.device for v in floats.values()} | {graph.device}
        if len(devices) != 1:
            raise ValueError(f"Expected the graph and every tensor on one device (got {sorted(map(str, devices))})")
        plan = self.plan(graph, tensors)
        names = tuple(tensors)
        dtype = dtypes.pop()
        outputs = _Apply.apply(plan, graph, names, dtype, *(tensors[n] for n in names))
        names_out = [n.attr("name") for n in plan.forward.outputs()]
        return outputs[0] if names_out == ["out"] else dict(zip(names_out, outputs))


def compile(layer: Layer, *, backend: str = "torch", reorder: bool | None = None, compact: bool | None = None,
            layout: str | None = None, verify: bool | None = None, disable: tuple[str, ...] = (),
            **config: Any) -> Compiled:
    """Compile a ``@pigeon.layer`` function.

    Args:
        layer: the layer function.
        backend (str): ``"torch"`` (the unfused torch lowering), ``"cpu"`` (generated C with
            OpenMP), ``"triton"`` (generated Triton: CUDA tensors, or CPU tensors with
            ``TRITON_INTERPRET=1``) or ``"auto"`` (``"cpu"`` for CPU tensors, ``"triton"``
            for CUDA tensors). Default: ``"torch"``.
        reorder, compact (bool, optional): force linear reordering / compact
            materialization on or off; None lets the cost model decide per graph.
        layout (str, optional): ``"coo"`` forces edge-parallel traversals.
        verify (bool, optional): verify the IR after every pass. Default: on when the
            ``PIGEON_VERIFY`` environment variable is set (the test suite sets it).
        disable (tuple of str): passes to skip, e.g. ``("cse",)``.
        **config: the layer's keyword-only configuration (e.g. ``heads=2``).

    Returns a callable ``fn(graph, **tensors)`` giving the layer's output (a dict when the
    layer returns several).
    """
    verify_flag = {} if verify is None else {"verify": verify}
    options = Options(reorder, compact, disable=frozenset(disable), **verify_flag)
    return Compiled(layer, backend, options, layout, config)
