"""Generated dataset folders for the tests: random images, label PNGs, Cityscapes and ACDC trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mofme.data import ACDC_CONDITIONS, write_image

# label ids the trees draw from: road, sidewalk, building, vegetation, sky, car, and 0 (unlabeled,
# train id 255: ignored)
TREE_LABEL_IDS = (0, 7, 8, 11, 21, 23, 26)


def random_image(path: Path, shape=(6, 8), seed: int = 0) -> Path:
    """A uniform-noise RGB image of ``shape`` (h, w) written to ``path`` (folders created)."""
    return write_image(path, np.random.default_rng(seed).random((*shape, 3)).astype(np.float32))


def label_image(path: Path, ids: np.ndarray, mode: str = "L") -> Path:
    """Write label ids as a single-channel PNG: mode L, P (ids as indices of a grey palette) or I;16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(ids, dtype=np.uint8)
    image = Image.fromarray(data.astype(np.uint16) if mode == "I;16" else data)
    if mode == "P":
        image = Image.frombytes("P", image.size, data.tobytes())
        image.putpalette(np.repeat(np.arange(256, dtype=np.uint8), 3).tolist())
    image.save(path)
    return path


def _random_labels(path: Path, shape, seed: int) -> Path:
    return label_image(path, np.random.default_rng(seed).choice(TREE_LABEL_IDS, shape))


def cityscapes_tree(
    root: Path, *, splits=("train", "val"), cities: int = 2, per_city: int = 2, shape=(64, 128)
) -> Path:
    """``leftImg8bit/<split>/<city>/`` images and ``gtFine`` labelIds (random ids of ``TREE_LABEL_IDS``)
    of ``cities`` x ``per_city`` frames per split; returns ``root``."""
    seed = 0
    for split in splits:
        for city in [f"city{c}" for c in range(cities)]:
            for frame in range(per_city):
                name, seed = f"{city}_{frame:06d}_000019", seed + 1
                random_image(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", shape, seed)
                _random_labels(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", shape, seed)
    return root


def acdc_tree(
    root: Path, *, splits=("train", "val"), conditions=ACDC_CONDITIONS, per_condition: int = 1, shape=(32, 64)
) -> Path:
    """``rgb_anon/<condition>/<split>/<sequence>/`` images and ``gt`` labelIds (random ids of
    ``TREE_LABEL_IDS``) of ``per_condition`` frames per condition and split; returns ``root``."""
    seed = 0
    for split in splits:
        for condition in conditions:
            for frame in range(per_condition):
                name, seed = f"GOPR{frame:04d}_frame_000041", seed + 1
                sequence = name.split("_")[0]
                random_image(
                    root / "rgb_anon" / condition / split / sequence / f"{name}_rgb_anon.png", shape, seed
                )
                label = root / "gt" / condition / split / sequence / f"{name}_gt_labelIds.png"
                _random_labels(label, shape, seed)
    return root
