"""Downstream recognition: a ViT classifier and a ViT segmenter whose FFN is dense, MoE or MoFME.

Both share :class:`ViTEncoder`:

    image (N, 3, H, W) in [0, 1]
      -> scaled to [-1, 1], padded at the bottom / right to a multiple of the patch size P
      -> patch embed: Conv2d(3 -> D, kernel P, stride P) + LayerNorm       tokens (N, h * w, D)
      -> + learned position embedding (a pos_embed_size / P square grid, resampled bicubically
         to the token grid h = ceil(H / P), w = ceil(W / P))
      -> depth x [x + Attention(LN(x)); x + FFN(LN(x))]                    FFN: dense | moe | mofme
      -> LayerNorm                                                         tokens (N, h * w, D)

:class:`ViTClassifier`: mean of the tokens -> Linear(D -> classes)        logits (N, classes)
:class:`ViTSegmenter`: tokens as a (N, D, h, w) map -> log2(P) stages of
[conv3x3, GroupNorm, ReLU, bilinear 2x] halving the width, cropped to (H, W); concatenated with a
full-resolution image branch [conv3x3, GroupNorm, ReLU, conv3x3] -> conv3x3, ReLU, conv1x1 -> classes
                                                                          logits (N, classes, H, W)

Both return the summed auxiliary loss of the routed FFNs (zero for dense) and the per-layer routing
``(expert_indices, expert_weights)``, each (N, h, w, k) (``(None, None)`` for dense), like
:class:`~mofme.models.restorer.Restorer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .hub import config_from
from .restorer import (
    FFNChoice,
    PatchEmbed,
    TokenGridModel,
    check_token_settings,
    conv3x3,
    grid_routing,
    pad_to_multiple,
    position_grid,
    resample_position,
    transformer_stack,
)

__all__ = [
    "RECOGNIZER_PRESETS",
    "ClassifierOutput",
    "EncoderOutput",
    "RecognizerConfig",
    "SegmenterOutput",
    "ViTClassifier",
    "ViTEncoder",
    "ViTSegmenter",
]

Routing = list[tuple[Tensor | None, Tensor | None]]


@dataclass(frozen=True)
class RecognizerConfig(FFNChoice):
    """Every constructor argument of :class:`ViTClassifier` and :class:`ViTSegmenter` and its
    default, the ``tiny`` preset (``asdict(config)`` is ``config.json``); the FFN fields come from
    :class:`~mofme.models.restorer.FFNChoice`."""

    num_classes: int = 10
    patch_size: int = 4  # P
    embed_dim: int = 64  # D
    depth: int = 2
    num_heads: int = 2
    head_dim: int = 32  # the attention inner width is num_heads * head_dim
    mlp_ratio: float = 4.0  # FFN hidden width = mlp_ratio * D
    dropout: float = 0.0  # attention output and FFN dropout
    pos_embed_size: int | None = 64  # image side the learned position grid is laid out for; None: none

    def __post_init__(self) -> None:
        super().__post_init__()
        check_token_settings(self, "num_classes")


RECOGNIZER_PRESETS: dict[str, RecognizerConfig] = {
    # CPU-sized: 64 x 64 images, a 16 x 16 token grid
    "tiny": RecognizerConfig(),  # D=64, depth 2, P=4, 2 heads x 32
    "small": RecognizerConfig(embed_dim=128, depth=4, num_heads=4),  # D=128, depth 4, P=4, 4 heads x 32
}


class EncoderOutput(NamedTuple):
    """``tokens`` (N, h * w, D), LayerNorm'ed; ``grid`` (h, w) = (ceil(H / P), ceil(W / P));
    ``aux_loss`` scalar; ``routing`` per layer ``(expert_indices, expert_weights)``, each (N, h, w, k)."""

    tokens: Tensor
    grid: tuple[int, int]
    aux_loss: Tensor
    routing: Routing


class ClassifierOutput(NamedTuple):
    """``logits`` (N, num_classes); ``aux_loss`` scalar (zero for dense FFNs), to add to the
    training loss; ``routing`` as in :class:`EncoderOutput`."""

    logits: Tensor
    aux_loss: Tensor
    routing: Routing


class SegmenterOutput(NamedTuple):
    """``logits`` (N, num_classes, H, W) at the input resolution; ``aux_loss`` scalar (zero for
    dense FFNs); ``routing`` as in :class:`EncoderOutput`."""

    logits: Tensor
    aux_loss: Tensor
    routing: Routing


class ViTEncoder(nn.Module):
    """(N, 3, H, W) in [0, 1], any H, W -> :class:`EncoderOutput` (tokens (N, h * w, D))."""

    def __init__(self, cfg: RecognizerConfig) -> None:
        super().__init__()
        self.patch_size, dim = cfg.patch_size, cfg.embed_dim
        self.patch_embed = PatchEmbed(in_channels=3, embed_dim=dim, patch_size=cfg.patch_size)
        self.pos_embed = position_grid(cfg, dim)
        self.blocks = transformer_stack(cfg, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: Tensor) -> EncoderOutput:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(image.shape)}")
        padded = pad_to_multiple(image, self.patch_size)
        grid = (padded.shape[-2] // self.patch_size, padded.shape[-1] // self.patch_size)
        tokens = self.patch_embed(padded * 2 - 1)
        if self.pos_embed is not None:
            tokens = tokens + resample_position(self.pos_embed, grid)
        aux = tokens.new_zeros((), dtype=torch.float32)
        routing: Routing = []
        for block in self.blocks:
            tokens, out = block(tokens)
            aux = aux + out.aux_loss.float()
            routing.append(grid_routing(out, grid))
        return EncoderOutput(self.norm(tokens), grid, aux, routing)


class _Recognizer(TokenGridModel, nn.Module):
    """The config (keyword-only fields of :class:`RecognizerConfig`) and the shared encoder."""

    def __init__(self, config: RecognizerConfig | None = None, /, **fields: Any) -> None:
        super().__init__()
        self.config = config_from(RecognizerConfig, config, fields)
        self.patch_size = self.config.patch_size
        self.encoder = ViTEncoder(self.config)


class ViTClassifier(_Recognizer):
    """Image classifier; ``model(image)``, image (N, 3, H, W) in [0, 1], any H, W ->
    :class:`ClassifierOutput` with logits (N, num_classes): the mean of the encoder's tokens
    through a linear head. Keyword-only arguments: the fields of :class:`RecognizerConfig`."""

    def __init__(self, config: RecognizerConfig | None = None, /, **fields: Any) -> None:
        super().__init__(config, **fields)
        self.head = nn.Linear(self.config.embed_dim, self.config.num_classes)

    def forward(self, image: Tensor) -> ClassifierOutput:
        enc = self.encoder(image)
        return ClassifierOutput(self.head(enc.tokens.mean(1)), enc.aux_loss, enc.routing)


def _upsample_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """(N, Cin, h, w) -> (N, Cout, 2h, 2w): conv3x3, GroupNorm, ReLU, bilinear 2x upsampling."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    )


class ViTSegmenter(_Recognizer):
    """Semantic segmenter; ``model(image)``, image (N, 3, H, W) in [0, 1], any H, W ->
    :class:`SegmenterOutput` with logits (N, num_classes, H, W). The decoder upsamples the
    (N, D, h, w) token map progressively: log2(P) stages (:func:`_upsample_stage`), the width c halved
    at each (at least 8 channels); a full-resolution image branch (two conv3x3 to c channels, for
    pixel-thin structures the token grid cannot place) is concatenated, fused by a conv3x3 + ReLU and
    mapped to the classes by a conv1x1. ``patch_size`` must be a power of two. Keyword-only arguments:
    the fields of :class:`RecognizerConfig`."""

    def __init__(self, config: RecognizerConfig | None = None, /, **fields: Any) -> None:
        super().__init__(config, **fields)
        patch, width = self.config.patch_size, self.config.embed_dim
        if patch & (patch - 1):
            raise ValueError(f"the segmenter needs a power-of-two patch_size, got {patch}")
        stages = []
        for _ in range(patch.bit_length() - 1):  # log2(P) 2x stages
            stages.append(_upsample_stage(width, max(width // 2, 8)))
            width = max(width // 2, 8)
        self.decoder = nn.Sequential(*stages)
        self.image_branch = nn.Sequential(
            conv3x3(3, width),
            nn.GroupNorm(min(8, width), width),
            nn.ReLU(inplace=True),
            conv3x3(width, width),
        )
        self.classify = nn.Sequential(
            conv3x3(2 * width, width), nn.ReLU(inplace=True), nn.Conv2d(width, self.config.num_classes, 1)
        )

    def forward(self, image: Tensor) -> SegmenterOutput:
        height, width = image.shape[-2:]
        enc = self.encoder(image)
        features = enc.tokens.transpose(1, 2).unflatten(2, enc.grid)  # (N, D, h, w)
        decoded = self.decoder(features)[..., :height, :width]
        fused = torch.cat([decoded, self.image_branch(image * 2 - 1)], dim=1)
        logits = self.classify(fused)
        return SegmenterOutput(logits, enc.aux_loss, enc.routing)
