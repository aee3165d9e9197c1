"""The benchmarks behind ``mofme bench <name>``: each module's ``main(argv, prog)`` prints its table
and writes its figures as JSON (:func:`write_json`)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_json"]


def write_json(path: Path | None, result: dict) -> None:
    """``result`` as indented JSON at ``path``, its folder made as needed; nothing when ``path`` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
