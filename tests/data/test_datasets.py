"""Dataset readers on generated fixture folders, and PairedImageDataset crops/augmentations."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mofme.data import (
    AUGMENT_MODES,
    DatasetError,
    ImagePair,
    PairedImageDataset,
    augment,
    infer_weather,
    outdoor_rain_test1,
    paired_folder,
    raindrop_test_a,
    read_image,
    read_pair_list,
    snow100k_l,
    write_image,
)


def _image(seed: int, shape=(12, 16)) -> np.ndarray:
    return np.random.default_rng(seed).random((*shape, 3)).astype(np.float32)


def _write_pairs(root: Path, inputs: list[str], *, targets: list[str] | None = None, shape=(12, 16)) -> None:
    """Write input images at root/<inputs[i]> and target images at root/<targets[i]>."""
    for i, rel in enumerate(inputs):
        write_image(root / rel, _image(i, shape))
    for i, rel in enumerate(targets or []):
        write_image(root / rel, _image(100 + i, shape))


# ---------------------------------------------------------------------------------------------- lists
def test_single_column_list_maps_input_to_gt(tmp_path):
    inputs = ["input/a.png", "input/sub/b.png", "rain/input/c.png"]
    _write_pairs(tmp_path, inputs, targets=["gt/a.png", "gt/sub/b.png", "rain/gt/c.png"])
    (tmp_path / "list.txt").write_text("# comment\ninput/a.png\n\n./input/sub/b.png\r\nrain/input/c.png\n")
    pairs = read_pair_list(tmp_path / "list.txt")
    assert [p.input for p in pairs] == [tmp_path / r for r in inputs]
    assert [p.target.relative_to(tmp_path).as_posix() for p in pairs] == [
        "gt/a.png",
        "gt/sub/b.png",
        "rain/gt/c.png",
    ]
    assert [p.weather for p in pairs] == ["unknown", "unknown", "rain"]
    assert all(isinstance(p, ImagePair) for p in pairs)


def test_list_with_separate_root_and_weather(tmp_path):
    _write_pairs(tmp_path / "data", ["input/x.png"], targets=["gt/x.png"])
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.txt").write_text("input/x.png\n")
    pairs = read_pair_list(tmp_path / "lists" / "l.txt", tmp_path / "data", weather="snow")
    assert pairs == [ImagePair(tmp_path / "data/input/x.png", tmp_path / "data/gt/x.png", "snow")]
    with pytest.raises(ValueError, match="weather"):
        read_pair_list(tmp_path / "lists" / "l.txt", tmp_path / "data", weather="hail")


def test_two_column_list(tmp_path):
    _write_pairs(tmp_path, ["rainy/1.png", "with space/2.png"], targets=["clean/1.png", "clean dir/2.png"])
    (tmp_path / "l.txt").write_text("rainy/1.png clean/1.png\nwith space/2.png\tclean dir/2.png\n")
    pairs = read_pair_list(tmp_path / "l.txt")
    assert [p.target.relative_to(tmp_path).as_posix() for p in pairs] == ["clean/1.png", "clean dir/2.png"]


def test_missing_targets_are_listed_by_name(tmp_path):
    names = [f"input/img_{i:03d}.png" for i in range(25)]
    _write_pairs(tmp_path, names, targets=["gt/img_000.png"])
    (tmp_path / "l.txt").write_text("\n".join(names))
    with pytest.raises(DatasetError) as info:
        read_pair_list(tmp_path / "l.txt")
    message = str(info.value)
    assert "img_001.png" in message and "img_020.png" in message
    assert "img_000.png: missing" not in message
    assert "and 4 more" in message and len(info.value.problems) == 24


def test_list_line_without_input_folder_is_an_error(tmp_path):
    (tmp_path / "l.txt").write_text("images/a.png\n")
    with pytest.raises(DatasetError, match=re.escape("images/a.png")):
        read_pair_list(tmp_path / "l.txt")
    with pytest.raises(DatasetError, match="not found"):
        read_pair_list(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DatasetError, match="no image pairs"):
        read_pair_list(tmp_path / "empty.txt")


def test_check_headers_finds_unreadable_and_mismatched_files(tmp_path):
    _write_pairs(tmp_path, ["input/ok.png", "input/bad.png"], targets=["gt/ok.png"])
    (tmp_path / "gt" / "bad.png").write_bytes(b"garbage")
    write_image(tmp_path / "input" / "small.png", _image(0, (5, 5)))
    write_image(tmp_path / "gt" / "small.png", _image(0, (5, 6)))
    (tmp_path / "l.txt").write_text("input/ok.png\ninput/bad.png\ninput/small.png\n")
    assert len(read_pair_list(tmp_path / "l.txt")) == 3  # existence only by default
    with pytest.raises(DatasetError) as info:
        read_pair_list(tmp_path / "l.txt", check_headers=True)
    assert len(info.value.problems) == 2
    assert "bad.png: unreadable" in str(info.value) and "small.png: input size" in str(info.value)


# ---------------------------------------------------------------------------------------------- folders
def test_paired_folder_matches_names_and_extensions(tmp_path):
    _write_pairs(
        tmp_path,
        ["input/b.png", "input/a.jpg", "input/s/c.png"],
        targets=["gt/b.png", "gt/a.png", "gt/s/c.png"],
    )
    pairs = paired_folder(tmp_path, weather="haze")
    assert [p.input.relative_to(tmp_path).as_posix() for p in pairs] == [
        "input/a.jpg",
        "input/b.png",
        "input/s/c.png",
    ]
    assert [p.target.relative_to(tmp_path).as_posix() for p in pairs] == [
        "gt/a.png",
        "gt/b.png",
        "gt/s/c.png",
    ]
    assert {p.weather for p in pairs} == {"haze"}


def test_paired_folder_missing_target_and_folder(tmp_path):
    _write_pairs(tmp_path, ["input/a.png", "input/lonely.png"], targets=["gt/a.png"])
    with pytest.raises(DatasetError, match=re.escape("lonely.png")):
        paired_folder(tmp_path)
    with pytest.raises(DatasetError, match="folder not found"):
        paired_folder(tmp_path, target_dir="clean")


@pytest.mark.parametrize(
    ("path", "weather"),
    [
        ("allweather/input/rain/snowman.png", "rain"),
        ("test_a/input/0_rain.png", "raindrop"),
        ("input/12_rain.png", "raindrop"),
        ("input/im_0001_s80_a04.png", "rain"),
        ("Snow100K-L/synthetic/beautiful_smile_00001.jpg", "snow"),
        ("outdoor_rain/fog/a.png", "haze"),
        ("rain_fog/a.png", "rain"),
        ("input/photo.png", "unknown"),
    ],
)
def test_infer_weather(path, weather):
    assert infer_weather(path) == weather


# ---------------------------------------------------------------------------------------------- test sets
def test_outdoor_rain_test1_from_list_warns_on_count(tmp_path):
    names = ["test1/input/im_0001_s80_a04.png", "test1/input/im_0002_s85_a05.png"]
    _write_pairs(tmp_path, names, targets=[n.replace("input", "gt") for n in names])
    (tmp_path / "test1.txt").write_text("\n".join(names) + "\n")
    with pytest.warns(UserWarning, match="750"):
        pairs = outdoor_rain_test1(tmp_path)
    assert len(pairs) == 2 and {p.weather for p in pairs} == {"rain"}


def test_raindrop_test_a_original_release_layout(tmp_path):
    _write_pairs(
        tmp_path / "test_a",
        ["data/0_rain.png", "data/1_rain.png"],
        targets=["gt/0_clean.png", "gt/1_clean.png"],
    )
    with pytest.warns(UserWarning, match="58"):
        pairs = raindrop_test_a(tmp_path)
    assert [p.target.name for p in pairs] == ["0_clean.png", "1_clean.png"]
    assert {p.weather for p in pairs} == {"raindrop"}


def test_snow100k_layouts(tmp_path):
    _write_pairs(tmp_path / "a" / "Snow100K-L", ["synthetic/x.jpg"], targets=["gt/x.jpg"])
    _write_pairs(tmp_path / "b" / "Snow100K-L", ["input/y.png"], targets=["gt/y.png"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [p.input.name for p in snow100k_l(tmp_path / "a")] == ["x.jpg"]
        pairs = snow100k_l(tmp_path / "b")
    assert [p.input.name for p in pairs] == ["y.png"] and pairs[0].weather == "snow"
    with pytest.raises(DatasetError, match=re.escape("snowtest100k_L.txt")):
        snow100k_l(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------- torch dataset
def _coordinate_image(h: int, w: int) -> np.ndarray:
    """Every pixel unique: R, G encode y, x; B is a checker."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy / 255.0, xx / 255.0, ((yy + xx) % 2) * 1.0], axis=2).astype(np.float32)


@pytest.fixture
def coord_pairs(tmp_path) -> list[ImagePair]:
    image = _coordinate_image(40, 50)
    write_image(tmp_path / "input" / "same.png", image)
    write_image(tmp_path / "gt" / "same.png", image)
    write_image(tmp_path / "input" / "negative.png", 1.0 - image)
    write_image(tmp_path / "gt" / "negative.png", image)
    return paired_folder(tmp_path, weather="snow")


def _find_window(crop: np.ndarray, full: np.ndarray) -> tuple[int, int]:
    y, x = round(float(crop[0, 0, 0]) * 255), round(float(crop[0, 0, 1]) * 255)
    h, w = crop.shape[:2]
    np.testing.assert_allclose(crop, full[y : y + h, x : x + w], atol=1e-6)
    return y, x


def test_crops_are_aligned_windows(coord_pairs):
    full = _coordinate_image(40, 50)
    dataset = PairedImageDataset(coord_pairs, crop_size=(16, 24), seed=1)
    origins = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            assert item["input"].shape == item["target"].shape == (3, 16, 24)
            assert item["input"].dtype == torch.float32 and item["weather"] == 1
            source, target = (
                item["input"].numpy().transpose(1, 2, 0),
                item["target"].numpy().transpose(1, 2, 0),
            )
            origins.add(_find_window(target, full))
            expected = target if item["name"] == "same.png" else 1.0 - target
            np.testing.assert_allclose(source, expected, atol=1e-6)
    assert len(origins) > 4  # the crops move


def test_crops_are_deterministic_per_seed_index_epoch(coord_pairs):
    a = PairedImageDataset(coord_pairs, crop_size=8, augment=True, seed=3)
    b = PairedImageDataset(coord_pairs, crop_size=8, augment=True, seed=3)
    assert torch.equal(a[1]["input"], b[1]["input"])
    outputs = {tuple(a[1]["target"].flatten().tolist())}
    for epoch in range(1, 5):
        a.set_epoch(epoch)
        outputs.add(tuple(a[1]["target"].flatten().tolist()))
    assert len(outputs) > 1
    other = PairedImageDataset(coord_pairs, crop_size=8, augment=True, seed=4)
    assert any(not torch.equal(other[i]["target"], b[i]["target"]) for i in range(2))


def test_small_images_are_padded(tmp_path):
    image = _image(0, (6, 9))
    write_image(tmp_path / "input" / "s.png", image)
    write_image(tmp_path / "gt" / "s.png", image)
    item = PairedImageDataset(paired_folder(tmp_path), crop_size=16)[0]
    assert item["input"].shape == (3, 16, 16) and torch.equal(item["input"], item["target"])
    assert item["weather"] == -1
    stored = read_image(tmp_path / "input" / "s.png")
    np.testing.assert_allclose(item["input"].numpy().transpose(1, 2, 0)[5:11, 3:12], stored, atol=1e-6)


def test_whole_images_without_crop(coord_pairs):
    item = PairedImageDataset(coord_pairs)[0]
    assert item["input"].shape == (3, 40, 50)


def test_the_eight_augment_modes():
    image = np.arange(3 * 4 * 2).reshape(3, 4, 2)
    results = [augment(image, mode) for mode in range(AUGMENT_MODES)]
    assert np.array_equal(results[0], image)
    expected = [np.rot90(image, k) for k in range(4)] + [np.rot90(image, k)[:, ::-1] for k in range(4)]
    assert len({r.tobytes() + bytes(r.shape) for r in results}) == 8
    assert {r.tobytes() + bytes(r.shape) for r in results} == {e.tobytes() + bytes(e.shape) for e in expected}
    with pytest.raises(ValueError):
        augment(image, 8)


def test_dataset_uses_all_eight_modes_with_aligned_pairs(coord_pairs):
    full = _coordinate_image(40, 50)
    negative = [p for p in coord_pairs if p.input.name == "negative.png"]
    dataset = PairedImageDataset(negative, crop_size=12, augment=True, seed=0)
    seen = set()
    for epoch in range(64):
        dataset.set_epoch(epoch)
        item = dataset[0]
        source, target = item["input"].numpy().transpose(1, 2, 0), item["target"].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(source, 1.0 - target, atol=1e-6)
        for mode in range(AUGMENT_MODES):  # undo the augmentation: the result must be a window of the image
            inverse = [0, 3, 2, 1, 4, 5, 6, 7][mode]
            undone = augment(target, inverse)
            y, x = round(float(undone[:, :, 0].min()) * 255), round(float(undone[:, :, 1].min()) * 255)
            if y + 12 <= 40 and x + 12 <= 50 and np.allclose(undone, full[y : y + 12, x : x + 12], atol=1e-6):
                seen.add(mode)
                break
        else:
            pytest.fail("augmented crop is not a flip/rotation of an image window")
    assert seen == set(range(AUGMENT_MODES))
