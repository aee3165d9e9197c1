"""Deprecated: moved to :mod:`mofme.train.checkpoint`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.train.checkpoint")
