"""The lens-drop detector: a small convolutional U-Net from an image to per-pixel drop logits.

    detector = create_model("drop_detector")
    logits = detector(image)      # image (N, 3, H, W) in [0, 1] -> drop logits (N, 1, H, W), any H, W

It serves ``drop_fill`` restorers (their ``drop_head``) and trains on its own first
(``task: drop_detection``, ``configs/drop_detector.yaml``). Drops are blobs up to ~90 px across with
a dark rim and a highlight, whose inside is a blurred, inverted view of the scene: telling them from
the scene needs a receptive field as large as a drop. Encoder: two 3x3 convolutions + ReLU per level
at widths ``widths`` (full, 1/2, ... resolution; stride-2 convolutions between levels); decoder:
bilinear upsampling, concatenation with the encoder level, one 3x3 convolution + ReLU per level; a
last 3x3 convolution to one channel. With the default five levels the receptive field is about
110 px. The last convolution starts at zero weights and a bias of logit(``prior``): a new detector
finds (almost) no drops everywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hub import PretrainedMixin, config_from

__all__ = ["DropDetector", "DropDetectorConfig"]


@dataclass(frozen=True)
class DropDetectorConfig:
    """Every constructor argument of :class:`DropDetector` (``asdict(config)`` is ``config.json``)."""

    widths: tuple[int, ...] = (16, 32, 64, 96, 128)  # channels per level, full resolution first
    prior: float = 0.01  # drop probability a new detector predicts everywhere

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")
        if not 0.0 < self.prior < 1.0:
            raise ValueError(f"prior must lie in (0, 1), got {self.prior}")


def _conv_relu(in_channels: int, out_channels: int, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.ReLU(inplace=True)
    )


class DropDetector(PretrainedMixin, nn.Module):
    """Per-pixel drop logits: (N, 3, H, W) in [0, 1] -> (N, 1, H, W). Keyword arguments: the fields
    of :class:`DropDetectorConfig`."""

    def __init__(self, config: DropDetectorConfig | None = None, /, **fields: Any) -> None:
        super().__init__()
        self.config = cfg = config_from(DropDetectorConfig, config, fields)
        widths = cfg.widths
        self.encoder = nn.ModuleList(
            nn.Sequential(
                _conv_relu(widths[i - 1] if i else 3, width, stride=2 if i else 1),
                _conv_relu(width, width),
            )
            for i, width in enumerate(widths)
        )
        self.decoder = nn.ModuleList(
            _conv_relu(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.out = nn.Conv2d(widths[0], 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, math.log(cfg.prior / (1.0 - cfg.prior)))

    def config_dict(self) -> dict[str, Any]:
        return {**asdict(self.config), "widths": list(self.config.widths)}

    @property
    def grid_multiple(self) -> int:
        """Inputs cut at multiples of this keep the stride-2 grid of every level: 2^(levels - 1)
        (what a restorer's tiles keep when they must match the whole image; the detector run
        alone is tiled on its own terms)."""
        return 2 ** (len(self.config.widths) - 1)

    @property
    def receptive_margin(self) -> int:
        """Pixels along the edge of an input (cut at a multiple of :attr:`grid_multiple`) whose logits
        may differ from the whole image's: the sum of the radii on the way down and up. Encoder:
        2 px at level 0, then 2^(i-1) (the stride-2 convolution) + 2^i px at level i; decoder, per
        level i below the last: 2^(i+1) (bilinear upsampling) + 2^i px; the last convolution 1 px.
        Five levels: 47 + 45 + 1 = 93 px."""
        levels = len(self.config.widths)
        down = 2 + sum(2 ** (i - 1) + 2**i for i in range(1, levels))
        up = sum(2 ** (i + 1) + 2**i for i in range(levels - 1))
        return down + up + 1

    def forward(self, image: Tensor) -> Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(image.shape)}")
        skips = []
        x = image * 2 - 1
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([up, skip], dim=1))
        return self.out(x)
