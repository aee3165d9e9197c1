"""Deprecated: moved to :mod:`mofme.studies.analysis`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.studies.analysis")
