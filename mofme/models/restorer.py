"""The all-in-one weather restoration network of the MoFME paper (the published architecture).

    image (N, 3, H, W) in [0, 1]
      -> scaled to [-1, 1], reflection-padded to a multiple of the patch size P
      -> head: conv3x3 3->C, 2 ResBlocks(C)
      -> patch embed: Conv2d(C->D, kernel P, stride P) + LayerNorm      tokens (N, H/P * W/P, D)
      -> + position embedding (paper preset; resampled to the token grid)
      -> depth x [x + Attention(LN(x)); x + FFN(LN(x))]                   FFN: dense | moe | mofme
      -> Linear(D -> P*P*4C), unpatchify to 4C channels at full resolution
      -> tail: ResBlock(4C), conv3x3 4C->2C, ResBlock(2C), conv3x3 2C->3 -> logits
      -> Sigmoid, cropped back to (H, W)                                  restored image in [0, 1]

``drop_fill=True`` (not in the paper) adds a lens-drop detector: ``drop_head``, a
:class:`~mofme.models.drops.DropDetector` on the (padded) input, gives ``drop_logits``; with
m = sigmoid(drop_logits) the restored image is :func:`~mofme.models.fill.push_pull_fill` (image, 1 - m):
pixels found under drops are replaced by the image around them, however large the drop. The detector
trains on its own first (``task: drop_detection``), then with the restorer
(``loss.drop_mask_weight``: binary cross-entropy against the renderer's drop opacity).

``presence_gate=True`` (not in the paper) makes every correction conditional on evidence of weather:
``presence_head``, a small U-Net of the :class:`~mofme.models.drops.DropDetector` shape
(:data:`PRESENCE_WIDTHS`, reach 93 px), gives per-pixel ``presence_logits`` g on the (padded) input,
and the output is ``x + sigmoid(g) * (restored - x)``: where the head sees no weather the input comes
back unchanged, whatever the rest of the network does (do no harm on clean photos); with ``drop_fill``
the fill is weighted by the gate too (:func:`fill_probability`). It trains with
``loss.presence_weight``: binary cross-entropy against "the weather changed this pixel"
(:func:`mofme.losses.presence_targets`), zero everywhere on clean crops.

``global_context=True`` (not in the paper) adds :class:`~mofme.models.context.ImageContext`: a
descriptor of the whole image (its <= 128-px thumbnail) that biases every token through
``context_bias`` (and the presence logits through ``context_gate``), linear maps that start at zero. Tiled inference computes it once
from the whole image (:meth:`Restorer.image_context`) and passes it to every tile (``context=``).

``pos_embed_size`` (paper preset: 240) adds a learned absolute position embedding to the tokens,
laid out for a ``pos_embed_size`` square image (a grid of side pos_embed_size / P, ViT-style, init
N(0, 0.02)) and resampled bicubically for other token grids, so any input size still works. The
published code allocates this 30 x 30 x 384 embedding (its parameter counts include it) but never
adds it; here it is used. The small and tiny presets have none.

``window_size`` (None: global attention, the published form) makes transformer layer i attend
within non-overlapping ``window_size x window_size`` windows of the token grid, aligned to the
absolute grid (windows start at token 0); odd layers shift them by ``window_size // 2`` (Swin-style,
but by padding the grid, top/left by the shift and bottom/right to a multiple of the window, with the
padded tokens masked out of the keys: nothing wraps around the image borders). The parameters are
those of global attention, so a global checkpoint can be fine-tuned with windows. Attention then costs
memory linear in the image size, and the output at a pixel depends only on a bounded neighbourhood
(:attr:`Restorer.receptive_margin`): tiled inference on tiles aligned to the windows
(:attr:`Restorer.size_multiple`) is seamless.

There is no global residual by default: the published code adds the input to the Sigmoid output
(``residual_learning``), which leaves [0, 1] (the input was already scaled to [-1, 1] there, so the
sum lies in [-1, 2]). ``residual=True`` is the bounded form of the same idea:
the tail predicts a correction in logit space, ``sigmoid(tail + logit(input))``, so the identity is
the zero correction and the output stays in (0, 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import FFN_LAYERS, ROUTERS, MoEOutput, build_ffn
from ..nn.mofme import MODULATIONS
from .context import ImageContext, WholeImageContext, resolve_context, zero_linear
from .drops import DropDetector
from .fill import push_pull_fill
from .hub import PretrainedMixin, config_from

__all__ = [
    "PRESENCE_WIDTHS",
    "PRESETS",
    "Attention",
    "FFNChoice",
    "PatchEmbed",
    "ResBlock",
    "Restorer",
    "RestorerConfig",
    "RestorerOutput",
    "TokenGridModel",
    "TransformerBlock",
    "conv_radius",
    "fill_drops",
    "fill_probability",
    "grid_routing",
    "position_grid",
    "resample_position",
    "transformer_stack",
    "window_key_mask",
    "window_merge",
    "window_padding",
    "window_partition",
    "window_reach",
]

_LOGIT_EPS = 1e-3  # input clamp for the logit residual: |logit| <= 6.9
PRESENCE_WIDTHS = (8, 16, 32, 48, 64)  # the presence head: the drop detector's shape at half width
PRESENCE_PRIOR = 0.9  # the gate a new presence head opens everywhere: a fine-tuned restorer starts close


@dataclass(frozen=True)
class FFNChoice:
    """The FFN of every transformer block, as :func:`ffn_from_config` builds it; the fields both
    restorer configs share. Names are checked against the FFN and router registries."""

    ffn: str = "mofme"  # a name of mofme.nn.FFN_LAYERS: "dense" | "moe" | "mofme"
    num_experts: int = 16
    top_k: int = 2
    router: str = "linear"  # a name of mofme.nn.ROUTERS: "linear" | "uar"
    modulation: str = "generator"  # "generator" | "lowrank" | "static" (mofme only; lowrank's
    # rank through ffn_kwargs={"modulation_rank": r}, default D / 8)
    router_kwargs: dict[str, Any] | None = None
    ffn_kwargs: dict[str, Any] | None = None  # more FFN layer arguments, e.g. {"dispatch": "dense"}

    def __post_init__(self) -> None:
        for name, known in (("ffn", FFN_LAYERS), ("router", ROUTERS), ("modulation", MODULATIONS)):
            if getattr(self, name) not in known:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {sorted(known)}")
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be a positive integer, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        for name in ("router_kwargs", "ffn_kwargs"):  # {} and None mean the same: store None
            object.__setattr__(self, name, dict(getattr(self, name)) if getattr(self, name) else None)


@dataclass(frozen=True)
class RestorerConfig(FFNChoice):
    """Every constructor argument of :class:`Restorer` and its default (``asdict(config)`` is
    ``config.json``); the FFN fields come from :class:`FFNChoice`."""

    channels: int = 32  # C, the width of the convolutional head; the tail runs at 4C and 2C
    embed_dim: int = 384  # D, the token width
    patch_size: int = 8  # P
    depth: int = 2
    num_heads: int = 8
    head_dim: int = 64  # the attention inner width is num_heads * head_dim (need not equal D)
    mlp_ratio: float = 4.0  # FFN hidden width = mlp_ratio * D
    dropout: float = 0.1  # attention output and FFN dropout
    residual: bool = False  # sigmoid(tail + logit(input)) instead of sigmoid(tail)
    pos_embed_size: int | None = None  # image side of a learned position embedding; None: none
    drop_fill: bool = False  # detect lens drops and fill them from around (module docstring)
    window_size: int | None = None  # attention windows in tokens (shifted on odd layers); None: global
    presence_gate: bool = False  # output = x + sigmoid(presence logits) * (restored - x) (module docstring)
    global_context: bool = False  # a whole-image descriptor biases every token (module docstring)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_token_settings(self, "channels")
        if self.window_size is not None and self.window_size < 1:
            raise ValueError(f"window_size must be None or a positive integer, got {self.window_size}")


def check_token_settings(cfg: Any, *positive: str) -> None:
    """Check a patch-token model's config: ``positive`` and the token fields (``embed_dim``,
    ``patch_size``, ``depth``, ``num_heads``, ``head_dim``) are positive integers, and
    ``pos_embed_size`` is None or a positive multiple of ``patch_size``."""
    for name in (*positive, "embed_dim", "patch_size", "depth", "num_heads", "head_dim"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(cfg, name)}")
    size, patch = cfg.pos_embed_size, cfg.patch_size
    if size is not None and (size < patch or size % patch):
        raise ValueError(f"pos_embed_size must be a positive multiple of patch_size={patch}, got {size}")


PRESETS: dict[str, RestorerConfig] = {
    # the published network: C=32, D=384, P=8, depth 2, 8 heads x 64, MLP ratio 4, dropout 0.1,
    # a 30 x 30 position embedding (240 x 240 crops)
    "paper": RestorerConfig(pos_embed_size=240),
    # CPU-sized networks for quick experiments and tests
    "small": RestorerConfig(channels=16, embed_dim=128, patch_size=4, depth=2, num_heads=4, head_dim=32),
    "tiny": RestorerConfig(channels=8, embed_dim=64, patch_size=4, depth=1, num_heads=2, head_dim=32),
}
# the small network with 8 x 8 token windows (32 x 32 pixels): linear memory, seamless tiling
PRESETS["small_window"] = dataclasses.replace(PRESETS["small"], window_size=8)


class RestorerOutput(NamedTuple):
    """``image`` (N, 3, H, W) in [0, 1]; ``aux_loss`` scalar (zero for dense FFNs), to add to the
    training loss; ``routing``: per transformer layer ``(expert_indices, expert_weights)``, each
    (N, h, w, k) over the token grid h = ceil(H / P), w = ceil(W / P) (``(None, None)`` for dense);
    ``drop_logits`` (N, 1, H, W): the drop detector's logits (``drop_fill`` models; else None);
    ``presence_logits`` (N, 1, H, W): the weather-presence gate's logits (``presence_gate``; else None)."""

    image: Tensor
    aux_loss: Tensor
    routing: list[tuple[Tensor | None, Tensor | None]]
    drop_logits: Tensor | None = None
    presence_logits: Tensor | None = None


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """Pad (N, C, H, W) at the bottom and right to multiples of ``multiple``: reflection where the
    image is large enough, replication otherwise."""
    height, width = image.shape[-2:]
    return pad_bottom_right(image, -height % multiple, -width % multiple)


def pad_bottom_right(image: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """(N, C, H, W) padded by ``pad_h`` rows at the bottom and ``pad_w`` columns at the right:
    reflection where the image is large enough, replication otherwise."""
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if pad_h < image.shape[-2] and pad_w < image.shape[-1] else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def resample_position(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """A learned position grid (1, h0, w0, D) as tokens for an (h, w) token grid, (1, h * w, D):
    bicubic resampling (``align_corners=False``) when the grids differ, else the grid itself."""
    if tuple(pos.shape[1:3]) != tuple(grid):
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
        pos = pos.permute(0, 2, 3, 1)
    return pos.flatten(1, 2)


def ffn_from_config(cfg: Any, dim: int) -> nn.Module:
    """The FFN layer a model config names (``ffn``, ``num_experts``, ``top_k``, ``router``,
    ``router_kwargs``, ``modulation``, ``mlp_ratio``, ``dropout``, ``ffn_kwargs``) for width ``dim``."""
    common = {"dim": dim, "hidden_dim": int(cfg.mlp_ratio * dim), "dropout": cfg.dropout}
    extra = dict(cfg.ffn_kwargs or {})
    if cfg.ffn == "dense":
        return build_ffn("dense", **common, **extra)
    if cfg.ffn == "mofme":
        extra = {"modulation": cfg.modulation, **extra}
    return build_ffn(
        cfg.ffn,
        num_experts=cfg.num_experts,
        top_k=cfg.top_k,
        router=cfg.router,
        router_kwargs=cfg.router_kwargs,
        **common,
        **extra,
    )


class ResBlock(nn.Module):
    """EDSR residual block ``x + conv3x3(ReLU(conv3x3(x)))``, (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> tokens (N, H/P * W/P, D): Conv2d(kernel P, stride P), then LayerNorm."""

    def __init__(self, *, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def window_padding(grid: tuple[int, int], window: int, shift: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` token padding that lays ``window``-sized windows over an (h, w)
    grid with their boundaries at ``k * window - shift``: ``shift`` at the top/left, then up to a
    multiple of ``window`` at the bottom/right."""
    (h, w) = grid
    return shift, -(h + shift) % window, shift, -(w + shift) % window


def window_partition(x: Tensor, grid: tuple[int, int], window: int, shift: int = 0) -> Tensor:
    """Tokens (N, h * w, C) on an (h, w) grid -> windows (N * nW, window * window, C), row-major
    within a window and over the windows; the grid is zero-padded by :func:`window_padding`."""
    n, _, channels = x.shape
    top, bottom, left, right = window_padding(grid, window, shift)
    x = F.pad(x.view(n, *grid, channels), (0, 0, left, right, top, bottom))
    rows, cols = x.shape[1] // window, x.shape[2] // window
    x = x.view(n, rows, window, cols, window, channels).transpose(2, 3)
    return x.reshape(n * rows * cols, window * window, channels)


def window_merge(windows: Tensor, grid: tuple[int, int], window: int, shift: int = 0) -> Tensor:
    """The inverse of :func:`window_partition`: windows (N * nW, window * window, C) -> tokens
    (N, h * w, C) of the (h, w) grid (the padded tokens dropped)."""
    top, bottom, left, right = window_padding(grid, window, shift)
    rows, cols = (grid[0] + top + bottom) // window, (grid[1] + left + right) // window
    channels = windows.shape[-1]
    x = windows.view(-1, rows, cols, window, window, channels).transpose(2, 3)
    x = x.reshape(-1, rows * window, cols * window, channels)
    return x[:, top : top + grid[0], left : left + grid[1]].reshape(-1, grid[0] * grid[1], channels)


def window_key_mask(
    grid: tuple[int, int], window: int, shift: int = 0, *, device: torch.device | None = None
) -> Tensor | None:
    """(nW, window * window) bool, True at the real (not padded) tokens of each window of
    :func:`window_partition`; None when nothing is padded. Every window holds a real token."""
    if not any(window_padding(grid, window, shift)):
        return None
    ones = torch.ones(1, grid[0] * grid[1], 1, dtype=torch.bool, device=device)
    return window_partition(ones, grid, window, shift)[..., 0]


class Attention(nn.Module):
    """Multi-head self-attention as in vit-pytorch: ``Linear(D, 3 * heads * head_dim, bias=False)``,
    scaled dot product, ``Linear(heads * head_dim, D)``, Dropout. (N, L, D) -> (N, L, D).

    ``window_size`` (tokens; None: global): attend within the windows of :func:`window_partition`,
    shifted by ``shift``, over the (h, w) token grid passed as ``forward(x, grid)`` (L = h * w); the
    padded tokens are masked out of the keys. The parameters are the same either way."""

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        head_dim: int,
        dropout: float = 0.0,
        window_size: int | None = None,
        shift: int = 0,
    ) -> None:
        super().__init__()
        if window_size is not None and not 0 <= shift < window_size:
            raise ValueError(f"shift must satisfy 0 <= shift < window_size, got {shift}, {window_size}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.window_size = window_size
        self.shift = shift
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.drop = nn.Dropout(dropout)

    def attend(self, qkv: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``qkv`` (B, L, 3 * heads * head_dim) -> attention output (B, L, heads * head_dim);
        ``key_mask`` (B, L) bool, False at keys to ignore (None: all)."""
        b, length, _ = qkv.shape
        q, k, v = qkv.view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, L, head_dim)
        return out.transpose(1, 2).reshape(b, length, -1)

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
        qkv = self.qkv(x)
        if self.window_size is None:
            return self.drop(self.proj(self.attend(qkv)))
        if grid is None or grid[0] * grid[1] != x.shape[1]:
            raise ValueError(
                f"windowed attention needs the token grid of its {x.shape[1]} tokens, got {grid}"
            )
        window, shift = self.window_size, self.shift
        mask = window_key_mask(grid, window, shift, device=x.device)
        if mask is not None:  # the same windows in every image: (nW, ws^2) -> (N * nW, ws^2)
            mask = mask.repeat(x.shape[0], 1)
        out = self.attend(window_partition(qkv, grid, window, shift), mask)
        return self.drop(self.proj(window_merge(out, grid, window, shift)))

    def extra_repr(self) -> str:
        return "" if self.window_size is None else f"window_size={self.window_size}, shift={self.shift}"


class TransformerBlock(nn.Module):
    """Pre-norm block ``x + Attention(LN(x))`` then ``x + FFN(LN(x))``; (N, L, D) -> ((N, L, D), MoEOutput).

    ``ffn`` is any layer of :mod:`mofme.nn` (it returns a :class:`~mofme.nn.MoEOutput`);
    ``window_size`` and ``shift`` as in :class:`Attention` (then ``forward(x, grid)``)."""

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        head_dim: int,
        ffn: nn.Module,
        dropout: float = 0.0,
        window_size: int | None = None,
        shift: int = 0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(
            dim, num_heads=num_heads, head_dim=head_dim, dropout=dropout, window_size=window_size, shift=shift
        )
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = ffn

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None) -> tuple[Tensor, MoEOutput]:
        x = x + self.attn(self.norm1(x), grid)
        out = self.ffn(self.norm2(x))
        return x + out.output, out


def conv_radius(module: nn.Module) -> int:
    """Pixels a chain of stride-1 convolutions reaches: the sum of the radii of every ``nn.Conv2d`` in
    ``module`` (skip connections reach less, never more)."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return sum(max(d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation, strict=True)) for m in convs)


def window_reach(tokens: int, *, window: int, depth: int) -> int:
    """How far (tokens) into a token grid cut at a window boundary the cut is felt after ``depth``
    windowed layers (shifted by ``window // 2`` on the odd layers), when ``tokens`` tokens along the
    cut already differ: each layer extends the differing band to the next window boundary beyond it
    (a shifted layer's windows straddle the cut, so it reaches ``window - shift`` even from nothing).
    Both sides of a grid are measured (their boundaries differ for odd windows); the larger is returned."""
    reach = 0
    for side in (-1, 1):  # top/left: boundaries at -shift (mod window); bottom/right: at +shift
        band = tokens
        for layer in range(depth):
            shift = window // 2 if layer % 2 else 0
            band += (side * shift - band) % window
        reach = max(reach, band)
    return reach


def position_grid(cfg: Any, dim: int) -> nn.Parameter | None:
    """A learned (1, s, s, dim) position grid, s = ``cfg.pos_embed_size // cfg.patch_size``, drawn
    from a truncated normal (std 0.02); None when ``cfg.pos_embed_size`` is None."""
    if cfg.pos_embed_size is None:
        return None
    side = cfg.pos_embed_size // cfg.patch_size
    grid = nn.Parameter(torch.empty(1, side, side, dim))
    nn.init.trunc_normal_(grid, std=0.02)
    return grid


def transformer_stack(cfg: Any, dim: int) -> nn.ModuleList:
    """``cfg.depth`` :class:`TransformerBlock` s of width ``dim`` with ``cfg``'s heads, dropout and FFN;
    with a ``cfg.window_size``, windowed attention, shifted by half a window on the odd layers."""
    window = getattr(cfg, "window_size", None)
    return nn.ModuleList(
        TransformerBlock(
            dim,
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            ffn=ffn_from_config(cfg, dim),
            dropout=cfg.dropout,
            window_size=window,
            shift=window // 2 if window is not None and layer % 2 else 0,
        )
        for layer in range(cfg.depth)
    )


class TokenGridModel(PretrainedMixin):
    """A saved model (``self.config``, a config dataclass with ``depth``) that pads its input to a
    multiple of ``self.patch_size`` and routes on one token grid per transformer layer."""

    config: Any
    patch_size: int

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to a multiple of this (the patch size)."""
        return self.patch_size

    def token_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (h, w) token grid of each entry of ``routing`` for an H x W input."""
        grid = (-(-height // self.patch_size), -(-width // self.patch_size))
        return [grid] * self.config.depth


def grid_routing(out: MoEOutput, grid: tuple[int, int]) -> tuple[Tensor | None, Tensor | None]:
    """A layer's (N, h * w, k) routing as (N, h, w, k) maps; ``(None, None)`` for a dense FFN."""
    if out.expert_indices is None:
        return None, None
    return out.expert_indices.unflatten(1, grid), out.expert_weights.unflatten(1, grid)


class Restorer(WholeImageContext, TokenGridModel, nn.Module):
    """Weather restoration network; ``model(image)`` with image (N, 3, H, W) in [0, 1] -> :class:`RestorerOutput`.

    Any H, W: inputs are reflection-padded to a multiple of ``patch_size`` and the output is
    cropped back. The arguments are the fields of :class:`RestorerConfig`, keyword only, with its
    defaults (one place: ``Restorer(**asdict(PRESETS["small"]))`` is the small preset); ``ffn`` picks
    the FFN of every transformer layer through :func:`mofme.nn.build_ffn`. ``save_pretrained`` /
    ``from_pretrained`` store them in ``config.json`` next to ``model.safetensors``.
    """

    def __init__(self, config: RestorerConfig | None = None, /, **fields: Any) -> None:
        super().__init__()
        self.config = cfg = config_from(RestorerConfig, config, fields)
        channels, embed_dim, patch_size = cfg.channels, cfg.embed_dim, cfg.patch_size
        self.patch_size = patch_size
        self.residual = cfg.residual
        wide = 4 * channels
        self.head = nn.Sequential(conv3x3(3, channels), ResBlock(channels), ResBlock(channels))
        self.patch_embed = PatchEmbed(in_channels=channels, embed_dim=embed_dim, patch_size=patch_size)
        self.pos_embed = position_grid(cfg, embed_dim)
        self.blocks = transformer_stack(cfg, embed_dim)
        self.to_pixels = nn.Linear(embed_dim, patch_size * patch_size * wide)
        self.tail = nn.Sequential(
            ResBlock(wide), conv3x3(wide, wide // 2), ResBlock(wide // 2), conv3x3(wide // 2, 3)
        )
        self.drop_head = DropDetector() if cfg.drop_fill else None
        self.presence_head = (
            DropDetector(widths=PRESENCE_WIDTHS, prior=PRESENCE_PRIOR) if cfg.presence_gate else None
        )
        self.context = ImageContext() if cfg.global_context else None
        self.context_bias = self.context_gate = None
        if self.context is not None:  # (N, width) -> a bias per token channel, and one for the gate
            self.context_bias = zero_linear(self.context.width, embed_dim)
            if cfg.presence_gate:
                self.context_gate = zero_linear(self.context.width, 1)
        self._conv_radii = (conv_radius(self.head), conv_radius(self.tail))  # (5, 6) pixels

    @property
    def size_multiple(self) -> int:
        """The multiple tiles should keep: the patch size, times ``window_size`` for windowed models
        (tiles then align with the attention windows). Inputs themselves are padded to the patch size
        only; windows are completed with masked tokens. A windowed model with a drop detector also
        keeps the detector's :attr:`DropDetector.grid_multiple` (its tiles must match the whole image)."""
        if self.config.window_size is None:
            return self.patch_size
        multiple = self.patch_size * self.config.window_size
        return math.lcm(multiple, *(head.grid_multiple for head in self._pixel_heads()))

    def _pixel_heads(self) -> list[DropDetector]:
        """The per-pixel U-Nets beside the transformer: drop detector and presence gate, where present."""
        return [head for head in (self.drop_head, self.presence_head) if head is not None]

    @property
    def receptive_margin(self) -> int | None:
        """How many pixels along the edge of an input (cut at a multiple of :attr:`size_multiple`) differ
        from what the whole image gives there: outputs farther from the edge than this do not depend on
        what lies beyond it. None (unbounded) for global attention, a position embedding (resampled to
        the input's grid) or a capacity limit (a token's expert depends on all tokens). With
        ``drop_fill`` the drop detector's reach counts too (:attr:`DropDetector.receptive_margin`),
        and the margin holds for the unfilled output (``forward(..., fill=False)``): the fill reaches
        across the image, so tiled inference fills the stitched image once (``mofme.infer.restore``).
        So does the presence head's; with ``global_context`` the margin holds for tiles given the
        whole image's context (``forward(tile, context=model.image_context(image))``).

        Derivation: the head's convolutions (radius r_h = 5 px) make ceil(r_h / P) tokens along the edge
        differ; each windowed layer widens that band to the next window boundary beyond it
        (:func:`window_reach`: depth 2, windows 8, shift 4 -> 12 tokens); unpatchify keeps it at
        P x tokens pixels and the tail's convolutions add r_t = 6 px. Small window preset:
        4 x 12 + 6 = 54 px (verified in tests/infer/test_seams.py)."""
        cfg = self.config
        capacity = (cfg.ffn_kwargs or {}).get("capacity_factor") is not None
        if cfg.window_size is None or cfg.pos_embed_size is not None or capacity:
            return None
        head, tail = self._conv_radii
        edge = -(-head // self.patch_size)
        margin = window_reach(edge, window=cfg.window_size, depth=cfg.depth) * self.patch_size + tail
        return max([margin, *(head.receptive_margin for head in self._pixel_heads())])

    def _position(self, grid: tuple[int, int]) -> Tensor:
        """The position embedding for an (h, w) token grid, (1, h * w, D)."""
        return resample_position(self.pos_embed, grid)

    def unpatchify(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Tokens (N, h * w, D) on an (h, w) grid -> features (N, 4C, h P, w P): ``to_pixels``, then
        pixel shuffle. A ``to_pixels`` replacement with an ``unpatchify(tokens, grid)`` method (the CPU
        fast path's, :mod:`mofme.infer.fastpath`) computes the same features its own way."""
        fused = getattr(self.to_pixels, "unpatchify", None)
        if fused is not None:
            return fused(tokens, grid)
        feats = self.to_pixels(tokens).transpose(1, 2).unflatten(2, grid)  # (N, P*P*4C, h, w)
        return F.pixel_shuffle(feats, self.patch_size)

    def forward(self, image: Tensor, *, fill: bool = True, context: Tensor | None = None) -> RestorerOutput:
        """``fill=False`` (``drop_fill`` models): the restored image before the drop fill, with the
        drop logits, for a caller that fills a larger image once (:func:`fill_drops`). ``context``
        (N, width): the descriptor of the image this one is a tile of (:meth:`image_context`);
        default: this image's own."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        padded = pad_to_multiple(image, self.patch_size)
        grid = (padded.shape[-2] // self.patch_size, padded.shape[-1] // self.patch_size)
        tokens = self.patch_embed(self.head(padded * 2 - 1))
        if self.pos_embed is not None:
            tokens = tokens + self._position(grid)
        context = resolve_context(self.context, image, context)
        if context is not None:
            tokens = tokens + self.context_bias(context)[:, None, :]
        aux = tokens.new_zeros((), dtype=torch.float32)
        routing = []
        for block in self.blocks:
            tokens, out = block(tokens, grid)
            aux = aux + out.aux_loss.float()
            routing.append(grid_routing(out, grid))
        logits = self.tail(self.unpatchify(tokens, grid))
        if self.residual:
            logits = logits + torch.logit(padded.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS))
        image, drop_logits, presence_logits = torch.sigmoid(logits), None, None
        if self.presence_head is not None:
            presence_logits = self.presence_head(padded)
            if context is not None:
                presence_logits = presence_logits + self.context_gate(context)[:, :, None, None]
            image = padded + torch.sigmoid(presence_logits) * (image - padded)
        if self.drop_head is not None:
            drop_logits = self.drop_head(padded)
        out = RestorerOutput(image, aux, routing, drop_logits, presence_logits)
        if fill and drop_logits is not None:
            out = out._replace(image=fill_drops(image, fill_probability(out)))
        return out._replace(
            image=_crop(out.image, height, width),
            drop_logits=_crop(drop_logits, height, width),
            presence_logits=_crop(presence_logits, height, width),
        )


def _crop(tensor: Tensor | None, height: int, width: int) -> Tensor | None:
    """A padded (N, C, H', W') map cut back to the input's (H, W); None stays None."""
    return None if tensor is None else tensor[..., :height, :width]


def fill_probability(output: RestorerOutput) -> Tensor:
    """How strongly each pixel of a ``drop_fill`` model's output is filled, (N, 1, H, W): the drop
    probability, times the presence gate where the model has one (no drop fill where the gate sees
    no weather: the detector's false alarms on clouds and bokeh stay unfilled)."""
    probability = torch.sigmoid(output.drop_logits)
    if output.presence_logits is not None:
        probability = probability * torch.sigmoid(output.presence_logits)
    return probability


def fill_drops(image: Tensor, drop_probability: Tensor) -> Tensor:
    """``image`` (N, 3, H, W) with the pixels the drop detector flags (``drop_probability``
    (N, 1, H, W), the sigmoid of its logits) filled from around them:
    :func:`~mofme.models.fill.push_pull_fill` with confidence 1 - p."""
    return push_pull_fill(image, 1.0 - drop_probability)
