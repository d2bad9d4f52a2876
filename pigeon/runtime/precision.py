"""Mixed precision: the dtype a compiled layer call stores its values in, the dtype it
computes in, and the casts of the call's tensors into the first.

Every value a kernel reads or writes in memory (inputs, parameters, saved activations,
outputs, temporaries) is stored in the call's *storage* dtype; arithmetic runs in
:func:`compute_dtype` of it: float32 for float16 and bfloat16, the storage dtype itself
for float32 and float64. Generated kernels convert a value when they load it and round
it when they store it; sums that cross a kernel's launches (atomics, per-thread partial
sums) are kept in the compute dtype in memory and rounded once at the end.

A call's storage dtype (:func:`call_dtype`) is the autocast dtype when
``torch.autocast`` is on for the graph's device, as ``nn.Linear`` follows it; otherwise
the one dtype of the layer's inputs (its node, edge and type features). Parameters in
another dtype (float32 master weights beside bfloat16 activations) are cast to it once
per call (:class:`CastCache`), and autograd hands each its gradient back in its own dtype.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["STORAGE_DTYPES", "HALF_DTYPES", "compute_dtype", "check_storage", "autocast_dtype", "call_dtype",
           "CastCache", "element_size"]

#: The dtypes a compiled layer stores its values in; each backend takes all four.
STORAGE_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
#: The 16-bit formats: stored in 16 bits, computed in float32.
HALF_DTYPES = (torch.bfloat16, torch.float16)


def compute_dtype(storage: torch.dtype) -> torch.dtype:
    """The dtype arithmetic on values stored in ``storage`` runs in: float32 for the
    16-bit formats (sums, softmax statistics and PNA's moments keep float32's 24 bits),
    the storage dtype otherwise."""
    return torch.float32 if storage in HALF_DTYPES else storage


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def check_storage(dtype: torch.dtype, backend: str) -> None:
    """An error naming the backend unless ``dtype`` is one of :data:`STORAGE_DTYPES`."""
    if dtype not in STORAGE_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in STORAGE_DTYPES)
        raise ValueError(f"Expected tensors in one of {names} for backend={backend!r} (got {dtype})")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype ``torch.autocast`` casts to on ``device``'s type, or None when it is off there."""
    if not torch.amp.is_autocast_available(device.type) or not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _eligible(value) -> bool:
    """Whether autocast casts ``value``: a floating tensor, not float64 (as autocast leaves it)."""
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64


def call_dtype(tensors: Mapping[str, torch.Tensor], input_names: Iterable[str], device: torch.device) -> torch.dtype:
    """The storage dtype of a call (module docstring): the autocast dtype when autocast
    is on for ``device``, unless every input is float64 (which autocast leaves alone);
    else the one dtype of the inputs named ``input_names`` (the parameters' when the
    layer has no input). Inputs in several dtypes are an error naming them: which would
    win is not the compiler's to guess."""
    inputs = {name: tensors[name] for name in input_names if isinstance(tensors.get(name), torch.Tensor)}
    floats = inputs or {k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    autocast = autocast_dtype(device)
    if autocast is not None and (not floats or any(_eligible(v) for v in floats.values())):
        return autocast
    dtypes = {v.dtype for v in floats.values()}
    if len(dtypes) != 1:
        named = ", ".join(f"`{k}` {str(v.dtype).removeprefix('torch.')}" for k, v in floats.items())
        raise ValueError(f"Expected every input in one floating dtype (got {named}); cast them to one, or call "
                         "the layer under torch.autocast")
    return dtypes.pop()


class CastCache:
    """Casts of parameters to a storage dtype, reused while a parameter is unchanged.

    As autocast does for the weights of ``nn.Linear``, only leaf tensors that require a
    gradient are cached, and a cast made with gradients on is reused only with gradients
    on. A parameter's version counter moves at every in-place change (an optimizer's
    step), so a cast lives for one step of training, or as long as a frozen weight stays
    frozen. Held weakly: a dropped parameter drops its cast.
    """

    def __init__(self):
        self._casts = WeakIdKeyDictionary()

    def cast(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``tensor.to(dtype)``, from the cache when ``tensor`` is a parameter."""
        if tensor.dtype == dtype:
            return tensor
        if not (tensor.is_leaf and tensor.requires_grad) or torch.compiler.is_compiling():
            return tensor.to(dtype)
        grad = torch.is_grad_enabled()
        entry = self._casts.get(tensor)
        if entry is not None and entry[:3] == (tensor._version, dtype, grad):
            return entry[3]
        cast = tensor.to(dtype)
        self._casts[tensor] = (tensor._version, dtype, grad, cast)
        return cast

    def cast_all(self, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Every floating tensor of ``tensors`` in ``dtype`` (float64 tensors too: the
        call's dtype has been decided, see :func:`call_dtype`)."""
        return {name: self.cast(value, dtype) if isinstance(value, torch.Tensor) and value.is_floating_point()
                else value for name, value in tensors.items()}
