"""Extra loss terms a recipe's ``loss.extra`` names, registered by the code that defines them.

    @register_extra_loss("weather_mi", maximise=True)
    def weather_mi(recipe, batch):          # after the forward pass of recipe._loss(batch)
        return ...                           # a scalar tensor

    loss:
      extra: {weather_mi: 0.1}              # loss = task loss - 0.1 x weather_mi (maximised)

The training loop knows no study: research code (:mod:`mofme.studies`) registers its terms here,
and is imported before a run that names them (``mofme train`` does). Each term is logged under its
name, as computed (before the weight and the sign).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from torch import Tensor

__all__ = ["EXTRA_LOSSES", "ExtraLoss", "extra_loss", "register_extra_loss"]


class ExtraLoss(NamedTuple):
    """A registered term: ``fn(recipe, batch) -> scalar``; ``maximise``: subtracted, not added."""

    fn: Callable[[Any, dict], Tensor]
    maximise: bool


EXTRA_LOSSES: dict[str, ExtraLoss] = {}


def register_extra_loss(name: str, *, maximise: bool = False) -> Callable[[Callable], Callable]:
    """Register ``fn(recipe, batch) -> scalar tensor`` as the term ``loss.extra.<name>``."""

    def register(fn: Callable[[Any, dict], Tensor]) -> Callable[[Any, dict], Tensor]:
        if name in EXTRA_LOSSES:
            raise ValueError(f"extra loss {name!r} is already registered")
        EXTRA_LOSSES[name] = ExtraLoss(fn, maximise)
        return fn

    return register


def extra_loss(name: str) -> ExtraLoss:
    """The registered term ``name``; ValueError naming the registered ones (and where they live)."""
    if name not in EXTRA_LOSSES:
        raise ValueError(
            f"loss.extra: no extra loss {name!r} is registered (registered: {sorted(EXTRA_LOSSES) or 'none'}); "
            "import the module that registers it first (mofme.studies registers weather_mi and weather_groups)"
        )
    return EXTRA_LOSSES[name]
