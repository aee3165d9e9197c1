"""Deprecated: moved to :mod:`mofme.train.recipes.drop_detection`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.train.recipes.drop_detection")
