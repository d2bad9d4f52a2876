"""C code generation: level-2 traversal kernels become C functions with OpenMP.

The template (``kernels/traversal.c.jinja``) owns the structure: the node-parallel loop
over the groups of a CSR, the sweeps over each group's rows, and where reductions are
initialised, finished and stored. This module plans the sweeps and emits the per-row
expression, one rule per op (``_RULES``), as lines of C the template places.

Which sweep computes which value is planned in :mod:`pigeon.codegen.sweeps`, shared with
the Triton generator.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pigeon.codegen.sweeps import GROUP_VALUES, SweepPlan
from pigeon.codegen.templates import CodegenError as _CodegenError
from pigeon.codegen.templates import render
from pigeon.ir.graph_ir import ETYPE, GLOBAL, NTYPE, NTYPE_ETYPE, Binary, IndexMap, Node, Op, Reduce, Space, Unary
from pigeon.ir.kernel_ir import GemmKernel, TraversalKernel, TraversalLayout



class CodegenError(_CodegenError):
    """A kernel the C templates cannot express, with the op and the layer line."""

    backend = "C"


SCHEDULES = ("static", "dynamic", "guided")


@dataclass(frozen=True)
class CConfig:
    """How one traversal's OpenMP loop hands out its groups (or rows) to threads.

    Args:
        schedule (str): the OpenMP schedule, one of :data:`SCHEDULES`. Default ``"dynamic"``.
        chunk (int): groups (rows when ungrouped) per chunk; 0 leaves it to OpenMP
            (``schedule(static)`` then gives each thread one contiguous block). Default 16.
            A loop over fewer than ``64 * chunk`` groups or rows takes them one at a
            time instead: a traversal grouped by edge type has a hundred groups of very
            different sizes, and chunks of 16 would leave one thread all the work.

    It is rendered into the source, so the library's content hash covers it.
    """

    schedule: str = "dynamic"
    chunk: int = 16

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Expected `schedule` to be one of {list(SCHEDULES)} (got {self.schedule!r})")
        if not isinstance(self.chunk, int) or isinstance(self.chunk, bool) or self.chunk < 0:
            raise ValueError(f"Expected `chunk` to be a non-negative int (got {self.chunk!r})")

    def clause(self, count: str) -> str:
        """The ``schedule(...)`` clause of the ``omp parallel for`` pragma over ``count``
        (a C expression) groups or rows."""
        if not self.chunk:
            return f"schedule({self.schedule})"
        return f"schedule({self.schedule}, {count} < {64 * self.chunk} ? 1 : {self.chunk})"


def default_config(kernel: TraversalKernel) -> CConfig:
    """The untuned config: small dynamic chunks over groups (their sizes vary with the
    degree), one static block per thread over the rows of an ungrouped traversal."""
    return CConfig() if kernel.group is not None else CConfig("static", 0)


@dataclass(frozen=True)
class CKernel:
    """A rendered traversal: its C source and the arguments it takes, in order.

    ``args`` entries are ``("rowptr" | "perm" | "blocks", group map)``, ``("index", map)``,
    ``("index_sorted", map)`` (the map's values in the order of the group's CSR),
    ``("buffer", buffer name)``, ``("partial", width)`` (a zeroed float buffer of
    threads x groups x width) or ``("scratch", width)`` (a float buffer of threads x
    largest group x width). ``sizes[0]`` is the number of groups (rows when
    ungrouped); a split kernel also takes the number of blocks and of threads.
    """

    name: str
    source: str
    args: tuple[tuple[str, object], ...]
    domain: Space
    group: IndexMap | None
    split: bool = False   # blocks of rows over threads (sizes: groups, blocks, threads)
    scratch: bool = False   # a per-thread scratch of rows (sizes: groups, largest group, threads)


# ---- helpers ---------------------------------------------------------------------------

def _strides(shape: tuple[int, ...]) -> list[int]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return list(reversed(strides))


def _index(out_shape: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """Flat index into an operand of ``shape`` broadcast to ``out_shape`` (loop vars i0..)."""
    offset = len(out_shape) - len(shape)
    terms = []
    for d, (size, stride) in enumerate(zip(shape, _strides(shape))):
        if size != 1:
            terms.append(f"i{d + offset}*{stride}" if stride != 1 else f"i{d + offset}")
    return " + ".join(terms) or "0"


def _loops(shape: tuple[int, ...], statement: str) -> list[str]:
    lines = [f"for (int i{d} = 0; i{d} < {size}; i{d}++)" for d, size in enumerate(shape)]
    return lines + [("    " if shape else "") + statement]


def _real(value: float) -> str:
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return f"(real){value!r}"


_UNARY = {
    Unary.NEG: "-({x})", Unary.RELU: "max_({x}, (real)0)", Unary.EXP: "EXP({x})", Unary.LOG: "LOG({x})",
    Unary.SQRT: "SQRT({x})", Unary.RSQRT: "(real)1 / SQRT({x})", Unary.RECIP: "(real)1 / ({x})",
    Unary.SIGMOID: "sigmoid_({x})", Unary.TANH: "TANH({x})", Unary.GELU: "gelu_({x})",
    Unary.GELU_GRAD: "gelu_grad_({x})", Unary.STEP: "(({x}) > 0 ? (real)1 : (real)0)",
    Unary.SQUARE: "({x}) * ({x})",
}
_BINARY = {
    Binary.ADD: "{a} + {b}", Binary.SUB: "{a} - {b}", Binary.MUL: "{a} * {b}", Binary.DIV: "{a} / {b}",
    Binary.MAX: "max_({a}, {b})", Binary.MIN: "min_({a}, {b})", Binary.EQ: "({a} == {b} ? (real)1 : (real)0)",
}


class _Planner(SweepPlan):
    """Plans sweeps and emits C for one traversal kernel."""

    def __init__(self, kernel: TraversalKernel, name: str, config: CConfig):
        super().__init__(kernel.body, kernel.domain, kernel.group)
        self.k = kernel
        self.name = name
        self.config = config
        self.args: list[tuple[str, object]] = []
        self.arg_decls: list[str] = []
        self.ptr: dict[str, str] = {}
        self.index_var: dict[str, str] = {}

    # -- arguments ---------------------------------------------------------------------
    def add_arg(self, kind: str, key, decl: str) -> None:
        self.arg_decls.append(decl.format(i=len(self.args)))
        self.args.append((kind, key))

    def buffer(self, name: str, writable: bool = False) -> str:
        if name not in self.ptr:
            var = f"b{len(self.ptr)}_{re.sub(r'[^0-9A-Za-z]', '_', name)}"
            qualifier = "" if writable else "const "
            self.add_arg("buffer", name, f"{qualifier}real *{var} = ({qualifier}real *)args[{{i}}];")
            self.ptr[name] = var
        return self.ptr[name]

    def index(self, index: IndexMap) -> str:
        if index.name not in self.index_var:
            var = f"idx_{index.name}"
            self.add_arg("index", index, f"const int64_t *{var} = (const int64_t *)args[{{i}}];")
            self.index_var[index.name] = var
        return self.index_var[index.name]

    def row_index(self, index: IndexMap, position: str = "p") -> str:
        """``index`` of the row at ``position``. A grouped kernel reads a copy of the map
        put in its CSR's order once per graph, so the walk reads it sequentially instead
        of at the scattered ``perm[p]``."""
        if self.group is None:
            return f"{self.index(index)}[row]"
        key = f"sorted:{index.name}"
        if key not in self.index_var:
            var = f"sidx_{index.name}"
            self.add_arg("index_sorted", index, f"const int64_t *{var} = (const int64_t *)args[{{i}}];")
            self.index_var[key] = var
        return f"{self.index_var[key]}[{position}]"

    # -- per-row emission ----------------------------------------------------------------
    def ref(self, i: int) -> str:
        return f"a{i}" if self.body.nodes[i].op in GROUP_VALUES else f"v{i}"

    def emit_row(self, node: Node, lines: list[str]) -> None:
        rule = _RULES.get(node.op)
        if rule is None:
            raise CodegenError("not supported inside a traversal", node)
        rule(self, node, lines)

    def kept(self) -> dict[int, tuple[int, int]]:
        """The softmax inputs a later sweep reads again, by node: (offset, width) in a
        row's slot of the kernel's scratch. The sweep that accumulates a softmax's
        statistics stores its input there, and later sweeps read it back instead of
        recomputing it (and gathering what it needs once more)."""
        if self.group is None:
            return {}
        kept, width = {}, 0
        for s in self.softmaxes:
            x = self.body.nodes[s.inputs[0]]
            if self.is_row(x) and x.id not in kept and self.last_sweep() > self.phase[x.id]:
                kept[x.id] = (width, x.type.numel)
                width += x.type.numel
        return kept

    def sweep_lines(self, k: int) -> tuple[list[str], list[str]]:
        roots, row_outputs = self.sweep_roots(k)
        kept = self.kept()
        width = sum(n for _, n in kept.values())
        given = frozenset(i for i in kept if self.phase[i] < k)
        nodes = self.closure(roots, given)
        body: list[str] = self._prefetch(nodes)
        for i in nodes:
            node = self.body.nodes[i]
            if i in given:
                body.append(f"const real *v{i} = scratch_mine + (p - begin) * {width} + {kept[i][0]};")
                continue
            if node.op is Op.INPUT:
                if node.type.space == self.k.domain:
                    body.append(f"const real *v{i} = {self.buffer(node.attr('name'))} + row * {node.type.numel};")
            elif node.op is not Op.CONST:
                self.emit_row(node, body)
        for r in self.reductions:
            if self.phase[r.id] == k:
                body += _accumulate(r, self.ref(r.inputs[0]))
        for s in self.softmaxes:
            if self.stats_phase(s) == k:
                n, x = s.type.numel, self.ref(s.inputs[0])
                body += [f"for (int j = 0; j < {n}; j++) {{",
                         f"    real t = {x}[j];",
                         f"    if (t > m{s.id}[j]) {{ s{s.id}[j] = s{s.id}[j] * EXP(m{s.id}[j] - t) + (real)1; m{s.id}[j] = t; }}",
                         f"    else {{ s{s.id}[j] += EXP(t - m{s.id}[j]); }}",
                         "}"]
        for i, (offset, n) in kept.items():
            if self.phase[i] == k:
                body.append(f"for (int j = 0; j < {n}; j++) scratch_mine[(p - begin) * {width} + {offset} + j] = v{i}[j];")
        for o in row_outputs:
            out = self.buffer(o.attr("name"), writable=True)
            n = o.type.numel
            body.append(f"for (int j = 0; j < {n}; j++) {out}[row * {n} + j] = {self.ref(o.inputs[0])}[j];")
        finish: list[str] = []
        for r in self.reductions:
            if self.phase[r.id] == k:
                finish += _finish(r, len(r.inputs) > 1)
        return body, finish

    def _prefetch(self, nodes: list[int]) -> list[str]:
        """Prefetch the rows this sweep gathers through an index map, ``PREFETCH_AHEAD``
        rows ahead of the one being processed: a group's source rows are scattered over
        memory, and each gathered row would otherwise be a cache miss the loop waits for."""
        if self.group is None:
            return []
        lines = []
        for i in nodes:
            node = self.body.nodes[i]
            if node.op is not Op.GATHER or node.attr("index") == self.group:
                continue
            source = self.body.nodes[node.inputs[0]]
            if source.op is not Op.INPUT:
                continue
            ahead = self.row_index(node.attr("index"), f"p + {PREFETCH_AHEAD}")
            base = f"{self.buffer(source.attr('name'))} + {ahead} * {node.type.numel}"
            lines.append(f"    for (int c = 0; c < (int)({node.type.numel} * sizeof(real)); c += 64) "
                         f"__builtin_prefetch((const char *)({base}) + c);")
        if not lines:
            return []
        # Past the group's end are the next groups' rows, which this thread likely takes next.
        return [f"if (p + {PREFETCH_AHEAD} < rowptr[num_groups]) {{", *lines, "}"]

    # -- whole kernel --------------------------------------------------------------------
    def render(self) -> CKernel:
        grouped = self.group is not None
        if grouped:
            self.add_arg("rowptr", self.group, "const int64_t *rowptr = (const int64_t *)args[{i}];")
            self.add_arg("perm", self.group, "const int64_t *perm = (const int64_t *)args[{i}];")
        elif self.reductions or self.softmaxes or any(n.op is Op.DEGREE for n in self.body.nodes):
            raise CodegenError("a traversal with reductions needs a group map")
        top = [f"const real v{n.id}[1] = {{{_real(n.attr('value'))}}};" for n in self.body.nodes if n.op is Op.CONST]
        for n in self.body.nodes:
            if n.op is Op.INPUT and n.type.space == GLOBAL:
                top.append(f"const real *v{n.id} = {self.buffer(n.attr('name'))};")
        last = self.last_sweep()
        sweeps = []
        for k in range(last + 1):
            body, finish = self.sweep_lines(k)
            sweeps.append({"body": body, "finish": finish})
        group_init: list[str] = []
        for r in self.reductions:
            init = self.buffer(self.body.nodes[r.inputs[1]].attr("name")) if len(r.inputs) > 1 else None
            group_init += _init(r, init)
        for d in self.body.nodes:
            if d.op is Op.DEGREE:
                group_init.append(f"real a{d.id}[1] = {{(real)count}};")
        kept = self.kept()
        if kept:
            width = sum(n for _, n in kept.values())
            self.add_arg("scratch", width, "real *scratch = (real *)args[{i}];")
            group_init.append(f"real *scratch_mine = scratch + (int64_t)omp_get_thread_num() * sizes[1] * {width};")
        for s in self.softmaxes:
            n = s.type.numel
            group_init += [f"real m{s.id}[{n}], s{s.id}[{n}];",
                           f"for (int j = 0; j < {n}; j++) {{ m{s.id}[j] = -INFINITY; s{s.id}[j] = 0; }}"]
        group_store = []
        for o in self.outputs:
            source = self.body.nodes[o.inputs[0]]
            if source.op in GROUP_VALUES:
                out, n = self.buffer(o.attr("name"), writable=True), o.type.numel
                group_store.append(f"for (int j = 0; j < {n}; j++) {out}[g * {n} + j] = a{source.id}[j];")
            elif not self.is_row(source):
                raise CodegenError(f"output {o.attr('name')} is neither per-row nor a reduction", o)
        split = self._split() if grouped else None
        title = self.k.describe().splitlines()[0]
        source = render("traversal.c.jinja", title=title, name=self.name, arg_decls=self.arg_decls + top,
                        grouped=grouped, sweeps=sweeps, group_init=group_init, group_store=group_store,
                        schedule=self.config.clause("num_groups" if grouped else "num_rows"), split=split,
                        threads="num_threads(sizes[2]) " if kept else "")
        return CKernel(self.name, source, tuple(self.args), self.k.domain, self.group, split is not None,
                       bool(kept))

    def _split(self) -> dict | None:
        """The split form's lines, for a one-sweep traversal of sums into a few groups
        (edge types, node types); None for any other."""
        if self.group.target not in SPLIT_SPACES or self.last_sweep() != 0 or self.softmaxes:
            return None
        if any(n.op is Op.DEGREE for n in self.body.nodes) or any(r.attr("reduce") is not Reduce.SUM
                                                                 for r in self.reductions):
            return None
        offsets, width = {}, 0
        for r in self.reductions:
            offsets[r.id], width = width, width + r.type.numel
        self.add_arg("blocks", self.group, "const int64_t *blocks = (const int64_t *)args[{i}];")
        self.add_arg("partial", width, "real *partial = (real *)args[{i}];")
        init = [f"real a{r.id}[{r.type.numel}] = {{0}};" for r in self.reductions]
        add = [f"for (int j = 0; j < {r.type.numel}; j++) mine[g * {width} + {offsets[r.id]} + j] += a{r.id}[j];"
               for r in self.reductions]
        store = []
        for o in self.outputs:
            r = self.body.nodes[o.inputs[0]]
            if r.op is not Op.AGGREGATE:
                continue
            n, out = r.type.numel, self.buffer(o.attr("name"), writable=True)
            start = f"{self.buffer(self.body.nodes[r.inputs[1]].attr('name'))}[g * {n} + j]" if len(r.inputs) > 1 else "0"
            store.append(f"for (int j = 0; j < {n}; j++) {{ real t = {start}; "
                         f"for (int64_t th = 0; th < threads; th++) t += partial[(th * num_groups + g) * {width} + {offsets[r.id]} + j]; "
                         f"{out}[g * {n} + j] = t; }}")
        return {"width": width, "init": init, "add": add, "store": store}


def _init(r: Node, init: str | None) -> list[str]:
    n, how = r.type.numel, r.attr("reduce")
    lines = [f"real a{r.id}[{n}];"]
    if init is not None:
        lines.append(f"for (int j = 0; j < {n}; j++) a{r.id}[j] = {init}[g * {n} + j];")
    else:
        start = {Reduce.SUM: "0", Reduce.MEAN: "0", Reduce.MAX: "-INFINITY", Reduce.MIN: "INFINITY"}[how]
        lines.append(f"for (int j = 0; j < {n}; j++) a{r.id}[j] = {start};")
    return lines


def _accumulate(r: Node, x: str) -> list[str]:
    n, how = r.type.numel, r.attr("reduce")
    update = {
        Reduce.SUM: f"a{r.id}[j] += {x}[j];", Reduce.MEAN: f"a{r.id}[j] += {x}[j];",
        Reduce.MAX: f"a{r.id}[j] = max_(a{r.id}[j], {x}[j]);", Reduce.MIN: f"a{r.id}[j] = min_(a{r.id}[j], {x}[j]);",
    }[how]
    return [f"for (int j = 0; j < {n}; j++) {update}"]


def _finish(r: Node, has_init: bool) -> list[str]:
    n, how = r.type.numel, r.attr("reduce")
    total = "(count + 1)" if has_init else "count"
    if how is Reduce.MEAN:
        return [f"if ({total} > 0) for (int j = 0; j < {n}; j++) a{r.id}[j] /= (real){total};"]
    if how in (Reduce.MAX, Reduce.MIN) and not has_init:
        return [f"if (count == 0) for (int j = 0; j < {n}; j++) a{r.id}[j] = 0;"]
    return []


# ---- lowering rules: one per op ------------------------------------------------------------

def _gather(pl: _Planner, node: Node, lines: list[str]) -> None:
    index = node.attr("index")
    source = pl.body.nodes[node.inputs[0]]
    n = node.type.numel
    if source.op in GROUP_VALUES:
        lines.append(f"const real *v{node.id} = a{source.id};")  # this group's own reduction
        return
    if source.op is not Op.INPUT:
        raise CodegenError("gathers read buffers or this pass's own reductions", node)
    row = "g" if pl.group is not None and index == pl.group else pl.row_index(index)
    lines.append(f"const real *v{node.id} = {pl.buffer(source.attr('name'))} + {row} * {n};")


def _elementwise(pl: _Planner, node: Node, lines: list[str]) -> None:
    shape = node.type.shape
    ops = [pl.body.nodes[i] for i in node.inputs]
    args = [f"{pl.ref(o.id)}[{_index(shape, o.type.shape)}]" for o in ops]
    if node.op is Op.UNARY:
        fn = node.attr("fn")
        if fn is Unary.LEAKY_RELU:
            expr = f"({args[0]} > 0 ? {args[0]} : {_real(node.attr('alpha'))} * {args[0]})"
        else:
            expr = _UNARY[fn].format(x=args[0])
    else:
        expr = _BINARY[node.attr("fn")].format(a=args[0], b=args[1])
    lines.append(f"real v{node.id}[{node.type.numel}];")
    lines += _loops(shape, f"v{node.id}[{_index(shape, shape)}] = {expr};")


SPLIT_SPACES = (ETYPE, NTYPE, NTYPE_ETYPE, GLOBAL)   # group spaces of few, uneven groups
PREFETCH_AHEAD = 8   # rows of a group between a row's prefetch and its use
_LANES = 8   # partial sums of a long reduction: one AVX register of floats


def _lane_sum(k: int, size: int, term: str, store: str) -> str:
    """A block that sums ``term`` over ``i{k} < size`` and runs ``store`` (which reads
    the sum as ``t``).

    A long sum keeps ``_LANES`` partial sums, lane ``l`` adding the terms ``l``,
    ``l + _LANES``, ...: the lanes are independent, so the compiler vectorises them
    without reassociating floating-point adds (which it may not do without
    ``-ffast-math``), where one running sum would be a chain of dependent adds.
    """
    if size < 2 * _LANES:
        return f"{{ real t = 0; for (int i{k} = 0; i{k} < {size}; i{k}++) t += {term}; {store} }}"
    full = size - size % _LANES
    return (f"{{ real lane[{_LANES}] = {{0}}; "
            f"for (int b_ = 0; b_ < {full}; b_ += {_LANES}) for (int l_ = 0; l_ < {_LANES}; l_++) "
            f"{{ const int i{k} = b_ + l_; lane[l_] += {term}; }} "
            f"real t = 0; for (int l_ = 0; l_ < {_LANES}; l_++) t += lane[l_]; "
            f"for (int i{k} = {full}; i{k} < {size}; i{k}++) t += {term}; {store} }}")


def _sum_over_last(node: Node, size: int, term: str) -> list[str]:
    """``v[...] = sum over i{k} < size of term``, ``term`` indexed with the loop variables."""
    k = len(node.type.shape)
    out = _index(node.type.shape, node.type.shape)
    return [f"real v{node.id}[{node.type.numel}];"] + _loops(
        node.type.shape, _lane_sum(k, size, term, f"v{node.id}[{out}] = t;"))


def _dot(pl: _Planner, node: Node, lines: list[str]) -> None:
    a, b = (pl.body.nodes[i] for i in node.inputs)
    full = node.type.shape + (a.type.shape[-1],)
    term = f"{pl.ref(a.id)}[{_index(full, a.type.shape)}] * {pl.ref(b.id)}[{_index(full, b.type.shape)}]"
    lines += _sum_over_last(node, a.type.shape[-1], term)


def _sum_last(pl: _Planner, node: Node, lines: list[str]) -> None:
    x = pl.body.nodes[node.inputs[0]]
    lines += _sum_over_last(node, x.type.shape[-1], f"{pl.ref(x.id)}[{_index(x.type.shape, x.type.shape)}]")


def _sum_dims(pl: _Planner, node: Node, lines: list[str]) -> None:
    x = pl.body.nodes[node.inputs[0]]
    out = node.type
    lines.append(f"real v{node.id}[{out.numel}];")
    lines.append(f"for (int j = 0; j < {out.numel}; j++) v{node.id}[j] = 0;")
    # Walk the operand; each element adds into the output element its kept dims select.
    target = f"v{node.id}[{_index(x.type.shape, out.shape)}]"
    term = f"{pl.ref(x.id)}[{_index(x.type.shape, x.type.shape)}]"
    if out.shape[-1] == 1 and x.type.shape[-1] > 1:   # the last dim is summed: lanes
        last = len(x.type.shape) - 1
        lines += _loops(x.type.shape[:-1], _lane_sum(last, x.type.shape[-1], term, f"{target} += t;"))
    else:
        lines += _loops(x.type.shape, f"{target} += {term};")


def _expand_last(pl: _Planner, node: Node, lines: list[str]) -> None:
    x = pl.body.nodes[node.inputs[0]]
    lines.append(f"real v{node.id}[{node.type.numel}];")
    lines += _loops(node.type.shape, f"v{node.id}[{_index(node.type.shape, node.type.shape)}] = "
                    f"{pl.ref(x.id)}[{_index(node.type.shape[:-1], x.type.shape)}];")


def _reshape(pl: _Planner, node: Node, lines: list[str]) -> None:
    lines.append(f"const real *v{node.id} = {pl.ref(node.inputs[0])};")


def _last_dim_copy(pl: _Planner, node: Node, lines: list[str]) -> None:
    """concat / slice_last / pad_last: copies along the last dim."""
    shape = node.type.shape
    lead = math.prod(shape[:-1])
    width = shape[-1]
    lines.append(f"real v{node.id}[{node.type.numel}];")
    if node.op is Op.CONCAT:
        start = 0
        for i in node.inputs:
            w = pl.body.nodes[i].type.shape[-1]
            lines.append(f"for (int r = 0; r < {lead}; r++) for (int c = 0; c < {w}; c++) "
                         f"v{node.id}[r * {width} + {start} + c] = {pl.ref(i)}[r * {w} + c];")
            start += w
        return
    x = pl.body.nodes[node.inputs[0]]
    xw = x.type.shape[-1]
    if node.op is Op.SLICE_LAST:
        lines.append(f"for (int r = 0; r < {lead}; r++) for (int c = 0; c < {width}; c++) "
                     f"v{node.id}[r * {width} + c] = {pl.ref(x.id)}[r * {xw} + {node.attr('start')} + c];")
        return
    before = node.attr("before")
    lines.append(f"for (int j = 0; j < {node.type.numel}; j++) v{node.id}[j] = 0;")
    lines.append(f"for (int r = 0; r < {lead}; r++) for (int c = 0; c < {xw}; c++) "
                 f"v{node.id}[r * {width} + {before} + c] = {pl.ref(x.id)}[r * {xw} + c];")


def _softmax(pl: _Planner, node: Node, lines: list[str]) -> None:
    x = pl.ref(node.inputs[0])
    n = node.type.numel
    lines.append(f"real v{node.id}[{n}];")
    lines.append(f"for (int j = 0; j < {n}; j++) v{node.id}[j] = EXP({x}[j] - m{node.id}[j]) / s{node.id}[j];")


_RULES = {
    Op.GATHER: _gather,
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
}


def render_traversal(kernel: TraversalKernel, name: str, config: CConfig | None = None) -> CKernel:
    """Plan and render one traversal kernel as a C function called ``name``; ``config``
    (default :func:`default_config`) sets its OpenMP schedule. The C backend walks the
    CSR of a traversal's group: an edge-parallel (COO) traversal is an error."""
    if kernel.layout is TraversalLayout.COO:
        raise CodegenError(f"`{kernel.describe().splitlines()[0]}` is edge-parallel (COO), and the C backend "
                           "has only node-parallel traversals: lower with layout='csr'")
    return _Planner(kernel, name, config or default_config(kernel)).render()


# ---- segmented GEMMs ---------------------------------------------------------------------

GEMM_ROW_TILE = 4     # rows per register tile of the forward micro-kernel
GEMM_COL_TILE = 32    # output columns per tile: RB x NB accumulators fill the AVX2 registers
GEMM_BLOCK_ROWS = 64  # rows per block a thread takes (one type's rows in segment order)


@dataclass(frozen=True)
class CGemm:
    """A rendered segmented GEMM: its C source and the widths it was specialised for.

    Called with ``args = (A, rows or NULL, W or B, blocks, out, place or NULL)`` and
    ``sizes = (number of blocks, number of types, threads)``; see ``kernels/gemm.c.jinja``.
    """

    name: str
    source: str
    k: int
    n: int
    weight_grad: bool


def gemm_supported(kernel: GemmKernel, a_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether the C template takes this GEMM: typed, one vector per row, one matrix per
    type (the batched, per-head form stays on torch)."""
    if kernel.segment is None or kernel.batched or len(a_shape) != 1:
        return False
    return len(w_shape) == 1 if kernel.weight_grad else len(w_shape) == 2


def render_gemm(kernel: GemmKernel, name: str, k: int, n: int) -> CGemm:
    """Render one segmented GEMM as a C function ``name`` for A rows of width ``k`` and
    outputs of width ``n`` (the weight, transposed by the caller if ``transpose_w``, is
    ``[types, k, n]``)."""
    tiles = [(start, min(GEMM_COL_TILE, n - start)) for start in range(0, n, GEMM_COL_TILE)]
    k_tile = next(t for t in (4, 2, 1) if k % t == 0)
    source = render("gemm.c.jinja", title=kernel.describe(), name=name, K=k, N=n, RB=GEMM_ROW_TILE,
                    KB=k_tile, tiles=tiles, weight_grad=kernel.weight_grad)
    return CGemm(name, source, k, n, kernel.weight_grad)


def render_library(kernels: list[CKernel], real: str, version: str) -> str:
    """The whole C file for one program's traversal kernels."""
    return render("library.c.jinja", kernels=[k.source for k in kernels], real=real, version=version)
