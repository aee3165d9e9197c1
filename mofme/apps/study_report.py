"""Deprecated: moved to :mod:`mofme.studies.study_report`."""

from mofme._deprecated import alias_module

alias_module(__name__, "mofme.studies.study_report")
