"""Type aliases shared across the package."""

from __future__ import annotations

import os

__all__ = ["PathLike"]

PathLike = str | os.PathLike  # a file or folder the caller names, as a string or a path object
