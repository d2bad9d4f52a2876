"""The values of one Triton kernel body: how each node becomes a register tile, one rule
per op (``_RULES``), with the statements of :mod:`pigeon.codegen.triton_text`.

Values are register tiles ``[lead, *padded row shape]``: ``lead`` is ``BLOCK`` for a
value per row and 1 for a value per group or a global one, and each row dimension is
padded to a power of two (Triton's tiles need it). Padded lanes hold garbage that never
reaches memory: loads fill them with zero, every sum over a row dimension masks them,
stores skip them. A read of a buffer stays a *view* (pointer, row, strides) until an op
needs its value, so reshapes, slices and broadcasts of inputs cost index arithmetic,
not data movement; reshapes of computed tiles whose padding differs go through
``tl.gather``.

:class:`TileBuilder` holds the kernel's parameters and values; the sweeps and stores
around them are planned in :mod:`pigeon.codegen.triton`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pigeon.codegen import triton_text as tt
from pigeon.codegen.rules import ONLINE_SOFTMAX, ArgKind, KernelArg, OutputKind, spell, strides
from pigeon.codegen.sweeps import GROUP_VALUES, SweepPlan
from pigeon.codegen.templates import CodegenError as _CodegenError
from pigeon.codegen.triton_text import BINARY, EXPR, NAME, UNARY, lines, pad, tile
from pigeon.ir.graph_ir import GLOBAL, Binary, IndexMap, Node, Op, Space, Unary
from pigeon.ir.kernel_ir import TraversalLayout


class CodegenError(_CodegenError):
    """A kernel the Triton templates cannot express, with the op and the layer line."""

    backend = "Triton"


@dataclass(frozen=True)
class Val:
    var: str
    shape: tuple[int, ...]
    lead: str            # "BLOCK" (a value per row) or "1" (per group, or global)


@dataclass(frozen=True)
class View:
    """A value still in memory: element (r, i...) at ptr + row(r) * row_stride + offset + sum i_d * strides_d."""

    ptr: str
    row: str | None      # a per-row index tensor, "g" (the program's group) or None (one row)
    row_stride: int
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def contiguous(self) -> bool:
        return self.strides == strides(self.shape)


def _label(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "_", name)


class TileBuilder(SweepPlan):
    """The parameters and values of one kernel body in one mode (``TraversalLayout.CSR``:
    a program per group; ``ROWS``: a program per block of rows).

    ``external`` maps node ids to buffers that already hold their values (the second
    launch of a dense kernel that reads row reductions).
    """

    def __init__(self, body, domain: Space, group: IndexMap | None, mode: TraversalLayout,
                 external: dict[int, str] | None = None):
        super().__init__(body, domain, group)
        self.mode = mode
        self.external = external or {}
        self.args: list[KernelArg] = []
        self.params: list[str] = []
        self.vars: dict[tuple[ArgKind, object], str] = {}
        self.cache: dict[int, Val] = {}       # per sweep: values of rows
        self.kept: dict[int, Val] = {}        # whole program: values per group or global
        self.prologue: list[str] = []         # csr mode: lines computing them, before the sweeps
        self.row_index: dict[str, str] = {}   # per sweep: loaded index maps

    # -- parameters ------------------------------------------------------------------------
    def param(self, kind: ArgKind, key, **output) -> str:
        if (kind, key) not in self.vars:
            label = key.name if isinstance(key, IndexMap) else key
            var = tt.PARAM[kind].format(n=len(self.params), label=_label(label))
            self.vars[(kind, key)] = var
            self.params.append(var)
            self.args.append(KernelArg(kind, key, **output))
        return self.vars[(kind, key)]

    def buffer(self, name: str) -> str:
        return self.param(ArgKind.BUFFER, name)

    def output(self, node: Node, kind: OutputKind, rows: Space) -> str:
        return self.param(ArgKind.OUTPUT, node.attr("name"), output=kind, rows=rows, shape=node.type.shape)

    def index_rows(self, index: IndexMap, out: list[str]) -> str:
        """The per-row target of ``index`` for this block of rows (loaded once per sweep)."""
        if index.name not in self.row_index:
            var = NAME["index_rows"].format(label=_label(index.name))
            out += lines("index_rows", var=var, ptr=self.param(ArgKind.INDEX, index))
            self.row_index[index.name] = var
        return self.row_index[index.name]

    # -- views and values --------------------------------------------------------------------
    def view(self, i: int, out: list[str]) -> View | Val | None:
        """Node ``i`` as a view of memory (or the group value it reads); None if computed."""
        node = self.body.nodes[i]
        row_of_domain = NAME["row"] if node.type.space == self.domain else None
        if i in self.external:
            return self.buffer_view(self.buffer(self.external[i]), node, row_of_domain)
        if node.op is Op.INPUT:
            if row_of_domain is None and node.type.space != GLOBAL:
                raise CodegenError(f"input {node.attr('name')} is in {node.type.space}, read here without a gather", node)
            return self.buffer_view(self.buffer(node.attr("name")), node, row_of_domain)
        if node.op is Op.GATHER:
            index: IndexMap = node.attr("index")
            source = self.body.nodes[node.inputs[0]]
            grouped = self.mode is TraversalLayout.CSR and index == self.group
            if source.op in GROUP_VALUES and source.id not in self.external:
                if not grouped:
                    raise CodegenError("a reduction of this pass is read through a map other than its group", node)
                return self.kept[source.id]
            if source.op is not Op.INPUT:
                raise CodegenError("gathers read buffers or this pass's own reductions", node)
            inner = self.buffer_view(self.buffer(source.attr("name")), source, None)
            row = NAME["group"] if grouped else self.index_rows(index, out)
            return View(inner.ptr, row, node.type.numel, inner.offset, inner.shape, inner.strides)
        if node.op is Op.RESHAPE:
            inner = self.view(node.inputs[0], out)
            if isinstance(inner, View) and inner.contiguous():
                shape = node.type.shape
                return View(inner.ptr, inner.row, inner.row_stride, inner.offset, shape, strides(shape))
            return None
        if node.op is Op.SLICE_LAST:
            inner = self.view(node.inputs[0], out)
            if isinstance(inner, View) and inner.shape:
                start = node.attr("start")
                return View(inner.ptr, inner.row, inner.row_stride, inner.offset + start * inner.strides[-1],
                            node.type.shape, inner.strides)
            return None
        return None

    @staticmethod
    def buffer_view(ptr: str, node: Node, row: str | None) -> View:
        shape = node.type.shape
        return View(ptr, row, node.type.numel, 0, shape, strides(shape))

    def load(self, view: View, var: str, out: list[str]) -> Val:
        shape, rank = view.shape, len(view.shape)
        terms = tt.element_offsets(shape, view.strides)
        if view.offset:
            terms.append(str(view.offset))
        if view.row is None or view.row == NAME["group"]:
            lead = "1"
            base = EXPR["group_offset"].format(stride=view.row_stride) if view.row is not None else None
            if not terms:
                terms.append(EXPR["no_offset"].format(tile=tile((), "1")))
            mask = tt.feature_mask(shape)
        else:
            lead = "BLOCK"
            base = EXPR["row_offset"].format(row=view.row, sub=tt.sub(rank, 0), stride=view.row_stride)
            mask = tt.both(tt.row_mask(rank), tt.feature_mask(shape))
        address = " + ".join([view.ptr] + ([base] if base else []) + terms)
        out += lines("load", var=var, address=address, mask=EXPR["masked_load"].format(mask=mask) if mask else "")
        if lead == "1" and rank and not any(d != 1 for d in shape):
            out += lines("to_tile", var=var, tile=tile(shape, "1"))
        return Val(var, shape, lead)

    def value(self, i: int, out: list[str]) -> Val:
        """Node ``i`` as a register tile, emitting what computes it. In csr mode a value
        that is the same for every row block is computed once, before the sweeps."""
        if i in self.kept:
            return self.kept[i]
        if i in self.cache:
            return self.cache[i]
        if self.mode is TraversalLayout.CSR and out is not self.prologue and self.invariant(i):
            return self.value(i, self.prologue)
        node = self.body.nodes[i]
        view = self.view(i, out)
        if isinstance(view, Val):
            return view
        if view is not None:
            val = self.load(view, NAME["row_value"].format(id=i), out)
        elif node.op is Op.CONST:
            val = Val(NAME["row_value"].format(id=i), node.type.shape, "1")
            out += lines("const", id=i, tile=tile(node.type.shape, "1"), value=tt.literal(node.attr("value")))
        else:
            rule = _RULES.get(node.op)
            if rule is None:
                raise CodegenError(f"not supported by the Triton templates ({self.mode} mode)", node)
            val = rule(self, node, out)
        (self.kept if out is self.prologue else self.cache)[i] = val
        return val

    def invariant(self, i: int) -> bool:
        """Whether node ``i`` is the same for every row of the group and known before the
        first sweep (it reads no row, no reduction of this pass and no softmax)."""
        node = self.body.nodes[i]
        if i in self.external:
            return node.type.space != self.domain
        if node.op is Op.INPUT:
            return node.type.space != self.domain
        if node.op in (Op.CONST, Op.DEGREE):
            return True
        if node.op in (Op.AGGREGATE, Op.SEGMENT_SOFTMAX):
            return False
        if node.op is Op.GATHER:
            source = self.body.nodes[node.inputs[0]]
            return node.attr("index") == self.group and source.op in (Op.INPUT, Op.DEGREE)
        return all(self.invariant(j) for j in node.inputs)

    @staticmethod
    def aligned(val: Val, rank: int) -> str:
        """``val``'s tile with size-1 axes inserted after the lead axis up to ``rank`` row dims."""
        return tt.aligned(val.var, len(val.shape), rank)

    @staticmethod
    def full(val: Val) -> str:
        """``val`` broadcast to one value per row."""
        if val.lead == "BLOCK":
            return val.var
        return EXPR["broadcast"].format(x=val.var, tile=tile(val.shape, "BLOCK"))

    @staticmethod
    def lead(*vals: Val) -> str:
        return "BLOCK" if any(v.lead == "BLOCK" for v in vals) else "1"

    def reindex(self, node: Node, sources: list[tuple[Val, list[str], str | None]], out: list[str]) -> Val:
        """A tile of ``node``'s shape whose element at logical coordinates ``o0, o1, ...``
        is taken from each source ``(tile, coordinates expression list, valid expression)``
        through ``tl.gather``; elements no source covers are zero."""
        i, shape = node.id, node.type.shape
        total = math.prod(pad(d) for d in shape)
        lead = self.lead(*(s[0] for s in sources))
        out += lines("reindex", id=i, total=total)
        pstrides = strides(tuple(pad(d) for d in shape))
        for d, size in enumerate(shape):
            out += lines("reindex_coordinate", d=d, id=i, stride=pstrides[d], size=pad(size))
        inside = " & ".join(EXPR["mask_below"].format(x=EXPR["coordinate"].format(d=d, id=i), size=size)
                            for d, size in enumerate(shape)) or EXPR["every"].format(id=i)
        parts = []
        for k, (val, coords, valid) in enumerate(sources):
            src_total = math.prod(pad(d) for d in val.shape)
            src_pstrides = strides(tuple(pad(d) for d in val.shape))
            flat = " + ".join(EXPR["term"].format(x=c, stride=s) for c, s in zip(coords, src_pstrides)) or "0"
            src = EXPR["flat_tile"].format(x=self.full(val) if lead == "BLOCK" else val.var, lead=lead, total=src_total)
            index = EXPR["gather_index"].format(k=k, id=i, lead=lead, total=total)
            out += lines("reindex_source", k=k, id=i, ok=tt.both(inside, valid), flat=flat, src=src, index=index)
            parts.append(EXPR["part"].format(k=k, id=i))
        var = NAME["row_value"].format(id=i)
        out += lines("value", id=i, expr=EXPR["reshape"].format(x=" + ".join(parts), tile=tile(shape, lead)))
        return Val(var, shape, lead)


# ---- rules: one per op ----------------------------------------------------------------------

def _result(node: Node, lead: str, expr: str, out: list[str]) -> Val:
    out += lines("value", id=node.id, expr=expr)
    return Val(NAME["row_value"].format(id=node.id), node.type.shape, lead)


def _elementwise(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    rank = len(node.type.shape)
    ops = [tb.value(i, out) for i in node.inputs]
    args = [tb.aligned(v, rank) for v in ops]
    if node.op is Op.UNARY:
        fn = node.attr("fn")
        if fn is Unary.LEAKY_RELU:
            expr = tt.LEAKY_RELU.format(x=args[0], alpha=tt.literal(node.attr("alpha")))
        else:
            expr = UNARY[fn].format(x=args[0])
    else:
        expr = BINARY[node.attr("fn")].format(a=args[0], b=args[1])
    lead = tb.lead(*ops)
    return _result(node, lead, EXPR["broadcast"].format(x=expr, tile=tile(node.type.shape, lead)), out)


def _sum_last_of(node: Node, product: str, full: tuple[int, ...], lead: str, out: list[str]) -> Val:
    term = tt.masked(tt.dim_mask(full, len(full) - 1), product)
    out += lines("sum_last", id=node.id, term=term, tile=tile(full, lead), axis=len(full))
    return Val(NAME["row_value"].format(id=node.id), node.type.shape, lead)


def _dot(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    a, b = (tb.value(i, out) for i in node.inputs)
    full = node.type.shape + (tb.body.nodes[node.inputs[0]].type.shape[-1],)
    product = BINARY[Binary.MUL].format(a=tb.aligned(a, len(full)), b=tb.aligned(b, len(full)))
    return _sum_last_of(node, product, full, tb.lead(a, b), out)


def _sum_last(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    x = tb.value(node.inputs[0], out)
    return _sum_last_of(node, x.var, x.shape, x.lead, out)


def _sum_dims(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    x = tb.value(node.inputs[0], out)
    expr = x.var
    for d in node.attr("dims"):
        expr = EXPR["sum_axis"].format(x=tt.masked(tt.dim_mask(x.shape, d), expr), axis=d + 1)
    return _result(node, x.lead, EXPR["reshape"].format(x=expr, tile=tile(node.type.shape, x.lead)), out)


def _expand_last(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    x = tb.value(node.inputs[0], out)
    shape = node.type.shape
    out += lines("expand", id=node.id, x=tb.aligned(x, len(shape) - 1), every=tt.every_axis(len(shape)),
                 tile=tile(shape, x.lead))
    return Val(NAME["row_value"].format(id=node.id), shape, x.lead)


def _consistent(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether a padded tile of shape ``a`` reshapes to one of ``b`` with every element
    in place (then ``tl.reshape`` is the whole reshape)."""
    pa, pb = tuple(pad(d) for d in a), tuple(pad(d) for d in b)
    if math.prod(pa) != math.prod(pb):
        return False
    sa, sb, la, lb = strides(pa), strides(pb), strides(a), strides(b)
    for flat in range(math.prod(a)):
        ia = sum(((flat // la[d]) % a[d]) * sa[d] for d in range(len(a)))
        ib = sum(((flat // lb[d]) % b[d]) * sb[d] for d in range(len(b)))
        if ia != ib:
            return False
    return True


def _coordinates(node: Node) -> list[str]:
    return [EXPR["coordinate"].format(d=d, id=node.id) for d in range(len(node.type.shape))]


def _reshape(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    x = tb.value(node.inputs[0], out)
    shape = node.type.shape
    if _consistent(x.shape, shape):
        return _result(node, x.lead, EXPR["reshape"].format(x=x.var, tile=tile(shape, x.lead)), out)
    flat = " + ".join(EXPR["scaled"].format(x=o, stride=s) for o, s in zip(_coordinates(node), strides(shape))) or "0"
    coords = [EXPR["coordinate_of_flat"].format(flat=flat, stride=s, size=d) for d, s in zip(x.shape, strides(x.shape))]
    return tb.reindex(node, [(x, coords, None)], out)


def _last_dim_copy(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    """concat / slice_last / pad_last of computed tiles: a gather along the last dim."""
    *keep, last = _coordinates(node)
    if node.op is Op.CONCAT:
        sources, start = [], 0
        for i in node.inputs:
            val = tb.value(i, out)
            end = start + val.shape[-1]
            sources.append((val, keep + [EXPR["shifted"].format(x=last, start=start)],
                            EXPR["within"].format(x=last, start=start, end=end)))
            start = end
        return tb.reindex(node, sources, out)
    x = tb.value(node.inputs[0], out)
    if node.op is Op.SLICE_LAST:
        return tb.reindex(node, [(x, keep + [EXPR["advanced"].format(x=last, start=node.attr("start"))], None)], out)
    before = node.attr("before")
    return tb.reindex(node, [(x, keep + [EXPR["shifted"].format(x=last, start=before)],
                              EXPR["within"].format(x=last, start=before, end=before + x.shape[-1]))], out)


def _softmax(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    x = tb.value(node.inputs[0], out)
    names = {"x": x.var, "m": NAME["running_max"].format(id=node.id), "s": NAME["running_sum"].format(id=node.id)}
    return _result(node, "BLOCK", spell(ONLINE_SOFTMAX.normalise, UNARY, BINARY, names), out)


def _layer_norm(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    x = tb.value(node.inputs[0], out)
    shape, axis = x.shape, len(x.shape)
    mask = tt.dim_mask(shape, len(shape) - 1)
    centred = tt.masked(mask, BINARY[Binary.SUB].format(a=x.var, b=NAME["mean"].format(id=node.id)))
    out += lines("layer_norm", id=node.id, x_masked=tt.masked(mask, x.var), axis=axis, n=shape[-1],
                 centred=centred, eps=tt.literal(node.attr("eps")))
    return Val(NAME["row_value"].format(id=node.id), shape, x.lead)


def _broadcast_rows(tb: TileBuilder, node: Node, out: list[str]) -> Val:
    return tb.value(node.inputs[0], out)


_RULES = {
    Op.UNARY: _elementwise,
    Op.BINARY: _elementwise,
    Op.DOT: _dot,
    Op.SUM_LAST: _sum_last,
    Op.SUM_DIMS: _sum_dims,
    Op.EXPAND_LAST: _expand_last,
    Op.RESHAPE: _reshape,
    Op.CONCAT: _last_dim_copy,
    Op.SLICE_LAST: _last_dim_copy,
    Op.PAD_LAST: _last_dim_copy,
    Op.SEGMENT_SOFTMAX: _softmax,
    Op.LAYER_NORM: _layer_norm,
    Op.BROADCAST_ROWS: _broadcast_rows,
}
