"""Compiled layers on backend ``triton`` never synchronise the host with the GPU after
their first call on a graph: plans, layouts, index arrays and tile tables are built in
that call, so a later forward or backward only launches kernels.

A forward and backward warm each layer up; the same again runs under
``torch.cuda.set_sync_debug_mode("error")``, where any synchronisation that goes through
PyTorch (``.item()``, ``.tolist()``, ``nonzero``, a blocking copy) raises. The GPU check
(``bench/gpu_check.sh``) runs this file as its sync stage.
"""

import pytest
import torch

from pigeon.data import load
from pigeon.nn.examples import EXAMPLE_LAYERS, example_layer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="set_sync_debug_mode needs a CUDA device")]


@pytest.fixture(scope="module")
def graph():
    # The whole aifb profile: hubs, many relations, several blocks of rows per kernel.
    return load("aifb", scale=1.0, seed=0).graph.to("cuda")


@pytest.mark.parametrize("name", EXAMPLE_LAYERS)
def test_no_synchronisation_after_the_first_call_on_a_graph(name, graph):
    module, tensors = example_layer(name, graph, 64, 2, backend="triton")
    inputs = {key: value.detach().to("cuda").requires_grad_() for key, value in tensors.items()}
    first = module.compiled(graph, **inputs)
    upstream = torch.randn_like(first)   # made on the device: a copy from the host would synchronise
    first.backward(upstream)
    torch.cuda.synchronize()

    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            again = module.compiled(graph, **inputs)
        module.compiled(graph, **inputs).backward(upstream)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    # The warm calls compute what the first did (atomics may add in another order).
    torch.testing.assert_close(again, first.detach(), rtol=1e-5, atol=1e-5)
