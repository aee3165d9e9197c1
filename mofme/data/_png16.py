"""Minimal 16-bit PNG support that Pillow lacks: detecting, decoding (via torchvision) and encoding.

Pillow reads 16-bit RGB/RGBA PNGs as 8-bit and cannot write them; grayscale 16-bit is fine in Pillow.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["decode_png16", "encode_png16", "is_png16_color"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)


def is_png16_color(header: bytes) -> bool:
    """True when ``header`` (the first >= 26 bytes of a file) is a 16-bit RGB or RGBA PNG."""
    return (
        len(header) >= 26
        and header[:8] == _SIGNATURE
        and header[12:16] == b"IHDR"
        and header[24] == 16
        and header[25] in (2, 6)
    )


def decode_png16(path: str | Path) -> np.ndarray:
    """Decode a 16-bit PNG to a uint16 HxWxC array (C = 1..4) with torchvision's libpng decoder."""
    import torch
    from torchvision.io import ImageReadMode, decode_png

    data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    image = decode_png(data, mode=ImageReadMode.UNCHANGED)
    return image.permute(1, 2, 0).contiguous().numpy().astype(np.uint16)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png16(array: np.ndarray) -> bytes:
    """Encode a uint16 HxW or HxWxC (C = 1..4) array as a non-interlaced 16-bit PNG (Sub filter)."""
    if array.ndim == 2:
        array = array[:, :, None]
    height, width, channels = array.shape
    if channels not in _COLOR_TYPES:
        raise ValueError(f"cannot encode {channels} channels as PNG")
    rows = np.ascontiguousarray(array.astype(">u2")).view(np.uint8).reshape(height, width * channels * 2)
    bpp = channels * 2
    filtered = rows.copy()
    filtered[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]  # uint8 arithmetic wraps mod 256, as PNG requires
    raw = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1).tobytes()  # filter type 1
    header = struct.pack(">IIBBBBB", width, height, 16, _COLOR_TYPES[channels], 0, 0, 0)
    return (
        _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")
    )
