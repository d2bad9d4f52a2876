"""What a plan is built with: the compiler decisions and the kernels' launch configs.

A leaf of the runtime: :func:`pigeon.tune` searches choices, the tuning cache stores
them, and :class:`~pigeon.runtime.compiled.Compiled` builds plans from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Choice"]


@dataclass(frozen=True)
class Choice:
    """How to build one plan: the compiler decisions and the kernels' launch configs
    (what :func:`pigeon.tune` searches and the tuning cache stores).

    Args:
        reorder, compact (bool, optional): force linear reordering / compact
            materialization; None lets the cost model decide. Default None.
        layout (str, optional): ``"csr"`` or ``"coo"`` traversals; None: CSR where a
            traversal has a group. Default None.
        forward, backward (tuple of (str, config) pairs): per kernel name of the
            forward / backward level-2 program (``"k3"``), a ``CConfig`` (cpu),
            ``TritonConfig`` or ``GemmConfig`` (triton); kernels not named keep their
            defaults. Default ().

    Decisions forced in :func:`compile` win over the choice's.
    """

    reorder: bool | None = None
    compact: bool | None = None
    layout: str | None = None
    forward: tuple[tuple[str, Any], ...] = ()
    backward: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.layout not in (None, "csr", "coo"):
            raise ValueError(f"Expected `layout` to be None, 'csr' or 'coo' (got {self.layout!r})")
        # Sorted, so equal choices are equal keys whatever order their configs came in.
        object.__setattr__(self, "forward", tuple(sorted(self.forward, key=lambda p: p[0])))
        object.__setattr__(self, "backward", tuple(sorted(self.backward, key=lambda p: p[0])))

    def describe(self) -> str:
        """A one-line label: the decisions that are set, then the configs that are."""
        parts = [f"{name}={getattr(self, name)}" for name in ("reorder", "compact", "layout")
                 if getattr(self, name) is not None]
        for half, short in (("forward", "fwd"), ("backward", "bwd")):
            for kernel, config in getattr(self, half):
                fields = ",".join(str(v) for v in vars(config).values())
                parts.append(f"{short}.{kernel}[{fields}]")
        return " ".join(parts) or "default"
