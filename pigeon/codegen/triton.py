"""Triton code generation for traversal and dense kernels.

The template (``kernels/traversal.py.jinja``) owns the structure: the program per group
walking its CSR in blocks of rows (``TraversalLayout.CSR``), or the program per block
of rows (``TraversalLayout.ROWS``). This module plans the sweeps, where reductions and
softmax statistics live and where results are stored; each node's value is built in
:mod:`pigeon.codegen.triton_values`, and every statement is a pattern of
:mod:`pigeon.codegen.triton_text`.

What the C and Triton generators share is described once elsewhere: which sweep computes
which value (:mod:`pigeon.codegen.sweeps`); reductions, the online softmax and the
kernel arguments (:mod:`pigeon.codegen.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pigeon.codegen import triton_text as tt
from pigeon.codegen.rules import ONLINE_SOFTMAX, REDUCTIONS, ArgKind, KernelArg, OutputKind, finish, spell, strides
from pigeon.codegen.sweeps import GROUP_VALUES, SweepPlan
from pigeon.codegen.templates import render
from pigeon.codegen.triton_text import BINARY, BLOCK_REDUCE, EXPR, NAME, UNARY, lines, pad, tile
from pigeon.codegen.triton_values import CodegenError, TileBuilder, Val
from pigeon.ir.graph_ir import GLOBAL, IndexMap, Node, Op, Reduce, Space
from pigeon.ir.kernel_ir import DenseKernel, TraversalKernel, TraversalLayout

__all__ = ["CodegenError", "TritonConfig", "TritonTraversal", "default_config", "pad", "render_dense",
           "render_traversal", "traversal_mode"]

#: Dense reductions over all rows of a space, as the reduction each one is.
ROW_REDUCTIONS = {Op.SUM_ROWS: Reduce.SUM, Op.MEAN_ROWS: Reduce.MEAN}
CSR_BLOCK = 32
ROWS_BLOCK = 64


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

    ``args``: the kernel's parameters in order (:class:`~pigeon.codegen.rules.KernelArg`);
    then come the number of groups (``mode`` CSR) or rows (ROWS) and the constexprs.
    """

    name: str
    source: str
    args: tuple[KernelArg, ...]
    mode: TraversalLayout
    domain: Space
    group: IndexMap | None
    config: TritonConfig

    @property
    def block(self) -> int:
        return self.config.block


class _Planner(TileBuilder):
    """Emits Triton for one kernel body in one mode. ``skip`` are output names another
    launch writes."""

    def __init__(self, title: str, body, domain: Space, group: IndexMap | None, mode: TraversalLayout, name: str,
                 config: TritonConfig, external: dict[int, str] | None = None, skip: frozenset[str] = frozenset()):
        super().__init__(body, domain, group, mode, external)
        self.title, self.name, self.config = title, name, config
        self.skip = skip

    # -- stores ----------------------------------------------------------------------------------
    def store_row(self, o: Node, out: list[str]) -> None:
        val = self.value(o.inputs[0], out)
        shape, rank = val.shape, len(val.shape)
        ptr = self.output(o, OutputKind.ROW, self.domain)
        row = EXPR["row_offset"].format(row=NAME["row"], sub=tt.sub(rank, 0), stride=o.type.numel)
        offsets = " + ".join([row] + tt.element_offsets(shape, strides(shape)))
        mask = tt.both(tt.row_mask(rank), tt.feature_mask(shape))
        out += lines("store", ptr=ptr, offsets=offsets, value=self.full(val), mask=EXPR["masked"].format(mask=mask))

    def store_group(self, o: Node, source: Node, out: list[str]) -> None:
        ptr = self.output(o, OutputKind.GROUP, self.group.target)
        shape = o.type.shape
        offsets = EXPR["group_offset"].format(stride=o.type.numel) + " + " + tt.group_offsets(shape, strides(shape))
        mask = tt.feature_mask(shape)
        out += lines("store", ptr=ptr, offsets=offsets, value=NAME["group_value"].format(id=source.id),
                     mask=EXPR["masked"].format(mask=mask) if mask else "")

    def block_reduce(self, how: Reduce, x: str, rank: int) -> str:
        """``how`` over this block's rows of ``x`` (rows past the end hold the start value),
        as a tile with a lead axis of 1."""
        rule = REDUCTIONS[how]
        return EXPR["block"].format(fn=BLOCK_REDUCE[rule.combine], rmask=tt.row_mask(rank), x=x,
                                    other=tt.literal(rule.start))

    # -- csr mode: a program per group -----------------------------------------------------------
    def render_csr(self) -> dict:
        self.param(ArgKind.ROWPTR, self.group)
        self.param(ArgKind.PERM, self.group)
        group_init: list[str] = []
        for r in self.reductions:
            group_init += self._reduction_start(r)
        for d in self.body.nodes:
            if d.op is Op.DEGREE:
                group_init += lines("degree", id=d.id, tile=tile(d.type.shape, "1"))
                self.kept[d.id] = Val(NAME["group_value"].format(id=d.id), d.type.shape, "1")
        for s in self.softmaxes:
            group_init += lines("softmax_start", id=s.id, tile=tile(s.type.shape, "1"),
                                max_start=tt.literal(ONLINE_SOFTMAX.maximum.start),
                                sum_start=tt.literal(ONLINE_SOFTMAX.total.start))
        sweeps = []
        for k in range(self.last_sweep() + 1):
            self.cache, self.row_index = {}, {}
            roots, row_outputs = self.sweep_roots(k)
            body: list[str] = []
            for i in self.closure(roots, self.external):
                if self.body.nodes[i].op is not Op.INPUT:
                    self.value(i, body)
            finished: list[str] = []
            for r in self.reductions:
                if self.phase[r.id] == k:
                    self._reduction_step(r, body)
                    finished += self._reduction_finish(r)
                    self.kept[r.id] = Val(NAME["group_value"].format(id=r.id), r.type.shape, "1")
            for s in self.softmaxes:
                if self.stats_phase(s) == k:
                    self._softmax_step(s, body)
            for o in row_outputs:
                self.store_row(o, body)
            sweeps.append({"body": body, "finish": finished})
        group_init += self.prologue
        group_store: list[str] = []
        for o in self.outputs:
            source = self.body.nodes[o.inputs[0]]
            if source.op in GROUP_VALUES:
                self.store_group(o, source, group_store)
            elif not self.is_row(source):
                raise CodegenError(f"output {o.attr('name')} is neither per-row nor a reduction", o)
        return {"group_init": group_init, "sweeps": sweeps, "group_store": group_store}

    # reductions and softmax (rules.REDUCTIONS, rules.ONLINE_SOFTMAX) ----------------------------
    def _reduction_start(self, r: Node) -> list[str]:
        out: list[str] = []
        if len(r.inputs) > 1:   # a self message: the group's first row
            init = self.body.nodes[r.inputs[1]]
            view = self.buffer_view(self.buffer(init.attr("name")), init, NAME["group"])
            self.load(view, NAME["group_value"].format(id=r.id), out)
            return out
        start = tt.literal(REDUCTIONS[r.attr("reduce")].start)
        return lines("reduce_start", id=r.id, tile=tile(r.type.shape, "1"), start=start)

    def _reduction_step(self, r: Node, body: list[str]) -> None:
        x = self.value(r.inputs[0], body)
        how, acc = r.attr("reduce"), NAME["group_value"].format(id=r.id)
        rows = self.block_reduce(how, self.full(x), len(x.shape))
        body += lines("reduce_step", id=r.id, combined=BINARY[REDUCTIONS[how].combine].format(a=acc, b=rows))

    @staticmethod
    def _reduction_finish(r: Node) -> list[str]:
        rule, out = finish(r.attr("reduce"), len(r.inputs) > 1), []
        if rule.divide:
            rows = EXPR["count_rows"].format(extra=rule.extra) if rule.extra else "count"
            out += lines("reduce_mean", id=r.id, rows=rows)
        if rule.empty is not None:
            out += lines("reduce_empty", id=r.id, empty=tt.literal(rule.empty))
        return out

    def _softmax_step(self, s: Node, body: list[str]) -> None:
        x = self.value(s.inputs[0], body)
        rank, sm = len(x.shape), ONLINE_SOFTMAX
        names = {"m": NAME["running_max"].format(id=s.id), "s": NAME["running_sum"].format(id=s.id),
                 "t": NAME["new_max"].format(id=s.id)}
        new_max = BINARY[sm.maximum.combine].format(
            a=names["m"], b=self.block_reduce(sm.maximum.how, self.full(x), rank))
        terms = self.block_reduce(sm.total.how, spell(sm.term, UNARY, BINARY, {"x": x.var, "t": names["t"]}), rank)
        new_sum = BINARY[sm.total.combine].format(a=spell(sm.rescale, UNARY, BINARY, names), b=terms)
        body += lines("softmax_step", id=s.id, new_max=new_max, new_sum=new_sum)

    # -- rows mode: a program per block of rows --------------------------------------------------
    def render_rows(self) -> dict:
        self.cache, self.row_index = {}, {}
        reductions = [n for n in self.body.nodes
                      if (n.op in ROW_REDUCTIONS or n.op is Op.AGGREGATE) and n.id not in self.external]
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

    def atomic(self, r: Node, out: list[str]) -> None:
        """A reduction in rows mode: scatter-added into its output buffer."""
        readers = [o for o in self.outputs if o.inputs[0] == r.id]
        if len(readers) != 1 or len(r.inputs) != 1:
            raise CodegenError("a row-parallel reduction must be one output of the kernel", r)
        x = self.value(r.inputs[0], out)
        shape, rank = r.type.shape, len(r.type.shape)
        if r.op in ROW_REDUCTIONS:   # every row of the space into one global row
            ptr = self.output(readers[0], OutputKind.ATOMIC, GLOBAL)
            value = self.block_reduce(Reduce.SUM, self.full(x), len(x.shape))
            if REDUCTIONS[ROW_REDUCTIONS[r.op]].mean:
                value = EXPR["divided"].format(x=value, by="num")
            mask = tt.feature_mask(shape)
            out += lines("atomic_add", ptr=ptr, offsets=tt.group_offsets(shape, strides(shape)), value=value,
                         mask=EXPR["masked"].format(mask=mask) if mask else "")
            return
        how, index = r.attr("reduce"), r.attr("index")
        rule = REDUCTIONS[how]
        if not rule.scatters:
            raise CodegenError(f"a row-parallel {how.value} reduction (only sum and mean scatter with atomics)", r)
        ptr = self.output(readers[0], OutputKind.ATOMIC, index.target)
        target = self.index_rows(index, out)
        value = self.full(x)
        if rule.mean:   # each row's share: divided by its target's rows, known before the rows are
            out += lines("count", id=r.id, counts=self.param(ArgKind.COUNT, index), target=target)
            value = EXPR["per_row_count"].format(x=value, id=r.id, sub=tt.sub(rank, 0))
        row = EXPR["row_offset"].format(row=target, sub=tt.sub(rank, 0), stride=r.type.numel)
        offsets = " + ".join([row] + tt.element_offsets(shape, strides(shape)))
        mask = tt.both(tt.row_mask(rank), tt.feature_mask(shape))
        out += lines("atomic_add", ptr=ptr, offsets=offsets, value=value, mask=EXPR["masked"].format(mask=mask))

    def render(self) -> TritonTraversal:
        grouped = self.mode is TraversalLayout.CSR
        parts = self.render_csr() if grouped else self.render_rows()
        source = render("traversal.py.jinja", title=self.title, name=self.name, params=self.params,
                        grouped=grouped, config=self.config, **parts)
        return TritonTraversal(self.name, source, tuple(self.args), self.mode, self.domain, self.group, self.config)


def _edge_parallel(kernel: TraversalKernel) -> bool:
    """Whether a traversal can run edge-parallel with atomics: one sweep, no softmax, no
    degree, and only reductions that scatter, without a self message."""
    plan = SweepPlan(kernel.body, kernel.domain, kernel.group)
    return (not plan.softmaxes and plan.last_sweep() == 0
            and not any(n.op is Op.DEGREE for n in kernel.body.nodes)
            and all(REDUCTIONS[r.attr("reduce")].scatters and len(r.inputs) == 1 for r in plan.reductions))


def traversal_mode(kernel: TraversalKernel | DenseKernel) -> TraversalLayout:
    """``TraversalLayout.CSR`` (one program per group) or ``ROWS`` (one program per
    block of rows: dense kernels, ungrouped traversals and edge-parallel ones)."""
    if isinstance(kernel, DenseKernel) or kernel.group is None:
        return TraversalLayout.ROWS
    if kernel.layout is TraversalLayout.COO and _edge_parallel(kernel):
        return TraversalLayout.ROWS
    return TraversalLayout.CSR


def default_config(kernel: TraversalKernel | DenseKernel) -> TritonConfig:
    """The untuned launch: blocks of 32 rows per step of a CSR walk (most groups are
    small), 64 rows per program in ``rows`` mode; Triton's default warps and stages."""
    return TritonConfig(CSR_BLOCK if traversal_mode(kernel) is TraversalLayout.CSR else ROWS_BLOCK)


def render_traversal(kernel: TraversalKernel, name: str, config: TritonConfig | None = None) -> list[TritonTraversal]:
    """One traversal kernel as Triton: node-parallel over its group's CSR, or
    edge-parallel with atomics when the lowering chose ``coo`` and the body allows it.
    ``config`` (default :func:`default_config`) sets its launch."""
    title = kernel.describe().splitlines()[0]
    config = config or default_config(kernel)
    mode = traversal_mode(kernel)
    group = kernel.group if mode is TraversalLayout.CSR else None
    return [_Planner(title, kernel.body, kernel.domain, group, mode, name, config).render()]


def render_dense(kernel: DenseKernel, name: str, config: TritonConfig | None = None) -> list[TritonTraversal]:
    """A dense kernel as Triton: row-parallel over its space. A kernel over GLOBAL that
    sums rows of another space is two launches: the sums (row-parallel, atomics), then
    the per-global work that reads them; ``config`` (default :func:`default_config`)
    sets both launches."""
    title = kernel.describe().splitlines()[0]
    config = config or default_config(kernel)
    body = kernel.body
    rows_mode = TraversalLayout.ROWS
    row_sums = [n for n in body.nodes if n.op in ROW_REDUCTIONS]
    if not row_sums:
        return [_Planner(title, body, kernel.space, None, rows_mode, name, config).render()]
    spaces = {body.nodes[n.inputs[0]].type.space for n in row_sums}
    if len(spaces) != 1:
        raise CodegenError(f"row sums over several spaces in one dense kernel ({sorted(map(str, spaces))})", row_sums[0])
    (rows,) = spaces
    direct = {n.id: o.attr("name") for n in row_sums for o in body.nodes if o.op is Op.OUTPUT and o.inputs[0] == n.id}
    scratch = {n.id: f"{name}_sum{n.id}" for n in row_sums if n.id not in direct}
    later = [o.attr("name") for o in body.nodes if o.op is Op.OUTPUT and o.inputs[0] not in direct]
    first = _Planner(title, body, rows, None, rows_mode, f"{name}_rows", config, skip=frozenset(later))
    # Sums no output holds go to scratch buffers that the second launch reads.
    first.outputs += [Node(-1 - i, Op.OUTPUT, (i,), body.nodes[i].type, (("name", buffer),))
                      for i, buffer in scratch.items()]
    kernels = [first.render()]
    if later:
        second = _Planner(title, body, kernel.space, None, rows_mode, name, config,
                          external={**direct, **scratch}, skip=frozenset(direct.values()))
        kernels.append(second.render())
    return kernels
