"""Restoration jobs and the FIFO queue that runs them one at a time.

A :class:`Job` holds one upload as it was sent (encoded bytes); :class:`JobQueue` runs jobs in
submission order on a single worker thread (the model is never run by two requests at once): when its
turn comes the upload is decoded in a child process (:class:`~mofme.apps.serve.uploads.Decoder`), then
restored with :func:`mofme.infer.restore.restore_image`, the tiled restoration ``mofme restore`` uses.
A forward hook on the model counts the tiles done (the progress) and the experts each tile's tokens
were routed to. Images are float32 (H, W, 3) in [0, 1]; results are 8-bit PNG bytes, in memory only.

What is held (:class:`~mofme.apps.serve.settings.ServeSettings`): at most ``max_queue`` jobs that are
arriving, waiting, running, or restored but not downloaded yet, so every accepted job's result can be
kept: a result stays until ``result_ttl_s`` after it finished, downloaded or not, except that of the
results already downloaded (and failed jobs) only the newest ``keep_results`` are kept.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from mofme.data.transforms import to_tensor
from mofme.infer.restore import model_tiling, restore_image
from mofme.infer.tiling import tile_windows

from .settings import ServeSettings
from .uploads import Decoder, UploadError, png_bytes

__all__ = ["DECODER", "Job", "JobQueue", "QueueFull", "count_tiles", "png_bytes", "routing_counts"]

TOP_EXPERTS = 3  # experts named per layer in a job's status
DECODER = Decoder()  # one decoder process for all the apps of this process: one decode at a time


class QueueFull(RuntimeError):
    """``ServeSettings.max_queue`` jobs are already arriving, waiting, running or awaiting download."""


class Stopped(RuntimeError):
    """The queue was closed while a job was restoring."""


def count_tiles(height: int, width: int, *, tile: int, overlap: int, multiple_of: int) -> int:
    """How many windows :func:`~mofme.infer.tiling.tiled_apply` runs on an H x W image."""
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
    """One upload. ``state``: queued -> running -> done | failed. ``data``: the upload's bytes until it
    is decoded; ``input_png`` from then on. ``width`` / ``height``: from the header, then the decoded
    (upright) image. ``collected``: its result was downloaded (or it failed): it may be dropped early.
    ``expert_counts``: (layers, experts) token assignments summed over the tiles."""

    name: str
    data: bytes | None
    width: int
    height: int
    tiles_total: int
    input_png: bytes | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    tiles_done: int = 0
    error: str | None = None
    restored_png: bytes | None = None
    expert_counts: np.ndarray | None = None
    routing_png: bytes | None = None
    collected: bool = False
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
    """FIFO queue of :class:`Job` run by one worker thread (started on the first submit).

    An upload :meth:`reserve` s a place before its body is read (refused with :class:`QueueFull`),
    :meth:`submit` s its bytes, then :meth:`release` s the place, whether it was submitted or refused."""

    def __init__(
        self, *, model: nn.Module, settings: ServeSettings, workdir: Path, decoder: Decoder = DECODER
    ) -> None:
        self.model = model
        self.settings = settings
        self.workdir = workdir
        self.decoder = decoder
        self._experts = int(getattr(getattr(model, "config", None), "num_experts", 0) or 0)
        self._jobs: dict[str, Job] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._arriving = 0
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    def reserve(self) -> None:
        """Hold a place for an upload about to be read; :class:`QueueFull` when there is none."""
        with self._ready:
            self._prune()
            if self._closed:
                raise QueueFull("the server is stopping")
            held = self._arriving + sum(not job.collected for job in self._jobs.values())
            if held >= self.settings.max_queue:
                raise QueueFull(
                    f"{held} photos are already queued or waiting to be downloaded; try again in a minute"
                )
            self._arriving += 1

    def release(self) -> None:
        """Give back the place :meth:`reserve` held (once the upload was queued or refused)."""
        with self._ready:
            self._arriving -= 1

    def submit(self, *, name: str, data: bytes, width: int, height: int) -> Job:
        """Queue an upload (its place held by :meth:`reserve`); ``width`` x ``height`` from its header."""
        job = Job(name=name, data=data, width=width, height=height, tiles_total=self._tiles(height, width))
        with self._ready:
            if self._closed:
                raise QueueFull("the server is stopping")
            self._jobs[job.id] = job
            self._waiting.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="mofme-serve-worker", daemon=True)
                self._worker.start()
            self._ready.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._ready:
            self._prune()
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
                job.state, job.error, job.data = "failed", "the server stopped before restoring it", None
            self._waiting.clear()
            self._ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    def _tiles(self, height: int, width: int) -> int:
        plan = model_tiling(self.model, height, width, tile=self.settings.tile, overlap=self.settings.overlap)
        return count_tiles(height, width, tile=plan.tile, overlap=plan.overlap, multiple_of=plan.multiple_of)

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
                self._restore(job, self._decode(job))
            except UploadError as failure:  # the file: damaged, or it crashed the decoder process
                state, error = "failed", failure.message
            except Exception as failure:  # the server keeps serving: the job reports what went wrong
                state, error = "failed", f"restoration failed: {type(failure).__name__}: {failure}"
            job.data, job.finished, job.error, job.collected = (
                None,
                time.monotonic(),
                error,
                state == "failed",
            )
            job.state = state  # last: a client that sees the state sees the rest
            with self._ready:
                self._prune()

    def _decode(self, job: Job) -> np.ndarray:
        """The job's image, decoded in the decoder process; sets its preview and its upright size."""
        assert job.data is not None
        settings = self.settings
        image, job.input_png = self.decoder.decode(
            job.data,
            name=job.name,
            max_pixels=settings.max_pixels,
            workdir=self.workdir,
            stop=lambda: self._closed,
        )
        job.data = None
        height, width = image.shape[:2]
        job.tiles_total, job.width, job.height = self._tiles(height, width), width, height
        return image

    def _restore(self, job: Job, image: np.ndarray) -> None:
        counts: list[np.ndarray] = []

        def hook(module: nn.Module, args: tuple, output) -> None:
            if self._closed:
                raise Stopped("the server stopped while restoring it")
            job.tiles_done = min(job.tiles_done + int(args[0].shape[0]), job.tiles_total)
            for layer, layer_counts in enumerate(routing_counts(output, self._experts)):
                if layer == len(counts):
                    counts.append(np.zeros_like(layer_counts))
                counts[layer] += layer_counts

        tensor = to_tensor(image)
        del image
        handle = self.model.register_forward_hook(hook)
        try:
            s = self.settings
            restored = restore_image(
                self.model, tensor, tile=s.tile, overlap=s.overlap, batch_size=s.batch_size
            )
        finally:
            handle.remove()
        del tensor
        job.restored_png = png_bytes(restored.permute(1, 2, 0).numpy())
        job.tiles_done = job.tiles_total  # also when a fast path bypassed the hook
        job.expert_counts = np.stack(counts) if counts else None

    def _prune(self) -> None:
        """Drop (holding the lock) finished jobs older than ``result_ttl_s``, and the oldest collected
        ones beyond ``keep_results``."""
        now, settings = time.monotonic(), self.settings
        finished = [job for job in self._jobs.values() if job.finished is not None and job.state != "running"]
        expired = [job for job in finished if now - job.finished > settings.result_ttl_s]
        collected = [job for job in finished if job.collected and job not in expired]
        for job in expired + collected[: max(0, len(collected) - settings.keep_results)]:
            del self._jobs[job.id]
