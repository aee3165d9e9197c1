"""Hints for mistyped names, shared by the config loader and the model registry."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest_name"]


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a mistyped ``name`` (:func:`difflib.get_close_matches` at its default
    cutoff), or None when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None
