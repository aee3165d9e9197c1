"""The FastAPI app of ``mofme serve``: a static page and a small JSON API.

    POST /api/jobs                 multipart field ``file``: 202 {id, state, queue_position, ...}
                                   or 4xx {"error": message} (not an image, truncated, too large ...)
    GET  /api/jobs/{id}            the job's status: state, queue_position, tiles_done / tiles_total
    GET  /api/jobs/{id}/input.png  the decoded upload (upright, 8-bit PNG)
    GET  /api/jobs/{id}/restored.png   the restored image at full resolution (8-bit PNG, attachment)
    GET  /api/jobs/{id}/routing.png    the experts the image used (one heatmap per routed layer)
    GET  /api/model                name and figures from the model card, and the upload limits

Every error answers ``{"error": message}``. Nothing a client sends becomes a server path: uploads stay
in memory but for a moment under the server's own temporary folder, under generated names.
"""

from __future__ import annotations

import re
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import torch
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from torch import nn

from .jobs import Job, JobQueue, QueueFull
from .settings import ServeSettings
from .uploads import UploadError, decode_upload, display_name, megapixels

__all__ = ["create_app"]

STATIC = Path(__file__).resolve().parent / "static"
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file
_PLOT_LOCK = threading.Lock()  # matplotlib's pyplot is not thread-safe


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _too_large(settings: ServeSettings, size: int | None = None) -> JSONResponse:
    sent = f" ({size:,} bytes sent)" if size else ""
    return _error(
        413,
        f"the file is larger than this server's upload limit of {settings.max_upload_bytes:,} bytes{sent} "
        "(mofme serve --max-upload-mb)",
    )


def _status(queue: JobQueue, job: Job) -> dict:
    base = f"/api/jobs/{job.id}"
    done = job.state == "done"
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "queue_position": queue.position(job),
        "tiles_done": job.tiles_done,
        "tiles_total": job.tiles_total,
        "width": job.width,
        "height": job.height,
        "error": job.error,
        "seconds": round(job.finished - job.started, 3) if done and job.started and job.finished else None,
        "routing": job.routing_summary() if done else None,
        "input_url": f"{base}/input.png",
        "restored_url": f"{base}/restored.png" if done else None,
        "routing_url": f"{base}/routing.png" if done and job.expert_counts is not None else None,
    }


def _download_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rsplit(".", 1)[0]).strip("._") or "photo"
    return f"{stem[:60]}-restored.png"


def _routing_png(job: Job, workdir: Path) -> bytes:
    """The routing heatmaps of :func:`mofme.apps.plots.routing_heatmaps`, one row: this image."""
    from mofme.apps.analysis import expert_usage
    from mofme.apps.plots import routing_heatmaps

    assert job.expert_counts is not None
    usage = expert_usage(job.expert_counts[:, None, :])
    path = workdir / f"routing-{job.id}.png"
    try:
        with _PLOT_LOCK:
            routing_heatmaps(usage, [job.name[:24]], path)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _upload_limit_middleware(app: FastAPI, settings: ServeSettings) -> None:
    @app.middleware("http")
    async def limit_uploads(request: Request, call_next):
        length = request.headers.get("content-length") or ""
        too_long = length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_SLACK
        if request.method == "POST" and too_long:
            return _too_large(settings, int(length))
        return await call_next(request)


def _find(queue: JobQueue, job_id: str) -> Job | JSONResponse:
    job = queue.get(job_id)
    return job if job is not None else _error(404, "no such job (finished jobs are kept for a while only)")


def _upload_route(app: FastAPI, queue: JobQueue, settings: ServeSettings, workdir: Path) -> None:
    @app.post("/api/jobs", status_code=202)
    def create_job(file: Annotated[UploadFile, File()]):
        name = display_name(file.filename)
        data = file.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            return _too_large(settings)
        try:
            image = decode_upload(data, name=name, max_pixels=settings.max_pixels, workdir=workdir)
            job = queue.submit(name=name, image=image)
        except UploadError as error:
            return _error(error.status, error.message)
        except QueueFull as error:
            return _error(503, str(error))
        return JSONResponse(_status(queue, job), status_code=202)


def _job_routes(app: FastAPI, queue: JobQueue, workdir: Path) -> None:
    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = _find(queue, job_id)
        return job if isinstance(job, JSONResponse) else _status(queue, job)

    @app.get("/api/jobs/{job_id}/input.png")
    def job_input(job_id: str):
        job = _find(queue, job_id)
        return job if isinstance(job, JSONResponse) else Response(job.input_png, media_type="image/png")

    @app.get("/api/jobs/{job_id}/restored.png")
    def job_restored(job_id: str):
        job = _find(queue, job_id)
        if isinstance(job, JSONResponse):
            return job
        if job.restored_png is None:
            return _error(409, job.error or f"not restored yet ({job.state})")
        disposition = f'attachment; filename="{_download_name(job.name)}"'
        headers = {"Content-Disposition": disposition}
        return Response(job.restored_png, media_type="image/png", headers=headers)

    @app.get("/api/jobs/{job_id}/routing.png")
    def job_routing(job_id: str):
        job = _find(queue, job_id)
        if isinstance(job, JSONResponse):
            return job
        if job.expert_counts is None:
            return _error(409, "no routing recorded for this job (not restored yet, or a dense model)")
        if job.routing_png is None:
            job.routing_png = _routing_png(job, workdir)
        return Response(job.routing_png, media_type="image/png")


def create_app(
    *, model: nn.Module, settings: ServeSettings | None = None, info: dict | None = None
) -> FastAPI:
    """The app serving ``model`` (a restorer in eval mode, on its device) under ``settings``.

    ``info``: what ``/api/model`` shows about the model (:func:`mofme.apps.serve.card.model_info`).
    One worker thread runs the model, jobs wait in a FIFO queue; the temporary folder is removed and the
    worker stopped when the app shuts down.
    """
    settings = settings or ServeSettings()
    workdir = tempfile.TemporaryDirectory(prefix="mofme-serve-")
    queue = JobQueue(model=model, settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close()
        workdir.cleanup()

    app = FastAPI(title="mofme serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.queue, app.state.settings = queue, settings
    parameters = sum(p.numel() for p in model.parameters())
    model_page = {**(info or {"name": type(model).__name__, "parameters": parameters})}
    model_page["limits"] = settings.limits()
    model_page["limits_text"] = (
        f"up to {settings.max_upload_bytes / 1e6:.0f} MB and {megapixels(settings.max_pixels)} per photo"
    )
    _upload_limit_middleware(app, settings)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        return _error(422, "send one photo as the multipart form field 'file'")

    _upload_route(app, queue, settings, Path(workdir.name))
    _job_routes(app, queue, Path(workdir.name))

    @app.get("/api/model")
    def model_card():
        return model_page

    @app.get("/api/health")
    def health():
        return {"ok": True, "pending": queue.pending(), "torch_threads": torch.get_num_threads()}

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
