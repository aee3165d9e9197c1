"""Targets: the benchmarks measure named ratios; the limits they are held to live in a TOML file
outside the package (``docs/results/targets.toml``), passed with ``--targets``."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["check_targets", "load_limits", "targets_markdown"]


def load_limits(path: Path | str, section: str) -> dict[str, float]:
    """The ``[section]`` table of a TOML file: ratio name -> the largest value that meets it."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"targets file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    limits = table.get(section)
    if not isinstance(limits, dict) or not all(isinstance(v, int | float) for v in limits.values()):
        raise ValueError(f"{path}: needs a [{section}] table of ratio names and numeric limits")
    return {name: float(limit) for name, limit in limits.items()}


def check_targets(ratios: dict[str, float], limits: dict[str, float]) -> list[dict]:
    """One row per limit whose ratio was measured: ``measured <= limit`` is met."""
    return [
        {"target": name, "measured": round(ratios[name], 3), "limit": limit, "ok": ratios[name] <= limit}
        for name, limit in limits.items()
        if name in ratios
    ]


def targets_markdown(checks: list[dict]) -> list[str]:
    """Markdown lines (with a leading blank line) of the targets table; none when there are no targets."""
    if not checks:
        return []
    lines = ["", "| target | measured | limit | ok |", "|---|---:|---:|:---:|"]
    return lines + [
        f"| {c['target']} | {c['measured']} | {c['limit']} | {'yes' if c['ok'] else 'NO'} |" for c in checks
    ]
