"""pigeon.nn.NBFNet (compiled layers) against pigeon.reference.NBFNet: scores and every
parameter gradient in float64 to 1e-10 (float64 round-off over two layers, a LayerNorm and
the MLP stays near 1e-14), the state_dict contract, inverse edges and input checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import pigeon
from pigeon import nn as pnn
from pigeon import reference
from strategies import hetero_graphs

F64 = dict(rtol=1e-10, atol=1e-10)
BATCH = 3


def _randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random, so no LayerNorm sits at its identity and no bias at zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, dtype=p.dtype, generator=gen))
    return model


def _pair(graph, backend, num_relations=None, **kwargs):
    """A randomized reference model and its compiled twin holding the same parameters."""
    num_relations = num_relations or graph.num_etypes
    ref = _randomize_(reference.NBFNet(num_relations, 6, 2, dtype=torch.float64, **kwargs), graph.num_edges)
    compiled = pnn.NBFNet(num_relations, 6, 2, backend=backend, dtype=torch.float64, **kwargs)
    compiled.load_state_dict(ref.state_dict())
    return ref, compiled


def _queries(graph, num_relations, seed):
    gen = torch.Generator().manual_seed(seed)
    heads = torch.randint(0, graph.num_nodes, (BATCH,), generator=gen)
    relations = torch.randint(0, 2 * num_relations, (BATCH,), generator=gen)
    return heads, relations


def _compare(ref, compiled, graph, heads, relations):
    want, got = ref(graph, heads, relations), compiled(graph, heads, relations)
    assert got.shape == (BATCH, graph.num_nodes)
    torch.testing.assert_close(got, want, **F64)
    upstream = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    names = [name for name, _ in ref.named_parameters()]
    assert names == [name for name, _ in compiled.named_parameters()]
    want_grads = torch.autograd.grad(want, list(ref.parameters()), upstream, allow_unused=True)
    got_grads = torch.autograd.grad(got, list(compiled.parameters()), upstream, allow_unused=True)
    for name, p, a, b in zip(names, ref.parameters(), got_grads, want_grads):
        # A parameter no edge reaches has no gradient in one and zeros in the other.
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, **F64, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("aggregate", ["sum", "pna", "max"])
@pytest.mark.parametrize("message", ["distmult", "transe", "rotate"])
@settings(max_examples=3, deadline=None)
@given(graph=hetero_graphs(max_nodes=8, max_edges=16, max_etypes=3))
def test_compiled_model_matches_reference(graph, message, aggregate, backend):
    ref, compiled = _pair(graph, backend, message=message, aggregate=aggregate)
    _compare(ref, compiled, graph, *_queries(graph, graph.num_etypes, graph.num_nodes))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize(
    "options",
    [dict(dependent=False), dict(concat_hidden=False, short_cut=False), dict(layer_norm=False, aggregate="min")],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_compiled_model_matches_reference_other_options(options, backend):
    # Relation 3 of 4 has no edge: its vectors and queries still work.
    graph = pigeon.HeteroGraph(torch.tensor([0, 1, 2, 2, 4, 5]), torch.tensor([1, 2, 0, 3, 5, 4]),
                               torch.tensor([0, 1, 2, 0, 1, 1]), num_nodes=7, num_etypes=3)
    ref, compiled = _pair(graph, backend, num_relations=4, **options)
    _compare(ref, compiled, graph, torch.tensor([0, 4, 6]), torch.tensor([3, 7, 1]))


def test_state_dict_round_trip_and_same_initialisation():
    graph = pigeon.HeteroGraph(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 1]))
    heads, relations = torch.tensor([0, 3, 1]), torch.tensor([1, 2, 0])
    torch.manual_seed(11)
    ref = reference.NBFNet(2, 4, 2, dtype=torch.float64)
    after_ref = torch.rand(1)
    torch.manual_seed(11)
    compiled = pnn.NBFNet(2, 4, 2, backend="cpu", dtype=torch.float64)
    after_compiled = torch.rand(1)
    assert torch.equal(after_ref, after_compiled)  # the same draws, no more
    assert list(ref.state_dict()) == list(compiled.state_dict())
    for name, value in ref.state_dict().items():
        assert torch.equal(value, compiled.state_dict()[name]), name
    assert all(isinstance(layer, pnn.NBFNetLayer) for layer in compiled.layers)

    # Both ways: compiled -> reference and reference -> compiled.
    _randomize_(compiled, 3)
    ref.load_state_dict(compiled.state_dict())
    torch.testing.assert_close(ref(graph, heads, relations), compiled(graph, heads, relations), **F64)
    _randomize_(ref, 4)
    compiled.load_state_dict(ref.state_dict())
    torch.testing.assert_close(compiled(graph, heads, relations), ref(graph, heads, relations), **F64)


def test_queries_of_a_batch_do_not_interact():
    graph = pigeon.HeteroGraph(torch.tensor([0, 1, 2, 3, 3]), torch.tensor([1, 2, 0, 1, 4]),
                               torch.tensor([0, 1, 0, 1, 0]), num_nodes=6)
    net = _randomize_(reference.NBFNet(2, 4, 3, dtype=torch.float64), 6)
    heads, relations = torch.tensor([0, 3, 5]), torch.tensor([1, 2, 1])
    together = net(graph, heads, relations)
    for b in range(BATCH):
        alone = net(graph, heads[b:b + 1], relations[b:b + 1])
        torch.testing.assert_close(together[b:b + 1], alone, **F64)


@pytest.mark.parametrize("model", [reference.NBFNet, pnn.NBFNet])
def test_inverse_edges_carry_the_query_against_the_edge_direction(model):
    # One fact (1, r0, 0); nodes 2 and 3 are isolated. From head 0, only the inverse
    # edge (0, r0 + R, 1) reaches node 1; nothing reaches 2 or 3.
    graph = pigeon.HeteroGraph(torch.tensor([1]), torch.tensor([0]), num_nodes=4, num_etypes=1)
    net = _randomize_(model(1, 4, 2, dtype=torch.float64), 8)
    scores = net(graph, torch.tensor([0]), torch.tensor([0]))[0]
    torch.testing.assert_close(scores[2], scores[3], **F64)
    assert abs(float((scores[1] - scores[2]).detach())) > 1e-6
    augmented = net.with_inverse_edges(graph)
    assert augmented.num_etypes == 2
    assert augmented.src.tolist() == [1, 0] and augmented.dst.tolist() == [0, 1]
    assert augmented.etype.tolist() == [0, 1]


@pytest.mark.parametrize("model", [reference.NBFNet, pnn.NBFNet])
def test_bad_inputs_name_the_argument(model):
    graph = pigeon.HeteroGraph(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0, 1]), num_etypes=2)
    net = model(2, 4, 2)
    ok_heads, ok_relations = torch.tensor([0, 2]), torch.tensor([1, 3])
    with pytest.raises(ValueError, match=r"every id in `heads` to be in \[0, graph.num_nodes=3\) \(got 3\)"):
        net(graph, torch.tensor([0, 3]), ok_relations)
    with pytest.raises(ValueError, match=r"every id in `heads` to be in \[0, graph.num_nodes=3\) \(got -1\)"):
        net(graph, torch.tensor([-1, 0]), ok_relations)
    with pytest.raises(ValueError, match=r"every id in `relations` to be in \[0, 2 \* num_relations=4\) \(got 4\)"):
        net(graph, ok_heads, torch.tensor([4, 0]))
    with pytest.raises(ValueError, match=r"`relations` to have one entry per query in `heads` \(2\) \(got 3\)"):
        net(graph, ok_heads, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError,
                       match=r"`heads` to be a non-empty 1-D integer tensor.*got shape \[2\], dtype float32"):
        net(graph, ok_heads.float(), ok_relations)
    with pytest.raises(ValueError, match=r"`relations` to be a non-empty 1-D integer tensor.*got shape \[1, 2\]"):
        net(graph, ok_heads, ok_relations.view(1, 2))
    with pytest.raises(ValueError, match=r"`graph` to be the fact graph.*adds the inverse edges itself "
                                         r"\(got graph.num_etypes=4\)"):
        net(graph.with_reverse_edges(), ok_heads, ok_relations)
    with pytest.raises(ValueError, match=r"`graph` to be a pigeon.HeteroGraph \(got Tensor\)"):
        net(torch.zeros(2, 2), ok_heads, ok_relations)


def test_the_graph_with_inverse_edges_is_built_once_per_fact_graph():
    graph = pigeon.HeteroGraph(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0, 0]), 3, num_etypes=1)
    model = reference.NBFNet(3, dim=4, num_layers=1)
    augmented = model.with_inverse_edges(graph)
    assert model.with_inverse_edges(graph) is augmented   # its layouts are reused, not rebuilt
    # The model's R, not the graph's relation count, offsets the inverses.
    assert augmented.num_etypes == 6 and augmented.etype.tolist() == [0, 0, 3, 3]
    assert augmented.src.tolist() == [0, 1, 1, 2] and augmented.dst.tolist() == [1, 2, 0, 1]
    with pytest.raises(ValueError, match="num_relations.*at least graph.num_etypes=1.*got 0"):
        graph.with_reverse_edges(0)
