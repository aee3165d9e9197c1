"""read_image / write_image / list_images on generated fixture files of every odd kind."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from mofme.data import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_image
from mofme.data.io import DEFAULT_MAX_PIXELS, _apply_orientation, image_size


@pytest.fixture
def rgb8() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.shape == (*shape, 3)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_lossless_8bit_round_trip(tmp_path, rgb8, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(rgb8).save(path)
    image = read_image(path)
    _check_image(image, rgb8.shape[:2])
    np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8), rgb8)


def test_grayscale_is_replicated(tmp_path, rgb8):
    gray = rgb8[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    _check_image(image, gray.shape)
    for c in range(3):
        np.testing.assert_allclose(image[:, :, c], gray / 255.0, atol=1e-6)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # pure red
    rgba[0, :, 3] = 0  # transparent row -> white
    rgba[1, :, 3] = 255  # opaque row -> red
    rgba[2, :, 3] = 128  # half -> pink
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(image[0], 1.0)
    np.testing.assert_allclose(image[1], np.tile([1.0, 0.0, 0.0], (4, 1)))
    np.testing.assert_allclose(image[2, :, 1], 1 - 128 / 255, atol=1e-6)
    black = read_image(tmp_path / "a.png", background=0.0)
    np.testing.assert_allclose(black[0], 0.0)


def test_la_and_palette_with_transparency(tmp_path):
    la = np.zeros((3, 3, 2), np.uint8)
    la[..., 1] = 255
    la[0, 0, 1] = 0
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    image = read_image(tmp_path / "la.png")
    assert image[0, 0].tolist() == [1.0, 1.0, 1.0] and image[1, 1].tolist() == [0.0, 0.0, 0.0]

    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "p.png", transparency=0)
    image = read_image(tmp_path / "p.png")
    assert image[0, 0].tolist() == [1.0, 1.0, 1.0]  # transparent index -> white
    assert image[2, 2].tolist() == [0.0, 1.0, 0.0]


def test_16bit_gray_png_keeps_precision(tmp_path):
    gray = np.array([[0, 1000, 40000], [65535, 257, 3]], np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(image[:, :, 1], gray / 65535.0, atol=1e-7)


def test_16bit_rgb_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.random((9, 11, 3)).astype(np.float32)
    write_image(tmp_path / "c16.png", data, bit_depth=16)
    image = read_image(tmp_path / "c16.png")
    assert np.abs(image - data).max() <= 0.5 / 65535 + 1e-6  # far finer than 8-bit (1/510)


def test_16bit_tiff_rgb_and_gray(tmp_path):
    rgb = np.array([[[0, 1000, 65535], [300, 30000, 12345]]], np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    np.testing.assert_allclose(read_image(tmp_path / "c.tif"), rgb / 65535.0, atol=1e-7)
    gray = rgb[:, :, 1]
    Image.fromarray(gray).save(tmp_path / "g.tiff")
    np.testing.assert_allclose(read_image(tmp_path / "g.tiff")[:, :, 0], gray / 65535.0, atol=1e-7)
    rgba = np.zeros((2, 3, 4), np.uint16)
    rgba[..., 2] = 65535
    rgba[1, :, 3] = 65535  # row 0 transparent
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), [[[1, 1, 1]] * 3, [[0, 0, 1]] * 3])
    data = np.random.default_rng(2).random((5, 6, 3))
    write_image(tmp_path / "w.tif", data, bit_depth=16)
    assert np.abs(read_image(tmp_path / "w.tif") - data).max() <= 0.5 / 65535 + 1e-6


def test_exif_rotated_jpeg_is_transposed(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "r.jpg")
    _check_image(image, (40, 20))  # height and width swapped
    top, bottom = image[:15].mean(axis=(0, 1)), image[25:].mean(axis=(0, 1))
    assert top[0] > 0.8 > top[2] and bottom[2] > 0.8 > bottom[0]  # the left side went to the top


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, rgb8, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb8).save(tmp_path / "o.png", exif=exif)
    expected = _apply_orientation(rgb8, orientation).astype(np.float32) / 255.0
    np.testing.assert_allclose(read_image(tmp_path / "o.png"), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "content"),
    [("random.png", None), ("empty.jpg", b""), ("truncated.png", "half"), ("text.bmp", b"not an image")],
)
def test_corrupt_files_raise_named_error(tmp_path, rgb8, name, content):
    path = tmp_path / name
    if content is None:
        content = np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes()
    elif content == "half":
        Image.fromarray(rgb8).save(path)
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=re.escape(name)) as info:
        read_image(path)
    assert isinstance(info.value, OSError) and info.value.path == path


def test_missing_file_raises_named_error(tmp_path):
    with pytest.raises(ImageReadError, match=re.escape("nothere.png")):
        read_image(tmp_path / "nothere.png")


def test_write_clips_rounds_and_creates_folders(tmp_path):
    data = np.array([[[-0.5, 0.5, 1.5], [0.2, 0.8, 1.0]]], np.float32)
    path = write_image(tmp_path / "a" / "b" / "out.png", data)
    assert path.is_file() and not list(path.parent.glob(".*"))  # no temporary file left behind
    raw = np.asarray(Image.open(path))
    np.testing.assert_array_equal(raw, np.round(np.clip(data, 0, 1) * 255).astype(np.uint8))
    gray = write_image(tmp_path / "mask.png", np.full((3, 4), 0.25))
    assert Image.open(gray).mode == "L"


def test_write_rejects_bad_requests(tmp_path, rgb8):
    data = rgb8 / 255.0
    with pytest.raises(ValueError, match="format"):
        write_image(tmp_path / "x.xyz", data)
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "x.jpg", data, bit_depth=16)
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "x.png", np.zeros((2, 3, 5)))


def test_jpeg_write_is_close(tmp_path):
    smooth = np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None], (16, 1, 3))
    write_image(tmp_path / "s.jpeg", smooth)
    assert np.abs(read_image(tmp_path / "s.jpeg") - smooth).mean() < 0.02


def test_list_images_sorted_recursive_and_filtered(tmp_path):
    for rel in ["b.png", "a.JPG", "sub/c.tif", "sub/deeper/d.bmp", "notes.txt", "._a.png", ".hidden/e.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "sub/c.tif", "sub/deeper/d.bmp"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
    explicit = list_images([tmp_path / "notes.txt", tmp_path / "sub"])
    assert [p.name for p in explicit] == ["notes.txt", "c.tif", "d.bmp"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
    assert ".png" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_image_size_reads_the_header(tmp_path, rgb8, suffix):
    path = tmp_path / f"a{suffix}"
    Image.fromarray(rgb8).save(path)
    assert image_size(path) == rgb8.shape[:2] == read_image(path).shape[:2]
    with pytest.raises(ImageReadError, match=r"30 x 20 = 0\.0 MP exceeds the limit"):
        read_image(path, max_pixels=599)
    assert read_image(path, max_pixels=600).shape == (*rgb8.shape[:2], 3)
    assert read_image(path, max_pixels=None).shape == (*rgb8.shape[:2], 3)


def test_image_size_of_16bit_files_and_bad_files(tmp_path):
    write_image(tmp_path / "c16.png", np.zeros((7, 9, 3)), bit_depth=16)
    write_image(tmp_path / "c16.tif", np.zeros((5, 6, 3)), bit_depth=16)
    assert image_size(tmp_path / "c16.png") == (7, 9) and image_size(tmp_path / "c16.tif") == (5, 6)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(tmp_path / "c16.png", max_pixels=62)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(tmp_path / "c16.tif", max_pixels=29)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"not an image at all")
    for name in ("empty.png", "text.jpg", "missing.bmp"):
        with pytest.raises(ImageReadError, match=re.escape(name)):
            image_size(tmp_path / name)
    assert DEFAULT_MAX_PIXELS == 100_000_000
