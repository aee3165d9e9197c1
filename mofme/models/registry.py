"""One registry of named models (timm style) and the ``build_*`` factories.

    list_models()                                  # ['restorer_paper', 'restorer_small', 'restorer_tiny']
    model = create_model("restorer_small", ffn="moe", num_experts=8)
    model = build_restorer(preset="paper", ffn="mofme", num_experts=128, top_k=4)

A function decorated with :func:`register_model` takes keyword overrides and returns a module;
its name is the model name. Tests run over every registered name, so a new variant is tested
as soon as it is registered.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from torch import nn

from .restorer import PRESETS, Restorer

__all__ = ["build_restorer", "create_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` (keyword overrides -> module) under its ``__name__``."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def create_model(name: str, **overrides: Any) -> nn.Module:
    """The registered model ``name``, built with ``overrides`` (constructor keyword arguments)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}")
    return _MODELS[name](**overrides)


def build_restorer(
    *,
    preset: str = "small",
    ffn: str = "mofme",
    num_experts: int = 16,
    top_k: int = 2,
    router: str = "linear",
    modulation: str = "generator",
    router_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> Restorer:
    """A :class:`Restorer` of size ``preset`` (``"paper"``, ``"small"``, ``"tiny"``) with the given
    FFN method; ``overrides`` replace any other :class:`RestorerConfig` field (e.g. ``depth=4``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    config = {
        **asdict(PRESETS[preset]),
        "ffn": ffn,
        "num_experts": num_experts,
        "top_k": top_k,
        "router": router,
        "modulation": modulation,
        "router_kwargs": router_kwargs,
        **overrides,
    }
    return Restorer(**config)


@register_model
def restorer_paper(**overrides: Any) -> Restorer:
    """The published network: C=32, D=384, P=8, depth 2, 8 heads x 64, 30 x 30 position embedding
    (8.71M parameters dense)."""
    return build_restorer(preset="paper", **overrides)


@register_model
def restorer_small(**overrides: Any) -> Restorer:
    """C=16, D=128, P=4, depth 2, 4 heads x 32: CPU experiments."""
    return build_restorer(preset="small", **overrides)


@register_model
def restorer_tiny(**overrides: Any) -> Restorer:
    """C=8, D=64, P=4, depth 1, 2 heads x 32: smoke tests and CPU training on small crops."""
    return build_restorer(preset="tiny", **overrides)
