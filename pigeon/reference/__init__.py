"""Plain-PyTorch reference layers: the correctness oracle for every compiled kernel.

Each layer reads only the raw edge list of a :class:`pigeon.HeteroGraph` and uses plain
torch ops (gathers, ``index_add``, ``scatter_reduce``, a loop over relations), so that
a compiled layer can be checked against it with copied weights::

    ref = pigeon.reference.RGCN(16, 16, num_etypes=4).double()
    ref.load_state_dict(compiled.state_dict())
    torch.testing.assert_close(compiled(graph, x), ref(graph, x))

Nothing here imports ``pigeon.ir``, ``pigeon.passes``, ``pigeon.codegen`` or
``pigeon.runtime``: an oracle that shares code with what it checks proves nothing. Each
layer works in the dtype of its parameters (tests use float64) and is cross-checked
against DGL and PyG in ``tests/test_reference.py``.
"""

from pigeon.reference.deeponet import DeepONet
from pigeon.reference.hgt import HGT
from pigeon.reference.nbfnet import NBF_AGGREGATES, NBF_MESSAGES, NBFNetLayer
from pigeon.reference.nbfnet_model import NBFNet
from pigeon.reference.rgat import RGAT
from pigeon.reference.rgcn import RGCN, RGCN_NORMS
from pigeon.reference.spectral import FNO, SpectralConv

__all__ = ["RGCN", "RGAT", "HGT", "NBFNetLayer", "NBFNet", "RGCN_NORMS", "NBF_MESSAGES", "NBF_AGGREGATES",
           "SpectralConv", "FNO", "DeepONet"]
