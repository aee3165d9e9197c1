"""Deprecated: moved to :mod:`mofme.infer.masks`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.infer.masks")
