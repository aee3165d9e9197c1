"""Uploaded bytes -> an image, or an :class:`UploadError` with a message a person can act on.

Two steps, in two places:

* :func:`probe_upload`, in the server process when the upload arrives: the size from the file's header
  only (Pillow's lazy open restricted to the formats whose headers it parses in Python, WebP's header
  read here, TIFF's by tifffile), so that files that are not images and decompression bombs are refused
  at once, and no native decoder ever runs in the server process;
* :func:`decode_upload`, when the job runs, in a child process (:class:`Decoder`): the bytes are written
  under the server's own temporary folder with a generated name, read with
  :func:`mofme.data.io.read_image` (every format ``mofme restore`` reads, EXIF orientation applied) and
  deleted. A decoder that crashes (a damaged 16-bit PNG can make libpng segfault) or hangs costs that
  one job: the child is replaced and the job answers an error.

The client's file name is a label only.
"""

from __future__ import annotations

import io
import multiprocessing
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mofme.data.io import ImageReadError, read_image

__all__ = [
    "BOMB_PIXELS_PER_BYTE",
    "DECODE_TIMEOUT_S",
    "Decoder",
    "UploadError",
    "decode_to_file",
    "decode_upload",
    "display_name",
    "megapixels",
    "png_bytes",
    "probe_upload",
]

BOMB_PIXELS_PER_BYTE = 1000  # real photos hold < 100 pixels per byte; far more means a decompression bomb
DECODE_TIMEOUT_S = 300.0  # a decode taking longer is a hung decoder: the child is killed
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_FORMATS = "PNG, JPEG, BMP, TIFF or WebP"
_HEADER_FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF"]  # Pillow parses these headers in Python
_HEADER_LOCK = threading.Lock()  # header reads lift Pillow's limit (a process-wide setting) for a moment


class UploadError(ValueError):
    """A refused upload: ``message`` for the person, ``status`` the HTTP status (400, 413)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __reduce__(self):  # raised in the decoder process, re-raised in the server
        return (_upload_error, (self.message, self.status))


def _upload_error(message: str, status: int) -> UploadError:
    return UploadError(message, status=status)


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def display_name(name: str | None) -> str:
    """A client's file name as a short label: its last path part, printable characters, at most 80."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[:80] or "upload"


def png_bytes(image: np.ndarray) -> bytes:
    """Float (H, W, 3) in [0, 1] -> 8-bit RGB PNG bytes (fast compression)."""
    data = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


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


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its first chunk's header (VP8, VP8L or VP8X)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """A TIFF's first page size through tifffile (its IFD parser is Python); None if it cannot."""
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except Exception:
        return None


def _header_size(data: bytes, name: str) -> tuple[int, int]:
    """``(width, height)`` from the header, nothing decoded, no native decoder run."""
    if (size := _webp_size(data)) is not None:
        return size
    with _HEADER_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the size first, then our message
        try:
            with Image.open(io.BytesIO(data), formats=_HEADER_FORMATS) as image:
                return image.size
        except UnidentifiedImageError as error:
            if data[:4] in _TIFF_MAGIC and (size := _tiff_size(data)) is not None:
                return size
            raise UploadError(f"{name} is not an image this server reads ({_FORMATS})") from error
        except Exception as error:  # a header Pillow chokes on
            raise _read_error(name, f"{type(error).__name__}: {error}") from error
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def probe_upload(data: bytes, *, name: str, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` declared by an upload's header (before any EXIF rotation), or
    :class:`UploadError`: empty, not an image, more pixels than ``max_pixels`` (413)."""
    if not data:
        raise UploadError(f"{name} is empty")
    width, height = _header_size(data, name)
    if width * height > max_pixels:
        raise _too_many_pixels(name, width, height, len(data), max_pixels)
    return width, height


def _read_error(name: str, reason: str) -> UploadError:
    if "DecompressionBomb" in reason:
        return UploadError(f"{name}: refused as a decompression bomb ({reason})", status=413)
    if "truncated" in reason.lower() or "broken data stream" in reason:
        return UploadError(f"{name} is truncated or damaged (an incomplete download?): {reason}")
    return UploadError(f"{name} cannot be decoded: {reason}")


def decode_upload(data: bytes, *, name: str, max_pixels: int, workdir: Path) -> np.ndarray:
    """Float32 (H, W, 3) RGB in [0, 1] of an uploaded file (upright), or :class:`UploadError`.

    Runs the decoders in this process: the server calls it through :class:`Decoder`. ``name`` (already
    a :func:`display_name`) only labels messages; ``workdir`` is a server-made folder.
    """
    probe_upload(data, name=name, max_pixels=max_pixels)
    path = workdir / f"upload-{uuid.uuid4().hex}"
    try:
        path.write_bytes(data)
        image = read_image(path, max_pixels=max_pixels)  # the io size gate, again from the header
    except ImageReadError as error:
        raise _read_error(name, error.reason) from error  # not str(error): it names the temporary file
    finally:
        path.unlink(missing_ok=True)
    height, width = image.shape[:2]
    if height * width > max_pixels:  # a header that lied
        raise _too_many_pixels(name, width, height, len(data), max_pixels)
    return image


def decode_to_file(data: bytes, name: str, max_pixels: int, workdir: str, out: str) -> bytes:
    """In the decoder process: decode, save the float32 image as ``out`` (.npy), return its 8-bit PNG."""
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's bomb check agrees with the server's limit
    image = decode_upload(data, name=name, max_pixels=max_pixels, workdir=Path(workdir))
    np.save(out, image)
    return png_bytes(image)


class Decoder:
    """Decodes uploads one at a time in a child process (spawned by :meth:`acquire` or the first decode;
    replaced after a crash, or after a decode hangs more than ``timeout`` seconds: the child's start
    does not count). The decoded image comes back through a ``.npy`` file in the caller's folder, read
    once: the server holds one copy of it. ``function`` (tests): what the child runs, a module-level
    function with the arguments of :func:`decode_to_file`."""

    def __init__(self, *, timeout: float = DECODE_TIMEOUT_S, function: Callable = decode_to_file) -> None:
        self.timeout = timeout
        self.function = function
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future | None = None
        self._pool_lock = threading.Lock()  # held a moment: to make or replace the child
        self._decode_lock = threading.Lock()  # held for a decode: one at a time
        self._users = 0  # apps between acquire() and release()

    def acquire(self) -> None:
        """An app starts using the decoder (its lifespan's start): spawn the child in the background
        (importing torch there takes seconds) if none runs."""
        with self._pool_lock:
            self._users += 1
        self._ready_pool()

    def release(self) -> None:
        """An app stops using the decoder: the last one to stop ends the child process."""
        with self._pool_lock:
            self._users = max(0, self._users - 1)
            last = self._users == 0
        if last:
            self.close()

    @property
    def process_ids(self) -> list[int]:
        """The running child's process id (none before the first start and after :meth:`close`)."""
        pool = self._pool
        return [] if pool is None else sorted((getattr(pool, "_processes", None) or {}).keys())

    def decode(
        self,
        data: bytes,
        *,
        name: str,
        max_pixels: int,
        workdir: Path,
        stop: Callable[[], bool] = lambda: False,
    ) -> tuple[np.ndarray, bytes]:
        """``(image, preview PNG)`` of an upload, or :class:`UploadError` (a crash or a hang of the
        decoder included; also when ``stop()`` turns true while waiting: the server is stopping)."""
        out = workdir / f"decoded-{uuid.uuid4().hex}.npy"
        with self._decode_lock:
            pool, started = self._ready_pool()
            try:
                _wait(started, None, stop, name)
                future = pool.submit(self.function, data, name, max_pixels, str(workdir), str(out))
                preview = _wait(future, self.timeout, stop, name)
                return np.load(out), preview
            except BrokenProcessPool as error:
                self._replace(pool, kill=False)
                raise UploadError(f"{name} crashed the image decoder (a damaged file?)") from error
            except FutureTimeout as error:
                self._replace(pool, kill=True)
                raise UploadError(f"{name} took over {self.timeout:.0f} s to decode; gave up") from error
            finally:
                out.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the child process (a later :meth:`decode` starts a new one)."""
        self._replace(self._pool, kill=True)

    def _ready_pool(self) -> tuple[ProcessPoolExecutor, Future]:
        with self._pool_lock:
            if self._pool is None or self._started is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
                self._started = self._pool.submit(int)  # spawns the child; done once it runs
            return self._pool, self._started

    def _replace(self, pool: ProcessPoolExecutor | None, *, kill: bool) -> None:
        with self._pool_lock:
            if pool is None or pool is not self._pool:
                return
            self._pool = self._started = None
        processes = list((getattr(pool, "_processes", None) or {}).values())
        if kill:  # no public API stops a running task; the executor then reports itself broken
            for process in processes:
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        if kill:
            for process in processes:  # reaped: no zombie left behind
                process.join(5.0)


def _wait(future: Future, timeout: float | None, stop: Callable[[], bool], name: str):
    """``future.result()`` within ``timeout`` (:class:`FutureTimeout`), or :class:`UploadError` as soon
    as ``stop()`` is true."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return future.result(0.2)
        except FutureTimeout:
            if stop():
                raise UploadError(f"{name}: the server stopped before decoding it") from None
            if deadline is not None and time.monotonic() > deadline:
                raise
