"""Triton code generation for traversal and dense kernels.

The template (``kernels/traversal.py.jinja``) owns the structure: the program per group
walking its CSR in blocks of rows (``csr`` mode), or the program per block of rows
(``rows`` mode). This module emits the per-row expression as Triton lines, one rule per
op (``_RULES``), and decides where reductions live. The sweeps are planned in
:mod:`pigeon.codegen.sweeps`, as for C.

Values are register tiles ``[lead, *padded row shape]``: ``lead`` is ``BLOCK`` for a
value per row and 1 for a value per group or a global one, and each row dimension is
padded to a power of two (Triton's tiles need it). Padded lanes hold garbage that never
reaches memory: loads fill them with zero, every sum over a row dimension masks them,
stores skip them. A read of a buffer stays a *view* (pointer, row, strides) until an op
needs its value, so reshapes, slices and broadcasts of inputs cost index arithmetic,
not data movement; reshapes of computed tiles whose padding differs go through
``tl.gather``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pigeon.codegen.templates import CodegenError as _CodegenError
from pigeon.codegen.templates import render
from pigeon.codegen.sweeps import GROUP_VALUES, SweepPlan
from pigeon.ir.graph_ir import GLOBAL, Binary, IndexMap, Node, Op, Reduce, Space, Unary
from pigeon.ir.kernel_ir import DenseKernel, TraversalKernel, TraversalLayout

ROW_REDUCTIONS = (Op.SUM_ROWS, Op.MEAN_ROWS)


class CodegenError(_CodegenError):
    """A kernel the Triton templates cannot express, with the op and the layer line."""

    backend = "Triton"


def pad(n: int) -> int:
    """The power of two a tile dimension of size ``n`` is padded to."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class TritonConfig:
    """Launch parameters of one traversal or dense kernel.

    Args:
        block (int): ``BLOCK``, a power of two: rows per step of a group's walk in
            ``csr`` mode, rows per program in ``rows`` mode.
        num_warps (int): warps per program, a power of two. Default 4 (Triton's).
        num_stages (int): software-pipelining stages. Default 3 (Triton's).

    It is written into the kernel's source (a comment), so the module's content hash
    covers it.
    """

    block: int
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name in ("block", "num_warps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value & (value - 1):
                raise ValueError(f"Expected `{name}` to be a positive power of two (got {value!r})")
        if not isinstance(self.num_stages, int) or isinstance(self.num_stages, bool) or self.num_stages < 1:
            raise ValueError(f"Expected `num_stages` to be a positive int (got {self.num_stages!r})")


@dataclass(frozen=True)
class TritonTraversal:
    """A rendered traversal or dense kernel and what its launcher passes.

    ``args``: in order, ``("rowptr" | "perm" | "index" | "count", IndexMap)`` or
    ``("buffer" | "output", buffer name)``. ``outputs``: ``(buffer, kind, space, row shape)``
    with kind ``row`` (one row per domain row), ``group`` (one per group) or ``atomic``
    (scatter-added into zeros of the target space).
    """

    name: str
    source: str
    args: tuple[tuple[str, object], ...]
    mode: str
    domain: Space
    group: IndexMap | None
    outputs: tuple[tuple[str, str, Space, tuple[int, ...]], ...]
    config: TritonConfig

    @property
    def block(self) -> int:
        return self.config.block


@dataclass(frozen=True)
class _Val:
    var: str
    shape: tuple[int, ...]
    lead: str            # "BLOCK" (a value per row) or "1" (per group, or global)


@dataclass(frozen=True)
class _View:
    """A value still in memory: element (r, i...) at ptr + row(r) * row_stride + offset + sum i_d * strides_d."""

    ptr: str
    row: str | None      # a per-row index tensor, "g" (the program's group) or None (one row)
    row_stride: int
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def contiguous(self) -> bool:
        return self.strides == _strides(self.shape)


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def _tile(shape: tuple[int, ...], lead: str) -> str:
    return "[" + ", ".join([lead] + [str(pad(d)) for d in shape]) + "]"


def _sub(rank: int, axis: int | None) -> str:
    """A subscript expanding a vector to a tile of ``rank`` row dims (plus the lead axis):
    ``:`` at tile axis ``axis``, None elsewhere."""
    return "[" + ", ".join(":" if a == axis else "None" for a in range(rank + 1)) + "]"


def _arange(shape: tuple[int, ...], d: int) -> str:
    return f"tl.arange(0, {pad(shape[d])}){_sub(len(shape), d + 1)}"


def _dim_mask(shape: tuple[int, ...], d: int) -> str | None:
    return None if pad(shape[d]) == shape[d] else f"({_arange(shape, d)} < {shape[d]})"


def _feature_mask(shape: tuple[int, ...]) -> str | None:
    terms = [m for d in range(len(shape)) if (m := _dim_mask(shape, d))]
    return " & ".join(terms) or None


def _and(*terms: str | None) -> str | None:
    present = [t for t in terms if t]
    return " & ".join(present) or None


def _literal(value: float) -> str:
    if math.isinf(value):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    return repr(float(value))


_UNARY = {
    Unary.NEG: "-{x}", Unary.RELU: "tl.maximum({x}, 0.0)", Unary.EXP: "tl.exp({x})", Unary.LOG: "tl.log({x})",
    Unary.SQRT: "tl.sqrt({x})", Unary.RSQRT: "tl.rsqrt({x})", Unary.RECIP: "1.0 / {x}",
    Unary.SIGMOID: "tl.sigmoid({x})", Unary.TANH: "(2.0 * tl.sigmoid(2.0 * {x}) - 1.0)",
    Unary.GELU: "0.5 * {x} * (1.0 + tl.math.erf({x} * 0.7071067811865476))",
    Unary.GELU_GRAD: ("0.5 * (1.0 + tl.math.erf({x} * 0.7071067811865476))"
                      " + {x} * tl.exp(-0.5 * {x} * {x}) * 0.3989422804014327"),
    Unary.STEP: "tl.where({x} > 0, 1.0, 0.0)", Unary.SQUARE: "{x} * {x}",
}
_BINARY = {
    Binary.ADD: "{a} + {b}", Binary.SUB: "{a} - {b}", Binary.MUL: "{a} * {b}", Binary.DIV: "{a} / {b}",
    Binary.MAX: "tl.maximum({a}, {b})", Binary.MIN: "tl.minimum({a}, {b})",
    Binary.EQ: "tl.where({a} == {b}, 1.0, 0.0)",
}


class _Planner(SweepPlan):
    """Emits Triton for one kernel body in one mode.

    ``external`` maps node ids to buffers that already hold their values (the second
    launch of a dense kernel that reads row reductions); ``skip`` are output names
    another launch writes.
    """

    def __init__(self, title: str, body, domain: Space, group: IndexMap | None, mode: str, name: str,
                 config: TritonConfig, external: dict[int, str] | None = None, skip: frozenset[str] = frozenset()):
        super().__init__(body, domain, group)
        self.title, self.mode, self.name, self.config = title, mode, name, config
        self.external = external or {}
        self.skip = skip
        self.args: list[tuple[str, object]] = []
        self.params: list[str] = []
        self.vars: dict[tuple[str, object], str] = {}
        self.out_kinds: list[tuple[str, str, Space, tuple[int, ...]]] = []
        self.top: list[str] = []
        self.cache: dict[int, _Val] = {}       # per sweep: values of rows
        self.kept: dict[int, _Val] = {}        # whole program: values per group or global
        self.prologue: list[str] = []          # csr mode: lines computing them, before the sweeps
        self.row_index: dict[str, str] = {}    # per sweep: loaded index maps

    # -- arguments -------------------------------------------------------------------------
    def param(self, kind: str, key) -> str:
        if (kind, key) not in self.vars:
            label = key.name if isinstance(key, IndexMap) else key
            var = {"rowptr": "rowptr", "perm": "perm"}.get(kind) or \
                f"{kind[0]}{len(self.params)}_{re.sub(r'[^0-9A-Za-z]', '_', label)}"
            self.vars[(kind, key)] = var
            self.params.append(var)
            self.args.append((kind, key))
        return self.vars[(kind, key)]

    def buffer(self, name: str) -> str:
        return self.param("buffer", name)

    def output(self, node: Node, kind: str, rows: Space) -> str:
        name = node.attr("name")
        var = self.param("output", name)
        if all(o[0] != name for o in self.out_kinds):
            self.out_kinds.append((name, kind, rows, node.type.shape))
        return var

    def index_rows(self, index: IndexMap, lines: list[str]) -> str:
        """The per-row target of ``index`` for this block of rows (loaded once per sweep)."""
        if index.name not in self.row_index:
            var = f"ix_{re.sub(r'[^0-9A-Za-z]', '_', index.name)}"
            lines.append(f"{var} = tl.load({self.param('index', index)} + row, mask=rmask, other=0)")
            self.row_index[index.name] = var
        return self.row_index[index.name]

    # -- views and values --------------------------------------------------------------------
    def view(self, i: int, lines: list[str]) -> _View | _Val | None:
        """Node ``i`` as a view of memory (or the group value it reads); None if computed."""
        node = self.body.nodes[i]
        if i in self.external:
            return self._buffer_view(self.buffer(self.external[i]), node, "row" if node.type.space == self.domain else None)
        if node.op is Op.INPUT:
            row = "row" if node.type.space == self.domain else None
            if row is None and node.type.space != GLOBAL:
                raise CodegenError(f"input {node.attr('name')} is in {node.type.space}, read here without a gather", node)
            return self._buffer_view(self.buffer(node.attr("name")), node, row)
        if node.op is Op.GATHER:
            index: IndexMap = node.attr("index")
            source = self.body.nodes[node.inputs[0]]
            if source.op in GROUP_VALUES and source.id not in self.external:
                if index != self.group or self.mode != "csr":
                    raise CodegenError("a reduction of this pass is read through a map other than its group", node)
                return self.kept[source.id]
            if source.op is not Op.INPUT:
                raise CodegenError("gathers read buffers or this pass's own reductions", node)
            inner = self._buffer_view(self.buffer(source.attr("name")), source, None)
            row = "g" if self.mode == "csr" and index == self.group else self.index_rows(index, lines)
            return _View(inner.ptr, row, node.type.numel, inner.offset, inner.shape, inner.strides)
        if node.op is Op.RESHAPE:
            inner = self.view(node.inputs[0], lines)
            if isinstance(inner, _View) and inner.contiguous():
                shape = node.type.shape
                return _View(inner.ptr, inner.row, inner.row_stride, inner.offset, shape, _strides(shape))
            return None
        if node.op is Op.SLICE_LAST:
            inner = self.view(node.inputs[0], lines)
            if isinstance(inner, _View) and inner.shape:
                start = node.attr("start")
                return _View(inner.ptr, inner.row, inner.row_stride, inner.offset + start * inner.strides[-1],
                             node.type.shape, inner.strides)
            return None
        return None

    def _buffer_view(self, ptr: str, node: Node, row: str | None) -> _View:
        shape = node.type.shape
        return _View(ptr, row, node.type.numel, 0, shape, _strides(shape))

    def load(self, view: _View, var: str, lines: list[str]) -> _Val:
        shape, rank = view.shape, len(view.shape)
        terms = [f"{_arange(shape, d)} * {stride}" if stride != 1 else _arange(shape, d)
                 for d, stride in enumerate(view.strides) if shape[d] != 1]
        if view.offset:
            terms.append(str(view.offset))
        if view.row is None or view.row == "g":
            lead = "1"
            base = f"g * {view.row_stride}" if view.row == "g" else None
            if not terms:
                terms.append("tl.zeros([1], tl.int64)")
            mask = _feature_mask(shape)
        else:
            lead = "BLOCK"
            base = f"{view.row}{_sub(rank, 0)} * {view.row_stride}"
            mask = _and(f"rmask{_sub(rank, 0)}", _feature_mask(shape))
        address = " + ".join([view.ptr] + ([base] if base else []) + terms)
        masked = f", mask={mask}, other=0.0" if mask else ""
        lines.append(f"{var} = tl.load({address}{masked})")
        if lead == "1" and rank and not any(d != 1 for d in shape):
            lines.append(f"{var} = tl.reshape({var}, {_tile(shape, '1')})")
        return _Val(var, shape, lead)

    def value(self, i: int, lines: list[str]) -> _Val:
        """Node ``i`` as a register tile, emitting what computes it. In csr mode a value
        that is the same for every row block is computed once, before the sweeps."""
        if i in self.kept:
            return self.kept[i]
        if i in self.cache:
            return self.cache[i]
        if self.mode == "csr" and lines is not self.prologue and self.invariant(i):
            return self.value(i, self.prologue)
        node = self.body.nodes[i]
        view = self.view(i, lines)
        if isinstance(view, _Val):
            return view
        if view is not None:
            val = self.load(view, f"v{i}", lines)
        elif node.op is Op.CONST:
            val = _Val(f"v{i}", node.type.shape, "1")
            lines.append(f"v{i} = tl.full({_tile(node.type.shape, '1')}, {_literal(node.attr('value'))}, REAL)")
        else:
            rule = _RULES.get(node.op)
            if rule is None:
                raise CodegenError(f"not supported by the Triton templates ({self.mode} mode)", node)
            val = rule(self, node, lines)
        (self.kept if lines is self.prologue else self.cache)[i] = val
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

    def aligned(self, val: _Val, rank: int) -> str:
        """``val``'s tile with size-1 axes inserted after the lead axis up to ``rank`` row dims."""
        extra = rank - len(val.shape)
        if extra <= 0:
            return val.var
        return val.var + "[" + ", ".join([":"] + ["None"] * extra + [":"] * len(val.shape)) + "]"

    def full(self, val: _Val) -> str:
        """``val`` broadcast to one value per row."""
        if val.lead == "BLOCK":
            return val.var
        return f"tl.broadcast_to({val.var}, {_tile(val.shape, 'BLOCK')})"

    @staticmethod
    def lead(*vals: _Val) -> str:
        return "BLOCK" if any(v.lead == "BLOCK" for v in vals) else "1"

    def reindex(self, node: Node, sources: list[tuple[_Val, str, str]], lines: list[str]) -> _Val:
        """A tile of ``node``'s shape whose element at logical coordinates ``o0, o1, ...``
        is taken from each source ``(tile, coordinates expression list, valid expression)``
        through ``tl.gather``; elements no source covers are zero."""
        shape, total = node.type.shape, math.prod(pad(d) for d in node.type.shape)
        lead = self.lead(*(s[0] for s in sources))
        out = f"v{node.id}"
        lines.append(f"j{node.id} = tl.arange(0, {total})")
        pstrides = _strides(tuple(pad(d) for d in shape))
        for d, size in enumerate(shape):
            lines.append(f"o{d}_{node.id} = (j{node.id} // {pstrides[d]}) % {pad(size)}")
        inside = " & ".join(f"(o{d}_{node.id} < {size})" for d, size in enumerate(shape)) or f"j{node.id} >= 0"
        parts = []
        for k, (val, coords, valid) in enumerate(sources):
            src_total = math.prod(pad(d) for d in val.shape)
            src_pstrides = _strides(tuple(pad(d) for d in val.shape))
            flat = " + ".join(f"({c}) * {s}" for c, s in zip(coords, src_pstrides)) or "0"
            ok = _and(inside, valid)
            lines.append(f"s{k}_{node.id} = tl.where({ok}, {flat}, 0)")
            flat_src = f"tl.reshape({self.full(val) if lead == 'BLOCK' else val.var}, [{lead}, {src_total}])"
            index = f"tl.broadcast_to(s{k}_{node.id}[None, :], [{lead}, {total}])"
            lines.append(f"g{k}_{node.id} = tl.where(({ok})[None, :], tl.gather({flat_src}, {index}, 1), 0.0)")
            parts.append(f"g{k}_{node.id}")
        lines.append(f"{out} = tl.reshape({' + '.join(parts)}, {_tile(shape, lead)})")
        return _Val(out, shape, lead)

    # -- sweeps --------------------------------------------------------------------------------
    def store_row(self, o: Node, lines: list[str], kind: str = "row") -> None:
        val = self.value(o.inputs[0], lines)
        shape, rank = val.shape, len(val.shape)
        ptr = self.output(o, kind, self.domain)
        offsets = " + ".join([f"row{_sub(rank, 0)} * {o.type.numel}"] + [
            f"{_arange(shape, d)} * {s}" if s != 1 else _arange(shape, d)
            for d, s in enumerate(_strides(shape)) if shape[d] != 1])
        mask = _and(f"rmask{_sub(rank, 0)}", _feature_mask(shape))
        lines.append(f"tl.store({ptr} + {offsets}, {self.full(val)}, mask={mask})")

    def group_offsets(self, shape: tuple[int, ...]) -> str:
        terms = [f"{_arange(shape, d)} * {s}" if s != 1 else _arange(shape, d)
                 for d, s in enumerate(_strides(shape)) if shape[d] != 1]
        return " + ".join(terms) or "tl.zeros([1], tl.int64)"

    def row_sum(self, val: _Val) -> str:
        """The masked sum of a per-row tile over this block's rows, kept as a lead-1 tile."""
        return f"tl.sum(tl.where(rmask{_sub(len(val.shape), 0)}, {self.full(val)}, 0.0), axis=0, keep_dims=True)"

    def render_csr(self) -> dict:
        self.param("rowptr", self.group)
        self.param("perm", self.group)
        group_init: list[str] = []
        for r in self.reductions:
            tile = _tile(r.type.shape, "1")
            how = r.attr("reduce")
            if len(r.inputs) > 1:   # a self message: one more row of the reduction
                init = self.body.nodes[r.inputs[1]]
                view = self._buffer_view(self.buffer(init.attr("name")), init, "g")
                self.load(view, f"a{r.id}", group_init)
            else:
                start = {Reduce.SUM: "0.0", Reduce.MEAN: "0.0", Reduce.MAX: 'float("-inf")',
                         Reduce.MIN: 'float("inf")'}[how]
                group_init.append(f"a{r.id} = tl.full({tile}, {start}, REAL)")
        for d in self.body.nodes:
            if d.op is Op.DEGREE:
                group_init.append(f"a{d.id} = tl.full({_tile(d.type.shape, '1')}, 0.0, REAL) + count.to(REAL)")
                self.kept[d.id] = _Val(f"a{d.id}", d.type.shape, "1")
        for s in self.softmaxes:
            tile = _tile(s.type.shape, "1")
            group_init += [f"m{s.id} = tl.full({tile}, float(\"-inf\"), REAL)", f"s{s.id} = tl.full({tile}, 0.0, REAL)"]
        sweeps = []
        for k in range(self.last_sweep() + 1):
            self.cache, self.row_index = {}, {}
            roots, row_outputs = self.sweep_roots(k)
            body: list[str] = []
            for i in self.closure(roots, self.external):
                if self.body.nodes[i].op is not Op.INPUT:
                    self.value(i, body)
            finish: list[str] = []
            for r in self.reductions:
                if self.phase[r.id] != k:
                    continue
                x = self.value(r.inputs[0], body)
                how, rm = r.attr("reduce"), f"rmask{_sub(len(x.shape), 0)}"
                if how in (Reduce.SUM, Reduce.MEAN):
                    body.append(f"a{r.id} += {self.row_sum(x)}")
                else:
                    fn, fill = ("max", 'float("-inf")') if how is Reduce.MAX else ("min", 'float("inf")')
                    body.append(f"a{r.id} = tl.{fn}imum(a{r.id}, tl.{fn}(tl.where({rm}, {self.full(x)}, {fill}), "
                                "axis=0, keep_dims=True))")
                if how is Reduce.MEAN:
                    total = "count + 1" if len(r.inputs) > 1 else "count"
                    finish.append(f"a{r.id} = a{r.id} / tl.maximum({total}, 1).to(REAL)")
                elif how in (Reduce.MAX, Reduce.MIN) and len(r.inputs) == 1:
                    finish.append(f"a{r.id} = tl.where(count > 0, a{r.id}, 0.0)")
                self.kept[r.id] = _Val(f"a{r.id}", r.type.shape, "1")
            for s in self.softmaxes:
                if self.stats_phase(s) != k:
                    continue
                x = self.value(s.inputs[0], body)
                rm = f"rmask{_sub(len(x.shape), 0)}"
                body += [
                    f"t{s.id} = tl.maximum(m{s.id}, tl.max(tl.where({rm}, {self.full(x)}, float(\"-inf\")), axis=0, keep_dims=True))",
                    f"s{s.id} = s{s.id} * tl.exp(m{s.id} - t{s.id}) + "
                    f"tl.sum(tl.where({rm}, tl.exp({x.var} - t{s.id}), 0.0), axis=0, keep_dims=True)",
                    f"m{s.id} = t{s.id}",
                ]
            for o in row_outputs:
                self.store_row(o, body)
            sweeps.append({"body": body, "finish": finish})
        group_init += self.prologue
        group_store = []
        for o in self.outputs:
            source = self.body.nodes[o.inputs[0]]
            if source.op in GROUP_VALUES:
                ptr = self.output(o, "group", self.group.target)
                mask = _feature_mask(o.type.shape)
                group_store.append(f"tl.store({ptr} + g * {o.type.numel} + {self.group_offsets(o.type.shape)}, "
                                   f"a{source.id}{f', mask={mask}' if mask else ''})")
            elif not self.is_row(source):
                raise CodegenError(f"output {o.attr('name')} is neither per-row nor a reduction", o)
        return {"group_init": group_init, "sweeps": sweeps, "group_store": group_store}

    def render_rows(self) -> dict:
        self.cache, self.row_index = {}, {}
        reductions = [n for n in self.body.nodes
                      if n.op in (*ROW_REDUCTIONS, Op.AGGREGATE) and n.id not in self.external]
        reduced = {r.id for r in reductions}
        stored = [o for o in self.outputs if o.attr("name") not in self.skip and o.inputs[0] not in reduced]
        for o in stored:
            if not self.is_row(self.body.nodes[o.inputs[0]]) and o.inputs[0] not in self.external:
                raise CodegenError(f"output {o.attr('name')} is neither per-row nor a reduction", o)
        body: list[str] = []
        roots = [o.inputs[0] for o in stored] + [r.inputs[0] for r in reductions]
        for i in self.closure(roots, self.external):
            if self.body.nodes[i].op is not Op.INPUT:
                self.value(i, body)
        for r in reductions:
            self.atomic(r, body)
        for o in stored:
            self.store_row(o, body)
        return {"group_init": [], "sweeps": [{"body": body, "finish": []}], "group_store": []}

    def atomic(self, r: Node, lines: list[str]) -> None:
        """A reduction in rows mode: scatter-added into its output buffer."""
        readers = [o for o in self.outputs if o.inputs[0] == r.id]
        if len(readers) != 1 or len(r.inputs) != 1:
            raise CodegenError("a row-parallel reduction must be one output of the kernel", r)
        x = self.value(r.inputs[0], lines)
        shape, rank = r.type.shape, len(r.type.shape)
        if r.op in ROW_REDUCTIONS:
            ptr = self.output(readers[0], "atomic", GLOBAL)
            partial = self.row_sum(x) + (" / num" if r.op is Op.MEAN_ROWS else "")
            mask = _feature_mask(shape)
            lines.append(f"tl.atomic_add({ptr} + {self.group_offsets(shape)}, {partial}"
                         f"{f', mask={mask}' if mask else ''})")
            return
        how, index = r.attr("reduce"), r.attr("index")
        if how not in (Reduce.SUM, Reduce.MEAN):
            raise CodegenError(f"a row-parallel {how.value} reduction (only sum and mean scatter with atomics)", r)
        ptr = self.output(readers[0], "atomic", index.target)
        target = self.index_rows(index, lines)
        value = self.full(x)
        if how is Reduce.MEAN:
            counts = self.param("count", index)
            lines.append(f"c{r.id} = tl.maximum(tl.load({counts} + {target}, mask=rmask, other=1), 1).to(REAL)")
            value = f"{value} / c{r.id}{_sub(rank, 0)}"
        offsets = " + ".join([f"{target}{_sub(rank, 0)} * {r.type.numel}"] + [
            f"{_arange(shape, d)} * {s}" if s != 1 else _arange(shape, d)
            for d, s in enumerate(_strides(shape)) if shape[d] != 1])
        mask = _and(f"rmask{_sub(rank, 0)}", _feature_mask(shape))
        lines.append(f"tl.atomic_add({ptr} + {offsets}, {value}, mask={mask})")

    def render(self) -> TritonTraversal:
        parts = self.render_csr() if self.mode == "csr" else self.render_rows()
        c = self.config
        launch = f"BLOCK={c.block}, num_warps={c.num_warps}, num_stages={c.num_stages}"
        source = render("traversal.py.jinja", title=self.title, name=self.name, params=self.params,
                        top=self.top, mode=self.mode, launch=launch, **parts)
        return TritonTraversal(self.name, source, tuple(self.args), self.mode, self.domain, self.group,
                               tuple(self.out_kinds), c)


# ---- lowering rules: one per op ------------------------------------------------------------

def _elementwise(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    rank = len(node.type.shape)
    ops = [pl.value(i, lines) for i in node.inputs]
    args = [pl.aligned(v, rank) for v in ops]
    if node.op is Op.UNARY:
        fn = node.attr("fn")
        if fn is Unary.LEAKY_RELU:
            expr = f"tl.where({args[0]} > 0, {args[0]}, {_literal(node.attr('alpha'))} * {args[0]})"
        else:
            expr = _UNARY[fn].format(x=args[0])
    else:
        expr = _BINARY[node.attr("fn")].format(a=args[0], b=args[1])
    lead = pl.lead(*ops)
    lines.append(f"v{node.id} = tl.broadcast_to({expr}, {_tile(node.type.shape, lead)})")
    return _Val(f"v{node.id}", node.type.shape, lead)


def _sum_last_of(pl: _Planner, node: Node, product: str, full: tuple[int, ...], lead: str, lines: list[str]) -> _Val:
    mask = _dim_mask(full, len(full) - 1)
    term = f"tl.where({mask}, {product}, 0.0)" if mask else product
    lines.append(f"v{node.id} = tl.sum(tl.broadcast_to({term}, {_tile(full, lead)}), axis={len(full)})")
    return _Val(f"v{node.id}", node.type.shape, lead)


def _dot(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    a, b = (pl.value(i, lines) for i in node.inputs)
    full = node.type.shape + (pl.body.nodes[node.inputs[0]].type.shape[-1],)
    product = f"{pl.aligned(a, len(full))} * {pl.aligned(b, len(full))}"
    return _sum_last_of(pl, node, product, full, pl.lead(a, b), lines)


def _sum_last(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    x = pl.value(node.inputs[0], lines)
    return _sum_last_of(pl, node, x.var, x.shape, x.lead, lines)


def _sum_dims(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    x = pl.value(node.inputs[0], lines)
    shape = x.shape
    expr = x.var
    for d in node.attr("dims"):
        mask = _dim_mask(shape, d)
        if mask:
            expr = f"tl.where({mask}, {expr}, 0.0)"
        expr = f"tl.sum({expr}, axis={d + 1}, keep_dims=True)"
    lines.append(f"v{node.id} = tl.reshape({expr}, {_tile(node.type.shape, x.lead)})")
    return _Val(f"v{node.id}", node.type.shape, x.lead)


def _expand_last(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    x = pl.value(node.inputs[0], lines)
    shape = node.type.shape
    colons = ", ".join([":"] * len(shape))   # the lead axis and the kept row dims
    lines.append(f"e{node.id} = {pl.aligned(x, len(shape) - 1)}")
    lines.append(f"v{node.id} = tl.broadcast_to(e{node.id}[{colons}, None], {_tile(shape, x.lead)})")
    return _Val(f"v{node.id}", shape, x.lead)


def _consistent(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether a padded tile of shape ``a`` reshapes to one of ``b`` with every element
    in place (then ``tl.reshape`` is the whole reshape)."""
    pa, pb = tuple(pad(d) for d in a), tuple(pad(d) for d in b)
    if math.prod(pa) != math.prod(pb):
        return False
    sa, sb, la, lb = _strides(pa), _strides(pb), _strides(a), _strides(b)
    for flat in range(math.prod(a)):
        ia = sum(((flat // la[d]) % a[d]) * sa[d] for d in range(len(a)))
        ib = sum(((flat // lb[d]) % b[d]) * sb[d] for d in range(len(b)))
        if ia != ib:
            return False
    return True


def _coords_of_flat(flat: str, shape: tuple[int, ...]) -> list[str]:
    strides = _strides(shape)
    return [f"(({flat}) // {s}) % {d}" for d, s in zip(shape, strides)]


def _reshape(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    x = pl.value(node.inputs[0], lines)
    shape = node.type.shape
    if _consistent(x.shape, shape):
        lines.append(f"v{node.id} = tl.reshape({x.var}, {_tile(shape, x.lead)})")
        return _Val(f"v{node.id}", shape, x.lead)
    strides = _strides(shape)
    flat = " + ".join(f"o{d}_{node.id} * {s}" for d, s in enumerate(strides)) or "0"
    return pl.reindex(node, [(x, _coords_of_flat(flat, x.shape), None)], lines)


def _last_dim_copy(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    """concat / slice_last / pad_last of computed tiles: a gather along the last dim."""
    shape = node.type.shape
    last = f"o{len(shape) - 1}_{node.id}"
    keep = [f"o{d}_{node.id}" for d in range(len(shape) - 1)]
    if node.op is Op.CONCAT:
        sources, start = [], 0
        for i in node.inputs:
            val = pl.value(i, lines)
            width = val.shape[-1]
            sources.append((val, keep + [f"{last} - {start}"], f"({last} >= {start}) & ({last} < {start + width})"))
            start += width
        return pl.reindex(node, sources, lines)
    x = pl.value(node.inputs[0], lines)
    if node.op is Op.SLICE_LAST:
        return pl.reindex(node, [(x, keep + [f"{last} + {node.attr('start')}"], None)], lines)
    before = node.attr("before")
    return pl.reindex(node, [(x, keep + [f"{last} - {before}"],
                              f"({last} >= {before}) & ({last} < {before + x.shape[-1]})")], lines)


def _softmax(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    x = pl.value(node.inputs[0], lines)
    lines.append(f"v{node.id} = tl.exp({x.var} - m{node.id}) / s{node.id}")
    return _Val(f"v{node.id}", node.type.shape, "BLOCK")


def _layer_norm(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    x = pl.value(node.inputs[0], lines)
    shape, n, axis = x.shape, x.shape[-1], len(x.shape)
    mask = _dim_mask(shape, len(shape) - 1)
    masked = (lambda e: f"tl.where({mask}, {e}, 0.0)") if mask else (lambda e: e)
    i = node.id
    lines += [f"mu{i} = tl.sum({masked(x.var)}, axis={axis}, keep_dims=True) / {n}",
              f"d{i} = {masked(f'{x.var} - mu{i}')}",
              f"var{i} = tl.sum(d{i} * d{i}, axis={axis}, keep_dims=True) / {n}",
              f"v{i} = d{i} * tl.rsqrt(var{i} + {_literal(node.attr('eps'))})"]
    return _Val(f"v{i}", shape, x.lead)


def _broadcast_rows(pl: _Planner, node: Node, lines: list[str]) -> _Val:
    return pl.value(node.inputs[0], lines)


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

CSR_BLOCK = 32
ROWS_BLOCK = 64


def _edge_parallel(kernel: TraversalKernel) -> bool:
    """Whether a traversal can run edge-parallel with atomics: one sweep, no softmax, no
    degree, and only sum or mean reductions without a self message."""
    plan = SweepPlan(kernel.body, kernel.domain, kernel.group)
    return (not plan.softmaxes and plan.last_sweep() == 0
            and not any(n.op is Op.DEGREE for n in kernel.body.nodes)
            and all(r.attr("reduce") in (Reduce.SUM, Reduce.MEAN) and len(r.inputs) == 1 for r in plan.reductions))


def traversal_mode(kernel: TraversalKernel | DenseKernel) -> str:
    """``"csr"`` (one program per group) or ``"rows"`` (one program per block of rows)."""
    if isinstance(kernel, DenseKernel) or kernel.group is None:
        return "rows"
    if kernel.layout is TraversalLayout.COO and _edge_parallel(kernel):
        return "rows"
    return "csr"


def default_config(kernel: TraversalKernel | DenseKernel) -> TritonConfig:
    """The untuned launch: blocks of 32 rows per step of a CSR walk (most groups are
    small), 64 rows per program in ``rows`` mode; Triton's default warps and stages."""
    return TritonConfig(CSR_BLOCK if traversal_mode(kernel) == "csr" else ROWS_BLOCK)


def render_traversal(kernel: TraversalKernel, name: str, config: TritonConfig | None = None) -> list[TritonTraversal]:
    """One traversal kernel as Triton: node-parallel over its group's CSR, or
    edge-parallel with atomics when the lowering chose ``coo`` and the body allows it.
    ``config`` (default :func:`default_config`) sets its launch."""
    title = kernel.describe().splitlines()[0]
    config = config or default_config(kernel)
    if traversal_mode(kernel) == "rows":
        return [_Planner(title, kernel.body, kernel.domain, None, "rows", name, config).render()]
    return [_Planner(title, kernel.body, kernel.domain, kernel.group, "csr", name, config).render()]


def render_dense(kernel: DenseKernel, name: str, config: TritonConfig | None = None) -> list[TritonTraversal]:
    """A dense kernel as Triton: row-parallel over its space. A kernel over GLOBAL that
    sums rows of another space is two launches: the sums (row-parallel, atomics), then
    the per-global work that reads them; ``config`` (default :func:`default_config`)
    sets both launches."""
    title = kernel.describe().splitlines()[0]
    config = config or default_config(kernel)
    body = kernel.body
    row_sums = [n for n in body.nodes if n.op in ROW_REDUCTIONS]
    if not row_sums:
        return [_Planner(title, body, kernel.space, None, "rows", name, config).render()]
    spaces = {body.nodes[n.inputs[0]].type.space for n in row_sums}
    if len(spaces) != 1:
        raise CodegenError(f"row sums over several spaces in one dense kernel ({sorted(map(str, spaces))})", row_sums[0])
    (rows,) = spaces
    direct = {n.id: o.attr("name") for n in row_sums for o in body.nodes if o.op is Op.OUTPUT and o.inputs[0] == n.id}
    scratch = {n.id: f"{name}_sum{n.id}" for n in row_sums if n.id not in direct}
    later = [o.attr("name") for o in body.nodes if o.op is Op.OUTPUT and o.inputs[0] not in direct]
    first = _Planner(title, body, rows, None, "rows", f"{name}_rows", config, skip=frozenset(later))
    # Sums no output holds go to scratch buffers that the second launch reads.
    first.outputs += [Node(-1 - i, Op.OUTPUT, (i,), body.nodes[i].type, (("name", buffer),))
                      for i, buffer in scratch.items()]
    kernels = [first.render()]
    if later:
        second = _Planner(title, body, kernel.space, None, "rows", name, config, external={**direct, **scratch},
                          skip=frozenset(direct.values()))
        kernels.append(second.render())
    return kernels
