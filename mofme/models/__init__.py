"""Models built from the layers of :mod:`mofme.nn`: the restoration networks, the recognition
models (ViT classifier and segmenter), their presets, one registry of named models, and save /
load in the Hugging Face Hub layout."""

from .drops import DropDetector, DropDetectorConfig
from .hub import CONFIG_NAME, WEIGHTS_NAME, PretrainedMixin, load_weights, shipped_weights
from .recognition import (
    RECOGNIZER_PRESETS,
    ClassifierOutput,
    RecognizerConfig,
    SegmenterOutput,
    ViTClassifier,
    ViTEncoder,
    ViTSegmenter,
)
from .registry import (
    ARCHITECTURES,
    DEFAULT_WEIGHTS,
    PRETRAINED,
    RESTORER_PRESETS,
    build_restorer,
    create_model,
    list_models,
    list_pretrained,
    load_model,
    load_restorer,
    model_config,
    register_model,
    restorer_config,
)
from .restorer import PRESETS, FFNChoice, Restorer, RestorerConfig, RestorerOutput
from .strength import CalibratedConfig, CalibratedRestorer, StrengthHead
from .unet import UNET_PRESETS, UNetConfig, UNetRestorer

__all__ = [
    "ARCHITECTURES",
    "CONFIG_NAME",
    "DEFAULT_WEIGHTS",
    "PRESETS",
    "PRETRAINED",
    "RECOGNIZER_PRESETS",
    "RESTORER_PRESETS",
    "UNET_PRESETS",
    "WEIGHTS_NAME",
    "CalibratedConfig",
    "CalibratedRestorer",
    "ClassifierOutput",
    "DropDetector",
    "DropDetectorConfig",
    "FFNChoice",
    "PretrainedMixin",
    "RecognizerConfig",
    "Restorer",
    "RestorerConfig",
    "RestorerOutput",
    "SegmenterOutput",
    "StrengthHead",
    "UNetConfig",
    "UNetRestorer",
    "ViTClassifier",
    "ViTEncoder",
    "ViTSegmenter",
    "build_restorer",
    "create_model",
    "list_models",
    "list_pretrained",
    "load_model",
    "load_restorer",
    "load_weights",
    "model_config",
    "register_model",
    "restorer_config",
    "shipped_weights",
]
