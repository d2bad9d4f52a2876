"""The C text of traversal kernels: every statement the planner (:mod:`pigeon.codegen.c`)
emits is a pattern here, filled with names and sizes.

``kernels/traversal.c.jinja`` owns the structure (the loops over groups and their rows,
where each sweep's statements go); this table owns the statements. Patterns are
``str.format`` strings (``{{``, ``}}`` are literal braces). Values are ``real`` arrays in
registers, ``v{id}`` per row and ``a{id}`` per group; ``j`` walks a value's elements and
``i0, i1, ...`` its dimensions.

Buffers hold ``storage`` elements, read through ``LOAD`` and written through ``STORE``
(``kernels/library.c.jinja`` defines the three per dtype): for float and double they are
``real`` and a row is read in place; for bfloat16 and float16 a row is converted into a
``real`` array in registers as it is read (``row_load``) and each element rounded as it
is stored.
"""

from __future__ import annotations

import math

from pigeon.codegen.rules import ArgKind, strides
from pigeon.ir.graph_ir import Binary, Unary

# ---- arguments: `args[i]` of `void name(void **args, const int64_t *sizes)` ----------------

ARG = "{type} *{var} = ({type} *)args[{i}];"
ARG_TYPE = {
    ArgKind.ROWPTR: "const int64_t", ArgKind.PERM: "const int64_t", ArgKind.BLOCKS: "const int64_t",
    ArgKind.INDEX: "const int64_t", ArgKind.INDEX_SORTED: "const int64_t", ArgKind.COUNT: "const int64_t",
    ArgKind.BUFFER: "const storage", ArgKind.OUTPUT: "storage", ArgKind.PARTIAL: "real", ArgKind.SCRATCH: "real",
}
#: The variable an argument is read through: ``{n}`` numbers the kernel's buffers.
ARG_VAR = {
    ArgKind.ROWPTR: "rowptr", ArgKind.PERM: "perm", ArgKind.BLOCKS: "blocks", ArgKind.INDEX: "idx_{label}",
    ArgKind.INDEX_SORTED: "sidx_{label}", ArgKind.BUFFER: "b{n}_{label}", ArgKind.OUTPUT: "b{n}_{label}",
    ArgKind.PARTIAL: "partial", ArgKind.SCRATCH: "scratch",
}

# ---- the OpenMP schedule of the loop over groups (or rows): one at a time when there are few --

SCHEDULE = "schedule({schedule})"
SCHEDULE_CHUNKS = "schedule({schedule}, {count} < {few} ? 1 : {chunk})"

# ---- element-wise ops: `{x}`, `{a}`, `{b}` are elements ---------------------------------------

UNARY = {
    Unary.NEG: "-({x})", Unary.RELU: "max_({x}, (real)0)", Unary.EXP: "EXP({x})", Unary.LOG: "LOG({x})",
    Unary.SQRT: "SQRT({x})", Unary.RSQRT: "(real)1 / SQRT({x})", Unary.RECIP: "(real)1 / ({x})",
    Unary.SIGMOID: "sigmoid_({x})", Unary.TANH: "TANH({x})", Unary.GELU: "gelu_({x})",
    Unary.GELU_GRAD: "gelu_grad_({x})", Unary.STEP: "(({x}) > 0 ? (real)1 : (real)0)",
    Unary.SQUARE: "({x}) * ({x})",
}
LEAKY_RELU = "({x} > 0 ? {x} : {alpha} * {x})"
BINARY = {
    Binary.ADD: "{a} + {b}", Binary.SUB: "{a} - {b}", Binary.MUL: "{a} * {b}", Binary.DIV: "{a} / {b}",
    Binary.MAX: "max_({a}, {b})", Binary.MIN: "min_({a}, {b})",
    # Equal as stored (ROUND: rounded to `storage`; see pigeon.runtime.interpret.run).
    Binary.EQ: "(ROUND({a}) == ROUND({b}) ? (real)1 : (real)0)",
}

# ---- names ----------------------------------------------------------------------------------

NAME = {
    "row_value": "v{id}",          # a value per row, in this sweep
    "group_value": "a{id}",        # a value per group: a reduction or the degree
    "running_max": "m{id}",        # a softmax's statistics
    "running_sum": "s{id}",
    "element": "{var}[j]",
    "at": "{var}[{position}]",
    "group_element": "LOAD({ptr}[g * {n} + j])",
    "ahead": "p + {ahead}",        # the position PREFETCH_AHEAD rows further
    "perm_ahead": "perm[p + {ahead}]",   # the row at that position
}

# ---- statements ----------------------------------------------------------------------------

STMT = {
    # values: memory read in place, or a register array
    "const": "const real v{id}[1] = {{{value}}};",
    "alias": "const real *v{id} = {src};",                      # another value's memory
    "row": "const real *v{id} = {ptr} + {row} * {n};",          # a row of a buffer, read in place
    "row_load": "real v{id}[{n}]; for (int j = 0; j < {n}; j++) v{id}[j] = LOAD({ptr}[{row} * {n} + j]);",
    "decl": "real v{id}[{n}];",
    "zero": "for (int j = 0; j < {n}; j++) v{id}[j] = 0;",
    "loop": "for (int i{d} = 0; i{d} < {size}; i{d}++)",
    "assign": "v{id}[{at}] = {expr};",
    "add_to": "{target} += {term};",
    # copies along the last dim (concat, slice_last, pad_last)
    "concat_part": "for (int r = 0; r < {lead}; r++) for (int c = 0; c < {part}; c++) "
                   "v{id}[r * {width} + {start} + c] = {src}[r * {part} + c];",
    "slice_last": "for (int r = 0; r < {lead}; r++) for (int c = 0; c < {width}; c++) "
                  "v{id}[r * {width} + c] = {src}[r * {src_width} + {start} + c];",
    "pad_last": "for (int r = 0; r < {lead}; r++) for (int c = 0; c < {src_width}; c++) "
                "v{id}[r * {width} + {before} + c] = {src}[r * {src_width} + c];",
    # sums over a dim: `t` is the sum when `{store}` runs
    "sum": "{{ real t = 0; for (int i{k} = 0; i{k} < {size}; i{k}++) t += {term}; {store} }}",
    "lane_sum": "{{ real lane[{lanes}] = {{0}}; "
                "for (int b_ = 0; b_ < {full}; b_ += {lanes}) for (int l_ = 0; l_ < {lanes}; l_++) "
                "{{ const int i{k} = b_ + l_; lane[l_] += {term}; }} "
                "real t = 0; for (int l_ = 0; l_ < {lanes}; l_++) t += lane[l_]; "
                "for (int i{k} = {full}; i{k} < {size}; i{k}++) t += {term}; {store} }}",
    "sum_store": "v{id}[{at}] = t;",
    "sum_add": "{target} += t;",
    # the softmax input a later sweep reads back from this thread's scratch
    "scratch_mine": "real *scratch_mine = scratch + (int64_t)omp_get_thread_num() * sizes[1] * {width};",
    "kept": "const real *v{id} = scratch_mine + (p - begin) * {width} + {offset};",
    "keep": "for (int j = 0; j < {n}; j++) scratch_mine[(p - begin) * {width} + {offset} + j] = v{id}[j];",
    # rows gathered PREFETCH_AHEAD positions ahead; past the group's end are the next
    # groups' rows, which this thread likely takes next
    "prefetch_if": "if (p + {ahead} < rowptr[num_groups]) {{",
    "prefetch": "    for (int c = 0; c < (int)({n} * sizeof(storage)); c += 64) "
                "__builtin_prefetch((const char *)({ptr} + {row} * {n}) + c);",
    "end": "}}",
    # stores
    "store_row": "for (int j = 0; j < {n}; j++) {ptr}[row * {n} + j] = STORE({src}[j]);",
    "store_group": "for (int j = 0; j < {n}; j++) {ptr}[g * {n} + j] = STORE(a{id}[j]);",
    # reductions (rules.REDUCTIONS, rules.finish)
    "reduce_decl": "real a{id}[{n}];",
    "reduce_start": "for (int j = 0; j < {n}; j++) a{id}[j] = {start};",
    "reduce_self": "for (int j = 0; j < {n}; j++) a{id}[j] = LOAD({ptr}[g * {n} + j]);",
    "reduce_step": "for (int j = 0; j < {n}; j++) a{id}[j] = {combined};",
    "reduce_mean": "if ({rows} > 0) for (int j = 0; j < {n}; j++) a{id}[j] /= (real){rows};",
    "reduce_empty": "if (count == 0) for (int j = 0; j < {n}; j++) a{id}[j] = {empty};",
    "degree": "real a{id}[1] = {{(real)count}};",
    # online softmax (rules.ONLINE_SOFTMAX), one row per step: with the row's value `t`,
    # the new maximum is t (the sum is rescaled and the row's term is 1) or m (the sum
    # is kept and the term added)
    "softmax_start": "real m{id}[{n}], s{id}[{n}];\n"
                     "for (int j = 0; j < {n}; j++) {{ m{id}[j] = {max_start}; s{id}[j] = {sum_start}; }}",
    "softmax_step": "for (int j = 0; j < {n}; j++) {{\n"
                    "    real t = {x}[j];\n"
                    "    if (t > m{id}[j]) {{ s{id}[j] = {rescale} + (real)1; m{id}[j] = t; }}\n"
                    "    else {{ s{id}[j] += {term}; }}\n"
                    "}}",
    "softmax": "for (int j = 0; j < {n}; j++) v{id}[j] = {normalised};",
    # the split form: per-thread slices of `partial`, summed after the loop
    "split_start": "real a{id}[{n}] = {{0}};",
    "split_add": "for (int j = 0; j < {n}; j++) mine[g * {width} + {offset} + j] += a{id}[j];",
    "split_store": "for (int j = 0; j < {n}; j++) {{ real t = {start}; "
                   "for (int64_t th = 0; th < threads; th++) t += partial[(th * num_groups + g) * {width} + {offset} + j]; "
                   "{ptr}[g * {n} + j] = STORE(t); }}",
}

def lines(name: str, **fields) -> list[str]:
    """Statement ``name`` filled with ``fields``, as lines."""
    return STMT[name].format(**fields).split("\n")


def group_rows(extra: int) -> str:
    """The rows a reduction of the group saw: its own, plus ``extra`` (a self message)."""
    return f"(count + {extra})" if extra else "count"


def real(value: float) -> str:
    """A ``real`` constant: math.h's macros for the non-finite ones."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return f"(real){value!r}"


def index(out_shape: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """Flat index into an operand of ``shape`` broadcast to ``out_shape`` (loop variables
    ``i0, i1, ...`` of ``out_shape``)."""
    offset = len(out_shape) - len(shape)
    terms = []
    for d, (size, stride) in enumerate(zip(shape, strides(shape))):
        if size != 1:
            terms.append(f"i{d + offset}*{stride}" if stride != 1 else f"i{d + offset}")
    return " + ".join(terms) or "0"


def loops(shape: tuple[int, ...], statement: str) -> list[str]:
    """``statement`` inside one loop per dimension of ``shape``."""
    heads = [STMT["loop"].format(d=d, size=size) for d, size in enumerate(shape)]
    return heads + [("    " if shape else "") + statement]


LANES = 8   # partial sums of a long reduction: one AVX register of floats


def sum_block(k: int, size: int, term: str, store: str) -> str:
    """A block that sums ``term`` over ``i{k} < size`` and runs ``store`` (which reads
    the sum as ``t``).

    A long sum keeps :data:`LANES` partial sums, lane ``l`` adding the terms ``l``,
    ``l + LANES``, ...: the lanes are independent, so the compiler vectorises them
    without reassociating floating-point adds (which it may not do without
    ``-ffast-math``), where one running sum would be a chain of dependent adds.
    """
    if size < 2 * LANES:
        return STMT["sum"].format(k=k, size=size, term=term, store=store)
    return STMT["lane_sum"].format(k=k, size=size, term=term, store=store, lanes=LANES, full=size - size % LANES)
