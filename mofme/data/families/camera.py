"""Camera effects: a post-process for any render, degrading only the network's *input*.

Real weather photos pass through a lens, a sensor and an encoder; a restorer trained only on pristine
renders can mistake their artefacts for weather (or the other way round). ``camera_effects`` adds
them at random to a degraded image (the training target stays clean):

    from mofme.data.families.camera import camera_effects
    noisy = camera_effects(sample.degraded, rng, strength=1.0)

Each effect is applied with probability ``0.5 * strength`` (capped at 1), in camera order:

1. slight optical blur: Gaussian, sigma 0.3-1.2 px;
2. sensor noise: Poisson shot noise (30-600 photons for a white pixel) plus Gaussian read noise
   (sigma 0-0.02); as strength drops, the photon count rises and the read noise falls;
3. down-and-up resizing: by a factor 1.25-2.5 (bilinear or bicubic, Pillow);
4. JPEG compression: Pillow, quality 30-90 (higher as strength drops).

Every parameter is drawn from ``rng`` whether or not its effect is applied, so the stream of draws
(and the output) is deterministic given the rng state. ``strength = 0`` returns the image unchanged.
Effect magnitudes also scale with ``strength`` (1 = the ranges above; values above 1 are allowed).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["camera_effects"]

_EFFECT_PROBABILITY = 0.5  # per effect, at strength 1


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="reflect", truncate=3.0)


def _noise(image: np.ndarray, rng: np.random.Generator, peak: float, read: float) -> np.ndarray:
    """Poisson shot noise at ``peak`` photons for a white pixel, plus Gaussian read noise ``read``."""
    shot = rng.poisson(np.clip(image, 0.0, 1.0) * peak) / peak
    return shot + rng.normal(0.0, read, image.shape)


def _resample(image: np.ndarray, factor: float, bicubic: bool) -> np.ndarray:
    """Down by ``factor`` and back up to the original size, channel by channel (Pillow, float)."""
    h, w = image.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    method = Image.Resampling.BICUBIC if bicubic else Image.Resampling.BILINEAR
    channels = []
    for c in range(image.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32), mode="F")
        channels.append(np.asarray(plane.resize(small, method).resize((w, h), method)))
    return np.stack(channels, axis=2)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as a JPEG of ``quality`` (8-bit, 4:2:0 chroma as Pillow's default)."""
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0


def camera_effects(image: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0) -> np.ndarray:
    """Random camera effects (blur, sensor noise, down-up resize, JPEG; see the module docstring) on
    a float (H, W, 3) image in [0, 1]. Returns a new float32 (H, W, 3) array in [0, 1]; deterministic
    given ``rng``; ``strength`` 0 = unchanged, 1 = the documented ranges. ``image`` is not modified."""
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    use = rng.uniform(size=4) < min(1.0, _EFFECT_PROBABILITY * strength)
    sigma = strength * rng.uniform(0.3, 1.2)
    peak = rng.uniform(30.0, 600.0) / max(strength, 1e-3)
    read = strength * rng.uniform(0.0, 0.02)
    factor, bicubic = 1.0 + strength * rng.uniform(0.25, 1.5), bool(rng.uniform() < 0.5)
    quality = round(float(np.clip(90.0 - strength * rng.uniform(0.0, 60.0), 5.0, 95.0)))
    out = image.copy()
    if use[0]:
        out = _blur(out, sigma)
    if use[1]:
        out = _noise(out, rng, peak, read)
    if use[2]:
        out = _resample(out, factor, bicubic)
    if use[3]:
        out = _jpeg(out, quality)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
