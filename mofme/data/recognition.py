"""Readers for downstream recognition: ImageFolder classification and Cityscapes-layout segmentation.

Every reader checks its folders up front and raises ``DatasetError`` listing each problem by name (paths
relative to ``root``); nothing is found lazily at training time.

Layouts
-------
* **ImageFolder** (``image_folder``): ``root/<class>/**/<image>``, one class per immediate sub-folder
  (hidden ones skipped), classes sorted by name -> indices 0..C-1 as in torchvision; files directly in
  ``root`` are ignored.
* **Cityscapes** (``cityscapes``): ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``. Foggy Cityscapes
  (``leftImg8bit_foggy/.../<name>_leftImg8bit_foggy_beta_<beta>.png``) and Rain Cityscapes
  (``leftImg8bit_rain/.../<name>_leftImg8bit_rain_alpha_<a>_beta_<b>_dropsize_<d>_pattern_<p>.png``) share
  the clean image's gtFine label.
* **ACDC** (``acdc``): ``rgb_anon/<condition>/<split>/<sequence>/<name>_rgb_anon.png`` with
  ``gt/<condition>/<split>/<sequence>/<name>_gt_labelIds.png`` (Cityscapes label ids).

Label files hold Cityscapes label ids (0..33, license plate -1 stored as 255); ``cityscapes_train_ids``
maps them to the 19 evaluation classes (``CITYSCAPES_CLASSES``) with 255 = ignore.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .._types import PathLike
from .datasets import DatasetError, as_crop_size
from .io import ImageReadError, list_images, read_image
from .transforms import pad_to, random_crop_box, to_tensor

__all__ = [
    "ACDC_CONDITIONS",
    "CITYSCAPES_CLASSES",
    "FOGGY_CITYSCAPES_BETAS",
    "IGNORE_INDEX",
    "ClassificationDataset",
    "ClassificationSamples",
    "SegmentationDataset",
    "SegmentationPair",
    "acdc",
    "cityscapes",
    "cityscapes_train_ids",
    "image_folder",
    "read_label",
]

IGNORE_INDEX = 255  # train id of pixels left out of the loss and the metrics
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
_LABEL_ID_OF_TRAIN_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
_TRAIN_ID_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_TRAIN_ID_LUT[list(_LABEL_ID_OF_TRAIN_ID)] = np.arange(len(_LABEL_ID_OF_TRAIN_ID), dtype=np.uint8)
_TRAIN_ID_LUT.flags.writeable = False
FOGGY_CITYSCAPES_BETAS: tuple[float, ...] = (0.005, 0.01, 0.02)
ACDC_CONDITIONS: tuple[str, ...] = ("fog", "night", "rain", "snow")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only (``datasets._header_size`` decodes PNGs for EXIF)."""
    with Image.open(path) as image:
        return image.size


# ---------------------------------------------------------------------------------------------- classification
@dataclass(frozen=True)
class ClassificationSamples:
    """``samples[i] = (path, label)`` with ``classes[label]`` the class name; ``len()`` counts images."""

    samples: list[tuple[Path, int]]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.samples)


def _class_folders(root: Path, classes: Sequence[str] | None) -> tuple[tuple[str, ...], list[str]]:
    """The class list and the problems with the sub-folders of ``root``."""
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        return tuple(found), ([] if found else [f"no class folders in {root}"])
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicate names: {list(classes)}")
    problems = [f"{name}/: folder not in classes" for name in found if name not in classes]
    problems += [f"{name}/: class folder not found" for name in classes if name not in found]
    return tuple(classes), problems


def image_folder(
    root: PathLike, *, classes: Sequence[str] | None = None, check_headers: bool = False
) -> ClassificationSamples:
    """Read an ImageFolder tree (``root/<class>/**/<image>``, extensions of ``io.IMAGE_EXTENSIONS``).

    ``classes`` fixes the class list and its order (e.g. the train split's, to read a test split); a
    sub-folder not in it, or a listed class without a folder, is an error. Empty class folders are errors;
    ``check_headers`` also opens every file header with Pillow and reports those that fail.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(str(root), [f"folder not found: {root}"])
    classes, problems = _class_folders(root, classes)
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        images = list_images(root / name) if (root / name).is_dir() else []
        if not images and (root / name).is_dir():
            problems.append(f"{name}/: no images")
        samples.extend((path, label) for path in images)
        if check_headers:
            problems.extend(_unreadable(images, root))
    if problems:
        raise DatasetError(str(root), problems)
    return ClassificationSamples(samples, classes)


def _unreadable(paths: Iterable[Path], root: Path) -> list[str]:
    problems = []
    for path in paths:
        try:
            _image_size(path)
        except Exception as error:
            problems.append(f"{_relative(path, root)}: unreadable ({type(error).__name__}: {error})")
    return problems


# ---------------------------------------------------------------------------------------------- labels
def read_label(path: PathLike) -> np.ndarray:
    """Read a single-channel label image (Pillow mode L, P, I or I;16) as an int64 (H, W) array of the
    stored values (palette indices for P). Raises ``ImageReadError`` naming the file otherwise."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I") and not image.mode.startswith("I;16"):
                raise ImageReadError(path, f"label images must be single-channel, got mode {image.mode}")
            return np.asarray(image).astype(np.int64)
    except ImageReadError:
        raise
    except Exception as error:
        raise ImageReadError(path, f"{type(error).__name__}: {error}") from error


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes label ids (0..33; -1 or 255 for the license plate) to the 19 train ids of
    ``CITYSCAPES_CLASSES`` (uint8, same shape), 255 for every ignored id. Ids outside -1..255 raise."""
    ids = np.asarray(label_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"label ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < -1 or ids.max() > 255):
        raise ValueError(f"label ids must lie in -1..255, got {ids.min()}..{ids.max()}")
    return _TRAIN_ID_LUT[ids & 0xFF]  # -1 & 0xFF == 255, which is ignored


# ---------------------------------------------------------------------------------------------- segmentation
class SegmentationPair(NamedTuple):
    """An ``image`` and its ``label`` file (Cityscapes label ids); ``condition``: the image's adverse
    condition where the dataset names one (ACDC: ``fog`` | ``night`` | ``rain`` | ``snow``), else None."""

    image: Path
    label: Path
    condition: str | None = None


def _validate_segmentation(
    pairs: Sequence[SegmentationPair], root: Path, *, check_headers: bool, searched: str
) -> None:
    """``DatasetError`` unless ``pairs`` is non-empty and every label exists (and, with
    ``check_headers``, both files open and have the same width and height)."""
    problems = [] if pairs else [f"no images found ({searched})"]
    for image, label, _ in pairs:
        if not label.is_file():
            problems.append(f"{_relative(image, root)}: missing label {_relative(label, root)}")
            continue
        unreadable = _unreadable((image, label), root) if check_headers else []
        problems.extend(unreadable)
        if check_headers and not unreadable:
            image_size, label_size = _image_size(image), _image_size(label)
            if image_size != label_size:
                problems.append(
                    f"{_relative(label, root)}: label size {label_size} != image size {image_size} "
                    f"of {_relative(image, root)}"
                )
    if problems:
        raise DatasetError(str(root), problems)


def _segmentation_pairs(
    root: Path,
    folders: Sequence[tuple[Path, Path, str | None]],
    pattern: re.Pattern[str],
    label_name: Callable[[str], str],
    *,
    check_headers: bool,
) -> list[SegmentationPair]:
    """Pair every image under each ``(image_dir, label_dir, condition)`` whose file name matches
    ``pattern`` (group ``name``) with ``label_dir/<same sub-folders>/label_name(name)``, tagged with the
    folder's ``condition``; validated."""
    missing = [d for folder in folders for d in folder[:2] if not d.is_dir()]
    if missing:
        raise DatasetError(str(root), [f"folder not found: {_relative(d, root)}" for d in missing])
    pairs = []
    for image_dir, label_dir, condition in folders:
        for image in list_images(image_dir):
            if match := pattern.fullmatch(image.name):
                label = label_dir / image.parent.relative_to(image_dir) / label_name(match["name"])
                pairs.append(SegmentationPair(image, label, condition))
    searched = ", ".join(f"{_relative(d, root)}/**/{pattern.pattern}" for d, _, _ in folders)
    _validate_segmentation(pairs, root, check_headers=check_headers, searched=searched)
    return pairs


_CITYSCAPES_VARIANTS = {  # variant -> (image folder, file-name pattern; `{betas}` filled in for foggy)
    "clean": ("leftImg8bit", r"(?P<name>.+)_leftImg8bit\.png"),
    "foggy": ("leftImg8bit_foggy", r"(?P<name>.+)_leftImg8bit_foggy_beta_(?:{betas})\.png"),
    "rain": (
        "leftImg8bit_rain",
        r"(?P<name>.+)_leftImg8bit_rain_alpha_[^_]+_beta_[^_]+_dropsize_[^_]+_pattern_[^_]+\.png",
    ),
}


def cityscapes(
    root: PathLike,
    split: str,
    *,
    variant: str = "clean",
    beta: float | None = None,
    check_headers: bool = True,
) -> list[SegmentationPair]:
    """(image, gtFine labelIds) pairs of Cityscapes ``split`` (``train`` | ``val`` | ``test``), sorted.

    ``variant``: ``"clean"``, ``"foggy"`` (Foggy Cityscapes; ``beta`` one of ``FOGGY_CITYSCAPES_BETAS``,
    None = all three, so each label appears once per beta) or ``"rain"`` (Rain Cityscapes, every
    alpha/beta/drop-size/pattern). With ``check_headers`` (default: header reads only, cheap) an image
    and its label must have the same size.
    """
    root = Path(root)
    if variant not in _CITYSCAPES_VARIANTS:
        raise ValueError(f"unknown variant '{variant}'; expected one of {sorted(_CITYSCAPES_VARIANTS)}")
    if beta is not None and (variant != "foggy" or float(beta) not in FOGGY_CITYSCAPES_BETAS):
        raise ValueError(f"beta must be None or, for variant 'foggy', one of {FOGGY_CITYSCAPES_BETAS}")
    folder, pattern = _CITYSCAPES_VARIANTS[variant]
    betas = FOGGY_CITYSCAPES_BETAS if beta is None else (float(beta),)
    pattern = pattern.replace("{betas}", "|".join(re.escape(f"{b:g}") for b in betas))
    return _segmentation_pairs(
        root,
        [(root / folder / split, root / "gtFine" / split, None)],
        re.compile(pattern),
        lambda name: f"{name}_gtFine_labelIds.png",
        check_headers=check_headers,
    )


def acdc(
    root: PathLike, split: str, *, conditions: Sequence[str] = ACDC_CONDITIONS, check_headers: bool = True
) -> list[SegmentationPair]:
    """(image, gt labelIds) pairs of ACDC ``split`` (``train`` | ``val``) for each of ``conditions``
    (subset of ``ACDC_CONDITIONS``), in that order, each pair's ``condition`` set. The ``<split>_ref``
    normal-condition references are not read. ``check_headers`` as in ``cityscapes``."""
    root = Path(root)
    conditions = (conditions,) if isinstance(conditions, str) else tuple(conditions)
    unknown = [c for c in conditions if c not in ACDC_CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"conditions must be a non-empty subset of {ACDC_CONDITIONS}, got {conditions}")
    return _segmentation_pairs(
        root,
        [(root / "rgb_anon" / c / split, root / "gt" / c / split, c) for c in conditions],
        re.compile(r"(?P<name>.+)_rgb_anon\.png"),
        lambda name: f"{name}_gt_labelIds.png",
        check_headers=check_headers,
    )


# ---------------------------------------------------------------------------------------------- torch datasets
class _CroppedDataset(Dataset):
    """Shared crop logic: item ``i``'s random window depends only on (seed, epoch, i)."""

    def __init__(self, crop_size: int | tuple[int, int] | None, seed: int) -> None:
        self.crop_size = as_crop_size(crop_size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch`` (call before iterating, in every worker)."""
        self.epoch = int(epoch)

    def _crop(self, arrays: Sequence[np.ndarray], index: int, *, random: bool) -> list[np.ndarray]:
        """The same ``crop_size`` window of every (H, W, ...) array (mirror-padded first if smaller):
        random with ``random``, else centred. No-op without ``crop_size``."""
        if self.crop_size is None:
            return list(arrays)
        (h, w), arrays = self.crop_size, [pad_to(a, self.crop_size) for a in arrays]
        shape = arrays[0].shape[:2]
        if random:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            y, x = random_crop_box(rng, shape, self.crop_size)
        else:
            y, x = (shape[0] - h) // 2, (shape[1] - w) // 2
        return [np.ascontiguousarray(a[y : y + h, x : x + w]) for a in arrays]


class ClassificationDataset(_CroppedDataset):
    """A torch dataset over ``image_folder`` samples (or any ``(path, label)`` sequence).

    Item: ``{"image": (3, h, w) float32 in [0, 1], "label": int, "path": str}``. With ``crop_size`` (int or
    (h, w)) every image is cropped, not resized, to that size (mirror-padded first if smaller): a random
    window with ``train=True`` (see ``set_epoch``), the centre otherwise, so batches stack. Without it items
    are whole images. ``classes`` is the samples' class list (None for a plain sequence).
    """

    def __init__(
        self,
        samples: ClassificationSamples | Sequence[tuple[PathLike, int]],
        *,
        crop_size: int | tuple[int, int] | None = None,
        train: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(crop_size, seed)
        is_folder = isinstance(samples, ClassificationSamples)
        self.classes = samples.classes if is_folder else None
        self.samples = [(Path(p), int(label)) for p, label in (samples.samples if is_folder else samples)]
        self.train = train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        (image,) = self._crop([read_image(path)], index, random=self.train)
        return {"image": to_tensor(image), "label": label, "path": str(path)}


class SegmentationDataset(_CroppedDataset):
    """A torch dataset over ``SegmentationPair``s.

    Item: ``{"image": (3, h, w) float32 in [0, 1], "mask": (h, w) int64, "path": image path as str}``, plus
    ``"condition"`` (str) for a pair that has one (ACDC); the mask is ``label_map(label ids)``, by default
    the 19 Cityscapes train ids with 255 ignored (None keeps the stored ids). ``classes`` names the mask's
    class ids (default ``CITYSCAPES_CLASSES``, the default ``label_map``'s). With ``crop_size`` image and
    mask get the same random window (mirror-padded first if smaller; see ``set_epoch``), for training;
    without it items are whole images.
    """

    def __init__(
        self,
        pairs: Iterable[SegmentationPair],
        *,
        crop_size: int | tuple[int, int] | None = None,
        seed: int = 0,
        label_map: Callable[[np.ndarray], np.ndarray] | None = cityscapes_train_ids,
        classes: Sequence[str] | None = CITYSCAPES_CLASSES,
    ) -> None:
        super().__init__(crop_size, seed)
        self.pairs = list(pairs)
        self.label_map = label_map
        self.classes = None if classes is None else tuple(classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        image, mask = read_image(pair.image), read_label(pair.label)
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                "SegmentationDataset",
                [f"{pair.label}: label shape {mask.shape} != image shape {image.shape[:2]} of {pair.image}"],
            )
        if self.label_map is not None:
            mask = self.label_map(mask)
        image, mask = self._crop([image, mask], index, random=True)
        item = {
            "image": to_tensor(image),
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "path": str(pair.image),
        }
        if pair.condition is not None:
            item["condition"] = pair.condition
        return item
