"""Memory of ``mofme serve`` with a full queue of the largest photos it accepts.

    python -m mofme.benchmarks.serve_memory --size 5000x5000 --watch 240 --json docs/results/serve_memory.json

Starts ``mofme serve`` on a free loopback port, uploads ``--max-queue`` copies of one ``--size`` JPEG
(a built-in photo resized, with fine noise so that the file is large: 7.6 MB at 25 MP, quality
95) as fast as the server takes them, then samples the resident memory of the server process and of
its decoder child every half second for ``--watch`` seconds while the first jobs are decoded and
restored. Reports the peaks (``VmHWM``, and the sampled sum of both processes) next to the bound that
docs/restoration.md states (key ``readme_bound_...``: the README held it once), and the number of
uploads accepted.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .serve import HOST, _free_port, _peak_rss_mb, _start_server, resized_test_photo, upload

__all__ = ["main", "run_full_queue"]

MB = 1_000_000


def _large_jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    noise = np.random.default_rng(0).integers(-6, 7, (height, width, 3), dtype=np.int16)
    photo = resized_test_photo((width, height)).astype(np.int16)
    pixels = np.clip(photo + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _rss_mb(pid: int) -> float:
    """Resident memory now (``VmRSS``) of ``pid`` plus its child processes, MB (0 once gone)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]
    for process in pids:
        try:
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def run_full_queue(*, size: tuple[int, int], max_queue: int, watch_s: float) -> dict:
    """Fill the queue, watch memory for ``watch_s`` seconds; the report (module docstring)."""
    data = _large_jpeg(*size)
    port = _free_port()
    server, _ = _start_server(port, ["--max-queue", str(max_queue)], timeout=300)
    url, accepted, refused, samples = f"http://{HOST}:{port}", 0, 0, []
    try:
        start = time.perf_counter()
        for k in range(max_queue + 1):  # one more than the queue holds: the last is refused (503)
            try:
                upload(url, data, name=f"large-{k}.jpg")
                accepted += 1
            except OSError:
                refused += 1
        filled_s = time.perf_counter() - start
        while time.perf_counter() - start < watch_s:
            samples.append(_rss_mb(server.pid))
            time.sleep(0.5)
        peak = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    pixels = size[0] * size[1]
    bound = max_queue * len(data) + (max_queue + 16) * 6 * pixels + 5 * 12 * pixels + len(data) + 12 * pixels
    return {
        "size": f"{size[0]}x{size[1]}",
        "upload_mb": round(len(data) / MB, 2),
        "max_queue": max_queue,
        "accepted": accepted,
        "refused": refused,
        "queue_filled_s": round(filled_s, 2),
        "watched_s": watch_s,
        "server_peak_rss_mb": None if peak is None else round(peak, 1),
        "server_and_decoder_peak_sampled_mb": round(max(samples, default=0.0), 1),
        "readme_bound_mb_beyond_torch_and_model": round(bound / MB, 1),
    }


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    from .timing import machine

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="5000x5000", help="WIDTHxHEIGHT of the photo (default: 25 MP)")
    parser.add_argument("--max-queue", type=int, default=32)
    parser.add_argument("--watch", type=float, default=240.0, help="seconds of sampling after the uploads")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    report = {
        "machine": machine(),
        **run_full_queue(size=(width, height), max_queue=args.max_queue, watch_s=args.watch),
    }
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
