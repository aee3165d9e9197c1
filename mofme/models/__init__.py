"""Models built from the layers of :mod:`mofme.nn`: the restoration network, its presets, one
registry of named models, and save / load in the Hugging Face Hub layout."""

from .hub import CONFIG_NAME, WEIGHTS_NAME, PretrainedMixin
from .registry import build_restorer, create_model, list_models, register_model
from .restorer import PRESETS, Restorer, RestorerConfig, RestorerOutput

__all__ = [
    "CONFIG_NAME",
    "PRESETS",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "Restorer",
    "RestorerConfig",
    "RestorerOutput",
    "build_restorer",
    "create_model",
    "list_models",
    "register_model",
]
