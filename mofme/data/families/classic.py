"""The first renderer of each weather type (:mod:`mofme.data.weather`) as the ``<weather>-classic``
families: the renderer the shipped weights before issue 28 were trained on."""

from __future__ import annotations

from .. import weather as _weather
from . import register_family

for _name, _fn, _text in (
    ("rain", _weather._rain, "two screen-blended layers of tapered streaks at one angle, then a veil"),
    ("snow", _weather._snow, "three layers of flat-topped Gaussian flakes with a short wind blur"),
    ("haze", _weather._haze, "scattering model over a vertical + brightness + noise depth proxy"),
    ("raindrop", _weather._raindrop, "refracting ellipses with a dark rim and a highlight"),
):
    register_family(f"{_name}-classic", _name, _text)(_fn)
