"""User-facing layers. ``functional`` holds them in the layer language."""

from pigeon.nn import functional

__all__ = ["functional"]
