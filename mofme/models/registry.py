"""One registry of named models (timm style) and the ``build_*`` factories.

    list_models("restorer_*")                      # ['restorer_paper', 'restorer_small', 'restorer_small_window', ...]
    list_models("classifier_*")                    # ['classifier_small', 'classifier_tiny'] (and segmenter_*)
    detector = create_model("drop_detector")        # lens-drop logits, the drop_head of drop_fill restorers
    model = create_model("restorer_small", ffn="moe", num_experts=8)
    model = create_model("segmenter_tiny", num_classes=19, ffn="mofme")
    model = build_restorer(preset="paper", ffn="mofme", num_experts=128, top_k=4)
    model = load_model("runs/x/best")              # any saved model, whatever its architecture
    model = load_restorer("runs/x/best")           # the same, refusing anything but a restorer

A function decorated with :func:`register_model` takes keyword overrides and returns a module;
its name is the model name. Tests run over every registered name, so a new variant is tested
as soon as it is registered.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._hints import closest_name
from .drops import DropDetector
from .hub import PretrainedMixin, read_config
from .recognition import RECOGNIZER_PRESETS, ViTClassifier, ViTSegmenter
from .restorer import PRESETS, Restorer, RestorerConfig
from .unet import UNET_PRESETS, UNetConfig, UNetRestorer

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_WEIGHTS",
    "PRETRAINED",
    "RESTORER_PRESETS",
    "build_restorer",
    "create_model",
    "list_models",
    "load_model",
    "load_restorer",
    "register_model",
    "restorer_config",
]

ARCHITECTURES: dict[str, type[PretrainedMixin]] = {
    "DropDetector": DropDetector,
    "Restorer": Restorer,
    "UNetRestorer": UNetRestorer,
    "ViTClassifier": ViTClassifier,
    "ViTSegmenter": ViTSegmenter,
}
_RESTORERS = (Restorer, UNetRestorer)
# every restorer preset: the single-scale published network (PRESETS) and the multi-scale U-Net
RESTORER_PRESETS: dict[str, RestorerConfig | UNetConfig] = {**PRESETS, **UNET_PRESETS}
_CLASSES = {RestorerConfig: Restorer, UNetConfig: UNetRestorer}
DEFAULT_WEIGHTS = "mofme-small-weather-gated"  # what `mofme restore` and `mofme demo` use by default
PRETRAINED: dict[str, str] = {"restorer_small": DEFAULT_WEIGHTS}  # model name -> shipped weights

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


def create_model(name: str, *, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """The registered model ``name``, built with ``overrides`` (constructor keyword arguments); with
    ``pretrained``, its shipped weights (:data:`PRETRAINED`) in eval mode, ``overrides`` being those
    ``from_pretrained`` takes (ones that keep the parameter shapes)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}")
    if not pretrained:
        return _MODELS[name](**overrides)
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained weights ship for {name!r}; these have some: {sorted(PRETRAINED)}")
    return load_model(PRETRAINED[name], **overrides)


def restorer_config(preset: str = "small", **fields: Any) -> RestorerConfig | UNetConfig:
    """The config of ``preset`` with ``fields`` replaced: the one place a restorer's settings are
    resolved and checked (unknown fields and unregistered FFN / router names raise ValueError)."""
    if preset not in RESTORER_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(RESTORER_PRESETS)}")
    base = RESTORER_PRESETS[preset]
    names = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        close = closest_name(unknown[0], names) if len(unknown) == 1 else None
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(
            f"preset {preset!r} has no field {', '.join(unknown)}{hint}; its fields: {', '.join(names)}"
        )
    return dataclasses.replace(base, **fields)


def build_restorer(*, preset: str = "small", **fields: Any) -> Restorer | UNetRestorer:
    """The restorer ``preset``, any field of its config replaced by ``fields`` (e.g. ``ffn="moe"``,
    ``top_k=1``, ``depth=4``): a :class:`Restorer` (``"paper"``, ``"small"``, ``"small_window"``,
    ``"tiny"``) or a
    :class:`UNetRestorer` (``"unet"``)."""
    config = restorer_config(preset, **fields)
    return _CLASSES[type(config)](**asdict(config))


def load_model(
    name_or_path: str | Path, *, device: str | torch.device = "cpu", **overrides: Any
) -> nn.Module:
    """Any model saved by ``save_pretrained``, of the class :data:`ARCHITECTURES` maps
    ``config.json``'s ``architecture`` to (``"Restorer"`` when absent), in eval mode; ``overrides``
    as in ``from_pretrained``."""
    config, path = read_config(name_or_path)
    architecture = config.get("architecture", "Restorer")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture].from_pretrained(name_or_path, device=device, **overrides)


def load_restorer(
    name_or_path: str | Path, *, device: str | torch.device = "cpu", **overrides: Any
) -> nn.Module:
    """Any restorer saved by ``save_pretrained`` (a :class:`Restorer` or :class:`UNetRestorer`, as
    ``config.json``'s ``architecture`` says), in eval mode: :func:`load_model`, refusing
    recognition models."""
    model = load_model(name_or_path, device=device, **overrides)
    if not isinstance(model, _RESTORERS):
        raise ValueError(f"{name_or_path} holds a {type(model).__name__}, not a restorer; use load_model")
    return model


@register_model
def restorer_paper(**overrides: Any) -> Restorer:
    """The published network: C=32, D=384, P=8, depth 2, 8 heads x 64, 30 x 30 position embedding
    (8.71M parameters dense)."""
    return build_restorer(preset="paper", **overrides)


@register_model
def restorer_small(**overrides: Any) -> Restorer:
    """C=16, D=128, P=4, depth 2, 4 heads x 32: CPU experiments; ``pretrained=True`` loads the
    shipped weights (MoFME E=16, k=2, residual)."""
    return build_restorer(preset="small", **overrides)


@register_model
def restorer_small_window(**overrides: Any) -> Restorer:
    """``restorer_small`` with 8 x 8 token attention windows (32 x 32 px), shifted on the second layer:
    memory linear in the image size and seamless tiled inference (``receptive_margin`` 54 px)."""
    return build_restorer(preset="small_window", **overrides)


@register_model
def restorer_tiny(**overrides: Any) -> Restorer:
    """C=8, D=64, P=4, depth 1, 2 heads x 32: smoke tests and CPU training on small crops."""
    return build_restorer(preset="tiny", **overrides)


@register_model
def restorer_unet(**overrides: Any) -> UNetRestorer:
    """Multi-scale U-Net, MoFME in the transformer blocks of its two coarsest levels (C=24, depths
    1/1/2/2, E=16, k=2)."""
    return build_restorer(preset="unet", **overrides)


def _recognizer(cls: type[ViTClassifier | ViTSegmenter], preset: str, overrides: dict[str, Any]) -> Any:
    """``cls`` built from the recognition preset with ``overrides`` (unknown fields raise TypeError)."""
    return cls(**{**asdict(RECOGNIZER_PRESETS[preset]), **overrides})


@register_model
def classifier_tiny(**overrides: Any) -> ViTClassifier:
    """ViT classifier, D=64, depth 2, P=4, 2 heads x 32, 64 x 64 position grid: CPU training."""
    return _recognizer(ViTClassifier, "tiny", overrides)


@register_model
def classifier_small(**overrides: Any) -> ViTClassifier:
    """ViT classifier, D=128, depth 4, P=4, 4 heads x 32, 64 x 64 position grid."""
    return _recognizer(ViTClassifier, "small", overrides)


@register_model
def segmenter_tiny(**overrides: Any) -> ViTSegmenter:
    """ViT segmenter (progressive upsampling decoder), D=64, depth 2, P=4, 2 heads x 32."""
    return _recognizer(ViTSegmenter, "tiny", overrides)


@register_model
def segmenter_small(**overrides: Any) -> ViTSegmenter:
    """ViT segmenter (progressive upsampling decoder), D=128, depth 4, P=4, 4 heads x 32."""
    return _recognizer(ViTSegmenter, "small", overrides)


@register_model
def drop_detector(**overrides: Any) -> DropDetector:
    """Lens-drop detector: a 5-level convolutional U-Net (widths 16-128), image -> drop logits
    (``task: drop_detection``; the ``drop_head`` of ``drop_fill`` restorers)."""
    return DropDetector(**overrides)
