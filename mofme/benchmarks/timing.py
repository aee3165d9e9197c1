"""Deprecated: moved to :mod:`mofme.timing`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.timing")
