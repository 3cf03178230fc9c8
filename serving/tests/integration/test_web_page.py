"""The try-it page in a real headless Chromium: pick a model, upload an image, boxes get drawn.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python package
(driver only: ``playwright install`` is never run, the system Chromium is used).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serving_testlib import jpeg, make_video, shapes_image

CHROMIUM = Path(os.environ.get("AILAB_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Where the screenshots go; keep them when a run needs looking at (AILAB_SCREENSHOTS=/some/dir).
SHOTS = os.environ.get("AILAB_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (driver only)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


def shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOTS) / name)
    return path


def red_pixels(page) -> int:
    """Pixels of class 0's box colour (#ff3838) on the canvas: none in the uploaded image."""
    return page.evaluate(
        """() => {
            const c = document.getElementById('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (d[i] > 240 && d[i + 1] > 40 && d[i + 1] < 72 && d[i + 2] > 40 && d[i + 2] < 72) n++;
            }
            return n;
        }"""
    )


def test_upload_image_and_see_boxes(browser, server: str, tmp_path: Path) -> None:
    image = tmp_path / "shapes.jpg"
    image.write_bytes(jpeg(shapes_image(640, 480, seed=4)))
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=30_000)
    page.select_option("#model", value="circles?version=1")
    page.fill("#conf", "0.5")
    page.set_input_files("#file", str(image))
    page.click("#run")
    page.wait_for_selector("body[data-done='1']", timeout=60_000)
    assert "detection(s) by circles v1" in page.inner_text("#status")
    assert int(page.get_attribute("#canvas", "data-detections")) > 0
    assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [640, 480]
    assert red_pixels(page) > 500  # the boxes are on the canvas, not only in the DOM
    assert page.locator("#detections tbody tr").count() > 0
    assert shot(page, tmp_path, "web-image.png").stat().st_size > 10_000
    assert errors == []


def test_upload_video_streams_frames(browser, server: str, tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.avi", frames=6)
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=30_000)
    page.select_option("#model", value="circles?version=1")
    page.fill("#stride", "2")
    page.set_input_files(
        "#file", files=[{"name": "clip.avi", "mimeType": "video/x-msvideo", "buffer": video.read_bytes()}]
    )
    page.click("#run")
    page.wait_for_selector("body[data-done='1']", timeout=60_000)
    assert page.get_attribute("#canvas", "data-frames") == "3"
    assert "3 frame(s) analysed of 6" in page.inner_text("#status")
    assert red_pixels(page) > 0
    shot(page, tmp_path, "web-video.png")
