"""A multi-scale MoFME restorer: a U-Net whose coarse levels are transformer blocks with a MoFME FFN.

    image (N, 3, H, W) in [0, 1], reflection-padded to a multiple of 2^(levels - 1)
      -> conv3x3 3 -> C
      -> encoder: level l (resolution 1 / 2^l, width C * 2^l) runs ``depths[l]`` blocks, then a
         stride-2 conv3x3 halves the resolution and doubles the width
      -> bottleneck: ``depths[-1]`` blocks at the coarsest level
      -> decoder: conv1x1 + PixelShuffle(2) doubles the resolution and halves the width, the encoder's
         features of that level are concatenated and fused by a conv1x1, then ``depths[l]`` blocks
      -> conv3x3 C -> 3 (zero-initialised: the untrained network is the identity), added to the input
         (global residual); clamped to [0, 1] in eval mode

Levels below ``attention_from`` use :class:`ConvBlock` (two conv3x3, fine detail at high
resolution); levels from it on use :class:`MoFMEBlock`: transposed (channel) self-attention as in
Restormer, whose cost grows linearly with the number of pixels and whose attention spans the whole
image, then the FFN chosen by ``ffn`` (``"mofme"``: one shared FFN and many FiLM experts, the same
layer as the ``paper`` preset) on every pixel as a token. Routing is returned per routed block,
encoder first, as ``(expert_indices, expert_weights)`` of shape (N, h, w, k) at that block's
resolution (``(None, None)`` for a dense FFN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MoEOutput
from .hub import PretrainedMixin, config_from
from .restorer import FFNChoice, RestorerOutput, conv3x3, ffn_from_config, pad_to_multiple

__all__ = ["UNET_PRESETS", "ChannelAttention", "ConvBlock", "MoFMEBlock", "UNetConfig", "UNetRestorer"]


@dataclass(frozen=True)
class UNetConfig(FFNChoice):
    """Every constructor argument of :class:`UNetRestorer` and its default (``asdict(config)`` is
    ``config.json``); the FFN fields come from :class:`~mofme.models.restorer.FFNChoice`."""

    channels: int = 24  # C, the width at full resolution; level l has C * 2^l
    depths: tuple[int, ...] = (1, 1, 2, 2)  # blocks per level; the last level is the bottleneck
    attention_from: int = 2  # levels >= this use MoFMEBlock, the others ConvBlock
    num_heads: tuple[int, ...] = (1, 1, 2, 4)  # attention heads per level (attention levels only)
    mlp_ratio: float = 2.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        depths, heads = tuple(int(d) for d in self.depths), tuple(int(h) for h in self.num_heads)
        object.__setattr__(self, "depths", depths)  # lists from JSON or YAML become tuples
        object.__setattr__(self, "num_heads", heads)
        if len(depths) < 2 or len(heads) != len(depths) or min(depths) < 1 or self.channels < 1:
            raise ValueError(
                f"need >= 2 levels, depths >= 1 and one head count per level: depths={depths}, "
                f"num_heads={heads}, channels={self.channels}"
            )


UNET_PRESETS: dict[str, UNetConfig] = {
    # conv levels at 1 and 1/2, MoFME transformer levels at 1/4 and 1/8; 5.17M parameters at E=16
    "unet": UNetConfig(),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvBlock(nn.Module):
    """``x + conv3x3(GELU(conv3x3(x)))``, (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.GELU(), conv3x3(channels, channels))

    def forward(self, x: Tensor) -> tuple[Tensor, MoEOutput | None]:
        return x + self.body(x), None


class ChannelAttention(nn.Module):
    """Restormer's transposed attention (MDTA), (N, C, H, W) -> (N, C, H, W).

    q, k, v = depthwise-conv3x3(conv1x1(x)); per head, q and k are L2-normalised over the pixels
    and the (C/heads x C/heads) attention map ``softmax(q k^T * temperature)`` mixes the channels
    of v: global context at a cost linear in H * W."""

    def __init__(self, channels: int, *, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels={channels} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.qkv_dw = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).reshape(n, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(n, c, h, w))


class MoFMEBlock(nn.Module):
    """``x + dwconv3x3(x)`` (position), ``x + Attention(LN(x))``, then ``x + FFN(LN(x))`` with every
    pixel a token; (N, C, H, W) -> ((N, C, H, W), :class:`~mofme.nn.MoEOutput`)."""

    def __init__(self, channels: int, *, num_heads: int, ffn: nn.Module) -> None:
        super().__init__()
        self.position = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm1 = LayerNorm2d(channels)
        self.attn = ChannelAttention(channels, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = ffn

    def forward(self, x: Tensor) -> tuple[Tensor, MoEOutput]:
        x = x + self.position(x)
        x = x + self.attn(self.norm1(x))
        tokens = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        out = self.ffn(self.norm2(tokens))
        return (tokens + out.output).permute(0, 3, 1, 2), out


class UNetRestorer(PretrainedMixin, nn.Module):
    """Multi-scale weather restoration network; ``model(image)`` with image (N, 3, H, W) in [0, 1]
    -> :class:`~mofme.models.RestorerOutput`. Any H, W (padded, then cropped back).

    The arguments are the fields of :class:`UNetConfig`, keyword only, with its defaults."""

    def __init__(self, config: UNetConfig | None = None, /, **fields: Any) -> None:
        super().__init__()
        self.config = cfg = config_from(UNetConfig, config, fields)
        depths, channels = cfg.depths, cfg.channels
        levels = len(depths)
        self.size_multiple = 2 ** (levels - 1)  # inputs are padded to a multiple of this
        widths = [channels * 2**level for level in range(levels)]
        self.intro = conv3x3(3, channels)
        self.encoder = nn.ModuleList(self._blocks(level, widths[level]) for level in range(levels - 1))
        self.down = nn.ModuleList(
            nn.Conv2d(widths[level], widths[level + 1], 3, stride=2, padding=1) for level in range(levels - 1)
        )
        self.bottleneck = self._blocks(levels - 1, widths[-1])
        up_levels = range(levels - 2, -1, -1)  # the decoder's modules are stored in the order they run
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[level + 1], 4 * widths[level], 1), nn.PixelShuffle(2))
            for level in up_levels
        )
        self.fuse = nn.ModuleList(nn.Conv2d(2 * widths[level], widths[level], 1) for level in up_levels)
        self.decoder = nn.ModuleList(self._blocks(level, widths[level]) for level in up_levels)
        self.outro = conv3x3(channels, 3)
        nn.init.zeros_(self.outro.weight)  # the network starts as the identity
        nn.init.zeros_(self.outro.bias)

    def _blocks(self, level: int, width: int) -> nn.ModuleList:
        cfg = self.config
        if level < cfg.attention_from:
            return nn.ModuleList(ConvBlock(width) for _ in range(cfg.depths[level]))
        return nn.ModuleList(
            MoFMEBlock(width, num_heads=cfg.num_heads[level], ffn=ffn_from_config(cfg, width))
            for _ in range(cfg.depths[level])
        )

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def token_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (h, w) grid of each entry of ``routing`` for an H x W input, in forward order."""
        cfg, m = self.config, self.size_multiple
        padded = (-(-height // m) * m, -(-width // m) * m)
        levels = len(cfg.depths)
        order = [*range(levels - 1), levels - 1, *range(levels - 2, -1, -1)]
        return [
            (padded[0] >> level, padded[1] >> level)
            for level in order
            if level >= cfg.attention_from
            for _ in range(cfg.depths[level])
        ]

    @staticmethod
    def _run(blocks: nn.ModuleList, x: Tensor, aux: list[Tensor], routing: list) -> Tensor:
        for block in blocks:
            x, out = block(x)
            if out is not None:
                aux.append(out.aux_loss.float())
                routing.append((out.expert_indices, out.expert_weights))
        return x

    def forward(self, image: Tensor) -> RestorerOutput:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        padded = pad_to_multiple(image, self.size_multiple)
        aux: list[Tensor] = []
        routing: list = []
        x = self.intro(padded * 2 - 1)
        skips = []
        for blocks, down in zip(self.encoder, self.down, strict=True):
            x = self._run(blocks, x, aux, routing)
            skips.append(x)
            x = down(x)
        x = self._run(self.bottleneck, x, aux, routing)
        for up, fuse, blocks, skip in zip(self.up, self.fuse, self.decoder, reversed(skips), strict=True):
            x = fuse(torch.cat([up(x), skip], dim=1))
            x = self._run(blocks, x, aux, routing)
        restored = (padded + self.outro(x) / 2)[..., :height, :width]  # the head works in [-1, 1]
        if not self.training:
            restored = restored.clamp(0.0, 1.0)
        total_aux = torch.stack(aux).sum() if aux else image.new_zeros((), dtype=torch.float32)
        return RestorerOutput(restored, total_aux, routing)
