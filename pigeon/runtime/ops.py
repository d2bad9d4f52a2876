"""Compiled layers as ``torch.library`` operators, so ``torch.compile`` traces through them.

Under ``torch.compile`` a compiled layer's call becomes one operator,
``pigeon::layer_forward``, and its gradient another, ``pigeon::layer_backward``, each
with a fake implementation that gives the shapes of its results without running it.
Dynamo records them in its graph as they are (``fullgraph=True`` holds) and never
looks inside.

An operator takes tensors and plain scalars, so what the eager path passes as Python
objects travels as follows:

- the layer: a string naming the :class:`~pigeon.runtime.compiled.Compiled` (its
  ``op_handle``, ``"rgcn#3"``) and the names of its tensors, constants of the traced
  code (one per layer and signature, so they never cause a recompile);
- the graph: its ``src``, ``dst``, ``etype`` and ``ntype`` tensors and its counts
  (ints read from the graph object). Dynamo specialises on sizes and ints first and
  makes those that change symbolic at the first change (automatic dynamic shapes), so
  graphs of new sizes recompile once, not every step (never with ``dynamic=True``).
  At run time the operator finds the graph object again from its tensors
  (:func:`pigeon.data.graph.find_graph`), with its memoized layouts;
- the plan: chosen at run time, as in eager mode, from the graph's row counts, so a
  graph whose counts lead the cost model elsewhere needs no new trace. The forward
  operator returns the values the plan keeps for the backward as one flat buffer
  (its length is unknown when tracing: a fresh size symbol), and the backward operator
  cuts it back into the plan's buffers.

A graph is kept alive (the last :data:`KEEP_GRAPHS` seen) between the forward and the
backward operator, so a graph made for one step and dropped before ``backward()``
keeps its layouts for the backward.
"""

from __future__ import annotations

import collections
import itertools
import math
import warnings
import weakref

import torch

from pigeon.data.graph import HeteroGraph, find_graph
from pigeon.ir.graph_ir import GLOBAL
from pigeon.runtime.heap import keep_freed_memory
from pigeon.runtime.interpret import space_size

__all__ = ["register_layer", "call_layer_op", "KEEP_GRAPHS"]

KEEP_GRAPHS = 4

_LAYERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_SERIAL = itertools.count()
# (handle, tensor names) -> the layer's output names, recorded when the forward
# operator is traced (its fake implementation traces the layer).
_OUTPUT_NAMES: dict[tuple[str, str], tuple[str, ...]] = {}
_RECENT: collections.OrderedDict = collections.OrderedDict()
_WARNED: set[str] = set()


def register_layer(compiled) -> str:
    """A name by which the operators find ``compiled`` (held weakly)."""
    handle = f"{compiled.layer.name}#{next(_SERIAL)}"
    _LAYERS[handle] = compiled
    return handle


def _layer(handle: str):
    compiled = _LAYERS.get(handle)
    if compiled is None:
        raise RuntimeError(f"pigeon: the compiled layer {handle!r} a torch.compile'd graph calls no longer exists; "
                           "keep the module (or the pigeon.compile result) alive while its compiled graph runs")
    return compiled


def _graph(src, dst, etype, ntype, num_dst_nodes: int, num_etypes: int, num_ntypes: int) -> HeteroGraph:
    """The graph made of these tensors, kept alive until :data:`KEEP_GRAPHS` later ones."""
    graph = find_graph(src, dst, etype, ntype, num_dst_nodes, num_etypes, num_ntypes)
    if graph is None:
        if "rebuilt" not in _WARNED:
            _WARNED.add("rebuilt")
            warnings.warn("pigeon: a graph reached a compiled layer under torch.compile after the HeteroGraph made "
                          "of its tensors was freed (or its tensors were replaced); it is rebuilt from them, and "
                          "its layouts are built again. Keep the graph alive until backward() to avoid this.",
                          RuntimeWarning, stacklevel=2)
        graph = HeteroGraph(src, dst, etype, num_nodes=ntype.shape[0], ntype=ntype, num_etypes=num_etypes,
                            num_ntypes=num_ntypes, num_dst_nodes=num_dst_nodes)
    _RECENT[id(graph)] = graph
    _RECENT.move_to_end(id(graph))
    while len(_RECENT) > KEEP_GRAPHS:
        _RECENT.popitem(last=False)
    return graph


def _fresh(tensor: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """``tensor``, contiguous and sharing memory with none of ``others``: an operator's
    results may not alias its inputs or each other, and the fake implementation
    promises contiguous ones."""
    tensor = tensor.contiguous()
    if tensor.numel() and any(o.numel() and o.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()
                              for o in others):
        tensor = tensor.clone()
    return tensor


def _saved_shape(plan, buffer: str, graph: HeteroGraph) -> tuple[int, ...]:
    type_ = plan.forward_kernels.buffer(buffer).type
    if type_.space == GLOBAL:
        return tuple(type_.shape)
    return (space_size(graph, type_.space), *type_.shape)


def _pack(plan, kept: dict, graph: HeteroGraph, others: list[torch.Tensor]) -> torch.Tensor:
    """The buffers the plan keeps for its backward, as one flat buffer (no copy for one)."""
    parts = []
    for buffer, _ in plan.saved:
        value = kept[buffer]
        if tuple(value.shape) != _saved_shape(plan, buffer, graph):
            raise RuntimeError(f"pigeon: kept buffer {buffer} has shape {list(value.shape)}, expected "
                               f"{list(_saved_shape(plan, buffer, graph))}")
        parts.append(value.reshape(-1))
    if len(parts) == 1:
        return _fresh(parts[0], others)
    return torch.cat(parts) if parts else others[0].new_empty(0)


def _unpack(plan, flat: torch.Tensor, graph: HeteroGraph) -> dict[str, torch.Tensor]:
    shapes = [_saved_shape(plan, buffer, graph) for buffer, _ in plan.saved]
    sizes = [math.prod(shape) for shape in shapes]
    if sum(sizes) != flat.numel():
        raise RuntimeError(f"pigeon: the saved buffer holds {flat.numel()} values, the plan's backward reads "
                           f"{sum(sizes)}: the plan changed between forward and backward")
    parts = flat.split(sizes)
    return {name: part.view(shape) for (_, name), part, shape in zip(plan.saved, parts, shapes)}


# ---- the operators -----------------------------------------------------------------------
@torch.library.custom_op("pigeon::layer_forward", mutates_args=())
def layer_forward(layer: str, names: str, src: torch.Tensor, dst: torch.Tensor, etype: torch.Tensor,
                  ntype: torch.Tensor, num_dst_nodes: int, num_etypes: int, num_ntypes: int,
                  tensors: list[torch.Tensor], train: bool) -> list[torch.Tensor]:
    """The layer's outputs, then the values its backward reads, flat (empty unless ``train``)."""
    compiled = _layer(layer)
    graph = _graph(src, dst, etype, ntype, num_dst_nodes, num_etypes, num_ntypes)
    values = dict(zip(names.split(","), tensors))
    dtype = compiled.check_call(graph, values)
    if graph.device.type == "cpu":
        keep_freed_memory()   # as an eager call does (pigeon.runtime.heap)
    plan = compiled.plan(graph, values, mode="train" if train else "infer")
    keep = tuple(buffer for buffer, _ in plan.saved) if train else ()
    outputs, kept = plan.execute_forward(graph, values, dtype, keep)
    rows = _rows(src, num_dst_nodes, num_etypes, num_ntypes)
    results: list[torch.Tensor] = []
    for node, value in zip(plan.forward.outputs(), outputs.values()):
        promised = _output_shape(node.type, rows, lambda: value.shape[0])
        if tuple(value.shape) != promised:
            raise RuntimeError(f"pigeon: {compiled.layer.name} output {node.attr('name')!r} has shape "
                               f"{list(value.shape)} where the operator's fake implementation promised "
                               f"{list(promised)}")
        results.append(_fresh(value, [*tensors, *results]))
    saved = _pack(plan, kept, graph, [*tensors, *results]) if train else tensors[0].new_empty(0)
    return [*results, saved]


@layer_forward.register_fake
def _layer_forward_fake(layer, names, src, dst, etype, ntype, num_dst_nodes, num_etypes, num_ntypes, tensors, train):
    compiled = _layer(layer)
    values = dict(zip(names.split(","), tensors))
    outputs = compiled.traced_for(values).outputs()
    _OUTPUT_NAMES[(layer, names)] = tuple(node.attr("name") for node in outputs)
    rows = _rows(src, num_dst_nodes, num_etypes, num_ntypes)
    ctx = torch.library.get_ctx()
    like = tensors[0]
    results = [like.new_empty(_output_shape(node.type, rows, ctx.new_dynamic_size)) for node in outputs]
    saved = like.new_empty(ctx.new_dynamic_size() if train else 0)
    return [*results, saved]


def _rows(src, num_dst_nodes, num_etypes, num_ntypes) -> dict[str, object]:
    """Rows of the spaces whose size the operator's arguments give (an output's node
    rows are the destinations)."""
    return {"node": num_dst_nodes, "edge": src.shape[0], "etype": num_etypes, "ntype": num_ntypes}


def _output_shape(type_, rows: dict, counted) -> tuple:
    """The shape of an output of ``type_``: rows of a space the graph's sizes do not give
    (compact pairs) are ``counted()`` (a fresh size when tracing, the value's at run time)."""
    if type_.space == GLOBAL:
        return tuple(type_.shape)
    return (rows[type_.space.name] if type_.space.name in rows else counted(), *type_.shape)


@torch.library.custom_op("pigeon::layer_backward", mutates_args=())
def layer_backward(layer: str, names: str, src: torch.Tensor, dst: torch.Tensor, etype: torch.Tensor,
                   ntype: torch.Tensor, num_dst_nodes: int, num_etypes: int, num_ntypes: int,
                   tensors: list[torch.Tensor], saved: torch.Tensor, grads: list[torch.Tensor],
                   needs: list[bool]) -> list[torch.Tensor]:
    """The gradients of the tensors whose ``needs`` is true, in order."""
    compiled = _layer(layer)
    graph = _graph(src, dst, etype, ntype, num_dst_nodes, num_etypes, num_ntypes)
    order = names.split(",")
    values = dict(zip(order, tensors))
    dtype = compiled.check_call(graph, values)
    plan = compiled.plan(graph, values, mode="train")
    values.update(_unpack(plan, saved, graph))
    for node, grad in zip(plan.forward.outputs(), grads):
        values[f"grad_{node.attr('name')}"] = grad.contiguous()
    needed = frozenset(name for name, need in zip(order, needs) if need)
    computed = plan.execute_backward(graph, values, dtype, needed)
    results: list[torch.Tensor] = []
    for name, tensor, need in zip(order, tensors, needs):
        if need:
            grad = computed.get(f"grad_{name}")
            # A tensor the outputs do not depend on (an edgeless graph's weight) gets zeros.
            results.append(torch.zeros_like(tensor) if grad is None else _fresh(grad, [*tensors, *grads, *results]))
    return results


@layer_backward.register_fake
def _layer_backward_fake(layer, names, src, dst, etype, ntype, num_dst_nodes, num_etypes, num_ntypes, tensors,
                         saved, grads, needs):
    return [torch.empty_like(tensor) for tensor, need in zip(tensors, needs) if need]


def _setup_context(ctx, inputs, output) -> None:
    layer, names, src, dst, etype, ntype, num_dst_nodes, num_etypes, num_ntypes, tensors, _ = inputs
    ctx.layer, ctx.names, ctx.counts = layer, names, (num_dst_nodes, num_etypes, num_ntypes)
    ctx.save_for_backward(src, dst, etype, ntype, output[-1], *tensors)


def _backward(ctx, grads):
    src, dst, etype, ntype, saved, *tensors = ctx.saved_tensors
    needs = [bool(need) for need in ctx.needs_input_grad[9]]
    computed = iter(torch.ops.pigeon.layer_backward(ctx.layer, ctx.names, src, dst, etype, ntype, *ctx.counts,
                                                    tensors, saved, list(grads[:-1]), needs))
    return (None,) * 9 + ([next(computed) if need else None for need in needs], None)


layer_forward.register_autograd(_backward, setup_context=_setup_context)


def _output_names(layer: str, names: str) -> tuple[str, ...]:
    return _OUTPUT_NAMES[(layer, names)]


# What ``torch.compiler.assume_constant_result`` does (Dynamo calls the function at trace
# time and keeps its result as a constant), without importing torch._dynamo, which that
# decorator does: a second of start-up for every process that imports pigeon.
# tests/test_torch_integration.py traces through it with fullgraph=True.
_output_names._dynamo_marked_constant = True


def call_layer_op(compiled, graph: HeteroGraph, tensors: dict[str, torch.Tensor]):
    """``compiled(graph, **tensors)`` as the operators, for code that torch.compile traces:
    the layer's output (a dict when it returns several)."""
    if not isinstance(graph, HeteroGraph):
        raise TypeError(f"Expected `graph` to be a pigeon.HeteroGraph (got {type(graph).__name__})")
    names = ",".join(tensors)
    values = list(tensors.values())
    train = torch.is_grad_enabled() and any(value.requires_grad for value in values)
    results = torch.ops.pigeon.layer_forward(compiled.op_handle, names, graph.src, graph.dst, graph.etype,
                                             graph.ntype, graph.num_dst_nodes, graph.num_etypes, graph.num_ntypes,
                                             values, train)
    output_names = _output_names(compiled.op_handle, names)
    if output_names == ("out",):
        return results[0]
    return dict(zip(output_names, results[:-1]))
