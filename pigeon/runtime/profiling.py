"""Per-kernel ``torch.profiler`` ranges for the backends.

Every backend runs a level-2 program kernel by kernel; with a profiler recording, each
kernel runs inside a ``torch.profiler.record_function`` range named after it
(``pigeon.rgcn.forward/k3: traversal over dst CSR``), so ``torch.profiler`` tables and
traces, and ``pigeon bench --profile``, show where a compiled layer spends its time.
Without a profiler the ranges cost one check per program run and an empty context per
kernel: labels are made only while a profiler records, once per program and scope.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

from pigeon.ir.kernel_ir import GemmKernel, KernelProgram, TraversalKernel, TraversalLayout, ViewKernel

__all__ = ["kernel_label", "kernel_ranges", "layer_range", "RANGE_PREFIX"]

#: What every range Pigeon opens starts with.
RANGE_PREFIX = "pigeon."

_NO_RANGE = contextlib.nullcontext()


def kernel_label(index: int, kernel) -> str:
    """``k3: traversal over dst CSR``: the kernel's name in ``pigeon show-kernels`` and
    what it does, on one line."""
    if isinstance(kernel, GemmKernel):
        typed = f" per {kernel.segment}" if kernel.segment is not None else ""
        if kernel.weight_grad:
            return f"k{index}: weight-gradient gemm {kernel.a}^T {kernel.w}{typed}"
        transpose = "^T" if kernel.transpose_w else ""
        scatter = f", scatter to {kernel.scatter}" if kernel.scatter is not None else ""
        return f"k{index}: gemm {kernel.a} @ {kernel.w}{transpose}{typed}{scatter}"
    if isinstance(kernel, TraversalKernel):
        if kernel.group is None or kernel.layout is TraversalLayout.ROWS:
            return f"k{index}: traversal over {kernel.domain} rows"
        return f"k{index}: traversal over {kernel.group} {kernel.layout.value.upper()}"
    if isinstance(kernel, ViewKernel):
        return f"k{index}: view {kernel.out} = {kernel.view} {kernel.a}"
    return f"k{index}: dense over {kernel.space} rows"


class _Ranges:
    def __init__(self, labels: tuple[str, ...]):
        self.labels = labels

    def __call__(self, index: int):
        return torch.profiler.record_function(self.labels[index])


class _NoRanges:
    def __call__(self, index: int):
        return _NO_RANGE


_DISABLED = _NoRanges()
# Per executor (weakly: labels go with it), per scope: the labels of its kernels.
_LABELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def kernel_ranges(executor, program: KernelProgram, scope: str = ""):
    """``ranges(i)``: the context a backend runs kernel ``i`` of ``program`` in: a
    ``record_function`` range named ``{scope}/k{i}: ...`` while a profiler records,
    else an empty context. ``executor`` owns the program (labels are kept per executor)."""
    if not torch.autograd._profiler_enabled():
        return _DISABLED
    per_scope = _LABELS.setdefault(executor, {})
    if scope not in per_scope:
        prefix = f"{scope}/" if scope else ""
        per_scope[scope] = _Ranges(tuple(prefix + kernel_label(i, k) for i, k in enumerate(program.kernels)))
    return per_scope[scope]


def layer_range(name: str):
    """The range around one run of a layer's forward or backward program
    (``pigeon.rgcn.forward``), or an empty context without a profiler."""
    if not torch.autograd._profiler_enabled():
        return _NO_RANGE
    return torch.profiler.record_function(name)
