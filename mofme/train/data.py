"""Datasets from a :class:`DataConfig`: the training set and the validation split (never a test set)."""

from __future__ import annotations

import random

from torch.utils.data import Dataset

from mofme.data import (
    WEATHER_TYPES,
    BuiltinWeatherDataset,
    DatasetError,
    ImagePair,
    PairedImageDataset,
    paired_folder,
    read_pair_list,
)
from mofme.data.builtin import builtin_sources
from mofme.data.builtin_tasks import DEGRADATION_CLASSES, SCENE_CLASSES, DegradationDataset, SceneDataset
from mofme.data.photos import RenderedWeatherDataset, clean_items, family_renders, folder_photos
from mofme.data.recognition import (
    ACDC_CONDITIONS,
    CITYSCAPES_CLASSES,
    ClassificationDataset,
    SegmentationDataset,
    SegmentationPair,
    acdc,
    cityscapes,
    image_folder,
)
from mofme.train.config import ConfigError, DataConfig

__all__ = ["SEGMENTATION_DATASETS", "build_datasets", "class_names", "segmentation_pairs", "validation_set"]

SEGMENTATION_DATASETS = ("cityscapes", "acdc")  # read from disk with the 19 Cityscapes classes


def _read_pairs(kind: str, location: str, root: str | None) -> list[ImagePair]:
    if kind == "allweather":
        return read_pair_list(location, root)
    return paired_folder(location)


def build_datasets(config: DataConfig, *, seed: int) -> tuple[Dataset, Dataset]:
    """(train, val) datasets. Train items are random crops; val items are whole images.

    ``builtin``: the rendered built-in photos (fixed train / val split of photos).
    ``folder``: weather rendered on the fly on the photos of ``data.folders`` (and the built-in
    training photos with ``data.builtin_weight``), mixed by weight; validated on the built-in val photos.
    ``allweather`` / ``paired``: pairs read and validated up front; without ``data.val`` a
    seeded ``val_fraction`` of the training pairs is held out for model selection.
    """
    if config.type == "builtin":
        weathers = tuple(config.weathers or WEATHER_TYPES)
        train = BuiltinWeatherDataset(
            "train",
            crop_size=config.crop_size,
            samples_per_epoch=config.samples_per_epoch,
            weathers=weathers,
            seed=seed,
            long_side=config.train_long_side,
            zoom=tuple(config.train_zoom),
            color_jitter=config.color_jitter,
            clean_fraction=config.clean_fraction,
        )
        return train, BuiltinWeatherDataset("val", weathers=weathers, seed=seed)
    if config.type in ("scenes", "degradation", "imagefolder", *SEGMENTATION_DATASETS):
        return _recognition_datasets(config, seed=seed)
    if config.type == "folder":
        return _folder_training_set(config, seed=seed), validation_set(config, seed=seed)
    if config.train is None:
        raise ConfigError(f"data.train is required for data.type={config.type!r}")
    train_pairs = _read_pairs(config.type, config.train, config.root)
    if config.val is not None:
        val_pairs = _read_pairs(config.type, config.val, config.root)
    else:
        shuffled = train_pairs[:]
        random.Random(seed).shuffle(shuffled)
        held_out = max(1, round(config.val_fraction * len(shuffled)))
        if held_out >= len(shuffled):
            raise ConfigError(
                f"{config.train}: too few pairs ({len(shuffled)}) to hold out a validation split"
            )
        val_pairs, train_pairs = shuffled[:held_out], shuffled[held_out:]
    train = PairedImageDataset(train_pairs, crop_size=config.crop_size, augment=True, seed=seed)
    return train, PairedImageDataset(val_pairs)


def _folder_training_set(config: DataConfig, *, seed: int) -> RenderedWeatherDataset:
    if not config.folders:
        raise ConfigError("data.folders must name at least one photo folder for data.type='folder'")
    groups, weights = [], []
    for index, source in enumerate(config.folders):
        try:
            groups.append(folder_photos(source.path, long_sides=config.long_sides))
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"data.folders[{index}]: {error}") from error
        weights.append(source.weight)
    if config.builtin_weight > 0:
        groups.append(
            builtin_sources("train", long_side=config.train_long_side, zoom=tuple(config.train_zoom))
        )
        weights.append(config.builtin_weight)
    try:
        return RenderedWeatherDataset(
            groups,
            weights=weights,
            crop_size=config.crop_size,
            samples_per_epoch=config.samples_per_epoch,
            weathers=tuple(config.weathers or WEATHER_TYPES),
            seed=seed,
            color_jitter=config.color_jitter,
            clean_fraction=config.clean_fraction,
            families=config.families,
            camera_fraction=config.camera_fraction,
        )
    except ValueError as error:  # an unknown family, a weather without one
        raise ConfigError(f"data.families: {error}") from error


def _photos_at(folder: str, long_side: int, field: str) -> list[tuple[str, object]]:
    """(name, photo) of every image under ``folder`` at ``long_side`` (``field`` names it in errors)."""
    try:
        return [(s.name, s.versions[0]) for s in folder_photos(folder, long_sides=(long_side,))]
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"{field}: {error}") from error


def validation_set(config: DataConfig, *, seed: int) -> Dataset | list[dict]:
    """The validation half of :func:`build_datasets` (``seed``: the training seed). A ``folder``
    recipe builds only its validation items, rendered from ``data.val_seed`` (else ``seed``), without
    reading its training photos; other data types build both and keep the second."""
    if config.type != "folder":
        return build_datasets(config, seed=seed)[1]
    return _folder_validation_set(config, seed=seed if config.val_seed is None else config.val_seed)


def _folder_validation_set(config: DataConfig, *, seed: int) -> Dataset | list[dict]:
    """The validation items of a ``folder`` recipe: ``val_families`` rendered on the photos of
    ``val_folders`` (each family scored as its own group), plus the ``clean_folder`` photos as the
    group ``"clean"``; without ``val_families``, the classic renderer on the built-in val photo."""
    if not config.val_families:
        return BuiltinWeatherDataset("val", weathers=tuple(config.weathers or WEATHER_TYPES), seed=seed)
    photos = [
        photo
        for index, folder in enumerate(config.val_folders)
        for photo in _photos_at(folder, config.val_long_side, f"data.val_folders[{index}]")
    ]
    try:
        items = family_renders(photos, config.val_families, seed=seed)
    except ValueError as error:
        raise ConfigError(f"data.val_families: {error}") from error
    if config.clean_folder is not None:
        items += clean_items(_photos_at(config.clean_folder, config.clean_long_side, "data.clean_folder"))
    return items


def class_names(config: DataConfig) -> tuple[str, ...]:
    """The classes of a recognition dataset, without building it (``imagefolder``: the sub-folders
    of ``data.train``)."""
    if config.type == "scenes":
        return SCENE_CLASSES
    if config.type == "degradation":
        return DEGRADATION_CLASSES
    if config.type == "imagefolder":
        return _image_folder(config.train, "data.train").classes
    if config.type in SEGMENTATION_DATASETS:
        return CITYSCAPES_CLASSES
    raise ConfigError(f"data.type {config.type!r} has no classes")


def _image_folder(location: str | None, field: str, classes: tuple[str, ...] | None = None):
    if location is None:
        raise ConfigError(f"{field} is required for data.type='imagefolder'")
    try:
        return image_folder(location, classes=classes)
    except (FileNotFoundError, DatasetError) as error:
        raise ConfigError(f"{field}: {error}") from error


def segmentation_pairs(
    kind: str,
    root: str,
    split: str,
    *,
    variant: str = "clean",
    beta: float | None = None,
    conditions: tuple[str, ...] = ACDC_CONDITIONS,
) -> list[SegmentationPair]:
    """The (image, label) pairs of ``split`` of a dataset of ``SEGMENTATION_DATASETS`` at ``root``:
    :func:`~mofme.data.cityscapes` (``variant``, ``beta``) or :func:`~mofme.data.acdc` (``conditions``)."""
    if kind == "cityscapes":
        return cityscapes(root, split, variant=variant, beta=beta)
    if kind == "acdc":
        return acdc(root, split, conditions=conditions)
    raise ValueError(f"unknown segmentation dataset {kind!r}; expected one of {SEGMENTATION_DATASETS}")


def _segmentation_split(config: DataConfig, split: str) -> list[SegmentationPair]:
    """``segmentation_pairs`` of ``config``; reader errors become ``ConfigError`` naming the field."""
    if config.root is None:
        raise ConfigError(f"data.root is required for data.type={config.type!r}: the dataset's folder")
    field = "data.beta" if config.type == "cityscapes" else "data.conditions"
    conditions = ACDC_CONDITIONS if config.conditions is None else tuple(config.conditions)
    try:
        return segmentation_pairs(
            config.type, config.root, split, variant=config.variant, beta=config.beta, conditions=conditions
        )
    except DatasetError as error:  # missing folders or files under the root
        raise ConfigError(f"data.root: {error}") from error
    except ValueError as error:  # a beta or condition the reader does not know
        raise ConfigError(f"{field}: {error}") from error


def _recognition_datasets(config: DataConfig, *, seed: int) -> tuple[Dataset, Dataset]:
    """(train, val) of a recognition task: random training crops; val as the task defines it
    (built-in tasks: their fixed val split; imagefolder: ``data.val``, centre crops; cityscapes, acdc:
    the whole images of split ``val``)."""
    if config.type in SEGMENTATION_DATASETS:
        train = _segmentation_split(config, "train")
        val = _segmentation_split(config, "val")
        return SegmentationDataset(train, crop_size=config.crop_size, seed=seed), SegmentationDataset(val)
    if config.type == "imagefolder":
        train = _image_folder(config.train, "data.train")
        val = _image_folder(config.val, "data.val", classes=train.classes)
        return (
            ClassificationDataset(train, crop_size=config.crop_size, train=True, seed=seed),
            ClassificationDataset(val, crop_size=config.crop_size),
        )
    task = SceneDataset if config.type == "scenes" else DegradationDataset
    conditions = {"weathers": tuple(config.weathers or WEATHER_TYPES)}
    train = task(
        "train",
        crop_size=config.crop_size,
        samples_per_epoch=config.samples_per_epoch,
        clean_fraction=config.clean_fraction,
        seed=seed,
        **conditions,
    )
    return train, task("val", crop_size=config.crop_size, seed=seed, **conditions)
