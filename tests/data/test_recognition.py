"""Recognition readers on generated fixture folders: ImageFolder, Cityscapes (clean/foggy/rain), ACDC,
the Cityscapes train-id mapping and the datasets' crops."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mofme.data import (
    CITYSCAPES_CLASSES,
    ClassificationDataset,
    DatasetError,
    ImageReadError,
    SegmentationDataset,
    SegmentationPair,
    acdc,
    cityscapes,
    cityscapes_train_ids,
    image_folder,
    read_image,
    read_label,
    write_image,
)

from .fixtures import label_image, random_image


def _relative(paths, root: Path) -> list[str]:
    return [Path(p).relative_to(root).as_posix() for p in paths]


# ---------------------------------------------------------------------------------------------- ImageFolder
@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "train"
    for rel in ["cat/a.png", "cat/sub/deep/b.JPG", "cat/sub/c.jpeg", "dog/x.bmp", "bird/y.tif"]:
        random_image(root / rel)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "readme.txt").write_text("ignored")
    random_image(root / ".cache" / "z.png")  # hidden folder: not a class
    return root


def test_image_folder_classes_indices_and_counts(folder):
    found = image_folder(folder)
    assert found.classes == ("bird", "cat", "dog")
    assert len(found) == 5
    assert Counter(label for _, label in found.samples) == {0: 1, 1: 3, 2: 1}
    assert [(p.relative_to(folder).as_posix(), label) for p, label in found.samples] == [
        ("bird/y.tif", 0),
        ("cat/a.png", 1),
        ("cat/sub/c.jpeg", 1),
        ("cat/sub/deep/b.JPG", 1),
        ("dog/x.bmp", 2),
    ]


def test_image_folder_classes_fix_order_and_refuse_unknown_folder(folder):
    found = image_folder(folder, classes=["dog", "cat", "bird"])
    assert found.classes == ("dog", "cat", "bird")
    assert {p.relative_to(folder).parts[0]: label for p, label in found.samples} == {
        "dog": 0,
        "cat": 1,
        "bird": 2,
    }
    with pytest.raises(DatasetError) as error:
        image_folder(folder, classes=["cat", "dog", "fish"])
    assert error.value.problems == ["bird/: folder not in classes", "fish/: class folder not found"]


def test_image_folder_errors_name_missing_root_and_every_empty_class(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "absent"))):
        image_folder(tmp_path / "absent")
    (tmp_path / "flat").mkdir()
    random_image(tmp_path / "flat" / "loose.png")
    with pytest.raises(DatasetError, match="no class folders"):
        image_folder(tmp_path / "flat")
    root = tmp_path / "sparse"
    random_image(root / "full" / "a.png")
    (root / "empty").mkdir()
    (root / "text_only").mkdir()
    (root / "text_only" / "labels.txt").write_text("x")
    with pytest.raises(DatasetError) as error:
        image_folder(root)
    assert error.value.problems == ["empty/: no images", "text_only/: no images"]


def test_image_folder_check_headers_reports_unreadable_files(folder):
    (folder / "cat" / "broken.png").write_bytes(b"not a png at all")
    assert len(image_folder(folder)) == 6  # listed by extension only
    with pytest.raises(DatasetError, match=re.escape("cat/broken.png: unreadable")) as error:
        image_folder(folder, check_headers=True)
    assert len(error.value.problems) == 1


def test_classification_dataset_crops_and_batches(tmp_path):
    random_image(tmp_path / "a" / "big.png", shape=(20, 30), seed=1)
    random_image(tmp_path / "b" / "small.png", shape=(8, 9), seed=2)
    found = image_folder(tmp_path)
    evaluation = ClassificationDataset(found, crop_size=(10, 12))
    item = evaluation[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 10, 12)
    assert item["label"] == 0 and item["path"] == str(tmp_path / "a" / "big.png")
    full = read_image(tmp_path / "a" / "big.png")
    np.testing.assert_array_equal(item["image"].numpy().transpose(1, 2, 0), full[5:15, 9:21])  # centred
    batch = next(iter(DataLoader(evaluation, batch_size=2)))
    assert batch["image"].shape == (2, 3, 10, 12) and batch["label"].tolist() == [0, 1]
    train = ClassificationDataset(found, crop_size=(10, 12), train=True, seed=3)
    crops = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        crops.add(train[0]["image"].numpy().tobytes())
    assert len(crops) > 1 and evaluation.classes == ("a", "b")


# ---------------------------------------------------------------------------------------------- Cityscapes
_NAMES = {"aachen": ["aachen_000000_000019", "aachen_000001_000019"], "bochum": ["bochum_000000_000313"]}
_RAIN = ["alpha_0.01_beta_0.005_dropsize_0.01_pattern_1", "alpha_0.03_beta_0.015_dropsize_0.002_pattern_12"]


@pytest.fixture
def city(tmp_path) -> Path:
    for town, names in _NAMES.items():
        for name in names:
            label_image(
                tmp_path / "gtFine" / "train" / town / f"{name}_gtFine_labelIds.png", np.full((6, 8), 7)
            )
            random_image(tmp_path / "gtFine" / "train" / town / f"{name}_gtFine_color.png")
            random_image(tmp_path / "leftImg8bit" / "train" / town / f"{name}_leftImg8bit.png")
            for beta in ("0.005", "0.01", "0.02"):
                random_image(
                    tmp_path / "leftImg8bit_foggy/train" / town / f"{name}_leftImg8bit_foggy_beta_{beta}.png"
                )
            for rain in _RAIN:
                random_image(
                    tmp_path / "leftImg8bit_rain/train" / town / f"{name}_leftImg8bit_rain_{rain}.png"
                )
    return tmp_path


def _expected_label(name: str) -> str:
    return f"gtFine/train/{name.split('_')[0]}/{name}_gtFine_labelIds.png"


def test_cityscapes_clean_pairs(city):
    pairs = cityscapes(city, "train")
    assert _relative((p.image for p in pairs), city) == [
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png",
        "leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png",
    ]
    names = [n for town in _NAMES.values() for n in town]
    assert _relative((p.label for p in pairs), city) == [_expected_label(n) for n in names]


def test_cityscapes_foggy_all_betas_and_one_beta(city):
    pairs = cityscapes(city, "train", variant="foggy")
    assert len(pairs) == 9
    assert Counter(_relative((p.label for p in pairs), city)) == {
        _expected_label(n): 3 for town in _NAMES.values() for n in town
    }
    for pair in pairs:  # each foggy image maps to the label of its own <name>
        name = pair.image.name.split("_leftImg8bit")[0]
        assert pair.label.name == f"{name}_gtFine_labelIds.png"
    one = cityscapes(city, "train", variant="foggy", beta=0.01)
    assert [p.image.name.endswith("_foggy_beta_0.01.png") for p in one] == [True] * 3
    with pytest.raises(ValueError, match="beta"):
        cityscapes(city, "train", variant="foggy", beta=0.03)


def test_cityscapes_rain_pairs(city):
    pairs = cityscapes(city, "train", variant="rain")
    assert len(pairs) == 6
    for pair in pairs:
        name = pair.image.name.split("_leftImg8bit_rain_")[0]
        assert _relative([pair.label], city) == [_expected_label(name)]
    assert {p.image.name.split("_rain_")[1][:-4] for p in pairs} == set(_RAIN)


def test_cityscapes_missing_label_and_wrong_size_are_named(city):
    (city / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    label_image(city / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png", np.zeros((5, 8)))
    with pytest.raises(DatasetError) as error:
        cityscapes(city, "train")
    assert error.value.problems == [
        "leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png: "
        "missing label gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png",
        "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png: label size (8, 5) != image size "
        "(8, 6) of leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png",
    ]
    with pytest.raises(DatasetError) as error:  # without header checks only the missing file is found
        cityscapes(city, "train", check_headers=False)
    assert len(error.value.problems) == 1 and "aachen_000001_000019" in error.value.problems[0]


def test_cityscapes_missing_split_and_nothing_found(city):
    with pytest.raises(DatasetError) as error:
        cityscapes(city, "val")
    assert error.value.problems == ["folder not found: leftImg8bit/val", "folder not found: gtFine/val"]
    (city / "leftImg8bit/test").mkdir()
    (city / "gtFine/test").mkdir()
    with pytest.raises(DatasetError, match=re.escape("no images found (leftImg8bit/test/**/")):
        cityscapes(city, "test")


# ---------------------------------------------------------------------------------------------- ACDC
@pytest.fixture
def acdc_root(tmp_path) -> Path:
    for condition in ("fog", "night"):
        for name in ("GOPR0475_frame_000041", "GOPR0476_frame_000010"):
            sequence = name.split("_")[0]
            random_image(tmp_path / "rgb_anon" / condition / "train" / sequence / f"{name}_rgb_anon.png")
            random_image(
                tmp_path / "rgb_anon" / condition / "train_ref" / sequence / f"{name}_rgb_ref_anon.png"
            )
            label_image(
                tmp_path / "gt" / condition / "train" / sequence / f"{name}_gt_labelIds.png", np.ones((6, 8))
            )
    return tmp_path


def test_acdc_pairs_per_condition(acdc_root):
    pairs = acdc(acdc_root, "train", conditions=("night", "fog"))
    assert _relative((p.label for p in pairs), acdc_root) == [
        f"gt/{c}/train/{n.split('_')[0]}/{n}_gt_labelIds.png"
        for c in ("night", "fog")
        for n in ("GOPR0475_frame_000041", "GOPR0476_frame_000010")
    ]
    assert all(p.image.name.replace("_rgb_anon", "_gt_labelIds") == p.label.name for p in pairs)
    assert [p.condition for p in pairs] == ["night", "night", "fog", "fog"]
    assert [item["condition"] for item in SegmentationDataset(pairs)] == ["night", "night", "fog", "fog"]
    assert len(acdc(acdc_root, "train", conditions="fog")) == 2
    with pytest.raises(DatasetError) as error:  # the default asks for all four conditions
        acdc(acdc_root, "train")
    assert "folder not found: rgb_anon/rain/train" in error.value.problems
    assert "folder not found: gt/snow/train" in error.value.problems
    with pytest.raises(ValueError, match="conditions"):
        acdc(acdc_root, "train", conditions=("haze",))


# ---------------------------------------------------------------------------------------------- train ids
# cityscapesScripts/helpers/labels.py: label id -> (name, trainId); 255 and -1 there both mean "ignored".
_OFFICIAL = {
    0: ("unlabeled", 255), 1: ("ego vehicle", 255), 2: ("rectification border", 255),
    3: ("out of roi", 255), 4: ("static", 255), 5: ("dynamic", 255), 6: ("ground", 255),
    7: ("road", 0), 8: ("sidewalk", 1), 9: ("parking", 255), 10: ("rail track", 255),
    11: ("building", 2), 12: ("wall", 3), 13: ("fence", 4), 14: ("guard rail", 255),
    15: ("bridge", 255), 16: ("tunnel", 255), 17: ("pole", 5), 18: ("polegroup", 255),
    19: ("traffic light", 6), 20: ("traffic sign", 7), 21: ("vegetation", 8), 22: ("terrain", 9),
    23: ("sky", 10), 24: ("person", 11), 25: ("rider", 12), 26: ("car", 13), 27: ("truck", 14),
    28: ("bus", 15), 29: ("caravan", 255), 30: ("trailer", 255), 31: ("train", 16),
    32: ("motorcycle", 17), 33: ("bicycle", 18), -1: ("license plate", 255),
}  # fmt: skip


def test_cityscapes_train_ids_match_the_official_table():
    ids = np.array(sorted(_OFFICIAL), dtype=np.int64)
    expected = np.array([_OFFICIAL[i][1] for i in ids])
    np.testing.assert_array_equal(cityscapes_train_ids(ids), expected)
    stored = np.where(ids < 0, 255, ids).astype(np.uint8).reshape(5, 7)  # -1 as a uint8 file holds it
    np.testing.assert_array_equal(cityscapes_train_ids(stored), expected.reshape(5, 7))
    assert tuple(name for name, train in _OFFICIAL.values() if train != 255) == CITYSCAPES_CLASSES
    np.testing.assert_array_equal(cityscapes_train_ids(np.arange(34, 256)), np.full(222, 255))
    for bad in (np.array([256]), np.array([-2])):
        with pytest.raises(ValueError, match=re.escape("-1..255")):
            cityscapes_train_ids(bad)


def test_read_label_modes(tmp_path):
    ids = np.array([[0, 7, 26], [33, 255, 24]])
    for mode in ("L", "P", "I;16"):
        assert Image.open(label_image(tmp_path / "m.png", ids, mode)).mode == mode
        np.testing.assert_array_equal(read_label(label_image(tmp_path / f"{mode}.png", ids, mode)), ids)
    write_image(tmp_path / "rgb.png", np.zeros((2, 3, 3)))
    with pytest.raises(ImageReadError, match=re.escape("rgb.png")):
        read_label(tmp_path / "rgb.png")


def test_segmentation_dataset_gives_train_ids(city):
    ids = np.array([[7, 8, 26, 0, 255, 33, 24, 21]] * 6)
    label_image(city / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png", ids)
    dataset = SegmentationDataset(cityscapes(city, "train"))
    item = dataset[0]
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (6, 8)
    assert item["mask"][0].tolist() == [0, 1, 13, 255, 255, 18, 11, 8]
    assert item["image"].shape == (3, 6, 8) and item["path"].endswith("aachen_000000_000019_leftImg8bit.png")
    assert "condition" not in item and dataset.classes == CITYSCAPES_CLASSES  # Cityscapes: no condition
    raw = SegmentationDataset(cityscapes(city, "train"), label_map=None)[0]["mask"]
    assert torch.equal(raw, torch.from_numpy(ids))


def _position_pair(root: Path, h: int, w: int) -> SegmentationPair:
    """An image whose R, G encode (y, x) and a label whose id is y * 16 + x (h, w <= 16)."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy / 255.0, xx / 255.0, np.zeros((h, w))], axis=2)
    return SegmentationPair(write_image(root / "img.png", image), label_image(root / "lbl.png", yy * 16 + xx))


@pytest.mark.parametrize("crop_size", [(5, 7), (14, 6)])  # the second one needs padding
def test_segmentation_crop_keeps_image_and_mask_aligned(tmp_path, crop_size):
    dataset = SegmentationDataset([_position_pair(tmp_path, 12, 16)], crop_size=crop_size, label_map=None)
    origins = set()
    for epoch in range(8):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert item["image"].shape == (3, *crop_size) and item["mask"].shape == crop_size
        y, x = ((item["image"][c] * 255).round().long() for c in (0, 1))
        assert torch.equal(item["mask"], y * 16 + x)
        origins.add((int(y[0, 0]), int(x[0, 0])))
    assert len(origins) > 1  # the window moves between epochs


def test_segmentation_dataset_rejects_a_mismatched_label(tmp_path):
    pair = SegmentationPair(
        random_image(tmp_path / "img.png"), label_image(tmp_path / "lbl.png", np.zeros((6, 7)))
    )
    with pytest.raises(DatasetError, match=re.escape("lbl.png: label shape (6, 7) != image shape (6, 8)")):
        SegmentationDataset([pair])[0]
