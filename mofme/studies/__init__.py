"""Research built on mofme, kept out of the library: the dense / MoE / MoFME study and its report,
routing analysis, the downstream (restore-then-recognise) comparison, and the routing losses the
study trains with (:mod:`mofme.studies.losses`, registered as ``loss.extra`` terms on import)."""

from . import losses  # registers loss.extra: weather_mi, weather_groups

__all__ = ["losses"]
