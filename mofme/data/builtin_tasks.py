"""The built-in recognition tasks: made from the bundled photos and the weather renderer, no download.

* **Scene recognition under weather** (:class:`SceneDataset`): which of ``SCENE_CLASSES`` (the 8
  built-in photos and 3 of scikit-image's textures) a 64 x 64 crop comes from. Every photo is resized to
  a long side of ``SCENE_LONG_SIDE`` and cut into a grid of cells of about ``SCENE_CELL`` pixels; a fixed
  shuffle gives a quarter of the cells to test, 15 % to validation and the rest to training
  (:func:`scene_regions`). A crop lies wholly inside cells of its split, so no test pixel is ever
  trained on, and validation samples the photo as test does. Weather is rendered at the scale of the
  whole photo.
* **Degradation segmentation** (:class:`DegradationDataset`): per-pixel classes ``DEGRADATION_CLASSES``
  from the renderer's own masks (:func:`degradation_labels`), on the photos of the restoration benchmark's
  split (train / val / test photos disjoint, :data:`~mofme.data.BUILTIN_SPLITS`): a weather-mask estimator.

Items (images (3, h, w) float32 in [0, 1]; ``weather`` the index in ``WEATHER_TYPES``, -1 for clean;
``severity`` 1..3, 0 for clean)::

    SceneDataset:        {"image": degraded, "clean": clean crop, "label": class index, "weather", "severity", "name"}
    DegradationDataset:  {"image": degraded, "mask": (h, w) int64 class per pixel, "weather", "severity", "name"}

Train items are random (crop, flip / rotation, weather, severity, render), item ``i`` depending only on
(seed, epoch, i): call ``set_epoch``. Val / test items are a fixed list rendered at construction: every
crop (scenes) or photo (degradation) clean and under every weather x severity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .builtin import BUILTIN_SPLITS, SplitDataset, _photo
from .datasets import weather_index
from .photos import PhotoSource, render_crop_sample
from .transforms import random_crop_box, to_tensor
from .weather import SEVERITIES, WEATHER_TYPES, WeatherSample, derive_seed, render_weather

__all__ = [
    "DEGRADATION_CLASSES",
    "DEGRADATION_THRESHOLDS",
    "SCENE_CELL",
    "SCENE_CLASSES",
    "SCENE_LONG_SIDE",
    "SCENE_SHARES",
    "DegradationDataset",
    "SceneDataset",
    "degradation_labels",
    "scene_crop_positions",
    "scene_regions",
]

SCENE_CLASSES: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "motorcycle", "camera", "flower", "rocket", "china",
    "brick", "grass", "gravel",
)  # fmt: skip
SCENE_LONG_SIDE = 320
SCENE_CELL = 80  # the photo is cut into cells of about this side, each given to one split
SCENE_SHARES: dict[str, float] = {"val": 0.15, "test": 0.25}  # of the cells; the rest train
SCENE_SPLIT_SEED = 2024
_REFERENCE_SIDE = 512.0  # render_weather's scale 1

DEGRADATION_CLASSES: tuple[str, ...] = ("clean", "rain", "snow", "haze", "raindrop")
# a pixel belongs to its weather's class where the streak / flake / drop opacity (rain, snow, raindrop)
# or the haze density 1 - t (haze) reaches the threshold; elsewhere it is "clean"
DEGRADATION_THRESHOLDS: dict[str, float] = {"particles": 0.1, "haze": 0.25}
DEGRADATION_LONG_SIDES = (384, 512, 768)  # training content sizes; weather at the scale of each
DEGRADATION_EVAL_SIDE = 512
DEGRADATION_CONTEXT = 3  # training crops are cut from renders 3x their side: the weather of a larger view


def _check_split(split: str) -> None:
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train', 'val' or 'test'")


def _check_conditions(weathers: Sequence[str], severities: Sequence[int], clean_fraction: float) -> None:
    bad = [w for w in weathers if w not in WEATHER_TYPES] + [s for s in severities if s not in SEVERITIES]
    if bad or not weathers or not severities:
        raise ValueError(f"invalid weathers/severities: {bad or (tuple(weathers), tuple(severities))}")
    if not 0.0 <= clean_fraction <= 1.0:  # 1: no weather at all (a recogniser trained on clean data)
        raise ValueError(f"clean_fraction must be in [0, 1], got {clean_fraction}")


def _conditions(weathers: Sequence[str], severities: Sequence[int]) -> list[tuple[str, int]]:
    """The fixed evaluation conditions: clean, then every weather x severity."""
    return [("clean", 0)] + [(w, s) for w in weathers for s in severities]


def _render(clean: np.ndarray, weather: str, severity: int, seed: int, scale: float) -> WeatherSample:
    if weather == "clean":
        zeros = np.zeros(clean.shape[:2], np.float32)
        return WeatherSample(clean, clean, zeros, "clean", 0, zeros)
    return render_weather(clean, weather, severity=severity, seed=seed, scale=scale)


class _RenderedTask(SplitDataset):
    """A split of a built-in task (train: random renders; val / test: a fixed list)."""

    def __init__(self, split: str, samples_per_epoch: int | None, seed: int) -> None:
        _check_split(split)
        if split != "train" and samples_per_epoch is not None:
            raise ValueError("samples_per_epoch applies to the train split only (val/test are fixed lists)")
        self.split, self.seed, self.epoch = split, int(seed), 0
        self.samples_per_epoch = 2048 if samples_per_epoch is None else int(samples_per_epoch)
        self._fixed: list[dict] | None = None

    def _render_random(
        self, rng: np.random.Generator, source: PhotoSource, index: int, *, context: int = 1
    ) -> tuple[WeatherSample, str]:
        """A random render of ``context`` x ``crop_size`` pixels square from ``source``."""
        return render_crop_sample(
            rng,
            source,
            crop_size=context * self.crop_size,
            weathers=self.weathers,
            severities=self.severities,
            clean_fraction=self.clean_fraction,
            tag=f"_e{self.epoch}_{index}",
        )


# ---------------------------------------------------------------------------------------------- scenes
def scene_regions(name: str) -> np.ndarray:
    """The split of every pixel of scene ``name`` (the photo at long side ``SCENE_LONG_SIDE``): an
    (H, W) uint8 map of indices into ``("train", "val", "test")``. The photo is cut into a grid of
    cells of about ``SCENE_CELL`` pixels; a fixed shuffle of the cells (seeded by the class index)
    gives ``SCENE_SHARES`` of them to test, then to val (at least one each), the rest to train."""
    label = SCENE_CLASSES.index(name)
    height, width = _photo(name, SCENE_LONG_SIDE).shape[:2]
    rows, cols = max(1, round(height / SCENE_CELL)), max(1, round(width / SCENE_CELL))
    order = np.random.default_rng([SCENE_SPLIT_SEED, label]).permutation(rows * cols)
    n_test = max(1, round(SCENE_SHARES["test"] * rows * cols))
    n_val = max(1, round(SCENE_SHARES["val"] * rows * cols))
    split_of_cell = np.zeros(rows * cols, np.uint8)
    split_of_cell[order[:n_test]] = 2
    split_of_cell[order[n_test : n_test + n_val]] = 1
    row_of = np.minimum(np.arange(height) * rows // height, rows - 1)
    col_of = np.minimum(np.arange(width) * cols // width, cols - 1)
    return split_of_cell.reshape(rows, cols)[row_of[:, None], col_of[None, :]]


def scene_crop_positions(name: str, split: str, crop_size: int) -> np.ndarray:
    """Top-left (y, x) of every ``crop_size`` square of scene ``name`` whose pixels all belong to
    ``split`` (:func:`scene_regions`), as an (n, 2) array in row-major order."""
    _check_split(split)
    inside = (scene_regions(name) == ("train", "val", "test").index(split)).astype(np.int64)
    total = np.pad(inside.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    k = crop_size
    counts = total[k:, k:] - total[:-k, k:] - total[k:, :-k] + total[:-k, :-k]
    return np.argwhere(counts == k * k)


class SceneDataset(_RenderedTask):
    """Scene recognition under weather: classify which of ``SCENE_CLASSES`` a crop comes from.

    Crops lie wholly inside their split's cells (:func:`scene_regions`, :func:`scene_crop_positions`),
    so no test or validation pixel is ever trained on, while every split samples the whole photo.

    * ``train``: ``samples_per_epoch`` (default 2048) random ``crop_size`` crops, a random flip /
      rotation, weather and severity (``clean_fraction`` of them stay clean), classes drawn uniformly.
    * ``val`` / ``test``: ``crops_per_class`` (default 8 / 12) fixed crops per class, each clean and
      under every weather x severity (with the defaults, the test split holds 11 x 12 x 13 = 1,716
      items: 132 per condition).
    """

    def __init__(
        self,
        split: str,
        *,
        crop_size: int = 64,
        samples_per_epoch: int | None = None,
        crops_per_class: int | None = None,
        weathers: Sequence[str] = WEATHER_TYPES,
        severities: Sequence[int] = SEVERITIES,
        clean_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(split, samples_per_epoch, seed)
        _check_conditions(weathers, severities, clean_fraction)
        self.classes = SCENE_CLASSES
        self.crop_size = int(crop_size)
        self.weathers, self.severities = tuple(weathers), tuple(severities)
        self.clean_fraction = clean_fraction
        self.scale = SCENE_LONG_SIDE / _REFERENCE_SIDE
        self.photos = [_photo(name, SCENE_LONG_SIDE) for name in SCENE_CLASSES]
        self.positions = [scene_crop_positions(name, split, self.crop_size) for name in SCENE_CLASSES]
        small = [n for n, p in zip(SCENE_CLASSES, self.positions, strict=True) if len(p) == 0]
        if small:
            raise ValueError(f"crop_size {crop_size} fits in no {split} region of {small}")
        if split != "train":
            per_class = (8 if split == "val" else 12) if crops_per_class is None else int(crops_per_class)
            self._fixed = self._fixed_items(per_class)

    def _crop(self, label: int, rng: np.random.Generator) -> np.ndarray:
        positions = self.positions[label]
        y, x = positions[int(rng.integers(len(positions)))]
        return self.photos[label][y : y + self.crop_size, x : x + self.crop_size]

    def _fixed_items(self, per_class: int) -> list[dict]:
        items = []
        for label in range(len(SCENE_CLASSES)):
            for k in range(per_class):
                rng = np.random.default_rng([self.seed, label, k, 1 + ("val", "test").index(self.split)])
                crop = self._crop(label, rng)
                for weather, severity in _conditions(self.weathers, self.severities):
                    seed = derive_seed(self.seed, label, k, weather_index(weather) + 1, severity)
                    sample = _render(crop, weather, severity, seed, self.scale)
                    name = f"{SCENE_CLASSES[label]}_{k}_{weather}_s{severity}"
                    items.append(self._item(sample, name, label))
        return items

    @staticmethod
    def _item(sample: WeatherSample, name: str, label: int) -> dict:
        return {
            "image": to_tensor(sample.degraded),
            "clean": to_tensor(sample.clean),
            "label": label,
            "weather": weather_index(sample.weather),
            "severity": sample.severity,
            "name": name,
        }

    def _random_item(self, rng: np.random.Generator, index: int) -> dict:
        label = int(rng.integers(len(SCENE_CLASSES)))
        source = PhotoSource(SCENE_CLASSES[label], (self._crop(label, rng),), (self.scale,))
        return self._item(*self._render_random(rng, source, index), label)


# ----------------------------------------------------------------------------------------- degradation
def degradation_labels(sample: WeatherSample) -> np.ndarray:
    """Per-pixel class indices into ``DEGRADATION_CLASSES`` (H, W) int64 of a render: its weather's
    class where the particle opacity (rain, snow, raindrop) reaches ``DEGRADATION_THRESHOLDS["particles"]``
    or, for haze, where the density ``mask = 1 - t`` reaches ``DEGRADATION_THRESHOLDS["haze"]``; 0
    (clean) elsewhere. A render's veil (rain, heavy snow) does not count."""
    labels = np.zeros(sample.mask.shape, np.int64)
    if sample.weather == "clean":
        return labels
    if sample.weather == "haze":
        marked = sample.mask >= DEGRADATION_THRESHOLDS["haze"]
    else:
        if sample.particles is None:
            raise ValueError("degradation_labels needs a render with its particle opacity (render_weather's)")
        marked = sample.particles >= DEGRADATION_THRESHOLDS["particles"]
    labels[marked] = DEGRADATION_CLASSES.index(sample.weather)
    return labels


class DegradationDataset(_RenderedTask):
    """Degradation segmentation: per-pixel ``DEGRADATION_CLASSES`` (:func:`degradation_labels`).

    * ``train``: ``samples_per_epoch`` random ``crop_size`` crops of the train photos at the long sides
      ``DEGRADATION_LONG_SIDES`` (weather at the scale of each), flip / rotation, one weather per crop
      (``clean_fraction`` clean). Each is cut from a render ``DEGRADATION_CONTEXT`` times larger, so
      that haze varies across a crop as it does across a tile of a whole photo.
    * ``val`` / ``test``: whole photos of that split at long side ``DEGRADATION_EVAL_SIDE``, clean and
      under every weather x severity, ``renders`` times each (default 1); evaluate them tiled.
    """

    def __init__(
        self,
        split: str,
        *,
        crop_size: int = 64,
        samples_per_epoch: int | None = None,
        renders: int = 1,
        weathers: Sequence[str] = WEATHER_TYPES,
        severities: Sequence[int] = SEVERITIES,
        clean_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(split, samples_per_epoch, seed)
        _check_conditions(weathers, severities, clean_fraction)
        self.classes = DEGRADATION_CLASSES
        self.crop_size = int(crop_size)
        self.weathers, self.severities, self.clean_fraction = (
            tuple(weathers),
            tuple(severities),
            clean_fraction,
        )
        names = BUILTIN_SPLITS[split]
        if split == "train":
            self.sources = [
                PhotoSource(name, tuple(_photo(name, s) for s in DEGRADATION_LONG_SIDES),
                            tuple(s / _REFERENCE_SIDE for s in DEGRADATION_LONG_SIDES))
                for name in names
            ]  # fmt: skip
        else:
            self._fixed = [
                self._fixed_item(p, name, weather, severity, r)
                for p, name in enumerate(names)
                for weather, severity in _conditions(self.weathers, self.severities)
                for r in range(1 if weather == "clean" else renders)
            ]

    def _fixed_item(self, photo_index: int, name: str, weather: str, severity: int, render: int) -> dict:
        photo = _photo(name, DEGRADATION_EVAL_SIDE)
        seed = derive_seed(self.seed, photo_index, weather_index(weather) + 1, severity, render)
        sample = _render(photo, weather, severity, seed, DEGRADATION_EVAL_SIDE / _REFERENCE_SIDE)
        return self._item(sample, f"{name}_{weather}_s{severity}_r{render}")

    @staticmethod
    def _item(sample: WeatherSample, name: str) -> dict:
        return {
            "image": to_tensor(sample.degraded),
            "mask": torch.from_numpy(degradation_labels(sample)),
            "weather": weather_index(sample.weather),
            "severity": sample.severity,
            "name": name,
        }

    def _random_item(self, rng: np.random.Generator, index: int) -> dict:
        source = self.sources[int(rng.integers(len(self.sources)))]
        sample, name = self._render_random(rng, source, index, context=DEGRADATION_CONTEXT)
        y, x = random_crop_box(rng, sample.mask.shape, (self.crop_size, self.crop_size))
        window = (slice(y, y + self.crop_size), slice(x, x + self.crop_size))
        cropped = [None if a is None else np.ascontiguousarray(a[window]) for a in sample[:3]]
        particles = None if sample.particles is None else np.ascontiguousarray(sample.particles[window])
        return self._item(
            sample._replace(degraded=cropped[0], clean=cropped[1], mask=cropped[2], particles=particles), name
        )
