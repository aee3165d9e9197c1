"""Targets: a measured ratio against its limit, and their markdown table."""

from __future__ import annotations

__all__ = ["target", "targets_markdown"]


def target(name: str, measured: float, limit: float) -> dict:
    """One target: ``measured <= limit`` is met."""
    return {"target": name, "measured": round(measured, 3), "limit": limit, "ok": measured <= limit}


def targets_markdown(checks: list[dict]) -> list[str]:
    """Markdown lines (with a leading blank line) of the targets table; none when there are no targets."""
    if not checks:
        return []
    lines = ["", "| target | measured | limit | ok |", "|---|---:|---:|:---:|"]
    return lines + [
        f"| {c['target']} | {c['measured']} | {c['limit']} | {'yes' if c['ok'] else 'NO'} |" for c in checks
    ]
