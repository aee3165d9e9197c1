"""Deprecated: moved to :mod:`mofme.train.recipes.recognition`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.train.recipes.recognition")
