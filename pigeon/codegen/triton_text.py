"""The Triton text of traversal and dense kernels: every statement the planner
(:mod:`pigeon.codegen.triton`) emits is a pattern here, filled with names and sizes,
with the small helpers that spell tiles, masks and offsets.

``kernels/traversal.py.jinja`` owns the structure (the program per group walking its
CSR, or per block of rows; where each sweep's statements go); this table owns the
statements. Patterns are ``str.format`` strings. Values are register tiles
``[lead, *padded row shape]``: ``lead`` is ``BLOCK`` for a value per row and 1 for a
value per group or a global one; each row dimension is padded to a power of two.

Tiles hold ``REAL``, the compute dtype (float32 for bfloat16 and float16 buffers): a load
converts to it and a store rounds to the buffer's element type (``tl.store`` casts);
atomics add into buffers of the compute dtype. ``STORAGE`` is the buffers' dtype.
"""

from __future__ import annotations

import math

from pigeon.codegen.rules import ArgKind
from pigeon.ir.graph_ir import Binary, Unary

# ---- arguments: parameter names, `{n}` numbering the kernel's parameters --------------------

PARAM = {
    ArgKind.ROWPTR: "rowptr", ArgKind.PERM: "perm", ArgKind.INDEX: "i{n}_{label}", ArgKind.COUNT: "c{n}_{label}",
    ArgKind.BUFFER: "b{n}_{label}", ArgKind.OUTPUT: "o{n}_{label}",
}

# ---- element-wise ops -------------------------------------------------------------------------

UNARY = {
    Unary.NEG: "-{x}", Unary.RELU: "tl.maximum({x}, 0.0)", Unary.EXP: "tl.exp({x})", Unary.LOG: "tl.log({x})",
    Unary.SQRT: "tl.sqrt({x})", Unary.RSQRT: "tl.rsqrt({x})", Unary.RECIP: "1.0 / {x}",
    Unary.SIGMOID: "tl.sigmoid({x})", Unary.TANH: "(2.0 * tl.sigmoid(2.0 * {x}) - 1.0)",
    Unary.GELU: "0.5 * {x} * (1.0 + tl.math.erf({x} * 0.7071067811865476))",
    Unary.GELU_GRAD: ("0.5 * (1.0 + tl.math.erf({x} * 0.7071067811865476))"
                      " + {x} * tl.exp(-0.5 * {x} * {x}) * 0.3989422804014327"),
    Unary.STEP: "tl.where({x} > 0, 1.0, 0.0)", Unary.SQUARE: "{x} * {x}",
}
LEAKY_RELU = "tl.where({x} > 0, {x}, {alpha} * {x})"
BINARY = {
    Binary.ADD: "{a} + {b}", Binary.SUB: "{a} - {b}", Binary.MUL: "{a} * {b}", Binary.DIV: "{a} / {b}",
    Binary.MAX: "tl.maximum({a}, {b})", Binary.MIN: "tl.minimum({a}, {b})",
    # Equal as stored (rounded to STORAGE; see pigeon.runtime.interpret.run).
    Binary.EQ: "tl.where({a}.to(STORAGE).to(REAL) == {b}.to(STORAGE).to(REAL), 1.0, 0.0)",
}
#: The reduction of a block's rows (axis 0) that each combine op folds with.
BLOCK_REDUCE = {Binary.ADD: "tl.sum", Binary.MAX: "tl.max", Binary.MIN: "tl.min"}

# ---- expressions -------------------------------------------------------------------------------

EXPR = {
    "where": "tl.where({mask}, {x}, {other})",
    "block": "{fn}(tl.where({rmask}, {x}, {other}), axis=0, keep_dims=True)",   # over this block's rows
    "sum_axis": "tl.sum({x}, axis={axis}, keep_dims=True)",
    "broadcast": "tl.broadcast_to({x}, {tile})",
    "reshape": "tl.reshape({x}, {tile})",
    "arange": "tl.arange(0, {size}){sub}",
    "scaled": "{x} * {stride}",
    "row_offset": "{row}{sub} * {stride}",
    "row_mask": "rmask{sub}",
    "group_offset": "g * {stride}",
    "no_offset": "tl.zeros({tile}, tl.int64)",
    "mask_below": "({x} < {size})",
    "masked": ", mask={mask}",
    "masked_load": ", mask={mask}, other=0.0",
    "divided": "{x} / {by}",
    "per_row_count": "{x} / c{id}{sub}",
    "count_rows": "count + {extra}",
    # reindexing through tl.gather (coordinates o{d}_{id} of the result's element)
    "coordinate": "o{d}_{id}",
    "coordinate_of_flat": "(({flat}) // {stride}) % {size}",
    "shifted": "{x} - {start}",
    "advanced": "{x} + {start}",
    "within": "({x} >= {start}) & ({x} < {end})",
    "term": "({x}) * {stride}",
    "every": "j{id} >= 0",
    "flat_tile": "tl.reshape({x}, [{lead}, {total}])",
    "gather_index": "tl.broadcast_to(s{k}_{id}[None, :], [{lead}, {total}])",
    "part": "g{k}_{id}",
}

# ---- statements --------------------------------------------------------------------------------

STMT = {
    # values
    "index_rows": "{var} = tl.load({ptr} + row, mask=rmask, other=0)",
    "load": "{var} = tl.load({address}{mask}).to(REAL)",
    "to_tile": "{var} = tl.reshape({var}, {tile})",
    "const": "v{id} = tl.full({tile}, {value}, REAL)",
    "value": "v{id} = {expr}",
    "sum_last": "v{id} = tl.sum(tl.broadcast_to({term}, {tile}), axis={axis})",
    "expand": "e{id} = {x}\nv{id} = tl.broadcast_to(e{id}[{every}, None], {tile})",
    "reindex": "j{id} = tl.arange(0, {total})",
    "reindex_coordinate": "o{d}_{id} = (j{id} // {stride}) % {size}",
    "reindex_source": "s{k}_{id} = tl.where({ok}, {flat}, 0)\n"
                      "g{k}_{id} = tl.where(({ok})[None, :], tl.gather({src}, {index}, 1), 0.0)",
    "layer_norm": "mu{id} = tl.sum({x_masked}, axis={axis}, keep_dims=True) / {n}\n"
                  "d{id} = {centred}\n"
                  "var{id} = tl.sum(d{id} * d{id}, axis={axis}, keep_dims=True) / {n}\n"
                  "v{id} = d{id} * tl.rsqrt(var{id} + {eps})",
    # stores
    "store": "tl.store({ptr} + {offsets}, {value}{mask})",
    "atomic_add": "tl.atomic_add({ptr} + {offsets}, {value}{mask})",
    "count": "c{id} = tl.maximum(tl.load({counts} + {target}, mask=rmask, other=1), 1).to(REAL)",
    # reductions of a group (rules.REDUCTIONS, rules.finish)
    "reduce_start": "a{id} = tl.full({tile}, {start}, REAL)",
    "reduce_step": "a{id} = {combined}",
    "reduce_mean": "a{id} = a{id} / tl.maximum({rows}, 1).to(REAL)",
    "reduce_empty": "a{id} = tl.where(count > 0, a{id}, {empty})",
    "degree": "a{id} = tl.full({tile}, 0.0, REAL) + count.to(REAL)",
    # online softmax (rules.ONLINE_SOFTMAX), a block of rows per step
    "softmax_start": "m{id} = tl.full({tile}, {max_start}, REAL)\ns{id} = tl.full({tile}, {sum_start}, REAL)",
    "softmax_step": "t{id} = {new_max}\ns{id} = {new_sum}\nm{id} = t{id}",
}

NAME = {
    "row_value": "v{id}", "group_value": "a{id}", "running_max": "m{id}", "running_sum": "s{id}",
    "new_max": "t{id}", "mean": "mu{id}", "index_rows": "ix_{label}", "row": "row", "group": "g",
}


def lines(name: str, **fields) -> list[str]:
    """Statement ``name`` filled with ``fields``, as lines."""
    return STMT[name].format(**fields).split("\n")


def literal(value: float) -> str:
    """A float constant as Python source (the non-finite ones through ``float``)."""
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    return repr(float(value))


# ---- tiles, masks and offsets ---------------------------------------------------------------

def pad(n: int) -> int:
    """The power of two a tile dimension of size ``n`` is padded to."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def tile(shape: tuple[int, ...], lead: str) -> str:
    return "[" + ", ".join([lead] + [str(pad(d)) for d in shape]) + "]"


def sub(rank: int, axis: int | None) -> str:
    """A subscript expanding a vector to a tile of ``rank`` row dims (plus the lead axis):
    ``:`` at tile axis ``axis``, None elsewhere."""
    return "[" + ", ".join(":" if a == axis else "None" for a in range(rank + 1)) + "]"


def aligned(var: str, rank: int, want: int) -> str:
    """Tile ``var`` of ``rank`` row dims with size-1 axes inserted after the lead axis
    up to ``want`` row dims."""
    if want <= rank:
        return var
    return var + "[" + ", ".join([":"] + ["None"] * (want - rank) + [":"] * rank) + "]"


def every_axis(count: int) -> str:
    """A subscript's part that keeps ``count`` axes."""
    return ", ".join([":"] * count)


def arange(shape: tuple[int, ...], d: int) -> str:
    return EXPR["arange"].format(size=pad(shape[d]), sub=sub(len(shape), d + 1))


def dim_mask(shape: tuple[int, ...], d: int) -> str | None:
    return None if pad(shape[d]) == shape[d] else EXPR["mask_below"].format(x=arange(shape, d), size=shape[d])


def feature_mask(shape: tuple[int, ...]) -> str | None:
    return both(*(dim_mask(shape, d) for d in range(len(shape))))


def both(*terms: str | None) -> str | None:
    """The conjunction of the masks present (None: no mask)."""
    present = [t for t in terms if t]
    return " & ".join(present) or None


def row_mask(rank: int) -> str:
    """This block's valid rows, as a tile of ``rank`` row dims."""
    return EXPR["row_mask"].format(sub=sub(rank, 0))


def masked(mask: str | None, x: str) -> str:
    """``x`` with the lanes outside ``mask`` zeroed (``x`` itself without a mask)."""
    return EXPR["where"].format(mask=mask, x=x, other="0.0") if mask else x


def element_offsets(shape: tuple[int, ...], strides: tuple[int, ...]) -> list[str]:
    """The offset of each element of a row of ``shape`` along each dim that has more than one."""
    return [EXPR["scaled"].format(x=arange(shape, d), stride=s) if s != 1 else arange(shape, d)
            for d, s in enumerate(strides) if shape[d] != 1]


def group_offsets(shape: tuple[int, ...], strides: tuple[int, ...]) -> str:
    """Offsets of the elements of one row, as a tile with a lead axis of 1."""
    return " + ".join(element_offsets(shape, strides)) or EXPR["no_offset"].format(tile=tile(shape, "1"))
