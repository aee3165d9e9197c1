"""Uploaded bytes -> an image, or an :class:`UploadError` with a message a person can act on.

The client's file name is a label only: the bytes are written under the server's own temporary folder
with a generated name, read with :func:`mofme.data.io.read_image` (every format ``mofme restore`` reads,
EXIF orientation applied) and deleted. The pixel count is checked from the file's header before any
pixel is decoded, so a decompression bomb costs a header read; the decode itself keeps Pillow's bomb
check (``Image.MAX_IMAGE_PIXELS``, which :func:`~mofme.apps.serve.run_server` sets to the limit).
"""

from __future__ import annotations

import io
import re
import threading
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mofme.data.io import ImageReadError, read_image

__all__ = ["BOMB_PIXELS_PER_BYTE", "UploadError", "decode_upload", "display_name", "megapixels"]

BOMB_PIXELS_PER_BYTE = 1000  # real photos hold < 100 pixels per byte; far more means a decompression bomb
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_FORMATS = "PNG, JPEG, BMP, TIFF or WebP"
_DECODE_LOCK = threading.Lock()  # one decode at a time: bounded memory; header reads lift Pillow's limit


class UploadError(ValueError):
    """A refused upload: ``message`` for the person, ``status`` the HTTP status (400, 413)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def display_name(name: str | None) -> str:
    """A client's file name as a short label: its last path part, printable characters, at most 80."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[:80] or "upload"


def _too_many_pixels(name: str, width: int, height: int, size: int, max_pixels: int) -> UploadError:
    pixels = width * height
    if pixels > BOMB_PIXELS_PER_BYTE * max(size, 1):
        return UploadError(
            f"{name}: refused as a decompression bomb: {size:,} bytes declare {width} x {height} pixels "
            f"({megapixels(pixels)}), above this server's limit of {megapixels(max_pixels)}",
            status=413,
        )
    return UploadError(
        f"{name}: {width} x {height} pixels ({megapixels(pixels)}) is above this server's limit of "
        f"{megapixels(max_pixels)} (mofme serve --max-megapixels); scale the photo down first",
        status=413,
    )


def _header_size(data: bytes, name: str) -> tuple[int, int] | None:
    """``(width, height)`` from the header (nothing decoded); None for a TIFF only tifffile can read.

    Pillow's own bomb check is off for this header read only (the caller holds the decode lock), so
    that the size is known and the message says which limit was hit; the decode keeps the check."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except UnidentifiedImageError as error:
        if data[:4] in _TIFF_MAGIC:
            return None
        raise UploadError(f"{name} is not an image this server reads ({_FORMATS})") from error
    except Exception as error:  # a header Pillow chokes on
        raise _read_error(name, f"{type(error).__name__}: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _read_error(name: str, reason: str) -> UploadError:
    if "DecompressionBomb" in reason:
        return UploadError(f"{name}: refused as a decompression bomb ({reason})", status=413)
    if "truncated" in reason.lower() or "broken data stream" in reason:
        return UploadError(f"{name} is truncated or damaged (an incomplete download?): {reason}")
    return UploadError(f"{name} cannot be decoded: {reason}")


def decode_upload(data: bytes, *, name: str, max_pixels: int, workdir: Path) -> np.ndarray:
    """Float32 (H, W, 3) RGB in [0, 1] of an uploaded file (upright), or :class:`UploadError`.

    ``name`` (already a :func:`display_name`) only labels messages; ``workdir`` is a server-made folder.
    Thread-safe: decodes run one at a time.
    """
    with _DECODE_LOCK:
        return _decode(data, name=name, max_pixels=max_pixels, workdir=workdir)


def _decode(data: bytes, *, name: str, max_pixels: int, workdir: Path) -> np.ndarray:
    if not data:
        raise UploadError(f"{name} is empty")
    size = _header_size(data, name)
    if size is not None and size[0] * size[1] > max_pixels:
        raise _too_many_pixels(name, *size, len(data), max_pixels)
    path = workdir / f"upload-{uuid.uuid4().hex}"
    try:
        path.write_bytes(data)
        image = read_image(path)
    except ImageReadError as error:
        raise _read_error(name, error.reason) from error  # not str(error): it names the temporary file
    finally:
        path.unlink(missing_ok=True)
    height, width = image.shape[:2]
    if height * width > max_pixels:  # a TIFF whose header only tifffile reads
        raise _too_many_pixels(name, width, height, len(data), max_pixels)
    return image
