"""Deprecated: moved to :mod:`mofme.train.trainer`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.train.trainer")
