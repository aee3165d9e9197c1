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
resolution); levels from it on use :class:`MoFMEBlock`: a spatial mixer, then the FFN chosen by
``ffn`` (``"mofme"``: one shared FFN and many FiLM experts, the same layer as the ``paper`` preset)
on every pixel as a token. ``mixer="channel_attention"`` is Restormer's transposed self-attention
(cost linear in the pixels, but it spans the whole input: a tile sees only its own context);
``mixer="local"`` is :class:`GatedConvMixer`, a gated depthwise convolution (NAFNet's), so every output
pixel depends on a bounded neighbourhood (:attr:`UNetRestorer.receptive_margin`) and a tiled restore
equals the whole-image one.

``global_context=True`` adds :class:`~mofme.models.context.ImageContext`, the descriptor of the whole
image's thumbnail, which modulates every MoFME block's input (FiLM: ``x * (1 + scale) + shift`` per
channel, zero-initialised): what a local network cannot see (haze density, airlight colour), computed
once per image and shared by its tiles (``forward(tile, context=model.image_context(image))``).

``presence_gate=True`` makes the correction conditional on evidence of weather: the last conv gives a
fourth channel, the gate logits g, and the output is ``x + sigmoid(g) * correction`` (the gate starts
open at :data:`~mofme.models.restorer.PRESENCE_PRIOR`; it trains with ``loss.presence_weight``).

``affine_head=True`` adds a per-pixel gain K (a conv3x3 C -> 3 beside the last conv, zero-initialised):
the correction becomes ``K * x + b`` instead of ``b`` (AOD-Net's form of the scattering model: haze
``x = J t + A (1 - t)`` is undone by K = 1/t - 1, b = -A K, both smooth where J is not).

Routing is returned per routed block, encoder first, as ``(expert_indices, expert_weights)`` of
shape (N, h, w, k) at that block's resolution (``(None, None)`` for a dense FFN).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MoEOutput
from .context import ImageContext, WholeImageContext, resolve_context, zero_linear
from .hub import PretrainedMixin, config_from
from .restorer import (
    PRESENCE_PRIOR,
    FFNChoice,
    RestorerOutput,
    conv3x3,
    conv_radius,
    ffn_from_config,
    pad_to_multiple,
)

__all__ = [
    "MIXERS",
    "UNET_PRESETS",
    "ChannelAttention",
    "ConvBlock",
    "GatedConvMixer",
    "MoFMEBlock",
    "UNetConfig",
    "UNetRestorer",
]

MIXERS = ("channel_attention", "local")  # the spatial mixer of a MoFMEBlock (module docstring)


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
    mixer: str = "channel_attention"  # a name of MIXERS: "channel_attention" | "local"
    global_context: bool = False  # FiLM every MoFME block by the whole image's descriptor
    presence_gate: bool = False  # output = x + sigmoid(g) * correction, g a fourth output channel
    affine_head: bool = False  # correction = K * x + b, K a per-pixel gain (module docstring)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixer not in MIXERS:
            raise ValueError(f"unknown mixer {self.mixer!r}; choose from {MIXERS}")
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
    # seamless and cheap: gated depthwise-conv mixers (bounded reach), the whole image's context,
    # a weather-presence gate; MoFME FFNs at 1/4 and 1/8 (issues 28 and 31)
    "unet_local": UNetConfig(
        channels=16,
        depths=(1, 1, 2, 4),
        num_heads=(1, 1, 1, 1),
        mixer="local",
        global_context=True,
        presence_gate=True,
    ),
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

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, MoEOutput | None]:
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


class GatedConvMixer(nn.Module):
    """NAFNet's spatial mixing without its global pooling, (N, C, H, W) -> (N, C, H, W):
    ``conv1x1(a * b)`` where ``a, b = dwconv3x3(conv1x1(x, 2C))`` split in halves. Reach: 1 pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(channels, 2 * channels, 1)
        self.depthwise = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.depthwise(self.expand(x)).chunk(2, dim=1)
        return self.project(a * b)


class MoFMEBlock(nn.Module):
    """``x + dwconv3x3(x)`` (position), ``x + Mixer(LN(x))``, then ``x + FFN(LN(x))`` with every
    pixel a token; (N, C, H, W) -> ((N, C, H, W), :class:`~mofme.nn.MoEOutput`). ``context_width``:
    the block's input is first FiLM-modulated by a (N, context_width) descriptor (zero-initialised)."""

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int,
        ffn: nn.Module,
        mixer: str = "channel_attention",
        context_width: int | None = None,
    ) -> None:
        super().__init__()
        self.position = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm1 = LayerNorm2d(channels)
        self.attn = (
            GatedConvMixer(channels) if mixer == "local" else ChannelAttention(channels, num_heads=num_heads)
        )
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = ffn
        self.film = None if context_width is None else zero_linear(context_width, 2 * channels)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, MoEOutput]:
        if self.film is not None and context is not None:
            scale, shift = self.film(context)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + scale) + shift
        x = x + self.position(x)
        x = x + self.attn(self.norm1(x))
        tokens = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        out = self.ffn(self.norm2(tokens))
        return (tokens + out.output).permute(0, 3, 1, 2), out


class UNetRestorer(WholeImageContext, PretrainedMixin, nn.Module):
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
        self.context = ImageContext() if cfg.global_context else None
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
        self.outro = conv3x3(channels, 4 if cfg.presence_gate else 3)
        nn.init.zeros_(self.outro.weight)  # the network starts as the identity
        nn.init.zeros_(self.outro.bias)
        if cfg.presence_gate:  # the gate starts open: sigmoid(bias) = PRESENCE_PRIOR
            nn.init.constant_(self.outro.bias[3:], math.log(PRESENCE_PRIOR / (1 - PRESENCE_PRIOR)))
        self.gain = conv3x3(channels, 3) if cfg.affine_head else None
        if self.gain is not None:  # K = 0: the correction starts as the additive one
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.gain.bias)

    def _blocks(self, level: int, width: int) -> nn.ModuleList:
        cfg = self.config
        if level < cfg.attention_from:
            return nn.ModuleList(ConvBlock(width) for _ in range(cfg.depths[level]))
        context_width = self.context.width if self.context is not None else None
        return nn.ModuleList(
            MoFMEBlock(
                width,
                num_heads=cfg.num_heads[level],
                ffn=ffn_from_config(cfg, width),
                mixer=cfg.mixer,
                context_width=context_width,
            )
            for _ in range(cfg.depths[level])
        )

    @property
    def receptive_margin(self) -> int | None:
        """How many pixels along the edge of an input (cut at a multiple of :attr:`size_multiple`) can
        differ from what the whole image gives there (tiles given the whole image's context); None
        (unbounded) for channel attention. A bound: the reach of every convolution, in pixels of its
        level (2^level per step), summed over the network, plus one :attr:`size_multiple` for the grid
        of the coarsest level; verified against whole-image outputs in tests/models/test_unet_local.py."""
        cfg = self.config
        if cfg.mixer != "local" and cfg.attention_from < len(cfg.depths):
            return None
        levels = len(cfg.depths)
        per_level = [*self.encoder, self.bottleneck, *reversed(self.decoder)]
        level_of = [*range(levels - 1), levels - 1, *range(levels - 2, -1, -1)]
        head = max(conv_radius(self.outro), conv_radius(self.gain) if self.gain is not None else 0)
        reach = conv_radius(self.intro) + head  # the gain conv runs beside the last conv
        reach += sum(conv_radius(blocks) << level for blocks, level in zip(per_level, level_of, strict=True))
        reach += sum(conv_radius(down) << level for level, down in enumerate(self.down))
        return reach + self.size_multiple

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
    def _run(
        blocks: nn.ModuleList, x: Tensor, aux: list[Tensor], routing: list, context: Tensor | None
    ) -> Tensor:
        for block in blocks:
            x, out = block(x, context)
            if out is not None:
                aux.append(out.aux_loss.float())
                routing.append((out.expert_indices, out.expert_weights))
        return x

    def forward(self, image: Tensor, *, context: Tensor | None = None) -> RestorerOutput:
        """``context`` (N, width): the descriptor of the image this one is a tile of
        (:meth:`image_context`; ``global_context`` models); default: this image's own."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        padded = pad_to_multiple(image, self.size_multiple)
        context = resolve_context(self.context, image, context)
        aux: list[Tensor] = []
        routing: list = []
        x = self.intro(padded * 2 - 1)
        skips = []
        for blocks, down in zip(self.encoder, self.down, strict=True):
            x = self._run(blocks, x, aux, routing, context)
            skips.append(x)
            x = down(x)
        x = self._run(self.bottleneck, x, aux, routing, context)
        for up, fuse, blocks, skip in zip(self.up, self.fuse, self.decoder, reversed(skips), strict=True):
            x = fuse(torch.cat([up(x), skip], dim=1))
            x = self._run(blocks, x, aux, routing, context)
        out = self.outro(x)
        correction, presence_logits = out[:, :3] / 2, None  # the head works in [-1, 1]
        if self.gain is not None:
            correction = correction + self.gain(x) * padded
        if self.config.presence_gate:
            presence_logits = out[:, 3:][..., :height, :width]
            correction = torch.sigmoid(out[:, 3:]) * correction
        restored = (padded + correction)[..., :height, :width]
        if not self.training:
            restored = restored.clamp(0.0, 1.0)
        total_aux = torch.stack(aux).sum() if aux else image.new_zeros((), dtype=torch.float32)
        return RestorerOutput(restored, total_aux, routing, presence_logits=presence_logits)
