"""Old import paths kept for one release: a module that moved leaves a stub at its old path.

    # mofme/engine/restore.py
    from mofme._deprecated import alias_module
    alias_module(__name__, "mofme.infer.restore")

``import mofme.engine.restore`` then warns (DeprecationWarning, naming the new path) and gives the
new module itself: the same objects, so patching either name patches both.
"""

from __future__ import annotations

import importlib
import sys
import warnings

__all__ = ["alias_module"]


def alias_module(old: str, new: str) -> None:
    """Make ``old`` (a stub being imported) the module ``new``, with a DeprecationWarning."""
    warnings.warn(
        f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=3
    )
    sys.modules[old] = importlib.import_module(new)
