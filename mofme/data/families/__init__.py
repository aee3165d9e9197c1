"""Renderer families: several independent generative models of each weather type.

A *family* is one way of drawing one weather type (``rain``, ``snow``, ``haze``, ``raindrop``):
its own physical or procedural model with its own randomised parameters. Training on several
families and holding one out per weather type (``configs/weather_families.yaml``) measures how a
restorer does on weather drawn in a way it has never seen.

    from mofme.data.families import FAMILIES, families_of, render_family
    sample = render_family(clean, "rain-veiled", severity=2, seed=0)   # a WeatherSample
    families_of("rain")                                                 # ('rain-classic', ...)

Every family is a function ``(clean, rng, severity, scale) -> (degraded, mask, particles)``:
``clean`` float32 (H, W, 3) in [0, 1]; ``rng`` a ``np.random.Generator`` (the only randomness);
``severity`` 1..3; ``scale`` the feature-size factor (pixels of a 512-pixel image, see
:func:`~mofme.data.weather.render_weather`). It returns ``degraded`` (H, W, 3), ``mask`` (H, W) =
1 - weight of the clean pixel in the degraded one (or, for renderers that are not alpha composites,
a [0, 1] map of where and how strongly the image was changed) and ``particles`` (H, W): the opacity
of streaks, flakes or drops alone (zeros where the family draws none, e.g. haze). Families register
themselves with :func:`register_family`; ``render_family`` clips, types and checks the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..weather import _REFERENCE_SIZE, SEVERITIES, WEATHER_TYPES, WeatherSample, _as_image

__all__ = ["FAMILIES", "WeatherFamily", "families_of", "register_family", "render_family"]

FamilyRenderer = Callable[[np.ndarray, np.random.Generator, int, float], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class WeatherFamily:
    """A registered renderer: its ``name`` (``<weather>-<style>``), the ``weather`` type it draws,
    one line of ``description`` and the ``render`` function (module docstring)."""

    name: str
    weather: str
    description: str
    render: FamilyRenderer


FAMILIES: dict[str, WeatherFamily] = {}


def register_family(name: str, weather: str, description: str) -> Callable[[FamilyRenderer], FamilyRenderer]:
    """Decorator: register ``fn`` as family ``name`` of ``weather`` (names start with ``weather-``)."""
    if weather not in WEATHER_TYPES:
        raise ValueError(f"unknown weather {weather!r}; expected one of {WEATHER_TYPES}")
    if not name.startswith(f"{weather}-"):
        raise ValueError(f"a {weather} family's name starts with '{weather}-', got {name!r}")

    def decorate(fn: FamilyRenderer) -> FamilyRenderer:
        if name in FAMILIES:
            raise ValueError(f"family {name!r} is already registered")
        FAMILIES[name] = WeatherFamily(name, weather, description, fn)
        return fn

    return decorate


def families_of(weather: str) -> tuple[str, ...]:
    """The registered family names of ``weather``, sorted."""
    if weather not in WEATHER_TYPES:
        raise ValueError(f"unknown weather {weather!r}; expected one of {WEATHER_TYPES}")
    return tuple(sorted(n for n, f in FAMILIES.items() if f.weather == weather))


def render_family(
    clean: np.ndarray, family: str, *, severity: int = 2, seed: int = 0, scale: float | None = None
) -> WeatherSample:
    """Render ``family`` at ``severity`` 1..3 over a clean (H, W, 3) image (float in [0, 1] or uint8).

    Deterministic in (clean, family, severity, seed, scale); ``scale`` defaults to max(H, W) / 512.
    The sample's ``weather`` is the family's weather type.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown renderer family {family!r}; expected one of {sorted(FAMILIES)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    image = _as_image(clean)
    scale = max(image.shape[:2]) / _REFERENCE_SIZE if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    spec = FAMILIES[family]
    degraded, mask, particles = spec.render(image, np.random.default_rng(seed), int(severity), scale)
    degraded, mask, particles = (np.clip(a, 0.0, 1.0).astype(np.float32) for a in (degraded, mask, particles))
    return WeatherSample(degraded, image, mask, spec.weather, int(severity), particles)


from . import classic, haze, rain, raindrop, snow  # noqa: E402,F401  (each registers its families)
