"""Pigeon's version: a leaf module, so that code keyed on it (caches, generated sources,
reports) imports no package root."""

__version__ = "0.1.0"
