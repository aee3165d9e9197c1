"""mofme: Mixture of Feature-Modulated Experts, and all-in-one adverse-weather restoration.

import mofme
layer = mofme.MoFME(dim=384, num_experts=128, top_k=4, router="uar")
out = layer(x)                       # MoEOutput(output, aux_loss, expert_indices, ...)
loss = task_loss(out.output) + out.aux_loss
"""

from .models import (
    PRESETS,
    Restorer,
    RestorerConfig,
    RestorerOutput,
    build_restorer,
    create_model,
    list_models,
    register_model,
)
from .nn import (
    FFN_LAYERS,
    DenseFFN,
    MoEOutput,
    MoFME,
    MoFMEMlp,
    SparseMoE,
    SparseMoEMlp,
    TopKRouter,
    UncertaintyAwareRouter,
    aux_loss,
    build_ffn,
    build_router,
)

__version__ = "0.1.0"

__all__ = [
    "FFN_LAYERS",
    "PRESETS",
    "DenseFFN",
    "MoEOutput",
    "MoFME",
    "MoFMEMlp",
    "Restorer",
    "RestorerConfig",
    "RestorerOutput",
    "SparseMoE",
    "SparseMoEMlp",
    "TopKRouter",
    "UncertaintyAwareRouter",
    "__version__",
    "aux_loss",
    "build_ffn",
    "build_restorer",
    "build_router",
    "create_model",
    "list_models",
    "register_model",
]
