"""The YAML recipes shipped with the package (also reachable as ``configs/`` in a checkout)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["recipe_path", "recipes", "study_settings_path"]

_HERE = Path(__file__).parent


def recipes() -> list[str]:
    """Names of the shipped recipes (file names without ``.yaml``)."""
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A YAML file path as given, or the shipped recipe of that name (``"demo_cpu"``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = _HERE / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise FileNotFoundError(
            f"no config file {name_or_path!r} and no shipped recipe of that name; shipped: {recipes()}"
        )
    return shipped


def study_settings_path(name_or_path: str | Path) -> Path:
    """A YAML file path as given, or the shipped study settings of that name (``"specialisation"``,
    in ``studies/``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = _HERE / "studies" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        names = sorted(p.stem for p in (_HERE / "studies").glob("*.yaml"))
        raise FileNotFoundError(
            f"no settings file {name_or_path!r} and no shipped settings of that name; shipped: {names}"
        )
    return shipped
