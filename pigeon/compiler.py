"""``pigeon.compile``: the front door that joins the runtime and the tuning cache.

The runtime (:mod:`pigeon.runtime.compiled`) plans and runs a layer and knows nothing of
the tuner; the tuning cache (:mod:`pigeon.tune.cache`) knows the runtime. This module
hands the cache's lookup to each compiled layer, so dependencies point one way.
"""

from __future__ import annotations

from typing import Any

from pigeon.frontend.lang import Layer
from pigeon.passes import Options
from pigeon.runtime.compiled import Compiled
from pigeon.tune.cache import cached_choice

__all__ = ["compile"]


def compile(layer: Layer, *, backend: str = "auto", reorder: bool | None = None, compact: bool | None = None,
            sink: bool | None = None, layout: str | None = None, verify: bool | None = None, disable: tuple[str, ...] = (),
            save_budget_gb: float | None = None, **config: Any) -> Compiled:
    """Compile a ``@pigeon.layer`` function.

    Args:
        layer: the layer function.
        backend (str): ``"auto"`` (generated kernels for the tensors' device: ``"cpu"``
            for CPU tensors, ``"triton"`` for CUDA tensors; ``"torch"`` on a device no
            generator serves, said once in a warning), ``"cpu"`` (generated C with
            OpenMP), ``"triton"`` (generated Triton: CUDA tensors, or CPU tensors with
            ``TRITON_INTERPRET=1``) or ``"torch"`` (the unfused torch lowering, the
            executable semantics). Default: ``"auto"``.
        reorder, compact, sink (bool, optional): force linear reordering / compact
            materialization / summing messages per (destination, edge type) pair before
            their product on or off; None lets the cost model decide per graph.
        layout (str, optional): ``"csr"`` or ``"coo"`` traversals (``"coo"``: edge-parallel
            with atomics, on the backends that have such traversals). Default: None, CSR
            wherever a traversal has a group.
        verify (bool, optional): verify the IR after every pass and the level-2 program
            after lowering. Default: on when the ``PIGEON_VERIFY`` environment variable is
            set (the test suite sets it).
        disable (tuple of str): passes to skip, e.g. ``("cse",)``.
        save_budget_gb (float, optional): GiB of forward values kept for the backward
            pass; over it the largest are recomputed there instead. Default:
            ``PIGEON_SAVE_BUDGET_GB``, else a sixteenth of the machine's memory.
        **config: the layer's keyword-only configuration (e.g. ``heads=2``).

    Returns a callable ``fn(graph, **tensors)`` giving the layer's output (a dict when the
    layer returns several). It applies a tuned choice from the tuning cache when one
    matches (``PIGEON_AUTOTUNE=0`` turns that off); :func:`pigeon.tune` fills the cache.
    """
    verify_flag = {} if verify is None else {"verify": verify}
    options = Options(reorder, compact, sink, disable=frozenset(disable), **verify_flag)
    if save_budget_gb is not None and (isinstance(save_budget_gb, bool) or not isinstance(save_budget_gb, (int, float))
                                       or save_budget_gb < 0):
        raise ValueError(f"Expected `save_budget_gb` to be a non-negative number of GiB (got {save_budget_gb!r})")
    budget = None if save_budget_gb is None else int(save_budget_gb * 2**30)
    return Compiled(layer, backend, options, layout, config, lookup=cached_choice, save_budget=budget)
