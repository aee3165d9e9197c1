"""restore_paths(): odd files in, same names and sizes out, bad files reported, inputs never overwritten."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mofme.data import read_image, write_image
from mofme.infer.restore import RestoreResult, model_patch_size, restore_image, restore_paths
from mofme.models import create_model
from tests.standin import StandIn


def _u8(rng, *shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """A folder of odd files; returns (folder, {name: displayed (H, W)}, bad names)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_u8(rng, 20, 28), "L").save(root / "gray.png")
    Image.fromarray(_u8(rng, 24, 20, 4), "RGBA").save(root / "rgba.png")
    write_image(root / "deep16.png", rng.random((18, 22, 3)), bit_depth=16)
    write_image(root / "deep16.tif", rng.random((17, 21, 3)), bit_depth=16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: stored 24x40 (HxW) shows as 40x24
    Image.fromarray(_u8(rng, 24, 40, 3)).save(root / "rotated.jpg", exif=exif)
    Image.fromarray(_u8(rng, 16, 24, 3)).save(root / "plain.bmp")
    Image.fromarray(_u8(rng, 301, 517, 3)).save(root / "sub" / "odd.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "fake.jpg").write_text("not a jpeg")
    (root / "notes.txt").write_text("not an image")
    sizes = {
        "gray.png": (20, 28),
        "rgba.png": (24, 20),
        "deep16.png": (18, 22),
        "deep16.tif": (17, 21),
        "rotated.jpg": (40, 24),
        "plain.bmp": (16, 24),
        "sub/odd.png": (301, 517),
    }
    return root, sizes, {"corrupt.png", "fake.jpg"}


def test_folder_of_odd_files(folder, tmp_path, caplog):
    root, sizes, bad = folder
    out = tmp_path / "restored"
    with caplog.at_level(logging.WARNING, logger="mofme.infer.restore"):
        result = restore_paths(StandIn(blur=True), [root], out, tile=64, overlap=16, progress=False)
    assert isinstance(result, RestoreResult)
    assert sorted(p.relative_to(out).as_posix() for p in result.written) == sorted(sizes)
    for name, size in sizes.items():
        assert read_image(out / name).shape == (*size, 3), name
        assert read_image(root / name).shape == (*size, 3), name
    assert sorted(p.name for p, _ in result.failed) == sorted(bad)
    assert all(reason for _, reason in result.failed)
    assert "corrupt.png" in caplog.text and "fake.jpg" in caplog.text
    assert not (out / "notes.txt").exists() and not (out / "corrupt.png").exists()

    assert (out / "deep16.png").read_bytes()[24] == 16  # 16-bit in, 16-bit out
    assert tifffile.imread(out / "deep16.tif").dtype == np.uint16
    assert np.asarray(Image.open(out / "gray.png")).dtype == np.uint8
    with Image.open(out / "rotated.jpg") as image:  # upright pixels, no orientation tag left to re-apply
        assert image.size == (24, 40) and image.getexif().get(0x0112, 1) == 1


def test_identity_is_exact_through_the_tiles(folder, tmp_path):
    root, _, _ = folder
    source = root / "sub" / "odd.png"
    result = restore_paths(StandIn(), source, tmp_path / "out", tile=64, overlap=16, progress=False)
    assert result.written == [tmp_path / "out" / "odd.png"] and result.failed == []
    np.testing.assert_array_equal(np.asarray(Image.open(result.written[0])), np.asarray(Image.open(source)))


def test_never_overwrites_the_inputs(folder, tmp_path):
    root, _, _ = folder
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="would overwrite the input"):
        restore_paths(StandIn(), [root], root, progress=False)
    with pytest.raises(ValueError, match="would overwrite the input"):
        restore_paths(StandIn(), [root / "gray.png"], str(root), progress=False)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        restore_paths(StandIn(), [root / "missing.png"], tmp_path / "out", progress=False)

    nested = root / "restored"  # an output folder inside the input folder: earlier results are skipped
    first = restore_paths(StandIn(), [root], nested, progress=False)
    second = restore_paths(StandIn(), [root], nested, progress=False)
    assert len(second.written) == len(first.written) == 7


def test_real_restorer(tmp_path):
    model = create_model("restorer_tiny", ffn="mofme", num_experts=4, top_k=2)
    assert model_patch_size(model) == 4
    image = torch.rand(3, 37, 50)
    whole = restore_image(model, image, tile=64, overlap=16)  # a single tile: the model's own output
    with torch.no_grad():
        torch.testing.assert_close(whole, model.eval()(image[None]).image[0])
    tiled = restore_image(model, image, tile=16, overlap=8, batch_size=3)
    assert tiled.shape == (3, 37, 50) and tiled.min() >= 0 and tiled.max() <= 1

    write_image(tmp_path / "in" / "a.jpg", image.permute(1, 2, 0).numpy())
    result = restore_paths(model, [tmp_path / "in"], tmp_path / "out", tile=16, overlap=4, progress=False)
    assert result.written == [tmp_path / "out" / "a.jpg"]
    assert read_image(result.written[0]).shape == (37, 50, 3)
