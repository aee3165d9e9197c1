"""The page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Skipped where no chromium is installed (``.ci/run`` installs it). Nothing is downloaded: the driver's
path is given, so Selenium Manager is never asked. ``MOFME_SCREENSHOT=docs/results/serve_screenshot.png``
also writes the screenshot there (the README's picture).
"""

from __future__ import annotations

import base64
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from mofme.apps.serve import ServeSettings, create_app, model_info, serve_in_thread
from mofme.models import DEFAULT_WEIGHTS

from .photos import decode, encode, psnr_db, truncated_jpeg, weather_photo

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WINDOW = (1200, 800)
TIMEOUT = 180

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(
        f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
        "(Debian: apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

DROP_FILE = """
const [name, data] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
document.querySelector("#drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
"""


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    metrics = {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # the page's size, not the window's
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(shipped_model):
    settings = ServeSettings(tile=128, overlap=16)
    info = model_info(shipped_model, checkpoint=DEFAULT_WEIGHTS)
    with serve_in_thread(create_app(model=shipped_model, settings=settings, info=info)) as url:
        yield url


def _job(browser, state: str):
    return WebDriverWait(browser, TIMEOUT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"article.job[data-state={state}]"))
    )


def test_the_page_restores_an_upload_shows_errors_and_looks_right(browser, server, tmp_path):
    browser.get(server)
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "model-name"), DEFAULT_WEIGHTS))
    assert "16, top-2 per token" in browser.find_element(By.ID, "model-figures").text

    clean, degraded = weather_photo()
    photo = tmp_path / "china in the rain.png"
    photo.write_bytes(encode(degraded))
    browser.find_element(By.ID, "file-input").send_keys(str(photo))  # the file picker
    done = _job(browser, "done")
    assert done.find_element(By.CSS_SELECTOR, ".job-name").text == photo.name
    assert "256 × 171, restored in" in done.find_element(By.CSS_SELECTOR, ".job-status").text
    shown = browser.execute_script(
        "const img = arguments[0]; return img.complete && [img.naturalWidth, img.naturalHeight];",
        done.find_element(By.CSS_SELECTOR, "img.restored"),
    )
    assert shown == [256, 171]
    link = done.find_element(By.CSS_SELECTOR, "a.download")
    assert link.is_displayed() and "256 × 171" in link.text
    with urllib.request.urlopen(link.get_attribute("href"), timeout=60) as response:
        restored = decode(response.read())
    assert restored.shape == degraded.shape
    assert psnr_db(restored, clean) > psnr_db(degraded, clean) + 2.0
    assert done.find_element(By.CSS_SELECTOR, ".routing").is_displayed()
    assert "layer 0: expert" in done.find_element(By.CSS_SELECTOR, ".routing-top").text

    broken = base64.b64encode(truncated_jpeg(degraded)).decode()
    browser.execute_script(DROP_FILE, "holiday.jpg", broken)  # drag and drop
    failed = _job(browser, "failed")
    error = failed.find_element(By.CSS_SELECTOR, ".job-error")
    assert error.is_displayed() and error.text.startswith("holiday.jpg is truncated or damaged")
    assert not failed.find_element(By.CSS_SELECTOR, "a.download").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "article.job")) == 2

    browser.execute_script(  # the finished photo's images are loaded before the picture is taken
        "return Promise.all([...document.images].map((i) => i.decode().catch(() => null)))"
    )
    shot = tmp_path / "serve_screenshot.png"
    assert browser.save_screenshot(str(shot))
    assert decode(shot.read_bytes()).shape[:2] == (WINDOW[1], WINDOW[0])
    if target := os.environ.get("MOFME_SCREENSHOT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
