"""What the server tests share: fast tiling, the Host a local browser sends, posting and waiting."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

FAST = {"tile": 128, "overlap": 16}  # 6 tiles for a 256 x 171 photo: the progress counts something
LOCAL = "http://localhost:7860"  # the Host a browser on this machine sends (TestClient's default is refused)


def post_photo(client: TestClient, data: bytes, name: str = "photo.png", **kwargs):
    return client.post("/api/jobs", files={"file": (name, data, "image/png")}, **kwargs)


def wait_job(client: TestClient, job_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout} s")
