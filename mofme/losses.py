"""The restoration training loss: SmoothL1 on pixels plus an optional VGG16 perceptual term.

    loss = RestorationLoss(perceptual_weight=0.04, vgg_weights="weights/vgg16-397923af.pth")
    out = loss(pred, target)          # LossOutput(total, pixel, perceptual), scalar tensors
    out.total.backward()

``pred`` and ``target`` are ``(N, 3, H, W)`` images in ``[0, 1]``.

* ``pixel = smooth_l1_loss(pred, target, beta=beta)`` (mean over all elements; ``beta=1.0`` as torch).
* ``perceptual`` is the mean over the three VGG16 layers relu1_2, relu2_2 and relu3_3 of the MSE between
  the features of ``pred`` and of ``target`` (the published recipe's ``LossNetwork``). The images are
  normalised with the ImageNet mean / std first. The network is ``torchvision.models.vgg16().features[:16]``,
  frozen (no parameter takes a gradient) and always in eval mode.
* ``total = pixel + perceptual_weight * perceptual`` (the published recipe uses 0.04).
* ``pixel="psnr"`` replaces the smooth L1 by minus the PSNR of each image, capped at ``psnr_cap`` dB
  (``10 log10(mse_i + 10^(-cap / 10))``), averaged over the batch: each image weighs the same in dB,
  as the evaluation counts them (a clean photo altered to 25 dB costs as much as a rainy one left at
  25 dB). Particle weights do not apply to it.
* ``particle_weight`` > 0 weights the pixel term where weather particles are (the renderer's
  ``particles``: streak, flake and drop opacity ``m`` in [0, 1], shape ``(N, 1, H, W)``): every element
  gets weight ``w = 1 + particle_weight * m`` and ``pixel = sum(w * smooth_l1) / sum(w)`` (a weighted
  mean: 0 gives the plain mean). Small, sparse defects such as lens drops then weigh in the loss as
  they weigh in the eye.

The drop detector of ``drop_fill`` restorers trains on the renderer's drop opacity:
``drop_mask_loss(logits, drop_targets(particles, weather))`` is the per-pixel binary cross-entropy
(mean over pixels) against ``particles`` on raindrop renders and 0 on every other render, so
streaks, flakes and clean photos teach it what is not a drop.

The weather-presence gate of ``presence_gate`` restorers trains on what the weather changed:
``drop_mask_loss(presence_logits, presence_targets(inputs, targets))``, the per-pixel binary
cross-entropy against 1 where the input differs from the clean target by more than 2/255 in some
channel (dilated by 2 px), 0 elsewhere: everywhere on clean crops.

The VGG16 weights are never downloaded: these machines have no network. Pass the path of torchvision's
ImageNet checkpoint (``vgg16-397923af.pth``, a ``state_dict`` loaded with ``torch.load(weights_only=True)``)
or a ``.safetensors`` file with the same keys. Full VGG16 state dicts (``features.N.weight``, classifier
keys included) and features-only ones (``N.weight``) are accepted; only the first 16 feature layers are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._types import PathLike
from .data.weather import WEATHER_TYPES

__all__ = [
    "VGG_DOWNLOAD_URL",
    "DropMaskLoss",
    "LossOutput",
    "RestorationLoss",
    "VGGFeatures",
    "drop_mask_loss",
    "drop_targets",
    "load_vgg_features",
    "presence_targets",
]

VGG_DOWNLOAD_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256)  # vgg16 ("D") up to relu3_3: features[:16]
_TAPS = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3"}  # indices in features of the compared activations
_NUM_LAYERS = 16
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HOW_TO_GET = (
    f"The weights cannot be downloaded on these machines: download torchvision's vgg16-397923af.pth "
    f"({VGG_DOWNLOAD_URL}) on a machine with internet access, copy it here and pass its path as "
    f"`loss.vgg_weights` (RestorationLoss(vgg_weights=PATH)), or set `loss.perceptual_weight` to 0."
)


class LossOutput(NamedTuple):
    """Scalar tensors: ``total = pixel + perceptual_weight * perceptual`` (``perceptual`` is 0 when disabled)."""

    total: Tensor
    pixel: Tensor
    perceptual: Tensor


def _vgg_layers() -> nn.Sequential:
    """``torchvision.models.vgg16().features[:16]`` (same module indices, hence same state-dict keys)."""
    layers: list[nn.Module] = []
    channels = 3
    for value in _VGG_CFG:
        if value == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, value, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = value
    assert len(layers) == _NUM_LAYERS
    return nn.Sequential(*layers)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' does not hold a VGG16 state_dict (found {type(state).__name__})")
    return state


def _select_features(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Keep ``features.N.*`` (or bare ``N.*``) entries with ``N < 16``, keyed ``N.*``."""
    selected = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("features."):
            key = key.removeprefix("features.")
        index = key.split(".", 1)[0]
        if index.isdigit() and int(index) < _NUM_LAYERS:
            selected[key] = value
    expected = set(_vgg_layers().state_dict())
    missing = sorted(expected - set(selected))
    if missing:
        raise ValueError(
            f"'{source}' is not a torchvision VGG16 state_dict: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}. {_HOW_TO_GET}"
        )
    return {k: selected[k] for k in expected}


def load_vgg_features(path: PathLike) -> nn.Sequential:
    """The frozen, eval-mode ``vgg16.features[:16]`` with the weights of ``path`` (``.pth`` or ``.safetensors``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file without the VGG16 keys,
    both with instructions for getting the weights.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights not found at '{path}'. {_HOW_TO_GET}")
    layers = _vgg_layers()
    state = _select_features(_read_state_dict(path), str(path))
    try:
        layers.load_state_dict(state)
    except RuntimeError as error:  # shape mismatch: another network's weights
        raise ValueError(f"'{path}' does not match VGG16: {error}. {_HOW_TO_GET}") from error
    layers.requires_grad_(False)
    return layers.eval()


class VGGFeatures(nn.Module):
    """ImageNet-normalised VGG16 activations: ``(N, 3, H, W)`` in [0, 1] -> [relu1_2, relu2_2, relu3_3]
    of shapes ``(N, 64, H, W)``, ``(N, 128, H/2, W/2)``, ``(N, 256, H/4, W/4)``. Frozen, always in eval."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers
        self.layers.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # dropout-free, but keep the contract: never in training mode

    def forward(self, image: Tensor) -> list[Tensor]:
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        features = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in _TAPS:
                features.append(x)
        return features


class RestorationLoss(nn.Module):
    """SmoothL1 + ``perceptual_weight`` x VGG16 perceptual loss (see the module docstring).

    Args:
        beta: SmoothL1 threshold (``torch.nn.functional.smooth_l1_loss``'s ``beta``).
        perceptual_weight: weight of the perceptual term; 0 disables it (no VGG is built).
        vgg_weights: path of the VGG16 weights, required when ``perceptual_weight > 0``.
        particle_weight: extra pixel-loss weight on weather particles (``forward``'s ``particles``).
        pixel: ``"smooth_l1"`` or ``"psnr"`` (minus each image's PSNR, capped at ``psnr_cap`` dB).
    """

    def __init__(
        self,
        *,
        beta: float = 1.0,
        perceptual_weight: float = 0.0,
        vgg_weights: PathLike | None = None,
        particle_weight: float = 0.0,
        pixel: str = "smooth_l1",
        psnr_cap: float = 50.0,
    ) -> None:
        super().__init__()
        if pixel not in ("smooth_l1", "psnr"):
            raise ValueError(f"pixel must be 'smooth_l1' or 'psnr', got {pixel!r}")
        if pixel == "psnr" and particle_weight:
            raise ValueError("particle_weight applies to the smooth-L1 pixel term, not to pixel='psnr'")
        self.kind = pixel
        self.mse_floor = 10.0 ** (-psnr_cap / 10.0)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if particle_weight < 0:
            raise ValueError(f"particle_weight must be >= 0, got {particle_weight}")
        self.particle_weight = float(particle_weight)
        if perceptual_weight < 0:
            raise ValueError(f"perceptual_weight must be >= 0, got {perceptual_weight}")
        self.beta = float(beta)
        self.perceptual_weight = float(perceptual_weight)
        self.vgg: VGGFeatures | None = None
        if self.perceptual_weight > 0:
            if vgg_weights is None:
                raise ValueError(
                    f"perceptual_weight={perceptual_weight} needs VGG16 weights, but vgg_weights is None. "
                    f"{_HOW_TO_GET}"
                )
            self.vgg = VGGFeatures(load_vgg_features(vgg_weights))

    def perceptual(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean over relu1_2 / relu2_2 / relu3_3 of the feature MSE; the target branch takes no gradient."""
        if self.vgg is None:
            raise RuntimeError("the perceptual term is disabled (perceptual_weight=0)")
        pred_features = self.vgg(pred)
        with torch.no_grad():
            target_features = self.vgg(target)
        losses = [F.mse_loss(p, t) for p, t in zip(pred_features, target_features, strict=True)]
        return torch.stack(losses).mean()

    def pixel(self, pred: Tensor, target: Tensor, particles: Tensor | None = None) -> Tensor:
        """SmoothL1, a plain mean or weighted by ``1 + particle_weight * particles``; or minus the mean
        capped PSNR of the images (``pixel="psnr"``; module docstring)."""
        if self.kind == "psnr":
            mse = (pred - target).square().flatten(1).mean(dim=1)
            return 10.0 * torch.log10(mse + self.mse_floor).mean()
        if not self.particle_weight:
            return F.smooth_l1_loss(pred, target, beta=self.beta)
        if particles is None:
            raise ValueError(
                f"particle_weight={self.particle_weight} needs the particle masks of the batch (an item key "
                "'particles', which rendered weather data has); set loss.particle_weight to 0 for other data"
            )
        if particles.shape[-2:] != pred.shape[-2:] or particles.shape[:1] != pred.shape[:1]:
            raise ValueError(f"particles {tuple(particles.shape)} do not cover pred {tuple(pred.shape)}")
        weight = (1.0 + self.particle_weight * particles.to(pred.dtype)).expand_as(pred)
        elementwise = F.smooth_l1_loss(pred, target, beta=self.beta, reduction="none")
        return (weight * elementwise).sum() / weight.sum()

    def forward(self, pred: Tensor, target: Tensor, particles: Tensor | None = None) -> LossOutput:
        """``pred``, ``target`` (N, 3, H, W); ``particles`` (N, 1, H, W), used when ``particle_weight`` > 0."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pixel = self.pixel(pred, target, particles)
        if self.vgg is None:
            perceptual = pixel.new_zeros(())
            return LossOutput(pixel, pixel, perceptual)
        perceptual = self.perceptual(pred, target)
        return LossOutput(pixel + self.perceptual_weight * perceptual, pixel, perceptual)

    def extra_repr(self) -> str:
        return f"pixel={self.kind}, beta={self.beta}, perceptual_weight={self.perceptual_weight}, particle_weight={self.particle_weight}"


def drop_targets(particles: Tensor, weather: Tensor) -> Tensor:
    """The drop detector's target (N, 1, H, W): ``particles`` (N, 1, H, W) on items whose ``weather``
    (N,) index is raindrop, zero on every other item (index -1: clean)."""
    if weather.ndim != 1 or particles.ndim != 4 or particles.shape[:2] != (len(weather), 1):
        raise ValueError(
            f"particles {tuple(particles.shape)} must be (N, 1, H, W) for weather {tuple(weather.shape)}"
        )
    is_drop = weather.to(particles.device) == WEATHER_TYPES.index("raindrop")
    return particles * is_drop.view(-1, 1, 1, 1).to(particles.dtype)


def presence_targets(
    inputs: Tensor, targets: Tensor, *, threshold: float = 2 / 255, dilation: int = 2
) -> Tensor:
    """The presence gate's target (N, 1, H, W) in {0, 1}: 1 where ``inputs`` (N, 3, H, W) differ from
    the clean ``targets`` by more than ``threshold`` in some channel, dilated by ``dilation`` px (a
    (2 d + 1)-square max filter), so the rims of streaks and drops count as weather."""
    if inputs.shape != targets.shape or inputs.ndim != 4:
        raise ValueError(
            f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must be equal (N, C, H, W)"
        )
    changed = ((inputs - targets).abs().amax(dim=1, keepdim=True) > threshold).to(inputs.dtype)
    if dilation:
        changed = F.max_pool2d(changed, 2 * dilation + 1, stride=1, padding=dilation)
    return changed


def drop_mask_loss(logits: Tensor, targets: Tensor, *, pos_weight: float = 1.0) -> Tensor:
    """Mean binary cross-entropy of the drop detector's ``logits`` (N, 1, H, W) against soft
    ``targets`` t in [0, 1] of the same shape (:func:`drop_targets`):
    ``-(pos_weight * t * log(p) + (1 - t) * log(1 - p))``, p = sigmoid(logits); ``pos_weight`` > 1
    counts the (rare) drop pixels more."""
    if logits.shape != targets.shape:
        raise ValueError(
            f"drop logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    weight = logits.new_tensor(pos_weight) if pos_weight != 1.0 else None
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=weight)


class DropMaskLoss(nn.Module):
    """``loss(logits, particles, weather)``: :func:`drop_mask_loss` (with ``pos_weight``) of the drop
    ``logits`` (N, 1, H, W) against :func:`drop_targets` of the batch's ``particles`` (N, 1, H, W)
    and ``weather`` (N,)."""

    def __init__(self, *, pos_weight: float = 1.0) -> None:
        super().__init__()
        if pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = float(pos_weight)

    def forward(self, logits: Tensor, particles: Tensor, weather: Tensor) -> Tensor:
        return drop_mask_loss(logits, drop_targets(particles, weather), pos_weight=self.pos_weight)
