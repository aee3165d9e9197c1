"""The server's HTTP API with the shipped model: restoration, bad inputs, limits, the queue."""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mofme.apps.serve import ServeSettings, create_app, model_info, serve_in_thread
from mofme.apps.serve.card import metrics_table
from mofme.apps.serve.jobs import JobQueue, QueueFull, count_tiles
from mofme.apps.serve.uploads import decode_upload
from mofme.benchmarks.serve import main as load_check
from mofme.benchmarks.serve import upload, wait_result
from mofme.cli import _missing, build_parser
from mofme.models import DEFAULT_WEIGHTS

from .client import FAST, LOCAL, post_photo, wait_job
from .photos import decode, encode, png_bomb, psnr_db, truncated_jpeg, weather_photo


def test_a_photo_with_rendered_rain_comes_back_restored_at_its_size(serve):
    clean, degraded = weather_photo()
    client = serve()
    response = post_photo(client, encode(degraded), name="../../etc/china rain?.png")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["name"] == "china rain?.png"  # the last part of the client's name, a label only
    assert (job["width"], job["height"]) == (256, 171)
    assert job["tiles_total"] == count_tiles(171, 256, tile=128, overlap=16, multiple_of=4) == 6

    status = wait_job(client, job["id"])
    assert status["state"] == "done", status["error"]
    assert status["tiles_done"] == status["tiles_total"] == 6
    download = client.get(status["restored_url"])
    assert download.headers["content-type"] == "image/png"
    assert download.headers["content-disposition"] == 'attachment; filename="china_rain-restored.png"'
    restored = decode(download.content)
    assert restored.shape == degraded.shape
    before, after = psnr_db(degraded, clean), psnr_db(restored, clean)
    assert after > before + 2.0, (before, after)  # the card's rain gain is +6 dB
    np.testing.assert_array_equal(decode(client.get(status["input_url"]).content), degraded)

    shares = np.array(status["routing"]["shares"])
    assert shares.shape == (2, 16)  # 2 routed layers x 16 experts of the shipped model
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-3)
    assert all(len(top) == 3 and top[0][1] >= top[1][1] for top in status["routing"]["top"])
    picture = client.get(status["routing_url"])
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    assert decode(picture.content).shape[1] > 300


BAD_INPUTS = {  # refused from the header, at upload
    "not an image": (b"name,score\nrain,1\n", 400, "is not an image this server reads"),
    "empty": (b"", 400, "is empty"),
    "bomb beyond Pillow's limit": (png_bomb(20000), 413, "decompression bomb"),
    "bomb beyond the server's limit": (png_bomb(8000), 413, "decompression bomb"),
}


def test_each_bad_input_gets_its_message_and_the_next_photo_still_restores(serve):
    client = serve()
    small = weather_photo()[1][:48, :64]
    for label, (data, status, message) in BAD_INPUTS.items():
        response = post_photo(client, data, name=f"{label}.jpg")
        assert response.status_code == status, (label, response.text)
        assert response.json()["error"].startswith(f"{label}.jpg"), label
        assert message in response.json()["error"], (label, response.json())
        good = post_photo(client, encode(small), name="small.png")
        assert good.status_code == 202
        assert wait_job(client, good.json()["id"])["state"] == "done"


def test_a_truncated_photo_is_accepted_then_its_job_says_what_is_wrong(serve):
    """Only the header is read at upload: a file damaged further in fails when its job decodes it."""
    client = serve()
    small = weather_photo()[1][:48, :64]
    response = post_photo(
        client, truncated_jpeg(weather_photo()[1]), name="holiday.jpg"
    )  # its header is whole
    assert response.status_code == 202 and response.json()["input_url"] is None
    status = wait_job(client, response.json()["id"])
    assert status["state"] == "failed" and status["error"].startswith("holiday.jpg is truncated or damaged")
    assert client.get(f"/api/jobs/{status['id']}/input.png").status_code == 409
    good = post_photo(client, encode(small), name="small.png")
    assert wait_job(client, good.json()["id"])["state"] == "done"


def test_the_pixel_limit_has_its_own_message(serve, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)  # as run_server sets it: Pillow's bomb limit
    client = serve(max_pixels=200_000)
    noise = np.random.default_rng(0).random((500, 500, 3))
    response = post_photo(client, encode(noise), name="big.png")  # 250,000 pixels
    assert response.status_code == 413
    assert response.json()["error"] == (
        "big.png: 500 x 500 pixels (0.2 MP) is above this server's limit of 0.2 MP "
        "(mofme serve --max-megapixels); scale the photo down first"
    )
    at_limit = decode_upload(encode(noise[:400]), name="x", max_pixels=200_000, workdir=tmp_path)
    assert at_limit.shape == (400, 500, 3)
    assert list(tmp_path.iterdir()) == []  # the temporary copy is gone
    assert Image.MAX_IMAGE_PIXELS == 200_000  # lifted for the header read only


def test_the_upload_limit_refuses_large_files_before_and_after_reading(serve):
    client = serve(max_upload_bytes=20_000)
    noise = np.random.default_rng(0).random((64, 128, 3))
    over = encode(noise)  # about 25 kB: passes the header check (within the multipart slack), then refused
    assert 20_000 < len(over) < 20_000 + 64 * 1024
    far_over = bytes(200_000)  # refused from its Content-Length, never read
    for data in (over, far_over):
        response = post_photo(client, data)
        assert response.status_code == 413
        assert "larger than this server's upload limit of 20,000 bytes" in response.json()["error"]
    assert post_photo(client, encode(noise[:32, :32])).status_code == 202


def test_a_request_without_a_file_and_unknown_jobs_get_json_errors(serve):
    client = serve()
    for request in ({"data": {"photo": "x"}}, {"files": {"photo": ("a.png", b"x")}}):
        refused = client.post("/api/jobs", **request)
        assert refused.status_code == 422
        assert refused.json() == {"error": "send one photo as the multipart form field 'file'"}
    unknown = client.get(f"/api/jobs/{uuid.uuid4().hex}/restored.png")
    assert unknown.status_code == 404 and "no such job" in unknown.json()["error"]


def test_two_concurrent_requests_are_queued_and_both_answered(shipped_model):
    photos = {"china": weather_photo(name="china"), "rocket": weather_photo(name="rocket", weather="haze")}
    app = create_app(model=shipped_model, settings=ServeSettings(**FAST))
    submitted, results, start = {}, {}, threading.Barrier(len(photos))
    with serve_in_thread(app) as url:

        def client(name: str) -> None:
            start.wait()
            submitted[name] = upload(url, encode(photos[name][1]), name=f"{name}.png")
            results[name] = wait_result(url, submitted[name]["id"])

        threads = [threading.Thread(target=client, args=(name,)) for name in photos]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    assert sorted(results) == sorted(photos)
    for name, (clean, degraded) in photos.items():
        status, data = results[name]
        assert status["state"] == "done"
        restored = decode(data)
        assert restored.shape == degraded.shape
        assert psnr_db(restored, clean) > psnr_db(degraded, clean), name
    # the later upload waited in line (the first takes over a second), and the model never ran both at once
    first, second = sorted(
        (app.state.queue.get(s["id"]) for s in submitted.values()), key=lambda j: j.created
    )
    later = next(s for s in submitted.values() if s["id"] == second.id)
    assert later["state"] == "queued" and later["queue_position"] in (1, 2)
    assert first.started < first.finished <= second.started < second.finished


def test_a_full_queue_answers_503(serve):
    client = serve(max_queue=1)
    photo = encode(weather_photo()[1])
    assert post_photo(client, photo).status_code == 202  # running: 6 tiles, more than a second
    refused = post_photo(client, photo)
    assert refused.status_code == 503 and "already queued" in refused.json()["error"]


def test_closing_the_queue_stops_the_running_job_at_its_next_tile(shipped_model, tmp_path):
    queue = JobQueue(model=shipped_model, settings=ServeSettings(**FAST), workdir=tmp_path)

    def submit(name: str, side: int):
        queue.reserve()
        try:
            return queue.submit(name=name, data=encode(np.zeros((side, side, 3))), width=side, height=side)
        finally:
            queue.release()

    running = submit("big.png", 512)  # 25 tiles
    waiting = submit("next.png", 64)
    deadline = time.monotonic() + 60
    while running.tiles_done == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.close()
    assert running.state == "failed" and "the server stopped" in running.error
    assert running.tiles_done < running.tiles_total == 25
    assert waiting.state == "failed" and waiting.error == "the server stopped before restoring it"
    with pytest.raises(QueueFull):
        queue.reserve()


def test_the_model_card_names_the_model_and_its_figures(shipped_model):
    info = model_info(shipped_model, checkpoint=DEFAULT_WEIGHTS)
    client = TestClient(create_app(model=shipped_model, info=info), base_url=LOCAL)
    page = client.get("/api/model").json()
    assert page["name"] == DEFAULT_WEIGHTS and page["title"] == DEFAULT_WEIGHTS
    assert page["parameters"] == sum(p.numel() for p in shipped_model.parameters())
    assert page["config"]["num_experts"] == 16 and page["config"]["top_k"] == 2
    assert page["limits"] == {"max_upload_bytes": 50_000_000, "max_pixels": 25_000_000}
    if page["metrics"] is not None:  # a source checkout: the card links to docs/model_card.md
        assert page["metrics"]["columns"][0] == "weather" and "restored PSNR" in page["metrics"]["columns"]
        assert [row[0] for row in page["metrics"]["rows"]][:4] == ["rain", "snow", "haze", "raindrop"]
    bare = (
        TestClient(create_app(model=shipped_model), base_url=LOCAL).get("/api/model").json()
    )  # no card given
    assert bare["name"] == "Restorer" and bare["parameters"] == page["parameters"]
    html = client.get("/").text
    assert 'id="file-input"' in html and "/static/app.js" in html
    assert 'fetch("/api/jobs"' in client.get("/static/app.js").text


def test_metrics_table_reads_the_first_table_of_the_metrics_section():
    card = (
        "# m\n\n## Metrics\n\ntext\n\n| a | **b** |\n|---|---:|\n| x | 1 |\n\n| c |\n|---|\n\n## Next\n| z |"
    )
    assert metrics_table(card) == {"columns": ["a", "b"], "rows": [["x", "1"]]}
    assert metrics_table("# m\n\n## Other\n| a |\n|---|\n| 1 |\n") is None


def test_the_serve_command_binds_the_loopback_address_by_default(capsys):
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.checkpoint) == ("127.0.0.1", 7860, DEFAULT_WEIGHTS)
    assert (args.tile, args.overlap) == (ServeSettings().tile, ServeSettings().overlap) == (128, 16)
    assert _missing(ModuleNotFoundError("No module named 'fastapi'", name="fastapi")) == 2
    assert "pip install 'mofme[serve]'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="overlap"):
        ServeSettings(tile=64, overlap=64)


def test_the_load_check_runs_on_tiny_settings(tmp_path):
    """The benchmark script end to end: a ``mofme serve`` subprocess, 2 clients x 1 upload."""
    out = tmp_path / "load.json"
    assert load_check(["--clients", "2", "--uploads", "1", "--size", "160x96", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["requests"] == report["answered"] == report["correct"] == 2 and report["failures"] == []
    assert 0 < report["latency_s"]["p50"] <= report["latency_s"]["max"]
    assert report["server_peak_rss_mb"] > 100  # torch and the model are loaded
