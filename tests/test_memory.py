"""What a compiled layer holds in memory: temporaries dropped after their last reader, and
forward values over the save budget recomputed in the backward pass."""

from __future__ import annotations

import torch

import pigeon
import pigeon.nn as pnn
from pigeon.ir.kernel_ir import BufferRole, ViewKernel, dead_after, kernel_reads, kernel_writes

F64 = dict(rtol=1e-10, atol=1e-10)


def _graph(nodes=60, edges=400, etypes=4, ntypes=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return pigeon.HeteroGraph(torch.randint(0, nodes, (edges,), generator=gen),
                              torch.randint(0, nodes, (edges,), generator=gen),
                              torch.randint(0, etypes, (edges,), generator=gen), nodes,
                              torch.randint(0, ntypes, (nodes,), generator=gen), num_etypes=etypes, num_ntypes=ntypes)


def test_every_temporary_is_dropped_once_after_its_last_reader():
    graph = _graph()
    layer = pnn.HGT(8, 8, 2, 4, heads=2, backend="torch").double()
    x = torch.randn(graph.num_nodes, 8, dtype=torch.float64)
    plan = layer.compiled.plan(graph, {"x": x, **dict(layer.named_parameters())})
    for program in (plan.forward_kernels, plan.backward_kernels):
        keep = tuple(b for b, _ in plan.saved) if program is plan.forward_kernels else ()
        dead = dead_after(program, keep)
        dropped = [name for names in dead for name in names]
        temps = {b.name for b in program.buffers if b.role is BufferRole.TEMP} - set(keep)
        assert sorted(dropped) == sorted(temps)          # each temporary once, nothing else
        for i, names in enumerate(dead):
            later = {r for k in program.kernels[i + 1:] for r in kernel_reads(k)}
            assert not set(names) & later                # never before a later kernel reads it
            written = {w for k in program.kernels[: i + 1] for w in kernel_writes(k)}
            assert set(names) <= written                 # and only once it exists


def test_over_the_save_budget_per_edge_values_are_recomputed_with_the_same_gradients():
    graph = _graph()
    x = torch.randn(graph.num_nodes, 8, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    saving = pnn.HGT(8, 8, 2, 4, heads=2, backend="cpu", compact=False).double()
    recomputing = pnn.HGT(8, 8, 2, 4, heads=2, backend="cpu", compact=False, save_budget_gb=0).double()
    recomputing.load_state_dict(saving.state_dict())
    tensors = {"x": x, **dict(saving.named_parameters())}
    kept = saving.compiled.plan(graph, tensors)
    lean = recomputing.compiled.plan(graph, {"x": x, **dict(recomputing.named_parameters())})
    edge_saved = [b for b, _ in kept.saved if kept.forward_kernels.buffer(b).type.space.name == "edge"]
    assert edge_saved, "the default plan keeps per-edge values"
    # What stays is per-type weights, views of the input and the output, which are held anyway.
    program = lean.forward_kernels
    root = {k.out: k.a for k in program.kernels if isinstance(k, ViewKernel)}
    for buffer, _ in lean.saved:
        owner = program.buffer(root.get(buffer, buffer))
        assert owner.role is not BufferRole.TEMP or owner.type.space.name in ("etype", "ntype", "ntype_etype"), owner
    assert any(d.startswith("save:") for d in lean.decisions) and not any(d.startswith("save:") for d in kept.decisions)
    upstream = torch.randn(graph.num_nodes, 8, dtype=torch.float64)
    outs = [m(graph, x) for m in (saving, recomputing)]
    torch.testing.assert_close(outs[0], outs[1], **F64)
    grads = [torch.autograd.grad(o, [x, *m.parameters()], upstream) for o, m in zip(outs, (saving, recomputing))]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **F64)


def test_the_save_budget_is_checked():
    import pytest

    with pytest.raises(ValueError, match=r"Expected `save_budget_gb` to be a non-negative number of GiB \(got -1\)"):
        pnn.RGCN(4, 4, 2, save_budget_gb=-1)
