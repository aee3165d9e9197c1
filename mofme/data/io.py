"""Image I/O that survives odd files.

Convention everywhere in ``mofme.data``: an image is a float32 numpy array of shape (H, W, 3), RGB, values
in [0, 1]. ``read_image`` turns whatever is on disk into that:

* PNG / JPEG / BMP / TIFF / WebP (and anything else Pillow opens);
* grayscale (L, 1, I;16, I, F) is replicated to 3 channels;
* alpha (RGBA, LA, PA, P with transparency) is **composited on white** (``background=1.0``);
* 8-bit is divided by 255, 16-bit (PNG and TIFF, gray or colour) by 65535, float data is clipped to [0, 1];
* the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``; the TIFF Orientation tag too);
* multi-frame files (TIFF pages, GIF) give their first frame.

A file that cannot be decoded raises :class:`ImageReadError` (an ``OSError``) whose message names the file.

**Size gate.** Before any pixel is decoded, on every decoder path, the size declared in the header (PNG
IHDR, the TIFF's first page via tifffile, Pillow's lazy ``Image.open`` for the rest) is checked against
``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`), so a decompression bomb -- a tiny file declaring a
huge image -- is refused in milliseconds. :func:`image_size` reads that header size alone. Pillow's own hard
limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP) still applies to the formats Pillow decodes.

**No crash on bad input.** 16-bit colour PNGs are decoded by torchvision, whose libpng wrapper segfaults on
any libpng error; they are fully validated in Python first (:mod:`mofme.data._png16`). The fuzzer in
:mod:`mofme.data.fuzz` checks that every mutated file gives an image or an :class:`ImageReadError`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .._types import PathLike
from ..atomic import atomic_file
from ._png16 import decode_png16, encode_png16, is_png16_color, png_size

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "image_size",
    "list_images",
    "read_image",
    "write_image",
]

DEFAULT_MAX_PIXELS: int = 100_000_000
"""``read_image``'s default pixel limit (width x height, 100 MP); ``max_pixels=None`` lifts it."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_TIFF = (".tif", ".tiff")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_BYTES_PER_PIXEL = 16  # most decoded TIFF bytes per allowed pixel: 4 float32 samples
_MAX_TIFF_SAMPLES = 4  # more samples per pixel: not for tifffile here, Pillow may still read it
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


class ImageReadError(OSError):
    """An image file could not be read; ``path`` and ``reason`` are kept as attributes."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image '{self.path}': {reason}")

    def __reduce__(self):  # keep picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


# ---------------------------------------------------------------------------------------------- reading
def _to_float_rgb(
    array: np.ndarray, *, alpha_last: bool, background: float, premultiplied: bool = False
) -> np.ndarray:
    """Integer/float HxW or HxWxC array -> float32 HxWx3 in [0, 1] (alpha composited on ``background``;
    ``premultiplied``: the colour samples are already multiplied by alpha)."""
    if array.dtype == np.bool_:
        data = array.astype(np.float32)
    elif array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    elif array.dtype in (np.uint16, np.int32, np.uint32, np.int64):
        # Pillow's "I" mode holds 16-bit PNG samples; 16-bit is the only integer depth above 8 in the field.
        data = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        data = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    else:
        raise ValueError(f"unsupported sample type {array.dtype}")
    data = np.clip(data, 0.0, 1.0)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[2] not in (1, 2, 3, 4) or data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"unsupported image shape {array.shape}")
    channels = data.shape[2]
    alpha = None
    if alpha_last and channels in (2, 4):
        alpha = data[:, :, -1:]
        data = data[:, :, :-1]
    elif channels in (2, 4):  # extra channel that is not alpha: drop it
        data = data[:, :, : channels - 1]
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    if alpha is not None:
        data = (data if premultiplied else data * alpha) + np.float32(background) * (1.0 - alpha)
        data = np.clip(data, 0.0, 1.0)
    return np.ascontiguousarray(data, dtype=np.float32)


_ORIENTATIONS = {  # EXIF/TIFF orientation value -> transform of the stored (H, W) grid, as exif_transpose
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF/TIFF orientation tag (1..8) to an HxW(xC) array; unknown values leave it as is."""
    transform = _ORIENTATIONS.get(int(orientation))
    return np.ascontiguousarray(transform(array)) if transform else array


def _check_pixels(path: Path, height: int, width: int, max_pixels: int | None, depth: int = 1) -> None:
    """The size gate: raise ``ImageReadError`` when ``depth`` x ``height`` x ``width`` is over the limit."""
    pixels = depth * height * width
    if max_pixels is not None and pixels > max_pixels:
        size = f"{width} x {height}" + (f" x {depth}" if depth != 1 else "")
        raise ImageReadError(
            path,
            f"{size} = {pixels / 1e6:.1f} MP exceeds the limit of {max_pixels / 1e6:.1f} MP (max_pixels)",
        )


def _tiff_geometry(page) -> tuple[int, int, int, int, int]:
    """(height, width, depth, samples, decoded bytes) of a tifffile page, from its tags alone."""
    separate, depth, height, width, contig = (int(n) for n in page.shaped)
    samples = separate * contig
    itemsize = np.dtype(page.dtype).itemsize if page.dtype is not None else 8
    return height, width, depth, samples, depth * height * width * samples * itemsize


def _check_tiff(path: Path, page, max_pixels: int | None) -> None:
    """Size gate for a tifffile page: pixels, samples and decoded bytes, before ``page.asarray()``."""
    height, width, depth, samples, nbytes = _tiff_geometry(page)
    _check_pixels(path, height, width, max_pixels, depth)
    if max_pixels is not None and nbytes > max_pixels * _BYTES_PER_PIXEL:
        raise ImageReadError(
            path,
            f"{width} x {height} x {samples} samples would decode to {nbytes / 1e9:.2f} GB, over the limit of"
            f" {max_pixels * _BYTES_PER_PIXEL / 1e9:.2f} GB ({_BYTES_PER_PIXEL} bytes x max_pixels)",
        )
    if samples > _MAX_TIFF_SAMPLES or depth != 1:  # not an RGB(A)/gray photo: let Pillow try
        raise ValueError(f"{samples} samples per pixel, depth {depth}")


def _read_tiff(path: Path, background: float, max_pixels: int | None) -> np.ndarray:
    """TIFF through tifffile (keeps 16-bit colour that Pillow truncates)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        _check_tiff(path, page, max_pixels)
        array = page.asarray()
        orientation = page.tags.get("Orientation")
        extrasamples = [int(e) for e in page.extrasamples] if page.extrasamples else []
        photometric = int(page.photometric)
        planar = int(page.planarconfig) == 2 and array.ndim == 3  # separate planes: (C, H, W)
    if planar:
        array = np.moveaxis(array, 0, -1)
    if photometric == 0 and np.issubdtype(array.dtype, np.integer):  # MINISWHITE
        array = np.iinfo(array.dtype).max - array
    if orientation is not None:
        array = _apply_orientation(array, int(orientation.value))
    # ExtraSamples 1 = associated (premultiplied) alpha, 2 = unassociated alpha, 0 = unspecified (dropped)
    has_alpha = bool(extrasamples) and extrasamples[0] in (1, 2)
    premultiplied = has_alpha and extrasamples[0] == 1
    return _to_float_rgb(array, alpha_last=has_alpha, background=background, premultiplied=premultiplied)


@contextlib.contextmanager
def _open_pil(path: Path) -> Iterator[Image.Image]:
    """Pillow's lazy ``Image.open`` (header only); its bomb *warning* is silenced because our gate decides."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            yield image


def _read_pil(path: Path, background: float, max_pixels: int | None) -> np.ndarray:
    with _open_pil(path) as image:
        _check_pixels(path, image.height, image.width, max_pixels)
        image.load()
        image = ImageOps.exif_transpose(image)
        mode = image.mode
        if mode.startswith("I;16") or mode in ("I", "F"):
            return _to_float_rgb(np.asarray(image), alpha_last=False, background=background)
        has_alpha = mode in _ALPHA_MODES or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        return _to_float_rgb(np.asarray(image), alpha_last=has_alpha, background=background)


def to_8bit_levels(image: np.ndarray) -> np.ndarray:
    """float32 ``image`` clipped to [0, 1] and rounded to the 8-bit grid (``round(255 x) / 255``),
    i.e. what an 8-bit file of it would hold."""
    return (np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[bytes]:
    """Check that ``path`` is a non-empty regular file, yield its first 32 bytes, and turn any error raised
    inside the block into an ``ImageReadError`` naming the file."""
    if not path.is_file():
        raise ImageReadError(path, "no such file" if not path.exists() else "not a regular file")
    try:
        with open(path, "rb") as handle:
            header = handle.read(32)
        if not header:
            raise ImageReadError(path, "empty file")
        yield header
    except ImageReadError:
        raise
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, struct.error, zlib.error ...
        reason = str(error) or type(error).__name__
        raise ImageReadError(path, f"{type(error).__name__}: {reason}") from error


def _is_tiff(path: Path, header: bytes) -> bool:
    return path.suffix.lower() in _TIFF or header[:4] in _TIFF_MAGIC


def image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header alone, without decoding pixels (milliseconds).

    The size is as stored, before EXIF orientation (which may swap it in :func:`read_image`'s result);
    the pixel count is the same. Raises ``ImageReadError`` (naming the file) when no header can be read.
    """
    path = Path(path)
    with _reading(path) as header:
        size = png_size(header)
        if size is not None:
            return size
        if _is_tiff(path, header):
            with contextlib.suppress(Exception):  # tifffile missing or rejecting the file: ask Pillow
                import tifffile

                with tifffile.TiffFile(path) as tif:
                    return _tiff_geometry(tif.pages[0])[:2]
        with _open_pil(path) as image:
            return image.height, image.width


def read_image(
    path: PathLike, *, background: float = 1.0, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read an image file as float32 (H, W, 3) RGB in [0, 1].

    Alpha is composited on a uniform ``background`` grey level (1.0 = white). An image of more than
    ``max_pixels`` pixels (width x height, from the header, before anything is decoded; ``None``: no
    limit) is refused. Raises ``ImageReadError`` (naming the file) for a missing, empty, truncated,
    undecodable or oversized file -- never another exception, never a crash.
    """
    path = Path(path)
    with _reading(path) as header:
        size = png_size(header)
        if size is not None:
            _check_pixels(path, *size, max_pixels)
        if is_png16_color(header):
            return _to_float_rgb(decode_png16(path), alpha_last=header[25] == 6, background=background)
        if _is_tiff(path, header):
            try:
                return _read_tiff(path, background, max_pixels)
            except ImageReadError:
                raise
            except Exception:  # tifffile missing or rejecting this TIFF flavour: let Pillow try
                pass
        return _read_pil(path, background, max_pixels)


# ---------------------------------------------------------------------------------------------- writing
def _quantize(array: np.ndarray, bit_depth: int) -> np.ndarray:
    data = np.asarray(array)
    if data.dtype == np.uint8:
        data = data.astype(np.float32) / 255.0
    elif data.dtype == np.uint16:
        data = data.astype(np.float32) / 65535.0
    data = np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[2] == 3)):
        raise ValueError(f"write_image expects an (H, W, 3) or (H, W) array, got shape {np.shape(array)}")
    top = 255 if bit_depth == 8 else 65535
    return np.round(np.clip(data, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def write_image(path: PathLike, array: np.ndarray, *, bit_depth: int = 8, quality: int = 95) -> Path:
    """Write a float (H, W, 3) or (H, W) array in [0, 1] (clipped, rounded) to ``path``.

    The format follows the extension: PNG and TIFF take ``bit_depth`` 8 or 16, JPEG (``quality``) and BMP
    only 8. Parent folders are created; the file is written to a temporary name and renamed, so a crash
    never leaves a half-written image. Returns the path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    formats = _WRITE_FORMATS
    if suffix not in formats:
        raise ValueError(f"cannot choose an image format for '{path}' (known: {sorted(formats)})")
    if bit_depth == 16 and formats[suffix] not in ("PNG", "TIFF"):
        raise ValueError(f"16-bit output needs .png or .tif, not '{suffix}'")
    data = _quantize(array, bit_depth)
    with atomic_file(path) as tmp:
        if bit_depth == 16 and formats[suffix] == "PNG":
            tmp.write_bytes(encode_png16(data))
        elif bit_depth == 16:
            import tifffile

            tifffile.imwrite(tmp, data, photometric="rgb" if data.ndim == 3 else "minisblack")
        else:
            options = {"quality": quality} if formats[suffix] in ("JPEG", "WEBP") else {}
            Image.fromarray(data).save(tmp, format=formats[suffix], **options)
    return path


# ---------------------------------------------------------------------------------------------- listing
def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder_or_files: PathLike | Iterable[PathLike], *, recursive: bool = True) -> list[Path]:
    """Expand a folder, a file, or an iterable of both into a list of image paths.

    Folders are expanded to their image files (extension in ``IMAGE_EXTENSIONS``, case-insensitive; hidden
    files such as macOS ``._x.png`` are skipped), sorted by relative path; ``recursive`` descends into
    sub-folders (hidden folders skipped). Files named explicitly are kept as given, in order. A path that
    does not exist raises ``FileNotFoundError``.
    """
    if isinstance(folder_or_files, str | os.PathLike):
        folder_or_files = [folder_or_files]
    found: list[Path] = []
    for item in folder_or_files:
        item = Path(item)
        if item.is_dir():
            if recursive:
                candidates = [
                    p
                    for p in item.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(item).parts)
                ]
            else:
                candidates = [p for p in item.iterdir() if p.is_file()]
            found.extend(
                sorted((p for p in candidates if _is_image(p)), key=lambda p: p.relative_to(item).parts)
            )
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"no such file or folder: '{item}'")
    return found
