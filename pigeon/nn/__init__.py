"""User-facing layers: compiled modules, and ``functional`` with the layer-language sources."""

from pigeon.nn import functional
from pigeon.nn.deeponet import DeepONet
from pigeon.nn.modules import HGT, RGAT, RGCN, NBFNet, NBFNetLayer
from pigeon.nn.spectral import FNO, SpectralConv

__all__ = ["functional", "RGCN", "RGAT", "HGT", "NBFNetLayer", "NBFNet", "SpectralConv", "FNO", "DeepONet"]
