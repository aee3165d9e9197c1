"""Drop-ins for timm's ``mlp_layer``: routed layers that take timm's Mlp arguments and return a
tensor. Their aux losses are collected with :func:`mofme.aux_loss`::

    vit = timm.models.VisionTransformer(mlp_layer=functools.partial(MoFMEMlp, num_experts=16, top_k=2))
    loss = task_loss + mofme.aux_loss(vit)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .moe import SparseMoE
from .mofme import MoFME
from .routed import RoutedLayer

__all__ = ["MoFMEMlp", "SparseMoEMlp"]


class _TimmMlp(nn.Module):
    layer_cls: type[RoutedLayer]

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] | None = None,
        bias: bool = True,
        drop: float = 0.0,
        *,
        num_experts: int = 16,
        top_k: int = 2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if out_features not in (None, in_features):
            raise ValueError(
                f"{type(self).__name__} maps dim to dim; out_features={out_features} is not supported"
            )
        if norm_layer is not None or not bias:
            raise ValueError(f"{type(self).__name__} supports neither timm's mlp norm_layer nor bias=False")
        self.layer = self.layer_cls(
            in_features,
            num_experts,
            top_k,
            hidden_dim=hidden_features,
            dropout=drop,
            act_layer=act_layer or nn.GELU,
            **layer_kwargs,
        ).to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x).output


class MoFMEMlp(_TimmMlp):
    """:class:`MoFME` with timm's Mlp signature; forward returns a tensor."""

    layer_cls = MoFME


class SparseMoEMlp(_TimmMlp):
    """:class:`SparseMoE` with timm's Mlp signature; forward returns a tensor."""

    layer_cls = SparseMoE
