"""Restoration jobs and the FIFO queue that runs them one at a time.

A :class:`Job` holds one decoded upload; :class:`JobQueue` runs jobs in submission order on a single
worker thread (the model is never run by two requests at once) with
:func:`mofme.engine.restore.restore_image`, the tiled restoration ``mofme restore`` uses. A forward hook
on the model counts the tiles done (the progress) and the experts each tile's tokens were routed to.
Images are float32 (H, W, 3) in [0, 1]; results are kept as 8-bit PNG bytes, in memory only.
"""

from __future__ import annotations

import collections
import io
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from torch import nn

from mofme.data.transforms import to_tensor
from mofme.engine.restore import model_tiling, restore_image
from mofme.engine.tiling import tile_windows

from .settings import ServeSettings

__all__ = ["Job", "JobQueue", "QueueFull", "count_tiles", "png_bytes", "routing_counts"]

TOP_EXPERTS = 3  # experts named per layer in a job's status


class QueueFull(RuntimeError):
    """More jobs than ``ServeSettings.max_queue`` are waiting or running."""


class Stopped(RuntimeError):
    """The queue was closed while a job was restoring."""


def png_bytes(image: np.ndarray) -> bytes:
    """Float (H, W, 3) in [0, 1] -> 8-bit RGB PNG bytes (fast compression)."""
    data = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def count_tiles(height: int, width: int, *, tile: int, overlap: int, multiple_of: int) -> int:
    """How many windows :func:`~mofme.engine.tiling.tiled_apply` runs on an H x W image."""
    padded_h, padded_w = -(-height // multiple_of) * multiple_of, -(-width // multiple_of) * multiple_of
    return len(tile_windows(padded_h, padded_w, tile=tile, overlap=overlap))


def routing_counts(output, experts: int) -> list[np.ndarray]:
    """Per routed layer of a model output, the (experts,) counts of its token assignments (none for a
    model without ``config.num_experts``, ``experts`` = 0)."""
    counts = []
    if experts < 1:
        return counts
    for indices, _ in getattr(output, "routing", None) or []:
        if indices is not None:
            counts.append(np.bincount(indices.flatten().cpu().numpy(), minlength=experts)[:experts])
    return counts


@dataclass(eq=False)
class Job:
    """One upload. ``state``: queued -> running -> done | failed. ``expert_counts``: (layers, experts)
    token assignments summed over the tiles (overlaps counted in each tile)."""

    name: str
    image: np.ndarray | None
    input_png: bytes
    width: int
    height: int
    tiles_total: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    tiles_done: int = 0
    error: str | None = None
    restored_png: bytes | None = None
    expert_counts: np.ndarray | None = None
    routing_png: bytes | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None

    def routing_summary(self) -> dict | None:
        """Per layer, each expert's share of the assignments and the most used experts."""
        if self.expert_counts is None or not len(self.expert_counts):
            return None
        shares = self.expert_counts / np.maximum(self.expert_counts.sum(axis=1, keepdims=True), 1)
        top = [[[int(e), round(float(row[e]), 4)] for e in np.argsort(-row)[:TOP_EXPERTS]] for row in shares]
        return {"shares": np.round(shares, 4).tolist(), "top": top}


class JobQueue:
    """FIFO queue of :class:`Job` run by one worker thread (started on the first submit)."""

    def __init__(self, *, model: nn.Module, settings: ServeSettings) -> None:
        self.model = model
        self.settings = settings
        self._experts = int(getattr(getattr(model, "config", None), "num_experts", 0) or 0)
        self._jobs: dict[str, Job] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    def submit(self, *, name: str, image: np.ndarray) -> Job:
        """Queue a decoded image; raises :class:`QueueFull` when ``max_queue`` jobs are pending."""
        height, width = image.shape[:2]
        plan = model_tiling(self.model, height, width, tile=self.settings.tile, overlap=self.settings.overlap)
        tiles = count_tiles(height, width, tile=plan.tile, overlap=plan.overlap, multiple_of=plan.multiple_of)
        preview = png_bytes(image)
        job = Job(name=name, image=image, input_png=preview, width=width, height=height, tiles_total=tiles)
        with self._ready:
            if self._closed:
                raise QueueFull("the server is stopping")
            if self.pending() >= self.settings.max_queue:
                raise QueueFull(f"{self.pending()} photos are already queued; try again in a minute")
            self._jobs[job.id] = job
            self._waiting.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="mofme-serve-worker", daemon=True)
                self._worker.start()
            self._ready.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def pending(self) -> int:
        """Jobs queued or running."""
        return sum(job.state in ("queued", "running") for job in list(self._jobs.values()))

    def position(self, job: Job) -> int | None:
        """1-based place of a queued job among the waiting ones (1: next); None once it runs."""
        with self._ready:
            for place, waiting in enumerate(self._waiting, start=1):
                if waiting is job:
                    return place
        return None

    def close(self, *, timeout: float = 30.0) -> None:
        """Stop the worker: the running job stops at its next tile, queued jobs fail; waits for it."""
        with self._ready:
            self._closed = True
            for job in self._waiting:
                job.state, job.error = "failed", "the server stopped before restoring it"
            self._waiting.clear()
            self._ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    def _next(self) -> Job | None:
        with self._ready:
            while not self._waiting and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            job = self._waiting.popleft()
            job.state, job.started = "running", time.monotonic()
            return job

    def _run(self) -> None:
        while (job := self._next()) is not None:
            state, error = "done", None
            try:
                self._restore(job)
            except Exception as failure:  # the server keeps serving: the job reports what went wrong
                state, error = "failed", f"restoration failed: {type(failure).__name__}: {failure}"
            job.image, job.finished, job.error = None, time.monotonic(), error
            job.state = state  # last: a client that sees the state sees the rest
            self._prune()

    def _restore(self, job: Job) -> None:
        counts: list[np.ndarray] = []

        def hook(module: nn.Module, args: tuple, output) -> None:
            if self._closed:
                raise Stopped("the server stopped while restoring it")
            job.tiles_done = min(job.tiles_done + int(args[0].shape[0]), job.tiles_total)
            for layer, layer_counts in enumerate(routing_counts(output, self._experts)):
                if layer == len(counts):
                    counts.append(np.zeros_like(layer_counts))
                counts[layer] += layer_counts

        assert job.image is not None
        tensor = to_tensor(job.image)
        handle = self.model.register_forward_hook(hook)
        try:
            settings = self.settings
            restored = restore_image(
                self.model,
                tensor,
                tile=settings.tile,
                overlap=settings.overlap,
                batch_size=settings.batch_size,
            )
        finally:
            handle.remove()
        job.restored_png = png_bytes(restored.permute(1, 2, 0).numpy())
        job.tiles_done = job.tiles_total  # also when a fast path bypassed the hook
        job.expert_counts = np.stack(counts) if counts else None

    def _prune(self) -> None:
        """Drop the oldest finished jobs beyond ``keep_results``."""
        with self._ready:
            finished = [job for job in self._jobs.values() if job.state in ("done", "failed")]
            for job in finished[: max(0, len(finished) - self.settings.keep_results)]:
                del self._jobs[job.id]
