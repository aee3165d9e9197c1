"""Mutation fuzzer for :func:`mofme.data.io.read_image`: every input must give an image or an error.

Small valid seed images of every supported format and bit depth (PNG 8-bit RGB/RGBA/gray, PNG 16-bit
RGB/RGBA/gray, JPEG, TIFF 8/16-bit/float16/float32 and zlib-compressed, Pillow LZW TIFF, BMP, WebP) are
mutated by truncation, random byte flips, corruption of one PNG chunk (CRC recomputed) / JPEG segment /
byte span, random bytes behind a valid magic header, and header field mutations (huge or zero width and
height, bit depth, samples ...). Each mutant is written to a file and read **in process**: the outcome
must be a float32 (H, W, 3) image in [0, 1] or an ``ImageReadError``; anything else is a bug, and a
segfault kills the run (``faulthandler`` prints where; the input is left on disk).

    python -m mofme.data.fuzz --count 100000 --seed 0      # the long run; CI runs 2,000 in-process
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import logging
import struct
import tempfile
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ._png16 import encode_png16
from .io import DEFAULT_MAX_PIXELS, ImageReadError, read_image

__all__ = ["Mutant", "check_image", "fuzz", "main", "mutants", "seed_files"]

_INTERESTING = (0, 1, 2, 255, 256, 4096, 65535, 65536, 1_000_001, 2**31 - 1, 2**32 - 1)


class Mutant(NamedTuple):
    """One fuzz input: ``name`` is ``"<seed>/<mutation>"``, ``suffix`` the file extension to use."""

    name: str
    suffix: str
    data: bytes


# ---------------------------------------------------------------------------------------------- seeds
def _pixels(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """Gradient plus noise in [0, 1], shape (H, W, C)."""
    ramp = np.linspace(0.0, 1.0, width)[None, :, None] * np.linspace(0.2, 1.0, height)[:, None, None]
    noise = rng.random((height, width, channels))
    return np.clip(0.7 * ramp + 0.3 * noise, 0.0, 1.0)


def _pil_bytes(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray, **options) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def seed_files(seed: int = 0) -> list[Mutant]:
    """Small valid images (16x24 .. 48x40) of every supported format and bit depth, as unmutated Mutants."""
    rng = np.random.default_rng(seed)
    rgb, rgba, gray = _pixels(rng, 16, 24, 3), _pixels(rng, 40, 48, 4), _pixels(rng, 24, 32, 1)[:, :, 0]
    u8, u16 = (
        (lambda a: np.round(a * 255).astype(np.uint8)),
        (lambda a: np.round(a * 65535).astype(np.uint16)),
    )
    seeds = {
        "png8_rgb.png": _pil_bytes(u8(rgb), "PNG"),
        "png8_rgba.png": _pil_bytes(u8(rgba), "PNG"),
        "png8_gray.png": _pil_bytes(u8(gray), "PNG"),
        "png16_rgb.png": encode_png16(u16(rgb)),
        "png16_rgba.png": encode_png16(u16(rgba)),
        "png16_gray.png": encode_png16(u16(gray)),
        "jpeg_rgb.jpg": _pil_bytes(u8(rgb), "JPEG", quality=90),
        "jpeg_gray.jpg": _pil_bytes(u8(gray), "JPEG"),
        "tiff8_rgb.tif": _tiff_bytes(u8(rgb), photometric="rgb"),
        "tiff16_rgba.tif": _tiff_bytes(u16(rgba), photometric="rgb", extrasamples=["unassalpha"]),
        "tiff16_gray_zlib.tif": _tiff_bytes(u16(gray), compression="zlib"),
        "tiff_float16.tif": _tiff_bytes(gray.astype(np.float16), compression="zlib"),
        "tiff_float32_rgb.tif": _tiff_bytes(rgb.astype(np.float32), photometric="rgb"),
        "tiff8_lzw_pillow.tif": _pil_bytes(u8(rgb), "TIFF", compression="tiff_lzw"),
        "bmp_rgb.bmp": _pil_bytes(u8(rgb), "BMP"),
        "webp_rgb.webp": _pil_bytes(u8(rgb), "WEBP", quality=80),
        "webp_rgba_lossless.webp": _pil_bytes(u8(rgba), "WEBP", lossless=True),
    }
    return [Mutant(name.split(".")[0], "." + name.split(".")[1], data) for name, data in seeds.items()]


# ---------------------------------------------------------------------------------------------- mutations
def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _flip(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for pos in rng.integers(0, len(out), int(rng.integers(1, 21))):
        out[pos] = int(rng.integers(0, 256))
    return bytes(out)


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, payload length) of each well-formed chunk of a PNG."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((pos, length))
        pos += 12 + length
    return chunks


def _fix_png_crc(out: bytearray, pos: int, length: int) -> None:
    end = pos + 8 + length
    if end + 4 <= len(out):
        out[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4 : end])))


def _corrupt_segment(data: bytes, rng: np.random.Generator) -> bytes:
    """PNG: overwrite part of one chunk's payload and recompute its CRC (so only deeper checks catch it);
    JPEG: overwrite bytes just after a random marker; other formats: overwrite a random span."""
    out, chunk = bytearray(data), None
    if data[:4] == b"\x89PNG" and (chunks := [c for c in _png_chunks(data) if c[1] > 0]):
        chunk = chunks[int(rng.integers(0, len(chunks)))]
        start = chunk[0] + 8 + int(rng.integers(0, chunk[1]))
    elif data[:2] == b"\xff\xd8" and (markers := [i for i in range(len(data) - 1) if data[i] == 0xFF]):
        start = markers[int(rng.integers(0, len(markers)))] + 1 + int(rng.integers(0, 8))
    else:
        start = int(rng.integers(0, len(data)))
    span = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    out[start : start + len(span)] = span[: max(0, len(out) - start)]
    if chunk is not None:
        _fix_png_crc(out, *chunk)
    return bytes(out)


def _random_body(data: bytes, rng: np.random.Generator) -> bytes:
    """The seed's first 4..32 bytes (a valid magic header) followed by 0..4096 random bytes."""
    head = data[: int(rng.integers(4, 33))]
    return head + rng.integers(0, 256, int(rng.integers(0, 4097)), dtype=np.uint8).tobytes()


def _tiff_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of the value of each SHORT/LONG tag in the first IFD of a TIFF."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        return []
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    fields = []
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(data) - 11), 12):
        kind = struct.unpack(order + "H", data[entry + 2 : entry + 4])[0]
        if kind in (3, 4):
            fields.append((entry + 8, order + ("H" if kind == 3 else "I")))
    return fields


def _header_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of the size/depth fields in a file's header, by format."""
    if data[:4] == b"\x89PNG":
        return [(16, ">I"), (20, ">I"), (24, ">B"), (25, ">B"), (26, ">B"), (27, ">B"), (28, ">B")]
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_fields(data)
    if data[:2] == b"BM":
        return [(18, "<i"), (22, "<i"), (26, "<H"), (28, "<H"), (30, "<I"), (14, "<I")]
    if data[:2] == b"\xff\xd8":
        sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        return [(sof + 5, ">H"), (sof + 7, ">H"), (sof + 9, ">B"), (sof + 4, ">B")] if sof > 0 else []
    if data[:4] == b"RIFF":  # VP8 frame / VP8L bit-packed size / RIFF length
        return [(26, "<H"), (28, "<H"), (21, "<I"), (4, "<I"), (24, "<I")]
    return []


def _mutate_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Set one header field (width, height, depth, ...) to an extreme or random value; for PNG, fix the
    IHDR CRC half of the time so the field itself is what is tested."""
    fields = [(pos, fmt) for pos, fmt in _header_fields(data) if pos + struct.calcsize(fmt) <= len(data)]
    if not fields:
        return _flip(data, rng)
    pos, fmt = fields[int(rng.integers(0, len(fields)))]
    size = struct.calcsize(fmt)
    value = int(rng.choice(_INTERESTING)) if rng.random() < 0.7 else int(rng.integers(0, 2**31))
    value &= (1 << (8 * size)) - 1
    if fmt[-1].islower():  # signed field: reinterpret the bits
        value -= (1 << (8 * size)) if value >= 1 << (8 * size - 1) else 0
    out = bytearray(data)
    out[pos : pos + size] = struct.pack(fmt, value)
    if data[:4] == b"\x89PNG" and rng.random() < 0.5:
        _fix_png_crc(out, 8, 13)
    return bytes(out)


MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "truncate": _truncate,
    "flip": _flip,
    "segment": _corrupt_segment,
    "random_body": _random_body,
    "header": _mutate_header,
}


def mutants(seed: int, count: int) -> Iterator[Mutant]:
    """``count`` deterministic mutants: seed files and mutations taken in turn, parameters drawn from a
    generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    seeds, kinds = seed_files(seed), list(MUTATIONS)
    for index in range(count):
        base = seeds[index % len(seeds)]
        kind = kinds[(index // len(seeds)) % len(kinds)]
        yield Mutant(f"{base.name}/{kind}", base.suffix, MUTATIONS[kind](base.data, rng))


# ---------------------------------------------------------------------------------------------- running
def check_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> str:
    """Read ``path`` in process: ``"image"`` or ``"ImageReadError"``; any other exception propagates, and
    an image that is not float32 (H, W, 3) in [0, 1] raises ``AssertionError``."""
    try:
        image = read_image(path, max_pixels=max_pixels)
    except ImageReadError:
        return "ImageReadError"
    ok = image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3 and image.size > 0
    if not (ok and np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
        raise AssertionError(f"bad image from {path}: {image.dtype} {image.shape}")
    return "image"


def fuzz(
    inputs: Iterator[Mutant], folder: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[Counter, list[tuple[str, BaseException]], tuple[float, str]]:
    """Write each input to ``folder`` and :func:`check_image` it. Returns (counts of (seed name, outcome)
    with outcome ``"image"``, ``"ImageReadError"`` or ``"other"``, failures as (name, exception), (slowest
    seconds, its name))."""
    counts: Counter = Counter()
    failures: list[tuple[str, BaseException]] = []
    slowest = (0.0, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about every odd tag; only outcomes matter here
        for mutant in inputs:
            path = folder / f"input{mutant.suffix}"
            path.write_bytes(mutant.data)
            start = time.perf_counter()
            try:
                counts[mutant.name.split("/")[0], check_image(path, max_pixels)] += 1
            except Exception as error:
                counts[mutant.name.split("/")[0], "other"] += 1
                failures.append((mutant.name, error))
            slowest = max(slowest, (time.perf_counter() - start, mutant.name))
    return counts, failures, slowest


def _print_counts(counts: Counter) -> None:
    """One line per seed file, then the totals, of the outcomes."""
    outcomes = ("image", "ImageReadError", "other")
    for seed in sorted({seed for seed, _ in counts}):
        print(f"  {seed:24s} " + "  ".join(f"{o} {counts[seed, o]:6d}" for o in outcomes))
    totals = Counter({o: sum(n for (_, k), n in counts.items() if k == o) for o in outcomes})
    print("total: " + ", ".join(f"{o}: {totals[o]}" for o in outcomes))


def main(argv: list[str] | None = None) -> int:
    """Command line: run the fuzzer, print outcome counts and timing; exit status 1 on any failure."""
    parser = argparse.ArgumentParser(prog="python -m mofme.data.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="number of mutants (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="read_image's limit")
    args = parser.parse_args(argv)
    faulthandler.enable()  # a segfault prints the Python stack; the input stays in the folder printed first
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="mofme-fuzz-") as folder:
        print(
            f"fuzzing read_image: {args.count} inputs, seed {args.seed}, inputs written to {folder}",
            flush=True,
        )
        start = time.perf_counter()
        counts, failures, slowest = fuzz(
            mutants(args.seed, args.count), Path(folder), max_pixels=args.max_pixels
        )
        elapsed = time.perf_counter() - start
    for name, error in failures[:20]:
        print(f"FAIL {name}: {type(error).__name__}: {error}")
    _print_counts(counts)
    print(
        f"{elapsed:.1f} s ({1000 * elapsed / max(1, args.count):.2f} ms per input), slowest {slowest[0]:.2f} s ({slowest[1]})"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
