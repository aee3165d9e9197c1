"""The FFN layers by name, so that models and configs can say ``ffn: mofme``."""

from __future__ import annotations

from torch import nn

from .ffn import DenseFFN
from .moe import SparseMoE
from .mofme import MoFME

__all__ = ["FFN_LAYERS", "build_ffn"]

FFN_LAYERS: dict[str, type[nn.Module]] = {"dense": DenseFFN, "moe": SparseMoE, "mofme": MoFME}


def build_ffn(kind: str, *, dim: int, num_experts: int = 16, top_k: int = 2, **kwargs) -> nn.Module:
    """``"dense"`` -> :class:`DenseFFN` (expert arguments ignored), ``"moe"`` -> :class:`SparseMoE`,
    ``"mofme"`` -> :class:`MoFME`; ``kwargs`` go to the layer's constructor."""
    if kind not in FFN_LAYERS:
        raise ValueError(f"unknown ffn {kind!r}; choose from {sorted(FFN_LAYERS)}")
    if kind == "dense":
        return DenseFFN(dim, **kwargs)
    return FFN_LAYERS[kind](dim, num_experts, top_k, **kwargs)
