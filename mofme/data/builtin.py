"""The built-in benchmark: photos shipped with scikit-image and scikit-learn plus the weather renderer.

No download: the photos come from ``skimage.data`` and ``sklearn.datasets.load_sample_image``. The split
is fixed (``BUILTIN_SPLITS``) so test photos are never trained on:

    train: astronaut, chelsea (cat), coffee, motorcycle (stereo_motorcycle left view), camera
           (grayscale, repeated to 3 channels: the only outdoor scene with sky among them)
    val:   flower
    test:  rocket, china (outdoor scenes, where weather matters)

Photos are float32 (H, W, 3) in [0, 1], resized so the long side is ``long_side`` (default 256) and
rounded to the 8-bit grid (so a clean image written as 8-bit PNG is exact); each is loaded once per
process and returned read-only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .families import FAMILIES, render_family
from .photos import PhotoSource, render_crop, resize_long_side, weather_item
from .weather import SEVERITIES, WEATHER_TYPES, derive_seed, render_weather

__all__ = [
    "BUILTIN_LONG_SIDE",
    "BUILTIN_SPLITS",
    "BuiltinWeatherDataset",
    "SplitDataset",
    "builtin_family_items",
    "builtin_photos",
    "builtin_sources",
]

BUILTIN_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "chelsea", "coffee", "motorcycle", "camera"),
    "val": ("flower",),
    "test": ("rocket", "china"),
}
BUILTIN_LONG_SIDE = 256


def _load_uint8(name: str) -> np.ndarray:
    import skimage.data

    loaders = {
        "astronaut": skimage.data.astronaut,
        "chelsea": skimage.data.chelsea,
        "coffee": skimage.data.coffee,
        "rocket": skimage.data.rocket,
        "motorcycle": lambda: skimage.data.stereo_motorcycle()[0],
        "camera": skimage.data.camera,  # grayscale; the one outdoor scene with sky in the training split
        "brick": skimage.data.brick,  # grayscale textures: classes of the scene-recognition task only
        "grass": skimage.data.grass,
        "gravel": skimage.data.gravel,
    }
    if name in loaders:
        image = loaders[name]()
        return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")


@functools.cache
def _photo(name: str, long_side: int | None) -> np.ndarray:
    image = np.asarray(_load_uint8(name), dtype=np.float32)[:, :, :3] / 255.0
    return resize_long_side(image, long_side or max(image.shape[:2]))


def builtin_photos(split: str, *, long_side: int | None = BUILTIN_LONG_SIDE) -> list[tuple[str, np.ndarray]]:
    """The ``(name, image)`` photos of ``split`` ('train', 'val', 'test' or 'all'); images are read-only
    float32 (H, W, 3) in [0, 1] with the long side resized to ``long_side`` (None: native size)."""
    if split == "all":
        names = tuple(n for s in ("train", "val", "test") for n in BUILTIN_SPLITS[s])
    elif split in BUILTIN_SPLITS:
        names = BUILTIN_SPLITS[split]
    else:
        raise ValueError(f"unknown split '{split}'; expected one of {(*BUILTIN_SPLITS, 'all')}")
    return [(name, _photo(name, long_side)) for name in names]


def _zoomed_side(name: str, long_side: int | None, zoom: float) -> int | None:
    """The long side of ``name`` at ``zoom`` x ``long_side``, capped at the native size (None: native)."""
    if long_side is None or zoom == 1.0:
        return long_side
    side = round(long_side * zoom)
    return None if side >= max(_photo(name, None).shape[:2]) else side


def builtin_sources(
    split: str = "train", *, long_side: int | None = BUILTIN_LONG_SIDE, zoom: tuple[float, ...] = (1.0,)
) -> list[PhotoSource]:
    """The photos of ``split`` as :class:`~mofme.data.photos.PhotoSource`: one version per content
    ``zoom`` (x ``long_side``, capped at the native size), all rendered with the weather scale of the
    unzoomed ``long_side`` photo (the size the val/test photos have)."""
    sources = []
    for name, photo in builtin_photos(split, long_side=long_side):
        versions = tuple(_photo(name, _zoomed_side(name, long_side, z)) for z in zoom)
        scale = max(photo.shape[:2]) / 512.0
        sources.append(PhotoSource(name, versions, (scale,) * len(versions)))
    return sources


class SplitDataset(Dataset):
    """Items of a rendered split: the train split draws item ``i`` of epoch ``e`` from
    ``np.random.default_rng([seed, e, i])`` (``_random_item``; call ``set_epoch`` every epoch), val /
    test return copies of the fixed list ``_fixed`` rendered at construction. Subclasses set
    ``seed``, ``samples_per_epoch`` and ``_fixed`` (None for train)."""

    seed: int
    samples_per_epoch: int
    epoch: int = 0
    _fixed: list[dict] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the random items of ``epoch`` for the train split (no effect on val/test)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch if self._fixed is None else len(self._fixed)

    def __getitem__(self, index: int) -> dict:
        if self._fixed is not None:
            item = self._fixed[index]
            return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()}
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._random_item(np.random.default_rng([self.seed, self.epoch, index]), index)

    def _random_item(self, rng: np.random.Generator, index: int) -> dict:
        raise NotImplementedError


def _check_builtin_args(
    split: str,
    *,
    family: str | None,
    weathers: tuple[str, ...],
    severities: tuple[int, ...],
    renders: int | None,
    train_only: bool,
    clean_fraction: float,
    zoom: tuple[float, ...],
) -> tuple[tuple[str, ...], int]:
    """:class:`BuiltinWeatherDataset`'s arguments checked, each named in the error -> the weathers to
    render (a family's own) and the number of renders (default: 4 for test, 1 otherwise).
    ``train_only``: a train-split-only argument was given."""
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"unknown renderer family {family!r}; expected one of {sorted(FAMILIES)}")
        weathers = (FAMILIES[family].weather,)
    if split not in BUILTIN_SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {tuple(BUILTIN_SPLITS)}")
    bad = [w for w in weathers if w not in WEATHER_TYPES] + [s for s in severities if s not in SEVERITIES]
    if bad or not weathers or not severities:
        raise ValueError(f"invalid weathers/severities: {bad or (weathers, severities)}")
    renders = (4 if split == "test" else 1) if renders is None else int(renders)
    if renders < 1 or (split == "train" and renders != 1):
        raise ValueError(f"renders must be >= 1 and applies to val/test only, got {renders}")
    if split != "train" and train_only:
        raise ValueError(
            "samples_per_epoch, zoom, color_jitter and clean_fraction only apply to the train split "
            "(val/test are fixed lists)"
        )
    if not 0.0 <= clean_fraction < 1.0:
        raise ValueError(f"clean_fraction must be in [0, 1), got {clean_fraction}")
    if not zoom or any(not z > 0 for z in zoom):
        raise ValueError(f"zoom factors must be positive, got {tuple(zoom)}")
    return tuple(weathers), renders


class BuiltinWeatherDataset(SplitDataset):
    """Rendered (degraded, clean) pairs from the built-in photos.

    Item: ``{"input": (3, h, w) float32 degraded, "target": (3, h, w) clean, "mask": (1, h, w)
    degradation mask, "particles": (1, h, w) streak / flake / drop opacity, "weather": index in
    WEATHER_TYPES (-1: clean), "severity": 1..3 (0: clean), "name": str}``,
    images in [0, 1].

    * ``split="train"``: ``samples_per_epoch`` (default 1024) random crops of ``crop_size`` (mirror-padded
      if a photo is smaller) with a random flip/rotation (``augment``), weather, severity and render seed,
      rendered on the fly at the scale of the whole photo. ``zoom`` adds content scales: each crop comes
      from the photo resized to a random one of ``zoom x long_side`` (capped at its native size), while
      the weather keeps the scale of a ``long_side`` photo, the size val/test photos have; ``color_jitter``
      varies the clean content's colours first (:func:`~mofme.data.transforms.jitter_colors`);
      ``clean_fraction`` of the items get no weather at all (input = target, weather index -1, zero
      mask), so the model also learns to leave clean content alone. Item ``i``
      depends only on (seed, epoch, i); call ``set_epoch`` every epoch before iterating (not seen by
      ``persistent_workers``).
    * ``split="val"`` / ``"test"``: a fixed list, every photo x weather in ``weathers`` x severity in
      ``severities`` x ``renders`` independent renders (default: 4 for test, 1 for val), whole photos
      (long side ``long_side``; use batch size 1), rendered once at construction from (seed, photo,
      weather, severity, render): keep ``seed`` fixed for comparable numbers. The test split's 96
      images (2 photos x 4 weathers x 3 severities x 4 renders) give a mean with a standard error.
      ``family`` (val/test): render with that renderer family (:mod:`mofme.data.families`) instead,
      its weather only, from the same seeds (``"<weather>-classic"`` gives the default renders).
    """

    def __init__(
        self,
        split: str,
        *,
        crop_size: int = 64,
        samples_per_epoch: int | None = None,
        severities: tuple[int, ...] = SEVERITIES,
        weathers: tuple[str, ...] = WEATHER_TYPES,
        seed: int = 0,
        augment: bool = True,
        renders: int | None = None,
        long_side: int | None = BUILTIN_LONG_SIDE,
        zoom: tuple[float, ...] = (1.0,),
        color_jitter: bool = False,
        clean_fraction: float = 0.0,
        family: str | None = None,
    ) -> None:
        weathers, renders = _check_builtin_args(
            split,
            family=family,
            weathers=weathers,
            severities=severities,
            renders=renders,
            train_only=samples_per_epoch is not None
            or tuple(zoom) != (1.0,)
            or color_jitter
            or clean_fraction,
            clean_fraction=clean_fraction,
            zoom=zoom,
        )
        self.split = split
        self.crop_size = int(crop_size)
        self.samples_per_epoch = 1024 if samples_per_epoch is None else int(samples_per_epoch)
        self.severities = tuple(severities)
        self.weathers = tuple(weathers)
        self.seed = int(seed)
        self.augment = augment
        self.renders = renders
        self.epoch = 0
        self.color_jitter = bool(color_jitter)
        self.clean_fraction = float(clean_fraction)
        self.family = family
        self.photos = builtin_photos(split, long_side=long_side)
        self._sources = builtin_sources(split, long_side=long_side, zoom=tuple(zoom))
        self._fixed: list[dict] | None = None
        if split != "train":
            self._fixed = [
                self._render_fixed(p, w, s, r)
                for p in range(len(self.photos))
                for w in self.weathers
                for s in self.severities
                for r in range(renders)
            ]

    def _render_fixed(self, photo_index: int, weather: str, severity: int, render: int) -> dict:
        name, photo = self.photos[photo_index]
        seed = derive_seed(self.seed, photo_index, WEATHER_TYPES.index(weather), severity, render)
        if self.family is None:
            sample = render_weather(photo, weather, severity=severity, seed=seed)
            return weather_item(sample, f"{name}_{weather}_s{severity}_r{render}")
        sample = render_family(photo, self.family, severity=severity, seed=seed)
        return weather_item(sample, f"{name}_{self.family}_s{severity}_r{render}")

    def _random_item(self, rng: np.random.Generator, index: int) -> dict:
        source = self._sources[int(rng.integers(len(self._sources)))]
        return render_crop(
            rng,
            source,
            crop_size=self.crop_size,
            weathers=self.weathers,
            severities=self.severities,
            augment_crop=self.augment,
            color_jitter=self.color_jitter,
            clean_fraction=self.clean_fraction,
            tag=f"_e{self.epoch}_{index}",
        )


def builtin_family_items(
    split: str, families: Sequence[str], *, renders: int | None = None, seed: int = 0
) -> list[dict]:
    """The built-in ``split`` (val or test) drawn by each of ``families``, every item's ``weather``
    the family's name (so an evaluation reports each family as its own group)."""
    return [
        {**item, "weather": family}
        for family in families
        for item in BuiltinWeatherDataset(split, renders=renders, seed=seed, family=family)
    ]
