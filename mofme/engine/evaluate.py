"""Deprecated: moved to :mod:`mofme.evaluate.restoration`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.evaluate.restoration")
