"""Deprecated: moved to :mod:`mofme.infer.tiling`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.infer.tiling")
