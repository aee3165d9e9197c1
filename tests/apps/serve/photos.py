"""Test inputs for the server: a built-in photo with rendered rain, and broken files."""

from __future__ import annotations

import ctypes
import io
import struct
import time
import zlib

import numpy as np
from PIL import Image, PngImagePlugin

from mofme.data import builtin_photos, render_weather
from mofme.data.transforms import to_tensor
from mofme.metrics import psnr


def weather_photo(
    *, name: str = "china", weather: str = "rain", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(clean, degraded) float32 (H, W, 3) on the 8-bit grid: a held-out built-in photo (long side 256)
    with rendered weather at severity 2."""
    clean = dict(builtin_photos("test"))[name]
    degraded = render_weather(clean, weather, severity=2, seed=seed).degraded
    return clean, np.round(degraded * 255) / 255


def encode(image: np.ndarray, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buffer, format=format, **options
    )
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def psnr_db(image: np.ndarray, reference: np.ndarray) -> float:
    return float(psnr(to_tensor(image)[None], to_tensor(reference)[None])[0])


def truncated_jpeg(image: np.ndarray) -> bytes:
    data = encode(image, "JPEG", quality=90)
    return data[: len(data) // 2]


def png_bomb(side: int) -> bytes:
    """A valid 1-bit black PNG of side x side pixels: a few kB that decode to side^2 pixels."""
    rows = zlib.compress(bytes((1 + -(-side // 8)) * side), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def damaged_png16(height: int = 64, width: int = 96) -> bytes:
    """A 16-bit RGB PNG whose IDAT is random bytes under a valid CRC: the header is whole, the data is
    not a zlib stream (libpng errors on it; torchvision's wrapper of libpng segfaults)."""
    rows = bytes((1 + width * 6) * height)
    body = np.random.default_rng(1).integers(0, 256, len(zlib.compress(rows)), dtype=np.uint8).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def png_with_note(image: np.ndarray, note: str) -> bytes:
    """A PNG of ``image`` carrying ``note`` in a text chunk (what :func:`crash_or_decode` looks for)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("note", note)
    return encode(image, "PNG", pnginfo=info)


def crash_or_decode(data: bytes, *args) -> bytes:
    """A decoder-process function for tests: segfaults on a file noting "segfault", hangs on one noting
    "hang", else decodes as the server does (:func:`mofme.apps.serve.uploads.decode_to_file`)."""
    from mofme.apps.serve.uploads import decode_to_file

    if b"segfault" in data:
        ctypes.string_at(0)  # reads address 0: SIGSEGV, as a native decoder's crash would
    if b"hang" in data:
        time.sleep(3600)
    return decode_to_file(data, *args)
