"""Minimal 16-bit PNG support that Pillow lacks: detecting, validating, decoding (via torchvision), encoding.

Pillow reads 16-bit RGB/RGBA PNGs as 8-bit and cannot write them; grayscale 16-bit is fine in Pillow.

**Why every file is validated in Python before torchvision sees it.** torchvision's libpng wrapper turns
*any* libpng error into a segmentation fault of the whole process (measured with torchvision 0.29: a 16-bit
RGB PNG whose IDAT stream is damaged, CRCs recomputed, prints ``libpng error: IDAT: incorrect data check``
and dies with SIGSEGV). So :func:`decode_png16` first checks everything libpng would reject, raising
:class:`PngError` (a ``ValueError``) instead:

* the signature; every chunk's length (within the file, < 2**31), type (ASCII letters) and CRC-32; IHDR
  first and IEND present;
* IHDR: 13 bytes, width and height in 1..1,000,000 (libpng's default user limit), bit depth 16, colour
  type 0/2/4/6, compression and filter method 0, interlace method 0 or 1 (Adam7);
* the concatenated IDAT stream inflates (``zlib.decompressobj``, Adler-32 checked, output capped so a bomb
  cannot inflate further) to **exactly** the size the header implies (per Adam7 pass when interlaced), the
  stream ends there with no trailing bytes, and every row's filter byte is 0..4.

torchvision then decodes a *rebuilt* minimal PNG -- IHDR, one IDAT with the validated stream, IEND -- so no
ancillary or unknown chunk (which libpng may also reject) ever reaches it. Unfiltering, the only work left,
cannot fail on validated data.

Why not decode entirely in numpy: the None/Sub/Up filters vectorise, but Average and Paeth depend on the
pixel to the left *and* the row above, so they run pixel by pixel along each row -- far too slow in Python
for 20-megapixel photos, and common in real files. Validating costs one extra inflate of the stream.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "PngError",
    "decode_png16",
    "encode_png16",
    "is_png16_color",
    "png_size",
    "validate_png16",
]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)
_CHANNELS = {colour: channels for channels, colour in _COLOR_TYPES.items()}
_MAX_SIDE = 1_000_000  # libpng's default png_set_user_limits width/height; beyond it libpng errors
_MAX_CHUNK = 2**31 - 1
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class PngError(ValueError):
    """A 16-bit PNG failed validation (the message says which check)."""


class _Header(NamedTuple):
    width: int
    height: int
    channels: int
    interlaced: bool


def is_png16_color(header: bytes) -> bool:
    """True when ``header`` (the first >= 26 bytes of a file) is a 16-bit RGB or RGBA PNG."""
    return (
        len(header) >= 26
        and header[:8] == _SIGNATURE
        and header[12:16] == b"IHDR"
        and header[24] == 16
        and header[25] in (2, 6)
    )


def png_size(header: bytes) -> tuple[int, int] | None:
    """(height, width) declared by a PNG's IHDR in ``header`` (the first >= 24 bytes of a file), or
    ``None`` when ``header`` is not a PNG signature followed by an IHDR chunk."""
    if len(header) < 24 or header[:8] != _SIGNATURE or header[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", header[16:24])
    return height, width


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk up to and including IEND, each length and CRC checked."""
    if data[:8] != _SIGNATURE:
        raise PngError("not a PNG signature")
    chunks, pos = [], 8
    while not chunks or chunks[-1][0] != b"IEND":
        if pos + 12 > len(data):
            raise PngError(f"truncated: chunk header at byte {pos} runs past the end (no IEND)")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if not kind.isalpha():  # bytes.isalpha: ASCII letters only
            raise PngError(f"invalid chunk type {kind!r} at byte {pos}")
        if length > _MAX_CHUNK or pos + 12 + length > len(data):
            raise PngError(f"{kind.decode()} chunk at byte {pos} declares {length} bytes past the end")
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + payload) != crc:
            raise PngError(f"CRC mismatch in {kind.decode()} chunk at byte {pos}")
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


def _parse_ihdr(payload: bytes) -> _Header:
    """Check the IHDR fields libpng checks; only 16-bit gray / gray+alpha / RGB / RGBA pass."""
    if len(payload) != 13:
        raise PngError(f"IHDR has {len(payload)} bytes, not 13")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", payload)
    if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
        raise PngError(f"width x height {width} x {height} outside 1..{_MAX_SIDE}")
    if depth != 16 or colour not in _CHANNELS:
        raise PngError(f"bit depth {depth} / colour type {colour} is not 16-bit gray, RGB or RGBA")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise PngError(f"invalid compression/filter/interlace method {compression}/{filtering}/{interlace}")
    return _Header(width, height, _CHANNELS[colour], interlace == 1)


def _passes(header: _Header) -> list[tuple[int, int]]:
    """(rows, bytes per row without the filter byte) of each non-empty pass (one pass unless Adam7)."""
    bpp = 2 * header.channels
    if not header.interlaced:
        return [(header.height, header.width * bpp)]
    passes = []
    for x0, y0, dx, dy in _ADAM7:
        cols = max(0, (header.width - x0 + dx - 1) // dx)
        rows = max(0, (header.height - y0 + dy - 1) // dy)
        if cols and rows:
            passes.append((rows, cols * bpp))
    return passes


def _inflate_exact(stream: bytes, size: int) -> bytes:
    """Inflate ``stream`` to exactly ``size`` bytes, refusing errors, short/long output, trailing data."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stream, size + 1)  # cap: a zlib bomb stops one byte past the expected size
    except zlib.error as error:
        raise PngError(f"IDAT stream is corrupt: {error}") from None
    if len(raw) != size:
        raise PngError(f"IDAT stream inflates to {'more' if len(raw) > size else len(raw)} bytes, not {size}")
    if not inflater.eof or inflater.unused_data:
        raise PngError("IDAT stream does not end where the image data ends")
    return raw


def _check_filters(raw: bytes, passes: list[tuple[int, int]]) -> None:
    """Every row's filter-type byte must be 0..4 (None, Sub, Up, Average, Paeth)."""
    data, start = np.frombuffer(raw, np.uint8), 0
    for rows, row_bytes in passes:
        filters = data[start : start + rows * (row_bytes + 1) : row_bytes + 1]
        if filters.size and int(filters.max()) > 4:
            row = int(np.argmax(filters > 4))
            raise PngError(f"row {row} has filter type {int(filters[row])} (valid: 0..4)")
        start += rows * (row_bytes + 1)


def validate_png16(data: bytes) -> tuple[bytes, bytes]:
    """Validate a whole 16-bit PNG file (see the module docstring); return (IHDR payload, IDAT stream).

    Raises :class:`PngError` naming the first failed check.
    """
    chunks = _chunks(data)
    if chunks[0][0] != b"IHDR":
        raise PngError(f"first chunk is {chunks[0][0].decode()}, not IHDR")
    header = _parse_ihdr(chunks[0][1])
    stream = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    if not stream:
        raise PngError("no IDAT data")
    passes = _passes(header)
    _check_filters(_inflate_exact(stream, sum(rows * (row_bytes + 1) for rows, row_bytes in passes)), passes)
    return chunks[0][1], stream


def decode_png16(path: str | Path) -> np.ndarray:
    """Decode a 16-bit PNG to a uint16 HxWxC array (C = 1..4): validated in Python, then decoded by
    torchvision's libpng decoder from a rebuilt minimal PNG. Raises :class:`PngError` for a bad file."""
    ihdr, stream = validate_png16(Path(path).read_bytes())
    import torch
    from torchvision.io import ImageReadMode, decode_png

    clean = _SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")
    image = decode_png(torch.frombuffer(bytearray(clean), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
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
