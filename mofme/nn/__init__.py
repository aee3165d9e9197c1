"""The method: routers, sparse expert dispatch and the FFN layers (dense, MoE, MoFME)."""

from .adapters import MoFMEMlp, SparseMoEMlp
from .dispatch import Assignments, group_by_expert, grouped_linear, mix_rows, scatter_tokens
from .ffn import DenseFFN, FeedForward
from .moe import ExpertFFNs, SparseMoE
from .mofme import FeatureModulation, GatedProjection, MoFME
from .output import MoEOutput
from .registry import FFN_LAYERS, build_ffn
from .routed import RoutedLayer, aux_loss, routing_probs
from .routers import (
    ROUTERS,
    RouterOutput,
    TopKRouter,
    UncertaintyAwareRouter,
    build_router,
    load_balancing_loss,
    router_z_loss,
)

__all__ = [
    "FFN_LAYERS",
    "ROUTERS",
    "Assignments",
    "DenseFFN",
    "ExpertFFNs",
    "FeatureModulation",
    "FeedForward",
    "GatedProjection",
    "MoEOutput",
    "MoFME",
    "MoFMEMlp",
    "RoutedLayer",
    "RouterOutput",
    "SparseMoE",
    "SparseMoEMlp",
    "TopKRouter",
    "UncertaintyAwareRouter",
    "aux_loss",
    "build_ffn",
    "build_router",
    "group_by_expert",
    "grouped_linear",
    "load_balancing_loss",
    "mix_rows",
    "router_z_loss",
    "routing_probs",
    "scatter_tokens",
]


_MOVED = {  # deprecated names: moved out of the layer library, kept importable for one release
    "label_expert_mutual_information": "mofme.studies.losses",
    "label_group_loss": "mofme.studies.losses",
}


def __getattr__(name: str) -> object:
    """``mofme.nn.<name>`` for a name in :data:`_MOVED`: its new home's object, with a DeprecationWarning."""
    if name not in _MOVED:
        raise AttributeError(f"module 'mofme.nn' has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(
        f"mofme.nn.{name} moved to {_MOVED[name]}.{name}; the old path goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(_MOVED[name]), name)
