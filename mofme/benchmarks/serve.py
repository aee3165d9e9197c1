"""Load check of ``mofme serve``: N concurrent clients on the loopback address, each uploading photos.

    python -m mofme.benchmarks.serve --clients 8 --uploads 5 --size 1000x1000 --json docs/results/serve_load.json

Starts ``mofme serve`` in a subprocess on a free loopback port, then each client thread uploads
``--uploads`` photos one after another (a built-in photo resized to ``--size`` with rendered rain or
haze, rendered before the clock starts), polls its job and downloads the restored PNG. A request is
answered correctly when the PNG has the input's size and is closer (PSNR) to the clean photo than the
upload was. Reports throughput, latency percentiles (upload to download), the server's restore time per
photo, the PSNR gain of the answers over the uploads and the server process's peak resident memory (``VmHWM``). Exit status 1 if any request was lost
or wrong. Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.

``--bad-every N``: every N-th upload is a bad file instead, in turn a fuzz mutant
(:func:`mofme.data.fuzz.mutants`), a PNG header declaring 100,000 x 100,000 pixels and an
8192 x 8192 float16 TIFF of a few hundred KB (decompression bombs). A bad upload is answered
correctly when the server refuses it (HTTP 4xx) or its job ends (done or failed, never lost), and
never with a 5xx; the server must still answer ``/api/health`` at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["bad_uploads", "main", "resized_test_photo", "run_load", "upload", "wait_result"]

HOST = "127.0.0.1"
WEATHERS = ("rain", "haze")  # the shipped model's clear gains: a correct answer is measurable


def upload(url: str, data: bytes, *, name: str, timeout: float = 120.0) -> dict:
    """POST one file as the multipart field ``file``; the job's status (HTTP errors raise)."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    request = urllib.request.Request(f"{url}/api/jobs", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def wait_result(url: str, job_id: str, *, timeout: float = 600.0, poll: float = 0.1) -> tuple[dict, bytes]:
    """Poll a job until it is done or failed; ``(status, restored PNG bytes or b"")``."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{url}/api/jobs/{job_id}", timeout=60) as response:
            status = json.load(response)
        if status["state"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(poll)
    if status["state"] != "done":
        return status, b""
    with urllib.request.urlopen(f"{url}{status['restored_url']}", timeout=60) as response:
        return status, response.read()


def _psnr(image: np.ndarray, clean: np.ndarray) -> float:
    from mofme.data.transforms import to_tensor
    from mofme.metrics import psnr

    return float(psnr(to_tensor(image)[None], to_tensor(clean)[None])[0])


def _decode(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def resized_test_photo(size: tuple[int, int]) -> np.ndarray:
    """The built-in test photo ``china`` resized (bicubic) to ``size`` (width, height), uint8 (H, W, 3)."""
    from PIL import Image

    from mofme.data import builtin_photos

    native = dict(builtin_photos("test", long_side=None))["china"]
    photo = Image.fromarray((native * 255 + 0.5).astype(np.uint8)).resize(size, Image.BICUBIC)
    return np.asarray(photo)


def _photos(count: int, size: tuple[int, int]) -> list[tuple[np.ndarray, bytes, float]]:
    """``count`` (clean, degraded PNG bytes, PSNR of the upload) at ``size`` (width, height)."""
    from mofme.apps.serve.jobs import png_bytes
    from mofme.data import render_weather

    clean = resized_test_photo(size).astype(np.float32) / 255
    photos = []
    for k in range(count):
        degraded = render_weather(clean, WEATHERS[k % len(WEATHERS)], severity=2, seed=k).degraded
        data = png_bytes(degraded)
        photos.append((clean, data, _psnr(_decode(data), clean)))
    return photos


def _png_bomb() -> bytes:
    """A PNG whose header declares 100,000 x 100,000 pixels (a few hundred bytes of file)."""
    import struct
    import zlib

    from mofme.apps.serve.jobs import png_bytes

    data = bytearray(png_bytes(np.zeros((8, 8, 3), np.float32)))
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # its CRC over type + fields
    return bytes(data)


def _tiff_bomb() -> bytes:
    """An 8192 x 8192 float16 TIFF, zlib-compressed zeros: a few hundred KB, 400 MB decoded."""
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((8192, 8192), np.float16), compression="zlib")
    return buffer.getvalue()


def bad_uploads(count: int, *, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` bad files ``(name, bytes)``: a fuzz mutant, a PNG bomb and a TIFF bomb in turn."""
    from mofme.data.fuzz import mutants

    bombs = [("bomb.png", _png_bomb()), ("bomb.tif", _tiff_bomb())] if count > 1 else []
    files = []
    for k, mutant in enumerate(mutants(seed, count)):
        if k % 3 and bombs:
            files.append(bombs[k % 3 - 1])
        else:
            files.append((f"mutant-{k}{mutant.suffix}", mutant.data))
    return files


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _start_server(port: int, options: Sequence[str], *, timeout: float) -> tuple[subprocess.Popen, dict]:
    """``mofme serve`` on ``127.0.0.1:port`` and its ``/api/health``, once it answers."""
    command = [sys.executable, "-m", "mofme", "serve", "--host", HOST, "--port", str(port), *options]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mofme serve exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/api/health", timeout=5) as response:
                return server, json.load(response)
        except OSError:
            time.sleep(0.25)
    server.terminate()
    raise RuntimeError(f"mofme serve did not answer within {timeout:.0f} s")


def _peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process (Linux ``VmHWM``), MB; None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _bad_round_trip(url: str, name: str, data: bytes, record: dict) -> None:
    """Send one bad file; correct when refused with a 4xx or when its job ends (never a 5xx)."""
    record["bad"] = name
    try:
        status, _ = wait_result(url, upload(url, data, name=name)["id"])
        record["state"] = status["state"]
        record["correct"] = status["state"] in ("done", "failed")
    except urllib.error.HTTPError as error:
        record["http_status"] = error.code
        record["correct"] = 400 <= error.code < 500


def _client(url: str, photos: list, uploads: int, client: int, records: list, lock: threading.Lock) -> None:
    """One client: ``uploads`` round trips, one after another; appends a record per request.
    ``photos`` items are (clean, data, PSNR) photos, or (name, data) bad files."""
    for k in range(uploads):
        item = photos[(client * uploads + k) % len(photos)]
        record: dict = {"client": client, "upload": k, "correct": False}
        start = time.perf_counter()
        if len(item) == 2:
            _bad_round_trip(url, *item, record)
            record["latency_s"] = time.perf_counter() - start
            with lock:
                records.append(record)
            continue
        clean, data, before = item
        try:
            status, png = wait_result(url, upload(url, data, name=f"client{client}-{k}.png")["id"])
            record["latency_s"] = time.perf_counter() - start
            record["restore_s"], record["state"] = status.get("seconds"), status["state"]
            if png:
                restored = _decode(png)
                record["psnr_gain_db"] = round(_psnr(restored, clean) - before, 3)
                record["correct"] = restored.shape == clean.shape and record["psnr_gain_db"] > 0
            else:
                record["error"] = status.get("error")
        except Exception as error:  # a lost request is a result, not a crash
            record["error"] = f"{type(error).__name__}: {error}"
        with lock:
            records.append(record)


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p90 = np.percentile(values, [50, 90])
    summary = {"min": min(values), "p50": float(p50), "p90": float(p90), "max": max(values)}
    return {key: round(value, 3) for key, value in summary.items()}


def _upload_list(clients: int, uploads: int, size: tuple[int, int], bad_every: int) -> list:
    """What the clients send, indexed by client * uploads + k: photos, every ``bad_every``-th a bad file."""
    total = clients * uploads
    photos = _photos(min(total, 4), size)
    bad = total // bad_every if bad_every else 0
    bad_files = iter(bad_uploads(bad))
    return [
        next(bad_files) if bad_every and (i + 1) % bad_every == 0 else photos[i % len(photos)]
        for i in range(total)
    ]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=30) as response:
            return bool(json.load(response).get("ok"))
    except OSError:
        return False


def run_load(
    *, clients: int, uploads: int, size: tuple[int, int], server_options: Sequence[str], bad_every: int = 0
) -> dict:
    """Start a server, run the clients, stop the server; the report (see the module docstring)."""
    photos = _upload_list(clients, uploads, size, bad_every)
    port = _free_port()
    load_before = os.getloadavg()
    server, health = _start_server(port, server_options, timeout=300)
    records: list[dict] = []
    lock = threading.Lock()
    try:
        url = f"http://{HOST}:{port}"
        threads = [
            threading.Thread(target=_client, args=(url, photos, uploads, c, records, lock))
            for c in range(clients)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        peak = _peak_rss_mb(server.pid)
        healthy = _healthy(url)
    finally:
        server.terminate()
        server.wait(60)
    answered = [r for r in records if "latency_s" in r]
    good = [r for r in answered if "bad" not in r]
    return {
        "clients": clients,
        "uploads_per_client": uploads,
        "size": f"{size[0]}x{size[1]}",
        "server_options": list(server_options),
        "server_torch_threads": health.get("torch_threads"),
        "requests": clients * uploads,
        "answered": len(answered),
        "correct": sum(r["correct"] for r in records),
        "bad_uploads": sum("bad" in r for r in records),
        "bad_refused_4xx": sum("http_status" in r and r["correct"] for r in records),
        "http_5xx": sum(r.get("http_status", 0) >= 500 for r in records),
        "server_healthy_after": healthy,
        "wall_s": round(wall, 3),
        "photos_per_minute": round(60 * len(answered) / wall, 2),
        "latency_s": _percentiles([r["latency_s"] for r in good]),
        "restore_s": _percentiles([r["restore_s"] for r in good if r.get("restore_s") is not None]),
        "psnr_gain_db": _percentiles([r["psnr_gain_db"] for r in good if "psnr_gain_db" in r]),
        "server_peak_rss_mb": None if peak is None else round(peak, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "failures": [r for r in records if not r["correct"]],
    }


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    from .timing import machine

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=5, help="uploads per client, one after another")
    parser.add_argument("--size", default="1000x1000", help="WIDTHxHEIGHT of every photo")
    parser.add_argument("--checkpoint", default=None, help="served model (default: the shipped weights)")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--bad-every", type=int, default=0, help="every N-th upload is a bad file (0: none)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    options = []
    for flag in ("checkpoint", "tile", "overlap"):
        if getattr(args, flag) is not None:
            options += [f"--{flag}", str(getattr(args, flag))]
    report = run_load(
        clients=args.clients,
        uploads=args.uploads,
        size=(width, height),
        server_options=options,
        bad_every=args.bad_every,
    )
    report = {"machine": machine(), **report}
    lat = report["latency_s"] or {}
    print(
        f"{report['correct']}/{report['requests']} correct, {report['answered']} answered in "
        f"{report['wall_s']:.1f} s ({report['photos_per_minute']} photos/min); latency p50 {lat.get('p50')} s, "
        f"p90 {lat.get('p90')} s, max {lat.get('max')} s; server peak memory {report['server_peak_rss_mb']} MB"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if report["bad_uploads"]:
        print(
            f"bad files: {report['bad_uploads']}, refused with 4xx: {report['bad_refused_4xx']}, "
            f"5xx: {report['http_5xx']}; server healthy after: {report['server_healthy_after']}"
        )
    ok = report["correct"] == report["requests"] and report["server_healthy_after"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
