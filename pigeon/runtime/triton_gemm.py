"""Launching generated Triton GEMMs (:mod:`pigeon.codegen.triton_gemm` renders them).

A typed GEMM runs over its rows in segment order (rows of one type contiguous, as the
graph's segment layout gives them). Tiles of ``BLOCK_M`` positions never cross a
segment, so each tile reads one weight: a tile table ``(segment, start, end)`` per
tile, built once per graph on the host from the segment bounds and cached on the
device, tells each program its segment with no search. A weight gradient instead runs
one program per (segment, K tile, N tile): it walks that segment's rows and owns its
sum, so it needs no atomics.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from pigeon.codegen.triton_gemm import GemmConfig, TritonGemm, default_config
from pigeon.data.graph import HeteroGraph
from pigeon.ir.graph_ir import GLOBAL, TensorType
from pigeon.ir.kernel_ir import GemmKernel
from pigeon.runtime.graph_index import GRAPH_INDEX, PerGraphCache
from pigeon.runtime.kernel_args import new_output

__all__ = ["launch_gemm"]

#: Accumulator dtype per input dtype: fp32 for all but fp64.
_ACC_DTYPES = {torch.float64: tl.float64, torch.float32: tl.float32,
               torch.float16: tl.float32, torch.bfloat16: tl.float32}
#: The dtype of the tiles tl.dot takes, per input dtype: their own.
_DOT_DTYPES = {torch.float64: tl.float64, torch.float32: tl.float32,
               torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def interpreted() -> bool:
    """Whether Triton kernels run through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ---- per-graph tables ----------------------------------------------------------------

class _SegmentTables(PerGraphCache):
    """Per graph, built once on the host from the segment bounds, then kept on the device."""

    def tiles(self, graph: HeteroGraph, kernel: GemmKernel, block_m: int) -> torch.Tensor:
        """``[num_tiles, 3]`` int64: (segment, first position, segment end) per tile of
        ``block_m`` positions; empty segments have no tile."""
        def build():
            _, bounds = GRAPH_INDEX.segments(graph, kernel.segment, kernel.layout)
            ptr = torch.tensor(bounds, dtype=torch.int64)
            lengths = ptr[1:] - ptr[:-1]
            counts = (lengths + block_m - 1) // block_m
            segment = torch.repeat_interleave(torch.arange(len(lengths)), counts)
            first_tile = torch.cumsum(counts, 0) - counts        # each segment's first tile
            within = torch.arange(len(segment)) - first_tile[segment]
            start = ptr[segment] + within * block_m
            table = torch.stack([segment, start, ptr[segment + 1]], dim=1)
            return table.contiguous().to(graph.device)
        return self._memo(graph, ("tiles", kernel.segment.name, kernel.layout, block_m), build)

    def bounds(self, graph: HeteroGraph, kernel: GemmKernel) -> torch.Tensor:
        """The segment bounds ``[T + 1]`` as an int64 device tensor."""
        def build():
            _, bounds = GRAPH_INDEX.segments(graph, kernel.segment, kernel.layout)
            return torch.tensor(bounds, dtype=torch.int64).to(graph.device)
        return self._memo(graph, ("bounds", kernel.segment.name, kernel.layout), build)


_SEGMENT_TABLES = _SegmentTables()


# ---- launching -----------------------------------------------------------------------

def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _ACC_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in _ACC_DTYPES)
        raise ValueError(f"Expected `dtype` to be one of {names} for a Triton GEMM (got {dtype})")


def _operand(env: dict, name: str, role: str, kernel: GemmKernel, type_: TensorType,
             dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``env[name]`` checked against its buffer type, contiguous, as ``[rows, *type.shape]``
    (a GLOBAL operand as one row)."""
    value = env[name]
    is_global = type_.space == GLOBAL
    row = tuple(value.shape) if is_global else tuple(value.shape[1:])
    shape_ok = row == tuple(type_.shape) and (is_global or value.dim() > 0)
    if value.dtype != dtype or value.device != device or not shape_ok:
        what = f"buffer `{name}` ({role} of `{kernel.describe()}`)"
        if value.dtype != dtype:
            raise ValueError(f"Expected {what} in {dtype} (got {value.dtype})")
        if value.device != device:
            raise ValueError(f"Expected {what} on {device} (got {value.device})")
        want = ", ".join(([] if is_global else ["rows"]) + [str(d) for d in type_.shape])
        raise ValueError(f"Expected {what} of shape [{want}] (got {list(value.shape)})")
    value = value.contiguous()
    return value.unsqueeze(0) if is_global else value


def _dot_dtype(dtype: torch.dtype):
    """The dtype tiles enter tl.dot in: the operands' own, except bfloat16 in Triton's
    interpreter (3.9), whose tl.dot multiplies bfloat16 bit patterns as integers: there
    the tiles are converted to float32 first, which gives the same products (a product of
    two bfloat16 values is exact in float32) and the same float32 sums."""
    if dtype == torch.bfloat16 and interpreted():
        return tl.float32
    return _DOT_DTYPES[dtype]


def _dot_precision(dtype: torch.dtype) -> str:
    """fp32 products are exact fp32 unless torch itself is allowed TF32 for matmuls."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def launch_gemm(module, gemm: TritonGemm, graph: HeteroGraph, env: dict[str, torch.Tensor], dtype: torch.dtype,
                config: GemmConfig | dict[str, int] | None = None, poison: bool = False) -> torch.Tensor:
    """Run ``gemm`` (from :func:`render_gemm`, loaded in ``module``) on ``env``'s buffers;
    return its output, as :meth:`TorchExecutor.gemm` does. ``config`` (a
    :class:`GemmConfig` or its ``as_dict()``) overrides the one ``gemm`` was rendered
    with, else :func:`default_config` (tile sizes, ``num_warps``, ``num_stages``).
    ``poison`` fills an output the kernel writes in full with NaN before it runs."""
    _check_dtype(dtype)
    if isinstance(config, dict):
        config = GemmConfig(**config)
    config = config or gemm.config
    config = None if config is None else config.as_dict()
    kernel, s = gemm.kernel, gemm.structure
    fn = getattr(module, f"{gemm.name}_kernel")
    a = _operand(env, kernel.a, "A operand", kernel, s.a_type, dtype, graph.device)
    w = _operand(env, kernel.w, "upstream rows" if s.weight_grad else "weight", kernel, s.w_type, dtype,
                 graph.device)
    if s.typed:
        perm, bounds = GRAPH_INDEX.segments(graph, kernel.segment, kernel.layout)
        if (perm is not None) != s.permuted:
            raise RuntimeError(f"GEMM `{kernel.describe()}` was rendered for layout {kernel.layout!r} "
                               f"{'with' if s.permuted else 'without'} a segment permutation; the graph disagrees")
    run = _launch_weight_grad if s.weight_grad else _launch_product
    return run(fn, gemm, graph, a, w, dtype, config, poison)


def _launch_options(config: dict[str, int]) -> dict:
    return dict(BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"],
                num_warps=config["num_warps"], num_stages=config["num_stages"])


def _launch_product(fn, gemm: TritonGemm, graph: HeteroGraph, a: torch.Tensor, w: torch.Tensor,
                    dtype: torch.dtype, config: dict[str, int] | None, poison: bool) -> torch.Tensor:
    kernel, s = gemm.kernel, gemm.structure
    a_global = s.a_type.space == GLOBAL
    mid = tuple(a.shape[1:-1])
    k = a.shape[-1]
    # Weights as [T, B, K, N] (untyped: T = 1); B = 1 is shared by every batch index.
    w4 = w if s.typed else w.unsqueeze(0)
    w4 = w4.view(w4.shape[0], math.prod(w4.shape[1:-2]), *w4.shape[-2:])
    if kernel.transpose_w:
        w4 = w4.transpose(-1, -2)
    n = w4.shape[-1]
    batch = math.prod(mid)
    if w4.shape[-2] != k or w4.shape[1] not in (1, batch):
        raise ValueError(f"Expected weight `{kernel.w}` of `{kernel.describe()}` to take rows [..., {k}] "
                         f"(got shape {list(w.shape)})")

    # Rows in the order the kernel walks them, and where each result goes.
    index = GRAPH_INDEX
    targets = None
    if s.typed:
        perm, bounds = index.segments(graph, kernel.segment, kernel.layout)
        if w4.shape[0] != len(bounds) - 1:
            raise ValueError(f"Expected weight `{kernel.w}` of `{kernel.describe()}` to have one entry per "
                             f"segment ({len(bounds) - 1}) (got shape {list(w.shape)})")
        rows = index.sorted_rows(graph, kernel.a_gather, kernel.segment, kernel.layout)
        positions = bounds[-1]
        if rows is None and a.shape[0] != positions:
            raise ValueError(f"Expected `{kernel.a}` in `{kernel.describe()}` to have one row per segment "
                             f"position ({positions}) (got {a.shape[0]})")
        if kernel.scatter is not None:
            targets, out_rows = index.sorted_scatter(graph, kernel.scatter, kernel.segment, kernel.layout)
        else:
            targets, out_rows = perm, positions
    else:
        rows = index.index(graph, kernel.a_gather)[0] if kernel.a_gather is not None else None
        positions = a.shape[0] if rows is None else rows.shape[0]
        if kernel.scatter is not None:
            targets, out_rows = index.index(graph, kernel.scatter)
        else:
            out_rows = positions

    # Half-precision scatters accumulate in fp32 (atomics in fp16/bf16 lose sums).
    out_dtype = torch.float32 if kernel.scatter is not None and dtype in (torch.float16, torch.bfloat16) else dtype
    if kernel.scatter is not None:
        out = torch.zeros(out_rows, *mid, n, dtype=out_dtype, device=a.device)
    else:
        out = new_output((out_rows, *mid, n), out_dtype, a.device, poison)

    config = config or default_config(False, n, k, dtype)
    a3 = a.view(a.shape[0], batch, k)
    o3 = out.view(out_rows, batch, n)
    args = [a3, w4, o3]
    if s.typed:
        tiles = _SEGMENT_TABLES.tiles(graph, kernel, config["BLOCK_M"])
        args.append(tiles)
        num_m = tiles.shape[0]
    else:
        num_m = triton.cdiv(positions, config["BLOCK_M"])
    if s.a_indexed:
        args.append(rows)
    if s.store != "store":
        args.append(targets)
    args += [] if s.typed else [positions]
    args += [n, k]
    args += [a3.stride(0), *([a3.stride(1)] if s.batch else []), a3.stride(2)]
    args += [*([w4.stride(0)] if s.typed else []),
             *([w4.stride(1) if w4.shape[1] > 1 else 0] if s.batch else []),
             w4.stride(2), w4.stride(3)]
    args += [o3.stride(0), *([o3.stride(1)] if s.batch else []), o3.stride(2)]
    grid = (num_m, triton.cdiv(n, config["BLOCK_N"]), batch) if s.batch else (num_m, triton.cdiv(n, config["BLOCK_N"]))
    if num_m > 0 and out.numel() > 0:
        fn[grid](*args, **_launch_options(config), ACC_DTYPE=_ACC_DTYPES[dtype],
                 DOT_DTYPE=_dot_dtype(dtype), DOT_PRECISION=_dot_precision(dtype))
    out = out.to(dtype)
    return out.squeeze(0) if a_global else out


def _launch_weight_grad(fn, gemm: TritonGemm, graph: HeteroGraph, a: torch.Tensor, b: torch.Tensor,
                        dtype: torch.dtype, config: dict[str, int] | None, poison: bool) -> torch.Tensor:
    kernel, s = gemm.kernel, gemm.structure
    index = GRAPH_INDEX
    k, n = a.shape[-1], b.shape[-1]
    mid = tuple(a.shape[1:-1])
    if tuple(b.shape[1:-1]) != mid:
        raise ValueError(f"Expected the rows of `{kernel.a}` and `{kernel.w}` in `{kernel.describe()}` to have the "
                         f"same leading dims (got {list(a.shape[1:])} and {list(b.shape[1:])})")
    if s.typed:
        perm, bounds = index.segments(graph, kernel.segment, kernel.layout)
        rows = index.sorted_rows(graph, kernel.a_gather, kernel.segment, kernel.layout)
        num_segments = len(bounds) - 1
        positions = None
    else:
        rows = index.index(graph, kernel.a_gather)[0] if kernel.a_gather is not None else None
        perm = None
        num_segments = 1
        a_rows = a.shape[0] if rows is None else rows.shape[0]
        positions = max(a_rows, b.shape[0])
        for name, count, is_global in ((kernel.a, a_rows, s.a_type.space == GLOBAL),
                                        (kernel.w, b.shape[0], s.w_type.space == GLOBAL)):
            if count != positions and not is_global:
                raise ValueError(f"Expected `{name}` in `{kernel.describe()}` to have {positions} rows (got {count})")

    out_mid = mid if kernel.batched else ()
    out = new_output((num_segments, *out_mid, k, n), dtype, a.device, poison)
    batch = math.prod(mid)

    config = config or default_config(True, n, k, dtype)
    a3 = a.view(a.shape[0], batch, k)
    b3 = b.view(b.shape[0], batch, n)
    o4 = out.view(num_segments, batch if kernel.batched else 1, k, n)
    # A GLOBAL operand is one row, read for every row of the other (stride 0).
    stride_am = 0 if s.a_type.space == GLOBAL and not s.typed else a3.stride(0)
    stride_bm = 0 if s.w_type.space == GLOBAL and not s.typed else b3.stride(0)
    args = [a3, b3, o4]
    if s.typed:
        args.append(_SEGMENT_TABLES.bounds(graph, kernel))
    if s.a_indexed:
        args.append(rows)
    if s.b_indexed:
        args.append(perm)
    args += [] if s.typed else [positions]
    args += [n, k] + ([batch] if s.batch_sum else [])
    args += [stride_am, *([a3.stride(1)] if s.batch else []), a3.stride(2)]
    args += [stride_bm, *([b3.stride(1)] if s.batch else []), b3.stride(2)]
    args += [*([o4.stride(0)] if s.typed else []), *([o4.stride(1)] if s.batch and not s.batch_sum else []),
             o4.stride(2), o4.stride(3)]
    tiles = triton.cdiv(k, config["BLOCK_K"]) * triton.cdiv(n, config["BLOCK_N"])
    grid = (num_segments, tiles) if s.typed else (tiles,)
    if s.batch and not s.batch_sum:
        grid += (batch,)
    if out.numel() > 0:
        fn[grid](*args, **_launch_options(config), ACC_DTYPE=_ACC_DTYPES[dtype],
                 DOT_DTYPE=_dot_dtype(dtype), DOT_PRECISION=_dot_precision(dtype))
    return out if s.typed else out.squeeze(0)
