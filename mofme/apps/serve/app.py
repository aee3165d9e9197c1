"""The FastAPI app of ``mofme serve``: a static page and a small JSON API.

    POST /api/jobs                 multipart field ``file``: 202 {id, state, queue_position, ...}
                                   or 4xx {"error": message} (not an image, too large, a bomb ...)
    GET  /api/jobs/{id}            the job's status: state, queue_position, tiles_done / tiles_total,
                                   error (a file that turns out damaged when decoded: state "failed")
    GET  /api/jobs/{id}/input.png  the decoded upload (upright, 8-bit PNG), once its job started
    GET  /api/jobs/{id}/restored.png   the restored image at full resolution (8-bit PNG, attachment)
    GET  /api/jobs/{id}/routing.png    the experts the image used (one heatmap per routed layer)
    GET  /api/model                name and figures from the model card, and the upload limits

Every error answers ``{"error": message}``, FastAPI's own (404, 405, 422) included. Every request
passes :class:`~mofme.apps.serve.guard.Guard` (Host allow-list, Origin check, token beyond loopback).
The upload's size limit is enforced while its body streams in (chunked or not), its header is checked
at once (pixel limit, bombs) and its bytes wait in the queue encoded. Nothing a client sends becomes a
server path: uploads stay in memory but for a moment under the server's own temporary folder, under
generated names.
"""

from __future__ import annotations

import re
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive
from torch import nn

from .guard import LOOPBACK, Guard, is_loopback, new_token
from .jobs import Job, JobQueue, QueueFull
from .settings import ServeSettings
from .uploads import UploadError, display_name, megapixels, probe_upload

__all__ = ["create_app"]

STATIC = Path(__file__).resolve().parent / "static"
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file
_PLOT_LOCK = threading.Lock()  # matplotlib's pyplot is not thread-safe


SEND_A_FILE = "send one photo as the multipart form field 'file'"


class _TooLarge(Exception):
    """The request body passed the upload limit while streaming in."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


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
        "input_url": f"{base}/input.png" if job.input_png is not None else None,
        "restored_url": f"{base}/restored.png" if done else None,
        "routing_url": f"{base}/routing.png" if done and job.expert_counts is not None else None,
    }


def _download_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rsplit(".", 1)[0]).strip("._") or "photo"
    return f"{stem[:60]}-restored.png"


def _routing_png(job: Job, workdir: Path) -> bytes:
    """The routing heatmaps of :func:`mofme.apps.plots.routing_heatmaps`, one row: this image."""
    from mofme.apps.plots import routing_heatmaps
    from mofme.evaluate.routing import expert_usage

    assert job.expert_counts is not None
    usage = expert_usage(job.expert_counts[:, None, :])
    path = workdir / f"routing-{job.id}.png"
    try:
        with _PLOT_LOCK:
            routing_heatmaps(usage, [job.name[:24]], path)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _find(queue: JobQueue, job_id: str) -> Job | JSONResponse:
    job = queue.get(job_id)
    return job if job is not None else _error(404, "no such job (finished jobs are kept for a while only)")


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` raising :class:`_TooLarge` as soon as more than ``limit`` body bytes came in."""
    total = 0

    async def receive_limited() -> Message:
        nonlocal total
        message = await receive()
        total += len(message.get("body", b""))
        if total > limit:
            raise _TooLarge(total)
        return message

    return receive_limited


async def _read_upload(request: Request, limit: int) -> tuple[str, bytes]:
    """The name and bytes of the multipart field ``file``, parsed as the body streams in (python-multipart
    through Starlette): :class:`_TooLarge` past ``limit`` (plus the multipart slack), never later."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError(SEND_A_FILE, status=422)
    body = Request(request.scope, _limited(request.receive, limit + MULTIPART_SLACK))
    form = await body.form(max_files=1, max_fields=16)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise UploadError(SEND_A_FILE, status=422)
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise _TooLarge(len(data))
        return display_name(file.filename), data
    finally:
        await form.close()


def _upload_route(app: FastAPI, queue: JobQueue, settings: ServeSettings) -> None:
    async def accept(request: Request) -> Job:
        name, data = await _read_upload(request, settings.max_upload_bytes)
        width, height = await run_in_threadpool(
            lambda: probe_upload(data, name=name, max_pixels=settings.max_pixels)
        )
        return queue.submit(name=name, data=data, width=width, height=height)

    @app.post("/api/jobs", status_code=202)
    async def create_job(request: Request):
        try:
            queue.reserve()  # before reading the body: a full queue refuses at once
        except QueueFull as error:
            return _error(503, str(error))
        try:
            job = await accept(request)
        except _TooLarge as error:
            return _too_large(settings, error.size)
        except UploadError as error:
            return _error(error.status, error.message)
        except QueueFull as error:
            return _error(503, str(error))
        finally:
            queue.release()
        return JSONResponse(_status(queue, job), status_code=202)


def _job_routes(app: FastAPI, queue: JobQueue, workdir: Path) -> None:
    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = _find(queue, job_id)
        if isinstance(job, JSONResponse):
            return job
        return _status(queue, job)

    @app.get("/api/jobs/{job_id}/input.png")
    def job_input(job_id: str):
        job = _find(queue, job_id)
        if isinstance(job, JSONResponse):
            return job
        if job.input_png is None:
            return _error(409, job.error or f"not decoded yet ({job.state})")
        return Response(job.input_png, media_type="image/png")

    @app.get("/api/jobs/{job_id}/restored.png")
    def job_restored(job_id: str):
        job = _find(queue, job_id)
        if isinstance(job, JSONResponse):
            return job
        if job.restored_png is None:
            return _error(409, job.error or f"not restored yet ({job.state})")
        job.collected = True  # downloaded: may be dropped before its time if results pile up
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


def _error_handlers(app: FastAPI) -> None:
    """``{"error": message}`` for FastAPI's own errors too: unknown routes, wrong methods, validation."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg', '')}"
            for problem in error.errors()
        )
        return _error(422, f"invalid request: {problems}")

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        return _error(500, f"internal error: {type(error).__name__}")


def _model_page(model: nn.Module, settings: ServeSettings, info: dict | None) -> dict:
    parameters = sum(p.numel() for p in model.parameters())
    page = {**(info or {"name": type(model).__name__, "parameters": parameters})}
    page["limits"] = settings.limits()
    page["limits_text"] = (
        f"up to {settings.max_upload_bytes / 1e6:.0f} MB and {megapixels(settings.max_pixels)} per photo"
    )
    return page


def create_app(
    *,
    model: nn.Module,
    settings: ServeSettings | None = None,
    info: dict | None = None,
    host: str = LOOPBACK,
    token: str | None = None,
) -> FastAPI:
    """The app serving ``model`` (a restorer in eval mode, on its device) under ``settings``.

    ``info``: what ``/api/model`` shows about the model (:func:`mofme.apps.serve.card.model_info`).
    ``host``: the address the server binds (the Host allow-list); ``token``: required from every
    request, made up (``app.state.token``) when ``host`` is not a loopback address and none is given.
    One worker thread runs the model, jobs wait in a FIFO queue; the temporary folder is removed and the
    worker stopped when the app shuts down.
    """
    settings = settings or ServeSettings()
    token = token or (None if is_loopback(host) else new_token())
    workdir = tempfile.TemporaryDirectory(prefix="mofme-serve-")
    queue = JobQueue(model=model, settings=settings, workdir=Path(workdir.name))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        decoder = queue.decoder  # the decoder process imports torch: start it before the first upload
        decoder.acquire()
        yield
        queue.close()
        decoder.release()  # the last app to stop ends the decoder process
        workdir.cleanup()

    app = FastAPI(title="mofme serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue, app.state.settings, app.state.token = queue, settings, token
    slack = MULTIPART_SLACK
    app.add_middleware(Guard, bind=host, token=token, max_upload=settings.max_upload_bytes, slack=slack)
    _error_handlers(app)
    _upload_route(app, queue, settings)
    _job_routes(app, queue, Path(workdir.name))
    model_page = _model_page(model, settings, info)

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
