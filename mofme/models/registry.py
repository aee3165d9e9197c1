"""One registry of named models (timm style) and the ``build_*`` factories.

    list_models("restorer_*")                      # ['restorer_paper', 'restorer_small', 'restorer_small_window', ...]
    list_models("classifier_*")                    # ['classifier_small', 'classifier_tiny'] (and segmenter_*)
    detector = create_model("drop_detector")        # lens-drop logits, the drop_head of drop_fill restorers
    model = create_model("restorer_small", ffn="moe", num_experts=8)
    model = create_model("segmenter_tiny", num_classes=19, ffn="mofme")
    model = create_model("restorer_small.weather", pretrained=True)   # shipped weights, by tag
    config = model_config("restorer_paper", num_experts=128, top_k=4)  # the settings, checked
    model = load_model("runs/x/best")              # any saved model, whatever its architecture
    model = load_restorer("runs/x/best")           # the same, refusing anything but a restorer

A function decorated with :func:`register_model` takes keyword overrides and returns a module;
its name is the model name, and ``defaults=`` its config dataclass (every field it accepts, with the
entry's values): :func:`model_config` checks a set of fields against it (the YAML ``model:``
section). Shipped weights are tagged names, ``<model>.<tag>`` (timm's convention; the first tag
listed for a model is its default). Tests run over every registered name, so a new variant is tested
as soon as it is registered.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._hints import closest_name
from .drops import DropDetector, DropDetectorConfig
from .hub import PretrainedMixin, read_config
from .recognition import RECOGNIZER_PRESETS, ViTClassifier, ViTSegmenter
from .restorer import PRESETS, Restorer, RestorerConfig
from .strength import CalibratedConfig, CalibratedRestorer
from .unet import UNET_PRESETS, UNetConfig, UNetRestorer

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_WEIGHTS",
    "PRETRAINED",
    "RESTORER_PRESETS",
    "build_restorer",
    "create_model",
    "list_models",
    "list_pretrained",
    "load_model",
    "load_restorer",
    "model_config",
    "register_model",
    "restorer_config",
]

ARCHITECTURES: dict[str, type[PretrainedMixin]] = {
    "CalibratedRestorer": CalibratedRestorer,
    "DropDetector": DropDetector,
    "Restorer": Restorer,
    "UNetRestorer": UNetRestorer,
    "ViTClassifier": ViTClassifier,
    "ViTSegmenter": ViTSegmenter,
}
_RESTORERS = (Restorer, UNetRestorer, CalibratedRestorer)
# every restorer preset: the single-scale published network (PRESETS) and the multi-scale U-Net
RESTORER_PRESETS: dict[str, RestorerConfig | UNetConfig] = {**PRESETS, **UNET_PRESETS}
_CLASSES = {RestorerConfig: Restorer, UNetConfig: UNetRestorer}
DEFAULT_WEIGHTS = "mofme-small-weather-gated"  # what `mofme restore` and `mofme demo` use by default
# tagged model name -> shipped weights (mofme/weights/); a model's first tag is its default
PRETRAINED: dict[str, str] = {
    "restorer_small.weather_gated": DEFAULT_WEIGHTS,
    "restorer_small.weather": "mofme-small-weather",
}

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DEFAULTS: dict[str, Any] = {}  # model name -> its config dataclass with the entry's values


def register_model(
    fn: Callable[..., nn.Module] | None = None, *, defaults: Any = None
) -> Callable[..., nn.Module] | Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn`` (keyword overrides -> module) under its ``__name__``; ``defaults``: the config
    dataclass of the fields it accepts (:func:`model_config`). ``@register_model`` or
    ``@register_model(defaults=...)``."""

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        _DEFAULTS[name] = defaults
        return fn

    return register if fn is None else register(fn)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Tagged names (``<model>.<tag>``) with shipped weights matching ``pattern``, in registry order."""
    return [name for name in PRETRAINED if fnmatch.fnmatchcase(name, pattern)]


def _untagged(name: str) -> tuple[str, str | None]:
    """``"restorer_small.weather"`` -> ``("restorer_small", "weather")``; the model must be registered."""
    model, _, tag = name.partition(".")
    if model not in _MODELS:
        close = closest_name(model, list(_MODELS))
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"unknown model {model!r}{hint}; choose from {list_models()}")
    return model, tag or None


def model_config(name: str, **fields: Any) -> Any:
    """The config dataclass of registered model ``name`` (a tag is ignored) with ``fields`` replaced: every
    setting of the model, checked (unknown fields, and values the config refuses, raise ValueError
    naming them). None for an entry registered without ``defaults``."""
    model, _ = _untagged(name)
    defaults = _DEFAULTS[model]
    return None if defaults is None else _replaced(defaults, fields, owner=f"model {model!r}")


def _replaced(base: Any, fields: dict[str, Any], *, owner: str) -> Any:
    """``dataclasses.replace(base, **fields)``, an unknown field named (with the closest known one)."""
    names = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(fields) - set(names))
    if unknown:
        close = closest_name(unknown[0], names) if len(unknown) == 1 else None
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(f"{owner} has no field {', '.join(unknown)}{hint}; its fields: {', '.join(names)}")
    return dataclasses.replace(base, **fields)


def create_model(name: str, *, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """The registered model ``name``, built with ``overrides`` (constructor keyword arguments); with
    ``pretrained``, shipped weights in eval mode: those of ``name`` when it is tagged
    (``"restorer_small.weather"``, :func:`list_pretrained`), else the model's default tag; ``overrides``
    then being those ``from_pretrained`` takes (ones that keep the parameter shapes)."""
    model, tag = _untagged(name)
    if not pretrained:
        return _MODELS[model](**overrides)
    tagged = name if tag is not None else next((t for t in PRETRAINED if t.startswith(f"{model}.")), name)
    if tagged not in PRETRAINED:
        raise ValueError(f"no pretrained weights ship as {tagged!r}; these do: {list_pretrained()}")
    return load_model(PRETRAINED[tagged], **overrides)


def restorer_config(preset: str = "small", **fields: Any) -> RestorerConfig | UNetConfig:
    """The config of ``preset`` with ``fields`` replaced: the one place a restorer's settings are
    resolved and checked (unknown fields and unregistered FFN / router names raise ValueError)."""
    if preset not in RESTORER_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(RESTORER_PRESETS)}")
    return _replaced(RESTORER_PRESETS[preset], fields, owner=f"preset {preset!r}")


def build_restorer(*, preset: str = "small", **fields: Any) -> Restorer | UNetRestorer:
    """The restorer ``preset``, any field of its config replaced by ``fields`` (e.g. ``ffn="moe"``,
    ``top_k=1``, ``depth=4``): a :class:`Restorer` (``"paper"``, ``"small"``, ``"small_window"``,
    ``"tiny"``) or a
    :class:`UNetRestorer` (``"unet"``, ``"unet_local"``)."""
    config = restorer_config(preset, **fields)
    return _CLASSES[type(config)](config)


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


@register_model(defaults=RESTORER_PRESETS["paper"])
def restorer_paper(**overrides: Any) -> Restorer:
    """The published network: C=32, D=384, P=8, depth 2, 8 heads x 64, 30 x 30 position embedding
    (8.71M parameters dense)."""
    return build_restorer(preset="paper", **overrides)


@register_model(defaults=RESTORER_PRESETS["small"])
def restorer_small(**overrides: Any) -> Restorer:
    """C=16, D=128, P=4, depth 2, 4 heads x 32: CPU experiments; ``pretrained=True`` loads the
    shipped weights (MoFME E=16, k=2, residual)."""
    return build_restorer(preset="small", **overrides)


@register_model(defaults=RESTORER_PRESETS["small_window"])
def restorer_small_window(**overrides: Any) -> Restorer:
    """``restorer_small`` with 8 x 8 token attention windows (32 x 32 px), shifted on the second layer:
    memory linear in the image size and seamless tiled inference (``receptive_margin`` 54 px)."""
    return build_restorer(preset="small_window", **overrides)


@register_model(defaults=RESTORER_PRESETS["tiny"])
def restorer_tiny(**overrides: Any) -> Restorer:
    """C=8, D=64, P=4, depth 1, 2 heads x 32: smoke tests and CPU training on small crops."""
    return build_restorer(preset="tiny", **overrides)


@register_model(defaults=RESTORER_PRESETS["unet"])
def restorer_unet(**overrides: Any) -> UNetRestorer:
    """Multi-scale U-Net, MoFME in the transformer blocks of its two coarsest levels (C=24, depths
    1/1/2/2, E=16, k=2)."""
    return build_restorer(preset="unet", **overrides)


@register_model(defaults=RESTORER_PRESETS["unet_local"])
def restorer_unet_local(**overrides: Any) -> UNetRestorer:
    """Multi-scale U-Net with gated depthwise-conv mixers (bounded reach: seamless tiles), the whole
    image's context and a weather-presence gate; MoFME FFNs at 1/4 and 1/8 (C=16, depths 1/1/2/4)."""
    return build_restorer(preset="unet_local", **overrides)


@register_model(defaults=CalibratedConfig())
def restorer_calibrated(**overrides: Any) -> CalibratedRestorer:
    """A restorer (``base``: default the shipped ``mofme-small-weather-gated``, loaded with its
    weights) whose correction is scaled per image by a learned strength from the whole image
    (:mod:`mofme.models.strength`); the strength starts at ``prior`` and trains with the base fixed."""
    return CalibratedRestorer(_replaced(CalibratedConfig(), overrides, owner="model 'restorer_calibrated'"))


def _recognizer(cls: type[ViTClassifier | ViTSegmenter], preset: str, overrides: dict[str, Any]) -> Any:
    """``cls`` built from the recognition preset with ``overrides`` (an unknown field raises ValueError naming it)."""
    return cls(_replaced(RECOGNIZER_PRESETS[preset], overrides, owner=f"{cls.__name__} preset {preset!r}"))


@register_model(defaults=RECOGNIZER_PRESETS["tiny"])
def classifier_tiny(**overrides: Any) -> ViTClassifier:
    """ViT classifier, D=64, depth 2, P=4, 2 heads x 32, 64 x 64 position grid: CPU training."""
    return _recognizer(ViTClassifier, "tiny", overrides)


@register_model(defaults=RECOGNIZER_PRESETS["small"])
def classifier_small(**overrides: Any) -> ViTClassifier:
    """ViT classifier, D=128, depth 4, P=4, 4 heads x 32, 64 x 64 position grid."""
    return _recognizer(ViTClassifier, "small", overrides)


@register_model(defaults=RECOGNIZER_PRESETS["tiny"])
def segmenter_tiny(**overrides: Any) -> ViTSegmenter:
    """ViT segmenter (progressive upsampling decoder), D=64, depth 2, P=4, 2 heads x 32."""
    return _recognizer(ViTSegmenter, "tiny", overrides)


@register_model(defaults=RECOGNIZER_PRESETS["small"])
def segmenter_small(**overrides: Any) -> ViTSegmenter:
    """ViT segmenter (progressive upsampling decoder), D=128, depth 4, P=4, 4 heads x 32."""
    return _recognizer(ViTSegmenter, "small", overrides)


@register_model(defaults=DropDetectorConfig())
def drop_detector(**overrides: Any) -> DropDetector:
    """Lens-drop detector: a 5-level convolutional U-Net (widths 16-128), image -> drop logits
    (``task: drop_detection``; the ``drop_head`` of ``drop_fill`` restorers)."""
    return DropDetector(**overrides)
