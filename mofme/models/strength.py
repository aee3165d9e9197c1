"""A calibrated restorer: any restorer whose whole correction is scaled by one number per image, its
strength s in (0, s_max), judged from the correction the base restorer proposes for the whole image:

    r = base(x);   output = x + s * (r - x),   s = s_max * sigmoid(head(correction_evidence(x, r)))

``s_max`` (``max_strength``) is 1 by default: the strength only holds the base back. Above 1 it may
also amplify a correction the base makes too timidly (a base trained with L1 hedges on haze, whose
density a crop cannot pin down: on its training renders the median best strength for haze is 2-2.5).

A restorer trained on rendered weather also "corrects" photos that have none (distant haze removed,
skies darkened), and it can make weather drawn another way worse. The strength learns how much of the
base's proposal to keep, from what the proposal looks like: how large the change is, at which scales
(streaks and flakes are fine detail, a tone shift is coarse), in which direction, and what the photo
itself looks like (its brightness, contrast, dark channel). :func:`correction_evidence` computes these
statistics on both images area-resized to at most :data:`WORK_SIDE` px, so they mean the same at any
photo size; the head is a standardisation (batch statistics, no affine) and a two-layer MLP.

Two refinements, each off by default, follow what the strength oracle (``mofme bench
strength-oracle``) found in the corrections of trained restorers:

* ``bands=2``: one strength for the correction's low frequencies (:func:`low_band`: tone, veil) in
  (0, s_max) and one for the rest (streaks, flakes, edges) in (0, 1), so a timid haze removal can be
  amplified while its fine detail is held back: x + s_low L + s_high (c - L), c = r - x;
* ``pair_width > 0``: the head also reads the photo and its correction at the working size through a
  small CNN (:class:`PairEncoder`): what the correction looks like (streaks, discs, a veil), which
  global statistics cannot tell apart.

With ``haze_evidence=True`` the head also reads :func:`dark_channel_quantiles` of the photo: the
low quantiles of its dark channel (He et al.'s prior: in a haze-free photo most 15-px patches hold a
pixel near black in some channel). A veil of haze or fog over the whole scene lifts them; natural
haze that only veils the distance leaves the near, dark patches near zero. The mean of the per-pixel
minimum, which the default evidence has, mixes the two.

It trains with the base fixed (``train.trainable: [strength]``) on the per-image PSNR loss
(``loss.pixel: psnr``), whose optimum for one image is s* = <r - x, y - x> / |r - x|^2 (y the clean
image): 0 on a clean photo, whatever the base does to it.

    model = create_model("restorer_calibrated", base="mofme-small-weather-gated")  # base loaded, s new
    out = model(images)                          # RestorerOutput; out.image = x + s (base(x) - x)
    model.strength_of(images, out_base.image)    # (N, bands) the s of each image, given the base's output

Tiled inference (:func:`mofme.infer.restore.restore_tensor`) runs the base tile by tile
(``forward(tile, calibrate=False)``) and calls :meth:`CalibratedRestorer.calibrate` once on the
stitched whole image, so every tile gets the same s and the strength adds no seam. The base must not
fill drops after stitching (a windowed ``drop_fill`` restorer).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hub import PretrainedMixin, config_from
from .restorer import RestorerOutput

__all__ = [
    "DEFAULT_BASE",
    "EVIDENCE_FEATURES",
    "WORK_SIDE",
    "CalibratedConfig",
    "CalibratedRestorer",
    "HeadEvidence",
    "PairEncoder",
    "StrengthHead",
    "band_maxima",
    "correction_evidence",
    "correction_pair",
    "dark_channel_quantiles",
    "evidence_features",
    "low_band",
]

DEFAULT_BASE = "mofme-small-weather-gated"
WORK_SIDE = 512  # the evidence is computed on both images area-resized to at most this long side
_OCTAVES = 4  # detail of the correction and of the photo at 1, 1/2, 1/4, 1/8 of the working size
_QUANTILES = (0.5, 0.9, 0.99)  # of the per-pixel change |r - x|
_EPS = 1e-4  # inside the logarithms of magnitudes
EVIDENCE_FEATURES = 8 + 1 + len(_QUANTILES) + 2 * _OCTAVES + 6  # without the haze evidence
DARK_PATCH = 15  # the dark channel's minimum filter, px at the working size
_DARK_QUANTILES = (0.02, 0.1)


def evidence_features(haze_evidence: bool) -> int:
    """The length of :func:`correction_evidence`'s vector."""
    return EVIDENCE_FEATURES + (len(_DARK_QUANTILES) if haze_evidence else 0)


def _at_work_size(image: Tensor) -> Tensor:
    height, width = image.shape[-2:]
    scale = WORK_SIDE / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image, size=size, mode="area")


def _octave_detail(image: Tensor) -> list[Tensor]:
    """Mean |level - its 2x2-mean upsampled| (N,) at each of :data:`_OCTAVES` octaves of (N, C, H, W)."""
    details = []
    for _ in range(_OCTAVES):
        if min(image.shape[-2:]) < 2:
            details.append(image.new_zeros(image.shape[0]))
            continue
        coarse = F.avg_pool2d(image, 2, ceil_mode=True)
        details.append(
            (image - F.interpolate(coarse, size=image.shape[-2:], mode="nearest")).abs().mean((1, 2, 3))
        )
        image = coarse
    return details


def dark_channel_quantiles(image: Tensor) -> Tensor:
    """(N, 2) the 2% and 10% quantiles of the dark channel of ``image`` (N, 3, H, W) in [0, 1], at
    most :data:`WORK_SIDE` px: the minimum over the channels, then over a :data:`DARK_PATCH`-px
    square around each pixel (the border replicated)."""
    return _dark_quantiles(_at_work_size(image.float()))


def _dark_quantiles(x: Tensor) -> Tensor:
    """:func:`dark_channel_quantiles` of ``x``, already at the working size."""
    darkest = x.min(dim=1, keepdim=True).values
    pad = DARK_PATCH // 2
    darkest = F.pad(darkest, (pad, pad, pad, pad), mode="replicate")
    dark = -F.max_pool2d(-darkest, DARK_PATCH, stride=1).flatten(1)
    return torch.quantile(dark, torch.tensor(_DARK_QUANTILES, dtype=dark.dtype), dim=1).T


def correction_evidence(image: Tensor, restored: Tensor, *, haze_evidence: bool = False) -> Tensor:
    """(N, :func:`evidence_features`) statistics of the base's proposal ``restored`` for ``image``
    (both (N, 3, H, W) in [0, 1]), at most :data:`WORK_SIDE` px: the mean change and mean colour per
    channel, dark channel and saturation means; then logarithms of the mean and quantiles of the
    per-pixel change, of the change's and the photo's detail per octave, and of the per-channel
    spread of change and photo; with ``haze_evidence``, last, :func:`dark_channel_quantiles`."""
    return _features(*_work_pair(image, restored), haze_evidence=haze_evidence)


def _work_pair(image: Tensor, restored: Tensor) -> tuple[Tensor, Tensor]:
    """Both images in float32 at the working size."""
    return _at_work_size(image.float()), _at_work_size(restored.float())


def _features(x: Tensor, r: Tensor, *, haze_evidence: bool) -> Tensor:
    """:func:`correction_evidence` of ``x`` and ``r``, already at the working size."""
    evidence = _evidence(x, r)
    return torch.cat([evidence, _dark_quantiles(x)], 1) if haze_evidence else evidence


def _evidence(x: Tensor, r: Tensor) -> Tensor:
    """:func:`correction_evidence`'s default statistics of ``x`` and ``r``, at the working size."""
    change = r - x
    magnitude = change.abs().mean(dim=1).flatten(1)
    quantiles = torch.quantile(magnitude, torch.tensor(_QUANTILES, dtype=magnitude.dtype), dim=1)
    dark = x.min(dim=1).values.mean(dim=(1, 2))
    saturation = (x.max(dim=1).values - x.min(dim=1).values).mean(dim=(1, 2))
    signed = [change.mean(dim=(2, 3)), x.mean(dim=(2, 3)), dark[:, None], saturation[:, None]]
    magnitudes = torch.stack([magnitude.mean(1), *quantiles, *_octave_detail(change), *_octave_detail(x)], 1)
    spreads = torch.cat([change.std(dim=(2, 3)), x.std(dim=(2, 3))], 1)
    return torch.cat([*signed, torch.log(magnitudes + _EPS), torch.log(spreads + _EPS)], 1)


@dataclass(frozen=True)
class CalibratedConfig:
    """Every constructor argument of :class:`CalibratedRestorer` (``asdict`` is ``config.json``).

    ``base``: a restorer to load with its weights (a shipped name or a ``save_pretrained`` folder),
    or a saved restorer config (a dict with ``architecture``: built untrained, its weights coming
    from this model's file; what ``config.json`` stores). The rest configure :class:`StrengthHead`."""

    base: str | dict = DEFAULT_BASE
    hidden: int = 32  # the head's hidden width
    prior: float = 0.9  # the strength of a new head on any image
    haze_evidence: bool = False  # the head also reads the photo's dark-channel quantiles
    max_strength: float = 1.0  # s_max: the strength (with two bands: the low band's) lies in (0, s_max)
    bands: int = 1  # 1: one strength; 2: one for the correction's low band, one for the rest
    band_sigma: float = 4.0  # the low band's Gaussian, px at the working size
    pair_width: int = 0  # > 0: the head also reads the photo and its correction through a CNN this wide

    def __post_init__(self) -> None:
        if not self.max_strength > 0.0:
            raise ValueError(f"max_strength must be positive, got {self.max_strength}")
        if self.bands not in (1, 2):
            raise ValueError(f"bands must be 1 or 2, got {self.bands}")
        ceiling = min(band_maxima(self.bands, self.max_strength))
        if not 0.0 < self.prior < ceiling:
            raise ValueError(f"prior must be in (0, {ceiling}) (max_strength, bands), got {self.prior}")
        if not self.band_sigma > 0.0 or self.pair_width < 0:
            raise ValueError(
                f"band_sigma must be > 0 and pair_width >= 0, got {self.band_sigma}, {self.pair_width}"
            )
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if not isinstance(self.base, str | dict):
            raise ValueError(f"base must be a restorer name, folder or config dict, got {self.base!r}")


def band_maxima(bands: int, max_strength: float) -> tuple[float, ...]:
    """The upper end of each band's strength: ``max_strength`` for one band; for two, the low band's
    ``max_strength`` and the high band's at most 1 (fine detail is never amplified)."""
    return (max_strength,) if bands == 1 else (max_strength, min(1.0, max_strength))


def low_band(change: Tensor, sigma: float) -> Tensor:
    """The low frequencies of ``change`` (N, C, H, W): a Gaussian blur of ``sigma`` px at the working
    size (a larger image is area-resized to :data:`WORK_SIDE`, blurred, and resized back bilinearly),
    so the band means the same at any photo size. The high band is ``change - low_band(change)``."""
    from torchvision.transforms.functional import gaussian_blur  # restoration extra: not at import

    small = _at_work_size(change)
    radius = max(0, min(int(3 * sigma), min(small.shape[-2:]) - 1))  # reflection needs radius < side
    blurred = gaussian_blur(small, kernel_size=2 * radius + 1, sigma=sigma) if radius else small
    if blurred.shape[-2:] == change.shape[-2:]:
        return blurred
    return F.interpolate(blurred, size=change.shape[-2:], mode="bilinear", align_corners=False)


def correction_pair(image: Tensor, restored: Tensor) -> Tensor:
    """(N, 6, h, w) what a pair encoder reads, at the working size: the photo minus 0.5 and the
    correction r - x divided by its root mean square (its size is in :func:`correction_evidence`)."""
    return _pair(*_work_pair(image, restored))


def _pair(x: Tensor, r: Tensor) -> Tensor:
    """:func:`correction_pair` of ``x`` and ``r``, already at the working size."""
    change = r - x
    rms = change.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return torch.cat([x - 0.5, change / (rms + _EPS)], 1)


class HeadEvidence(NamedTuple):
    """What a :class:`StrengthHead` reads of a batch: ``features`` (N, F) (:func:`correction_evidence`)
    and, for a head with a pair encoder, ``pair`` (N, 6, h, w) (:func:`correction_pair`)."""

    features: Tensor
    pair: Tensor | None = None


class PairEncoder(nn.Module):
    """(N, 6, h, w) -> (N, 4 ``width``): four stride-2 3x3 convolutions with GELU (``width``,
    2 ``width``, 2 ``width``, 2 ``width`` channels), then the mean and standard deviation of each
    channel over the image (any size): what the correction looks like, not where."""

    def __init__(self, *, width: int) -> None:
        super().__init__()
        widths = [6, width, 2 * width, 2 * width, 2 * width]
        layers: list[nn.Module] = []
        for inputs, outputs in itertools.pairwise(widths):
            layers += [nn.Conv2d(inputs, outputs, 3, stride=2, padding=1), nn.GELU()]
        self.trunk = nn.Sequential(*layers)

    def forward(self, pair: Tensor) -> Tensor:
        maps = self.trunk(pair).flatten(2)
        return torch.cat([maps.mean(2), maps.std(2, correction=0)], 1)  # defined on a 1 x 1 map too


class StrengthHead(nn.Module):
    """(image, restored) (N, 3, H, W) -> (N, ``bands``) strength logits: :func:`correction_evidence`,
    standardised by running batch statistics (no affine), then a linear map plus a two-layer GELU MLP
    (the linear term keeps evidence beyond what training saw on its trend, rather than at a constant).
    With ``pair_width`` the MLP also reads a :class:`PairEncoder` of :func:`correction_pair`,
    standardised the same way. The output layers start at zero weights, the biases at
    logit(``prior`` / maximum) (s = ``prior`` in each band on any image). :meth:`to_strength` maps
    logits to s = maximum sigmoid(logit), the maxima of :func:`band_maxima`."""

    def __init__(
        self,
        *,
        hidden: int,
        prior: float,
        haze_evidence: bool = False,
        max_strength: float = 1.0,
        bands: int = 1,
        pair_width: int = 0,
    ) -> None:
        super().__init__()
        self.haze_evidence = haze_evidence
        maxima = torch.tensor(band_maxima(bands, max_strength), dtype=torch.float32)
        self.register_buffer("maxima", maxima, persistent=False)
        features = evidence_features(haze_evidence)
        self.standardise = nn.BatchNorm1d(features, affine=False)
        self.encoder = PairEncoder(width=pair_width) if pair_width else None
        self.pair_standardise = nn.BatchNorm1d(4 * pair_width, affine=False) if pair_width else None
        self.linear = nn.Linear(features, bands)
        self.mlp = nn.Sequential(
            nn.Linear(features + 4 * pair_width, hidden), nn.GELU(), nn.Linear(hidden, bands, bias=False)
        )
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.linear.bias.copy_(torch.logit(prior / self.maxima))
        nn.init.zeros_(self.mlp[-1].weight)

    def to_strength(self, logits: Tensor) -> Tensor:
        """Logits (..., ``bands``) -> strengths in (0, each band's maximum), float32."""
        return self.maxima * torch.sigmoid(logits.float())

    def evidence(self, image: Tensor, restored: Tensor) -> HeadEvidence:
        """What this head reads of ``image`` and the base's ``restored`` (both resized once)."""
        x, r = _work_pair(image, restored)
        features = _features(x, r, haze_evidence=self.haze_evidence)
        return HeadEvidence(features, _pair(x, r) if self.encoder else None)

    def logits(self, evidence: HeadEvidence | Tensor) -> Tensor:
        """:meth:`evidence` (or its ``features`` alone, for a head without a pair encoder) -> (N, bands)."""
        features, pair = (evidence, None) if isinstance(evidence, Tensor) else evidence
        features = self.standardise(features)
        hidden = features
        if self.encoder is not None:
            if pair is None:
                raise ValueError("this strength head reads the correction pair: pass HeadEvidence with pair")
            hidden = torch.cat([features, self.pair_standardise(self.encoder(pair.float()))], 1)
        return self.linear(features) + self.mlp(hidden)

    def forward(self, image: Tensor, restored: Tensor) -> Tensor:
        return self.logits(self.evidence(image, restored))


def _build_base(spec: str | dict) -> nn.Module:
    """The base restorer of a :class:`CalibratedConfig`: loaded with weights (a name or folder), or
    built from a saved config dict (weights to come)."""
    from .registry import ARCHITECTURES, load_restorer  # the registry imports this module

    if isinstance(spec, str):
        return load_restorer(spec)
    fields = dict(spec)
    architecture = fields.pop("architecture", None)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"base: unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture](**fields)


class CalibratedRestorer(PretrainedMixin, nn.Module):
    """``base`` (a restorer returning :class:`RestorerOutput`) with its correction scaled per image by
    :class:`StrengthHead` (module docstring). The base's calls pass through: ``image_context``,
    ``size_multiple``, ``receptive_margin``, ``forward``'s ``fill`` and ``context``."""

    def __init__(self, config: CalibratedConfig | None = None, /, **fields: Any) -> None:
        super().__init__()
        cfg = config_from(CalibratedConfig, config, fields)
        self.base = _build_base(cfg.base)
        if getattr(self.base, "drop_head", None) is not None and self.receptive_margin is not None:
            raise ValueError(
                "base fills drops after stitching (a windowed drop_fill restorer): not supported"
            )
        self.strength = StrengthHead(
            hidden=cfg.hidden,
            prior=cfg.prior,
            haze_evidence=cfg.haze_evidence,
            max_strength=cfg.max_strength,
            bands=cfg.bands,
            pair_width=cfg.pair_width,
        )
        self.config = cfg

    def config_dict(self) -> dict[str, Any]:
        """``config.json``: the base's saved config (with its architecture) in place of its name."""
        saved = {"architecture": type(self.base).__name__, **self.base.config_dict()}
        return asdict(replace(self.config, base=saved))

    @property
    def receptive_margin(self) -> int | None:
        """The base's: the strength is the whole image's, applied after stitching."""
        return getattr(self.base, "receptive_margin", None)

    @property
    def size_multiple(self) -> int:
        base = self.base
        return int(getattr(base, "size_multiple", None) or getattr(base, "patch_size", 1))

    def image_context(self, image: Tensor) -> Tensor | None:
        """The base's whole-image descriptor (None for a base without one)."""
        return getattr(self.base, "image_context", lambda _: None)(image)

    def strength_of(self, image: Tensor, restored: Tensor) -> Tensor:
        """The strengths (N, bands) for ``image`` given the base's ``restored`` (both (N, 3, H, W))."""
        return self.strength.to_strength(self.strength(image, restored))

    def calibrate(self, image: Tensor, restored: Tensor) -> Tensor:
        """x + s (restored - x) for the base's whole-image ``restored`` (N, 3, H, W), with two bands
        x + s_low L + s_high (c - L) for c = restored - x and L its :func:`low_band`; clipped to
        [0, 1] (which changes nothing for s <= 1 in one band: a blend of two images in [0, 1])."""
        strength = self.strength_of(image, restored).to(restored.dtype)[:, :, None, None, None]
        change = restored - image
        if strength.shape[1] == 1:
            return (image + strength[:, 0] * change).clamp(0.0, 1.0)
        low = low_band(change, self.config.band_sigma)
        return (image + strength[:, 0] * low + strength[:, 1] * (change - low)).clamp(0.0, 1.0)

    def forward(
        self, image: Tensor, *, fill: bool = True, context: Tensor | None = None, calibrate: bool = True
    ) -> RestorerOutput:
        """``image`` (N, 3, H, W) in [0, 1] -> the base's output with ``image`` = x + s (base - x);
        ``calibrate=False``: the base's output as it is (a tile, calibrated once stitched)."""
        options = {} if context is None else {"context": context}
        if getattr(self.base, "drop_head", None) is not None:
            options["fill"] = fill
        out = self.base(image, **options)
        return out._replace(image=self.calibrate(image, out.image)) if calibrate else out
