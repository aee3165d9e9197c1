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
    label_expert_mutual_information,
    label_group_loss,
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
    "label_expert_mutual_information",
    "label_group_loss",
    "load_balancing_loss",
    "mix_rows",
    "router_z_loss",
    "routing_probs",
    "scatter_tokens",
]
