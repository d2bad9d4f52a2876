"""C code generation: level-2 traversal kernels become C functions with OpenMP.

The template (``kernels/traversal.c.jinja``) owns the structure: the node-parallel loop
over the groups of a CSR, the sweeps over each group's rows, and where reductions are
started, finished and stored. This module plans what each sweep computes and fills the
statements of :mod:`pigeon.codegen.c_text`, one rule per op (``_RULES``), which the
template places.

What the C and Triton generators share is described once elsewhere: which sweep computes
which value (:mod:`pigeon.codegen.sweeps`); reductions, the online softmax and the
kernel arguments (:mod:`pigeon.codegen.rules`). Segmented GEMMs are
:mod:`pigeon.codegen.c_gemm`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pigeon.codegen import c_text
from pigeon.codegen.c_text import BINARY, NAME, STMT, UNARY, lines
from pigeon.codegen.rules import (ONLINE_SOFTMAX, REDUCTIONS, ArgKind, KernelArg, OutputKind, finish, spell)
from pigeon.codegen.sweeps import GROUP_VALUES, SweepPlan
from pigeon.codegen.templates import CodegenError as _CodegenError
from pigeon.codegen.templates import render
from pigeon.ir.graph_ir import ETYPE, GLOBAL, NTYPE, NTYPE_ETYPE, Binary, IndexMap, Node, Op, Space, Unary
from pigeon.ir.kernel_ir import TraversalKernel, TraversalLayout


class CodegenError(_CodegenError):
    """A kernel the C templates cannot express, with the op and the layer line."""

    backend = "C"


SCHEDULES = ("static", "dynamic", "guided")
SPLIT_SPACES = (ETYPE, NTYPE, NTYPE_ETYPE, GLOBAL)   # group spaces of few, uneven groups
PREFETCH_AHEAD = 8   # rows of a group between a row's prefetch and its use
KEEP_WIDTH = 16   # per-row values this narrow are kept in scratch for later sweeps (_Planner.kept)


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
            return c_text.SCHEDULE.format(schedule=self.schedule)
        return c_text.SCHEDULE_CHUNKS.format(schedule=self.schedule, count=count, few=64 * self.chunk,
                                             chunk=self.chunk)


def default_config(kernel: TraversalKernel) -> CConfig:
    """The untuned config: small dynamic chunks over groups (their sizes vary with the
    degree), one static block per thread over the rows of an ungrouped traversal."""
    return CConfig() if kernel.group is not None else CConfig("static", 0)


@dataclass(frozen=True)
class CKernel:
    """A rendered traversal: its C source and the arguments it takes, in order
    (``args[i]`` of the C function; :class:`~pigeon.codegen.rules.KernelArg`).

    ``sizes[0]`` is the number of groups (rows when ungrouped); a split kernel also takes
    the number of blocks and of threads, a kernel with a scratch the largest group's rows
    and the number of threads.
    """

    name: str
    source: str
    args: tuple[KernelArg, ...]
    domain: Space
    group: IndexMap | None
    split: bool = False   # blocks of rows over threads (sizes: groups, blocks, threads)
    scratch: bool = False   # a per-thread scratch of rows (sizes: groups, largest group, threads)


def _label(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "_", name)


class _Planner(SweepPlan):
    """Plans sweeps and fills the C statements of one traversal kernel."""

    def __init__(self, kernel: TraversalKernel, name: str, config: CConfig, narrow: bool = False):
        super().__init__(kernel.body, kernel.domain, kernel.group)
        self.k = kernel
        self.name = name
        self.config = config
        self.narrow = narrow   # buffers hold a narrower type than `real`: rows are converted as read
        self.args: list[KernelArg] = []
        self.arg_decls: list[str] = []
        self.ptr: dict[str, str] = {}         # buffers read or written, by name
        self.index_var: dict[str, str] = {}
        self._kept: dict[int, tuple[int, int]] | None = None

    # -- arguments ---------------------------------------------------------------------
    def declare(self, arg: KernelArg, var: str) -> str:
        self.arg_decls.append(c_text.ARG.format(type=c_text.ARG_TYPE[arg.kind], var=var, i=len(self.args)))
        self.args.append(arg)
        return var

    def graph_array(self, kind: ArgKind, index: IndexMap) -> str:
        return self.declare(KernelArg(kind, index), c_text.ARG_VAR[kind].format(label=_label(index.name)))

    def buffer(self, name: str) -> str:
        if name not in self.ptr:
            var = c_text.ARG_VAR[ArgKind.BUFFER].format(n=len(self.ptr), label=_label(name))
            self.ptr[name] = self.declare(KernelArg(ArgKind.BUFFER, name), var)
        return self.ptr[name]

    def output(self, node: Node, kind: OutputKind) -> str:
        name = node.attr("name")
        if name not in self.ptr:
            rows = self.group.target if kind is OutputKind.GROUP else self.domain
            var = c_text.ARG_VAR[ArgKind.OUTPUT].format(n=len(self.ptr), label=_label(name))
            arg = KernelArg(ArgKind.OUTPUT, name, kind, rows, node.type.shape)
            self.ptr[name] = self.declare(arg, var)
        return self.ptr[name]

    def row_index(self, index: IndexMap, position: str = "p") -> str:
        """``index`` of the row at ``position``. A grouped kernel reads a copy of the map
        put in its CSR's order once per graph, so the walk reads it sequentially instead
        of at the scattered ``perm[p]``."""
        if self.group is None:
            key, kind, position = index.name, ArgKind.INDEX, "row"
        else:
            key, kind = f"sorted:{index.name}", ArgKind.INDEX_SORTED
        if key not in self.index_var:
            self.index_var[key] = self.graph_array(kind, index)
        return NAME["at"].format(var=self.index_var[key], position=position)

    def read_row(self, i: int, ptr: str, row: str, n: int) -> list[str]:
        """Row ``row`` of a buffer as value ``v{i}``: read in place when the buffer holds
        ``real``, converted into registers when it holds a narrower type."""
        return lines("row_load" if self.narrow else "row", id=i, ptr=ptr, row=row, n=n)

    # -- per-row values ------------------------------------------------------------------
    def ref(self, i: int) -> str:
        kind = "group_value" if self.body.nodes[i].op in GROUP_VALUES else "row_value"
        return NAME[kind].format(id=i)

    def emit_row(self, node: Node, out: list[str]) -> None:
        rule = _RULES.get(node.op)
        if rule is None:
            raise CodegenError("not supported inside a traversal", node)
        rule(self, node, out)

    def kept(self) -> dict[int, tuple[int, int]]:
        """Per-row values a later sweep reads back from this thread's scratch instead of
        recomputing them, by node: (offset, width) in a row's slot of the scratch.

        A softmax's input is always kept: the sweep that accumulates its statistics stores
        it, and every later sweep reads it. Beyond that, walking back from what each later
        sweep computes, the first value of an earlier sweep at most :data:`KEEP_WIDTH`
        wide is kept, and what it needs is not recomputed: a backward softmax's third
        sweep then reads a few numbers per row where it gathered a source row again and
        redid its dot products. What costs nothing to read again is never kept
        (:meth:`_free`)."""
        if self.group is None:
            return {}
        if self._kept is not None:
            return self._kept
        kept, width = {}, 0

        def keep(i: int) -> None:
            nonlocal width
            kept[i] = (width, self.body.nodes[i].type.numel)
            width += self.body.nodes[i].type.numel

        for s in self.softmaxes:
            x = self.body.nodes[s.inputs[0]]
            if self.is_row(x) and x.id not in kept and self.last_sweep() > self.phase[x.id]:
                keep(x.id)
        for k in range(1, self.last_sweep() + 1):
            stack, seen = list(self.sweep_roots(k)[0]), set()
            while stack:
                i = stack.pop()
                node = self.body.nodes[i]
                if i in seen or i in kept or not self.is_row(node) or self._free(node):
                    continue
                seen.add(i)
                if self.phase[i] < k and node.type.numel <= KEEP_WIDTH:
                    keep(i)
                    continue
                stack.extend(node.inputs[:1] if node.op is Op.SEGMENT_SOFTMAX else node.inputs)
        self._kept = kept
        return kept

    def _free(self, node: Node) -> bool:
        """A value that costs nothing to compute again: a group's own row of an input, or
        a value of the group (a finished reduction) read at a row."""
        if node.op is not Op.GATHER:
            return False
        source = self.body.nodes[node.inputs[0]]
        return source.op in GROUP_VALUES or (source.op is Op.INPUT and node.attr("index") == self.group)

    def sweep_lines(self, k: int) -> tuple[list[str], list[str]]:
        """Sweep ``k``'s statements per row, and those after it that finish its reductions."""
        roots, row_outputs = self.sweep_roots(k)
        kept = self.kept()
        roots = roots + [i for i in kept if self.phase[i] == k]
        width = sum(n for _, n in kept.values())
        given = frozenset(i for i in kept if self.phase[i] < k)
        nodes = self.closure(roots, given)
        body: list[str] = self._prefetch(nodes)
        for i in nodes:
            node = self.body.nodes[i]
            if i in given:
                body += lines("kept", id=i, width=width, offset=kept[i][0])
            elif node.op is Op.INPUT:
                if node.type.space == self.k.domain:
                    body += self.read_row(i, self.buffer(node.attr("name")), "row", node.type.numel)
            elif node.op is not Op.CONST:
                self.emit_row(node, body)
        for r in self.reductions:
            if self.phase[r.id] == k:
                body += self._reduction_step(r)
        for s in self.softmaxes:
            if self.stats_phase(s) == k:
                body += self._softmax_step(s)
        for i, (offset, n) in kept.items():
            if self.phase[i] == k:
                body += lines("keep", id=i, n=n, width=width, offset=offset)
        for o in row_outputs:
            body += lines("store_row", ptr=self.output(o, OutputKind.ROW), n=o.type.numel, src=self.ref(o.inputs[0]))
        finished: list[str] = []
        for r in self.reductions:
            if self.phase[r.id] == k:
                finished += self._reduction_finish(r)
        return body, finished

    def _prefetch(self, nodes: list[int]) -> list[str]:
        """Prefetch the rows this sweep gathers through an index map, and its own rows
        (read at ``perm[p]``), ``PREFETCH_AHEAD`` rows ahead of the one being processed: a
        group's source rows are scattered over memory, and so are its own rows when the
        group is not the order they are stored in (the edges of a (source, edge type)
        pair); each would otherwise be a cache miss the loop waits for."""
        if self.group is None:
            return []
        out = []
        for i in nodes:
            node = self.body.nodes[i]
            if node.op is Op.INPUT and node.type.space == self.k.domain:
                # the walk's own rows, in the group's order: ``perm`` scatters them too
                ahead = NAME["perm_ahead"].format(ahead=PREFETCH_AHEAD)
                out += lines("prefetch", ptr=self.buffer(node.attr("name")), row=ahead, n=node.type.numel)
                continue
            if node.op is not Op.GATHER or node.attr("index") == self.group:
                continue
            source = self.body.nodes[node.inputs[0]]
            if source.op is not Op.INPUT:
                continue
            ahead = self.row_index(node.attr("index"), NAME["ahead"].format(ahead=PREFETCH_AHEAD))
            out += lines("prefetch", ptr=self.buffer(source.attr("name")), row=ahead, n=node.type.numel)
        if not out:
            return []
        return [*lines("prefetch_if", ahead=PREFETCH_AHEAD), *out, *lines("end")]

    # -- reductions and softmax (rules.REDUCTIONS, rules.ONLINE_SOFTMAX) --------------------
    def _reduction_start(self, r: Node) -> list[str]:
        n = r.type.numel
        out = lines("reduce_decl", id=r.id, n=n)
        if len(r.inputs) > 1:   # a self message: the group's first row
            init = self.buffer(self.body.nodes[r.inputs[1]].attr("name"))
            return out + lines("reduce_self", id=r.id, n=n, ptr=init)
        return out + lines("reduce_start", id=r.id, n=n, start=c_text.real(REDUCTIONS[r.attr("reduce")].start))

    def _reduction_step(self, r: Node) -> list[str]:
        acc = NAME["element"].format(var=self.ref(r.id))
        x = NAME["element"].format(var=self.ref(r.inputs[0]))
        combined = BINARY[REDUCTIONS[r.attr("reduce")].combine].format(a=acc, b=x)
        return lines("reduce_step", id=r.id, n=r.type.numel, combined=combined)

    def _reduction_finish(self, r: Node) -> list[str]:
        rule, out = finish(r.attr("reduce"), len(r.inputs) > 1), []
        if rule.divide:
            out += lines("reduce_mean", id=r.id, n=r.type.numel, rows=c_text.group_rows(rule.extra))
        if rule.empty is not None:
            out += lines("reduce_empty", id=r.id, n=r.type.numel, empty=c_text.real(rule.empty))
        return out

    def softmax_names(self, s: Node) -> dict[str, str]:
        return {"m": NAME["element"].format(var=NAME["running_max"].format(id=s.id)),
                "s": NAME["element"].format(var=NAME["running_sum"].format(id=s.id))}

    def _softmax_step(self, s: Node) -> list[str]:
        names = self.softmax_names(s)
        rescale = spell(ONLINE_SOFTMAX.rescale, UNARY, BINARY, {**names, "t": "t"})   # a new maximum, t
        term = spell(ONLINE_SOFTMAX.term, UNARY, BINARY, {"x": "t", "t": names["m"]})   # the maximum kept
        return lines("softmax_step", id=s.id, n=s.type.numel, x=self.ref(s.inputs[0]), rescale=rescale, term=term)

    # -- whole kernel --------------------------------------------------------------------
    def render(self) -> CKernel:
        grouped = self.group is not None
        if grouped:
            self.graph_array(ArgKind.ROWPTR, self.group)
            self.graph_array(ArgKind.PERM, self.group)
        elif self.reductions or self.softmaxes or any(n.op is Op.DEGREE for n in self.body.nodes):
            raise CodegenError("a traversal with reductions needs a group map")
        top = [line for n in self.body.nodes if n.op is Op.CONST
               for line in lines("const", id=n.id, value=c_text.real(n.attr("value")))]
        for n in self.body.nodes:
            if n.op is Op.INPUT and n.type.space == GLOBAL:
                ptr = self.buffer(n.attr("name"))
                top += self.read_row(n.id, ptr, "0", n.type.numel) if self.narrow else lines("alias", id=n.id, src=ptr)
        sweeps = []
        for k in range(self.last_sweep() + 1):
            body, finished = self.sweep_lines(k)
            sweeps.append({"body": body, "finish": finished})
        group_init: list[str] = []
        for r in self.reductions:
            group_init += self._reduction_start(r)
        for d in self.body.nodes:
            if d.op is Op.DEGREE:
                group_init += lines("degree", id=d.id)
        kept = self.kept()
        if kept:
            width = sum(n for _, n in kept.values())
            self.declare(KernelArg(ArgKind.SCRATCH, width), c_text.ARG_VAR[ArgKind.SCRATCH])
            group_init += lines("scratch_mine", width=width)
        for s in self.softmaxes:
            group_init += lines("softmax_start", id=s.id, n=s.type.numel,
                                max_start=c_text.real(ONLINE_SOFTMAX.maximum.start),
                                sum_start=c_text.real(ONLINE_SOFTMAX.total.start))
        group_store = []
        for o in self.outputs:
            source = self.body.nodes[o.inputs[0]]
            if source.op in GROUP_VALUES:
                group_store += lines("store_group", ptr=self.output(o, OutputKind.GROUP), n=o.type.numel, id=source.id)
            elif not self.is_row(source):
                raise CodegenError(f"output {o.attr('name')} is neither per-row nor a reduction", o)
        split = self._split() if grouped else None
        title = self.k.describe().splitlines()[0]
        source = render("traversal.c.jinja", title=title, name=self.name, arg_decls=self.arg_decls + top,
                        grouped=grouped, sweeps=sweeps, group_init=group_init, group_store=group_store,
                        schedule=self.config.clause("num_groups" if grouped else "num_rows"), split=split,
                        scratch=bool(kept))
        return CKernel(self.name, source, tuple(self.args), self.k.domain, self.group, split is not None,
                       bool(kept))

    def _split(self) -> dict | None:
        """The split form's statements, for a one-sweep traversal of sums into a few
        groups (edge types, node types); None for any other."""
        if self.group.target not in SPLIT_SPACES or self.last_sweep() != 0 or self.softmaxes:
            return None
        if any(n.op is Op.DEGREE for n in self.body.nodes):
            return None
        # The slices are added in any order and need no finishing: sums only.
        if any(not REDUCTIONS[r.attr("reduce")].scatters or finish(r.attr("reduce"), False).needed
               for r in self.reductions):
            return None
        offsets, width = {}, 0
        for r in self.reductions:
            offsets[r.id], width = width, width + r.type.numel
        self.graph_array(ArgKind.BLOCKS, self.group)
        self.declare(KernelArg(ArgKind.PARTIAL, width), c_text.ARG_VAR[ArgKind.PARTIAL])
        init = [line for r in self.reductions for line in lines("split_start", id=r.id, n=r.type.numel)]
        add = [line for r in self.reductions
               for line in lines("split_add", id=r.id, n=r.type.numel, width=width, offset=offsets[r.id])]
        store = []
        for o in self.outputs:
            r = self.body.nodes[o.inputs[0]]
            if r.op is not Op.AGGREGATE:
                continue
            n, ptr = r.type.numel, self.output(o, OutputKind.GROUP)
            if len(r.inputs) > 1:
                start = NAME["group_element"].format(ptr=self.buffer(self.body.nodes[r.inputs[1]].attr("name")), n=n)
            else:
                start = c_text.real(REDUCTIONS[r.attr("reduce")].start)
            store += lines("split_store", n=n, start=start, width=width, offset=offsets[r.id], ptr=ptr)
        return {"width": width, "init": init, "add": add, "store": store}


# ---- rules: one per op ----------------------------------------------------------------------

def _at(pl: _Planner, i: int, out_shape: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """Node ``i``'s element at the loop position of ``out_shape`` (broadcast from ``shape``)."""
    return NAME["at"].format(var=pl.ref(i), position=c_text.index(out_shape, shape))


def _gather(pl: _Planner, node: Node, out: list[str]) -> None:
    index = node.attr("index")
    source = pl.body.nodes[node.inputs[0]]
    if source.op in GROUP_VALUES:   # this group's own reduction
        out += lines("alias", id=node.id, src=pl.ref(source.id))
        return
    if source.op is not Op.INPUT:
        raise CodegenError("gathers read buffers or this pass's own reductions", node)
    row = "g" if pl.group is not None and index == pl.group else pl.row_index(index)
    out += pl.read_row(node.id, pl.buffer(source.attr("name")), row, node.type.numel)


def _elementwise(pl: _Planner, node: Node, out: list[str]) -> None:
    shape = node.type.shape
    args = [_at(pl, i, shape, pl.body.nodes[i].type.shape) for i in node.inputs]
    if node.op is Op.UNARY:
        fn = node.attr("fn")
        if fn is Unary.LEAKY_RELU:
            expr = c_text.LEAKY_RELU.format(x=args[0], alpha=c_text.real(node.attr("alpha")))
        else:
            expr = UNARY[fn].format(x=args[0])
    else:
        expr = BINARY[node.attr("fn")].format(a=args[0], b=args[1])
    out += lines("decl", id=node.id, n=node.type.numel)
    out += c_text.loops(shape, STMT["assign"].format(id=node.id, at=c_text.index(shape, shape), expr=expr))


def _sum_over_last(node: Node, size: int, term: str) -> list[str]:
    """``v[...] = sum over i{k} < size of term``, ``term`` indexed with the loop variables."""
    shape = node.type.shape
    store = STMT["sum_store"].format(id=node.id, at=c_text.index(shape, shape))
    return lines("decl", id=node.id, n=node.type.numel) + c_text.loops(
        shape, c_text.sum_block(len(shape), size, term, store))


def _dot(pl: _Planner, node: Node, out: list[str]) -> None:
    a, b = (pl.body.nodes[i] for i in node.inputs)
    full = node.type.shape + (a.type.shape[-1],)
    term = BINARY[Binary.MUL].format(a=_at(pl, a.id, full, a.type.shape), b=_at(pl, b.id, full, b.type.shape))
    out += _sum_over_last(node, a.type.shape[-1], term)


def _sum_last(pl: _Planner, node: Node, out: list[str]) -> None:
    x = pl.body.nodes[node.inputs[0]]
    out += _sum_over_last(node, x.type.shape[-1], _at(pl, x.id, x.type.shape, x.type.shape))


def _sum_dims(pl: _Planner, node: Node, out: list[str]) -> None:
    x = pl.body.nodes[node.inputs[0]]
    shape, kept = x.type.shape, node.type.shape
    out += lines("decl", id=node.id, n=node.type.numel) + lines("zero", id=node.id, n=node.type.numel)
    # Walk the operand; each element adds into the output element its kept dims select.
    target = NAME["at"].format(var=pl.ref(node.id), position=c_text.index(shape, kept))
    term = _at(pl, x.id, shape, shape)
    if kept[-1] == 1 and shape[-1] > 1:   # the last dim is summed: lanes
        store = STMT["sum_add"].format(target=target)
        out += c_text.loops(shape[:-1], c_text.sum_block(len(shape) - 1, shape[-1], term, store))
    else:
        out += c_text.loops(shape, STMT["add_to"].format(target=target, term=term))


def _expand_last(pl: _Planner, node: Node, out: list[str]) -> None:
    x = pl.body.nodes[node.inputs[0]]
    shape = node.type.shape
    out += lines("decl", id=node.id, n=node.type.numel)
    out += c_text.loops(shape, STMT["assign"].format(id=node.id, at=c_text.index(shape, shape),
                                                     expr=_at(pl, x.id, shape[:-1], x.type.shape)))


def _reshape(pl: _Planner, node: Node, out: list[str]) -> None:
    out += lines("alias", id=node.id, src=pl.ref(node.inputs[0]))


def _last_dim_copy(pl: _Planner, node: Node, out: list[str]) -> None:
    """concat / slice_last / pad_last: copies along the last dim."""
    shape = node.type.shape
    lead, width = math.prod(shape[:-1]), shape[-1]
    out += lines("decl", id=node.id, n=node.type.numel)
    if node.op is Op.CONCAT:
        start = 0
        for i in node.inputs:
            part = pl.body.nodes[i].type.shape[-1]
            out += lines("concat_part", id=node.id, lead=lead, part=part, width=width, start=start, src=pl.ref(i))
            start += part
        return
    x = pl.body.nodes[node.inputs[0]]
    fields = dict(id=node.id, lead=lead, width=width, src=pl.ref(x.id), src_width=x.type.shape[-1])
    if node.op is Op.SLICE_LAST:
        out += lines("slice_last", start=node.attr("start"), **fields)
        return
    out += lines("zero", id=node.id, n=node.type.numel)
    out += lines("pad_last", before=node.attr("before"), **fields)


def _softmax(pl: _Planner, node: Node, out: list[str]) -> None:
    names = {**pl.softmax_names(node), "x": NAME["element"].format(var=pl.ref(node.inputs[0]))}
    normalised = spell(ONLINE_SOFTMAX.normalise, UNARY, BINARY, names)
    out += lines("decl", id=node.id, n=node.type.numel)
    out += lines("softmax", id=node.id, n=node.type.numel, normalised=normalised)


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


def render_traversal(kernel: TraversalKernel, name: str, config: CConfig | None = None,
                     narrow: bool = False) -> CKernel:
    """Plan and render one traversal kernel as a C function called ``name``; ``config``
    (default :func:`default_config`) sets its OpenMP schedule; ``narrow``: for buffers of
    a type narrower than ``real`` (bfloat16, float16), whose rows are converted into
    registers as they are read (:mod:`pigeon.codegen.c_text`). The C backend walks the
    CSR of a traversal's group: an edge-parallel (COO) traversal is an error."""
    if kernel.layout is TraversalLayout.COO:
        raise CodegenError(f"`{kernel.describe().splitlines()[0]}` is edge-parallel (COO), and the C backend "
                           "has only node-parallel traversals: lower with layout='csr'")
    return _Planner(kernel, name, config or default_config(kernel), narrow).render()


#: The element types a C library is rendered for: ``storage`` of its buffers, with
#: ``real`` (what arithmetic runs in) double for double and float for the others.
C_STORAGE = ("double", "float", "bfloat16", "float16")


def render_library(kernels: list, storage: str, version: str) -> str:
    """The whole C file of one program for buffers of ``storage`` (one of
    :data:`C_STORAGE`): its traversal kernels and segmented GEMMs (anything with a
    ``source``). Traversals for bfloat16 and float16 are rendered ``narrow``."""
    if storage not in C_STORAGE:
        raise ValueError(f"Expected `storage` to be one of {list(C_STORAGE)} (got {storage!r})")
    return render("library.c.jinja", kernels=[k.source for k in kernels], storage=storage, version=version)
