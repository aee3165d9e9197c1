"""The server as a local tool: who may call it (Host, Origin, token), what an upload may cost (size
while streaming, decoding in a child process), results kept for every accepted job, one error shape."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
import types
from urllib.parse import urlsplit

import numpy as np
from fastapi.testclient import TestClient

from mofme.apps.serve import ServeSettings, create_app, jobs, serve_in_thread
from mofme.apps.serve.guard import COOKIE, split_host
from mofme.apps.serve.server import page_address
from mofme.apps.serve.uploads import Decoder
from mofme.benchmarks.serve import upload, wait_result

from .client import FAST, LOCAL, post_photo, wait_job
from .photos import crash_or_decode, damaged_png16, encode, png_with_note, weather_photo

MB = 1_000_000


def _tiny(seed: int = 0) -> bytes:
    return encode(np.random.default_rng(seed).random((16, 24, 3)))


def test_only_requests_naming_this_machine_are_answered(serve):
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends ``Host: evil.example``."""
    for base in ("http://evil.example", "http://evil.example:7860", "http://192.168.1.5:7860"):
        refused = serve(base_url=base).get("/api/health")
        assert refused.status_code == 400, base
        assert "localhost only" in refused.json()["error"]
    for base in (LOCAL, "http://127.0.0.1:7860", "http://[::1]:7860", "http://localhost"):
        assert serve(base_url=base).get("/api/health").status_code == 200, base
    assert split_host("[::1]:7860") == ("::1", 7860) and split_host("localhost:x") == ("", None)


def test_a_post_from_another_web_site_is_refused_and_one_without_origin_is_fine(serve):
    client = serve()
    for origin in ("http://evil.example", "http://localhost:3000", "null", "file://", "http://localhost"):
        refused = post_photo(client, _tiny(), headers={"Origin": origin})
        assert refused.status_code == 403, origin
        assert refused.json() == {"error": "cross-site request refused (the Origin is not this server)"}
    assert post_photo(client, _tiny()).status_code == 202  # curl, scripts: no Origin
    assert post_photo(client, _tiny(), headers={"Origin": LOCAL}).status_code == 202  # the page itself
    assert post_photo(client, _tiny(), headers={"Origin": "http://127.0.0.1:7860"}).status_code == 202
    assert client.get("/api/model", headers={"Origin": "http://evil.example"}).status_code == 200  # GET


def test_beyond_loopback_every_request_needs_the_token(serve, shipped_model):
    client = serve(base_url="http://192.168.1.5:7860", host="0.0.0.0", token="s3cret-token")
    for path in ("/", "/api/model", "/static/app.js"):
        refused = client.get(path)
        assert refused.status_code == 401 and "token" in refused.json()["error"], path
        assert refused.headers["www-authenticate"] == "Bearer"
    assert post_photo(client, _tiny()).status_code == 401
    assert client.get("/api/model", params={"token": "wrong"}).status_code == 401
    assert client.get("/api/model", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    page = client.get("/", params={"token": "s3cret-token"})  # the printed address
    assert page.status_code == 200 and f"{COOKIE}=s3cret-token" in page.headers["set-cookie"]
    assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=Strict" in page.headers["set-cookie"]
    assert client.get("/static/app.js").status_code == 200  # the page's requests carry the cookie
    assert post_photo(client, _tiny(), headers={"Origin": "http://192.168.1.5:7860"}).status_code == 202
    client.cookies.clear()
    assert (
        serve(base_url="http://evil.example:7860", host="0.0.0.0", token="s3cret-token")
        .get("/api/model", headers={"Authorization": "Bearer s3cret-token"})
        .status_code
        == 400
    )  # the token does not lift the Host check

    lan = create_app(model=shipped_model, host="192.168.1.5")  # no token given: one is made up
    assert len(lan.state.token) >= 20
    assert TestClient(lan, base_url="http://192.168.1.5:7860").get("/api/model").status_code == 401
    assert create_app(model=shipped_model).state.token is None  # loopback: none needed
    assert page_address("127.0.0.1", 7860, None) == "http://localhost:7860/"
    assert page_address("192.168.1.5", 80, "abc") == "http://192.168.1.5:80/?token=abc"


def _send_chunked(url: str, *, total: int, chunk: int = 64 * 1024) -> tuple[int, bytes]:
    """POST a multipart upload of ``total`` bytes with ``Transfer-Encoding: chunked`` (no length),
    stopping as soon as the server answers; (bytes sent, the answer)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    head = (
        f"POST /api/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
    )
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    sent, answer = 0, b""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.encode())
        with contextlib.suppress(OSError):  # the server may close while we still send
            for body in [part] + [bytes(chunk)] * (total // chunk):
                if select.select([sock], [], [], 0)[0]:
                    break  # answered already
                sock.sendall(f"{len(body):x}\r\n".encode() + body + b"\r\n")
                sent += len(body)
        sock.settimeout(30)
        with contextlib.suppress(OSError):
            while b"}" not in answer and (data := sock.recv(65536)):
                answer += data
    return sent, answer


def test_a_chunked_upload_is_refused_as_soon_as_it_passes_the_limit(shipped_model):
    app = create_app(model=shipped_model, settings=ServeSettings(max_upload_bytes=100_000, **FAST))
    with serve_in_thread(app) as url:
        sent, answer = _send_chunked(url, total=2_000 * MB)  # 2 GB if the server read it all
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        assert b"upload limit of 100,000 bytes" in answer
        assert sent < 20 * MB, sent  # refused while streaming: the rest was never sent
        assert app.state.queue.pending() == 0
        accepted = upload(url, _tiny(), name="next.png")  # still serving: queued (or running already)
        assert wait_result(url, accepted["id"], timeout=120)[0]["state"] == "done"


def test_a_damaged_16bit_png_fails_its_job_and_the_server_goes_on(serve):
    client = serve()
    damaged = post_photo(client, damaged_png16(), name="sixteen.png")
    assert damaged.status_code == 202, damaged.text  # the header is fine
    status = wait_job(client, damaged.json()["id"])
    assert status["state"] == "failed" and status["error"].startswith("sixteen.png"), status
    good = post_photo(client, _tiny())
    assert wait_job(client, good.json()["id"])["state"] == "done"


def test_a_decoder_crash_or_hang_costs_one_job_never_the_server(serve):
    """Decoding runs in a child process: a segfault there (as libpng under torchvision can) or a hang
    fails that job only; the next upload is decoded by a fresh child."""
    client = serve()
    decoder = client.app.state.queue.decoder = Decoder(function=crash_or_decode)
    small = weather_photo()[1][:32, :48]
    try:
        crashed = wait_job(
            client, post_photo(client, png_with_note(small, "segfault"), name="bad.png").json()["id"]
        )
        assert crashed["state"] == "failed" and crashed["error"] == (
            "bad.png crashed the image decoder (a damaged file?)"
        )
        assert wait_job(client, post_photo(client, encode(small)).json()["id"])["state"] == "done"
        decoder.timeout = 2.0  # the child is up now: only the decode counts
        hung = wait_job(
            client, post_photo(client, png_with_note(small, "hang"), name="slow.png").json()["id"]
        )
        assert hung["state"] == "failed" and "took over 2 s to decode" in hung["error"]
        decoder.timeout = 120.0
        assert wait_job(client, post_photo(client, encode(small)).json()["id"])["state"] == "done"
    finally:
        decoder.close()


def test_every_job_of_a_burst_larger_than_the_old_result_cap_stays_fetchable(serve):
    client = serve(keep_results=16)
    ids = [post_photo(client, _tiny(seed)).json()["id"] for seed in range(20)]  # the queue holds 32
    for job_id in ids:
        assert wait_job(client, job_id)["state"] == "done"
    for job_id in ids:  # all 20 kept: none was downloaded yet
        assert client.get(f"/api/jobs/{job_id}/restored.png").status_code == 200, job_id


def test_results_wait_for_their_download_then_expire(serve, monkeypatch):
    client = serve(max_queue=2, keep_results=1, result_ttl_s=600.0)
    first, second = (post_photo(client, _tiny(seed)).json()["id"] for seed in (0, 1))
    for job_id in (first, second):
        assert wait_job(client, job_id)["state"] == "done"
    refused = post_photo(client, _tiny())  # 2 results not downloaded: no place, and none is evicted
    assert refused.status_code == 503 and "waiting to be downloaded" in refused.json()["error"]
    assert client.get(f"/api/jobs/{first}/restored.png").status_code == 200
    third = post_photo(client, _tiny())
    assert third.status_code == 202
    assert wait_job(client, third.json()["id"])["state"] == "done"
    assert client.get(f"/api/jobs/{second}").status_code == 200  # not downloaded: kept
    later = time.monotonic() + 601.0  # the queue's clock, result_ttl_s after the job finished
    monkeypatch.setattr(jobs, "time", types.SimpleNamespace(monotonic=lambda: later))
    assert client.get(f"/api/jobs/{second}").status_code == 404


def test_every_error_is_one_json_shape(serve):
    client = serve()

    @client.app.get("/api/echo")
    def echo(n: int):
        return {"n": n}

    assert client.get("/api/echo", params={"n": 3}).json() == {"n": 3}
    invalid = client.get("/api/echo", params={"n": "three"})
    assert invalid.status_code == 422 and invalid.json()["error"].startswith("invalid request: query.n")
    assert client.get("/api/nothing-here").json() == {"error": "Not Found"}
    assert client.get("/static/nothing.js").json() == {"error": "Not Found"}
    wrong = client.delete("/api/model")
    assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
    refused = client.post("/api/jobs", content=b"raw", headers={"Content-Type": "image/png"})
    assert refused.status_code == 422 and list(refused.json()) == ["error"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_decoder_process_ends_with_the_last_app_using_it(shipped_model):
    """Apps of one process share one decoder child; it stays while any app runs and is stopped (and
    reaped) when the last one shuts down, so no decoder process outlives the server."""
    decoder = Decoder()

    def app():
        made = create_app(model=shipped_model, settings=ServeSettings(**FAST))
        made.state.queue.decoder = decoder
        return made

    with TestClient(app(), base_url=LOCAL):
        with TestClient(app(), base_url=LOCAL) as second:
            assert post_photo(second, _tiny()).status_code == 202  # a decode: the child runs
            (pid,) = decoder.process_ids
            assert _alive(pid)
        assert decoder.process_ids == [pid] and _alive(pid)  # the first app still uses it
    assert decoder.process_ids == [] and not _alive(pid)
