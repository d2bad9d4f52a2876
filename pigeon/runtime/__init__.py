"""Executing programs: the level-1 interpreter (autograd functions and caches follow)."""
