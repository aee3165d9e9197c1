"""Training pairs rendered on the fly from clean photos: folders of the user's photos, mixed with weights.

    sources = [folder_photos("data/photos", long_sides=(256, 512, 768)), builtin_sources()]
    train = RenderedWeatherDataset(sources, weights=(3.0, 1.0), crop_size=128, samples_per_epoch=4096)

A :class:`PhotoSource` is one clean photo at several sizes ("versions"), each with the weather scale
it is rendered at. A folder photo's versions are the photo resized to each long side, with weather
at the scale of a whole photo of that size (``long_side / 512``, see
:func:`~mofme.data.weather.render_weather`): streaks, flakes and drops get the pixel sizes they have
in photos of that resolution. Each item picks a group by weight, a photo of it uniformly, then a
version, crop, flip/rotation, colour variant, weather, severity and render seed, all from
``np.random.default_rng([seed, epoch, index])``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets import weather_index
from .families import FAMILIES, render_family
from .families.camera import camera_effects
from .io import list_images, read_image, to_8bit_levels
from .transforms import AUGMENT_MODES, augment, jitter_colors, pad_to, random_crop_box, to_tensor
from .weather import SEVERITIES, WEATHER_TYPES, WeatherSample, derive_seed, render_weather

__all__ = [
    "PhotoSource",
    "RenderedWeatherDataset",
    "clean_items",
    "family_renders",
    "folder_photos",
    "render_crop",
    "render_crop_sample",
    "resize_long_side",
    "training_families",
]

_REFERENCE_SIDE = 512.0  # render_weather's reference image size (scale 1)


class PhotoSource(NamedTuple):
    """A clean photo: ``versions`` float32 (H, W, 3) arrays in [0, 1] (the photo at several sizes)
    and, per version, the ``weather_scales`` the weather is rendered at."""

    name: str
    versions: tuple[np.ndarray, ...]
    weather_scales: tuple[float, ...]


def resize_long_side(image: np.ndarray, long_side: int, *, to_8bit: bool = True) -> np.ndarray:
    """``image`` (H, W, 3) resized (bilinear, anti-aliased when shrinking) so that its long side is
    ``long_side``; rounded to the 8-bit grid unless ``to_8bit`` is False; read-only float32."""
    from skimage.transform import resize

    factor = long_side / max(image.shape[:2])
    if factor != 1.0:
        shape = (max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor)))
        image = resize(image, shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    image = to_8bit_levels(image) if to_8bit else image.astype(np.float32)
    image.setflags(write=False)
    return image


def folder_photos(folder: str | Path, *, long_sides: Sequence[int] = (256,)) -> list[PhotoSource]:
    """Every image under ``folder`` (recursively, the formats :func:`~mofme.data.read_image` reads)
    at each of ``long_sides`` (sides above a photo's native size are left out; a photo smaller than
    all of them is used at its native size). Raises naming the folder if it holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"photo folder {folder} does not exist")
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"photo folder {folder} holds no image")
    if not long_sides or min(long_sides) < 8:
        raise ValueError(f"long_sides must be sizes of at least 8 pixels, got {tuple(long_sides)}")
    sources = []
    for path in paths:
        photo = read_image(path)[..., :3]
        native = max(photo.shape[:2])
        sides = sorted({s for s in long_sides if s <= native}) or [native]
        versions = tuple(resize_long_side(photo, side) for side in sides)
        scales = tuple(side / _REFERENCE_SIDE for side in sides)
        sources.append(PhotoSource(str(path.relative_to(folder).with_suffix("")), versions, scales))
    return sources


def weather_item(sample: WeatherSample, name: str) -> dict:
    """The dataset item of a render: ``{"input", "target", "mask", "particles", "weather", "severity",
    "name"}`` (``mask`` and ``particles`` (1, H, W); particles zero where the render has none)."""
    particles = sample.particles if sample.particles is not None else np.zeros_like(sample.mask)
    return {
        "input": to_tensor(sample.degraded),
        "target": to_tensor(sample.clean),
        "mask": torch.from_numpy(np.ascontiguousarray(sample.mask[None], dtype=np.float32)),
        "particles": torch.from_numpy(np.ascontiguousarray(particles[None], dtype=np.float32)),
        "weather": weather_index(sample.weather),
        "severity": sample.severity,
        "name": name,
    }


def _random_crop(rng: np.random.Generator, photo: np.ndarray, size: int, *, augment_crop: bool) -> np.ndarray:
    """A random ``size`` x ``size`` crop of ``photo`` (mirror-padded if smaller), flipped/rotated
    by a random one of the 8 modes when ``augment_crop``."""
    padded = pad_to(photo, (size, size))
    y, x = random_crop_box(rng, padded.shape[:2], (size, size))
    crop = padded[y : y + size, x : x + size]
    return augment(crop, int(rng.integers(AUGMENT_MODES))) if augment_crop else crop


def render_crop_sample(
    rng: np.random.Generator,
    source: PhotoSource,
    *,
    crop_size: int,
    weathers: Sequence[str],
    severities: Sequence[int],
    augment_crop: bool = True,
    color_jitter: bool = False,
    clean_fraction: float = 0.0,
    families: Mapping[str, Sequence[str]] | None = None,
    camera_fraction: float = 0.0,
    tag: str = "",
) -> tuple[WeatherSample, str]:
    """One random render from ``source`` and its name: weather, (family,) severity, version, crop
    (mirror-padded if the photo is smaller), flip/rotation, colour variant, camera effects, then
    weather rendered at the version's scale (``clean_fraction`` of the renders stay weather-free:
    weather "clean", severity 0, zero masks).

    ``families`` maps each weather to the renderer families it is drawn with (one uniformly per
    render; default: the classic renderer, :func:`~mofme.data.render_weather`). ``camera_fraction``
    of the crops first go through :func:`~mofme.data.families.camera.camera_effects` (JPEG, noise,
    resizing, blur): the clean target is the processed crop, so camera artefacts are content to
    keep, never weather to remove."""
    weather = weathers[int(rng.integers(len(weathers)))]
    family = None
    if families is not None:
        options = families[weather]
        family = options[int(rng.integers(len(options)))]
    severity = severities[int(rng.integers(len(severities)))]
    version = int(rng.integers(len(source.versions))) if len(source.versions) > 1 else 0
    crop = _random_crop(rng, source.versions[version], crop_size, augment_crop=augment_crop)
    if color_jitter:
        crop = jitter_colors(crop, rng)
    if camera_fraction and rng.random() < camera_fraction:
        crop = to_8bit_levels(camera_effects(crop, rng))
    if clean_fraction and rng.random() < clean_fraction:
        zeros = np.zeros(crop.shape[:2], np.float32)
        return WeatherSample(crop, crop, zeros, "clean", 0, zeros), f"{source.name}_clean{tag}"
    render_seed = int(rng.integers(2**63 - 1))
    scale = source.weather_scales[version]
    if family is None:
        sample = render_weather(crop, weather, severity=severity, seed=render_seed, scale=scale)
        return sample, f"{source.name}_{weather}_s{severity}{tag}"
    sample = render_family(crop, family, severity=severity, seed=render_seed, scale=scale)
    return sample, f"{source.name}_{family}_s{severity}{tag}"


def render_crop(rng: np.random.Generator, source: PhotoSource, **options) -> dict:
    """One random training item from ``source`` (:func:`render_crop_sample`'s render as
    :func:`weather_item`; clean renders have input = target and weather index -1)."""
    return weather_item(*render_crop_sample(rng, source, **options))


class RenderedWeatherDataset(Dataset):
    """Random crops of clean photos with weather rendered on the fly, from weighted groups of photos.

    ``groups``: one list of :class:`PhotoSource` per group (e.g. a folder, the built-in photos);
    ``weights``: the share of items drawn from each group (normalised; default equal);
    ``families``: the renderer families drawn (:mod:`mofme.data.families`; every weather of
    ``weathers`` needs one; default: the classic renderer); ``camera_fraction``: the share of crops
    through camera effects (:func:`render_crop_sample`). Items as
    :class:`~mofme.data.BuiltinWeatherDataset`'s train split; item ``i`` depends only on
    (seed, epoch, i): call ``set_epoch`` every epoch."""

    def __init__(
        self,
        groups: Sequence[Sequence[PhotoSource]],
        *,
        weights: Sequence[float] | None = None,
        crop_size: int = 128,
        samples_per_epoch: int = 1024,
        weathers: Sequence[str] = WEATHER_TYPES,
        severities: Sequence[int] = SEVERITIES,
        seed: int = 0,
        augment: bool = True,
        color_jitter: bool = False,
        clean_fraction: float = 0.0,
        families: Sequence[str] | None = None,
        camera_fraction: float = 0.0,
    ) -> None:
        weights = [1.0] * len(groups) if weights is None else [float(w) for w in weights]
        if not groups or any(not g for g in groups) or len(weights) != len(groups):
            raise ValueError("need at least one non-empty photo group and one weight per group")
        if any(not w > 0 for w in weights):
            raise ValueError(f"group weights must be positive, got {weights}")
        bad = [w for w in weathers if w not in WEATHER_TYPES] + [s for s in severities if s not in SEVERITIES]
        if bad or not weathers or not severities:
            raise ValueError(f"invalid weathers/severities: {bad or (tuple(weathers), tuple(severities))}")
        if not 0.0 <= clean_fraction < 1.0:
            raise ValueError(f"clean_fraction must be in [0, 1), got {clean_fraction}")
        if not 0.0 <= camera_fraction <= 1.0:
            raise ValueError(f"camera_fraction must be in [0, 1], got {camera_fraction}")
        self.groups = [list(g) for g in groups]
        self.probabilities = np.asarray(weights) / sum(weights)
        self.crop_size = int(crop_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.options = {
            "crop_size": self.crop_size,
            "weathers": tuple(weathers),
            "severities": tuple(severities),
            "augment_crop": augment,
            "color_jitter": color_jitter,
            "clean_fraction": float(clean_fraction),
            "families": None if families is None else training_families(weathers, families),
            "camera_fraction": float(camera_fraction),
        }
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        group = self.groups[int(rng.choice(len(self.groups), p=self.probabilities))]
        source = group[int(rng.integers(len(group)))]
        return render_crop(rng, source, **self.options, tag=f"_e{self.epoch}_{index}")


def training_families(weathers: Sequence[str], families: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``families`` (registered names) grouped by weather, for each of ``weathers``; raises naming an
    unknown family or a weather left without one."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown renderer families {unknown}; expected names of {sorted(FAMILIES)}")
    grouped = {w: tuple(f for f in families if FAMILIES[f].weather == w) for w in weathers}
    missing = [w for w, names in grouped.items() if not names]
    if missing:
        raise ValueError(f"no renderer family given for weather {missing}; families: {list(families)}")
    return grouped


def family_renders(
    photos: Sequence[tuple[str, np.ndarray]],
    families: Sequence[str],
    *,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
) -> list[dict]:
    """A fixed list of items (:func:`weather_item`, whole photos): every photo x family x severity,
    rendered once with a seed derived from (seed, photo, family, severity). The items' ``weather``
    is the family's name, so an evaluation reports each family on its own."""
    items = []
    for index, (name, photo) in enumerate(photos):
        for family in families:
            for severity in severities:
                render_seed = derive_seed(seed, index, zlib.crc32(family.encode()), severity)
                sample = render_family(photo, family, severity=severity, seed=render_seed)
                items.append({**weather_item(sample, f"{name}_{family}_s{severity}"), "weather": family})
    return items


def clean_items(photos: Sequence[tuple[str, np.ndarray]]) -> list[dict]:
    """Weather-free items, input = target = the photo (weather ``"clean"``): what a restorer must leave
    as it is (its restored PSNR is the output's distance from its own input)."""
    items = []
    for name, photo in photos:
        zeros = np.zeros(photo.shape[:2], np.float32)
        items.append(
            {**weather_item(WeatherSample(photo, photo, zeros, "clean", 0, zeros), name), "weather": "clean"}
        )
    return items
