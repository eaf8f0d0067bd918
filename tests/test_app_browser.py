"""A real browser against `python app.py`: Playwright (PyPI) driving Debian's Chromium, headless.

Skipped when /usr/bin/chromium (or playwright) is absent, except with CI=true, where it must run.
Never runs `playwright install`: the browser is the system one ($CGAN_CHROMIUM overrides the path).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cgan.studio import Studio
from studio_helpers import REPO, free_port, gif_frames, png_array, tile

CHROMIUM = Path(os.environ.get("CGAN_CHROMIUM", "/usr/bin/chromium"))
CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT_MS = 30_000

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if sync_playwright is None or not CHROMIUM.is_file():
    missing = ("playwright (pip install playwright)" if sync_playwright is None
               else f"{CHROMIUM} (apt-get install chromium)")
    if CI:
        pytest.fail(f"CI=true but {missing} is missing: the browser test must run in CI", pytrace=False)
    pytest.skip(f"{missing} not available", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url(tiny_root):
    """`python app.py` as a user starts it, on a free port given through GRADIO_SERVER_PORT."""
    port = free_port()
    env = dict(os.environ, CGAN_CHECKPOINTS=str(tiny_root), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"app.py did not start:\n{proc.communicate()[0]}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def page(app_url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1280, "height": 1600})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(app_url)
        yield pg
        browser.close()


def fetch(page, selector: str) -> bytes:
    src = page.locator(f"{selector} img").first.get_attribute("src")
    response = page.request.get(src)
    assert response.ok, src
    return response.body()


def choose(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_dataset_class_seed_and_interpolation(page, tiny_root):
    studio = Studio(tiny_root)
    caption = page.locator("#grid-caption")
    expect(caption).to_contain_text("MNIST digits: all 10 classes")  # the grid shown on load
    png_array(fetch(page, "#grid"))

    choose(page, "Dataset", "Fashion-MNIST")
    expect(caption).to_contain_text("Fashion-MNIST: all 10 classes")
    choose(page, "Class", "Sneaker")
    expect(caption).to_contain_text("class 'Sneaker'")
    expect(caption).to_contain_text("seed 0,")
    before = fetch(page, "#grid")
    assert np.array_equal(png_array(before), studio.generate("fashion-mnist", "Sneaker", 0, 4, 8, 1.0, 3)[0])

    seed_box = page.locator("#seed input")
    seed_box.fill("123")
    seed_box.press("Enter")
    expect(caption).to_contain_text("seed 123,")
    after = fetch(page, "#grid")
    assert after != before
    shown = png_array(after)  # a valid PNG with exactly the pixels of image 0..31 of seed 123
    assert np.array_equal(shown, studio.generate("fashion-mnist", "Sneaker", 123, 4, 8, 1.0, 3)[0])
    assert not np.array_equal(shown, png_array(before))
    expect(page.locator("#seed-slider input[type=number]")).to_have_value("123")  # the slider follows

    page.locator("#dice").click()  # a random seed, and a new grid
    expect(caption).not_to_contain_text("seed 123,")
    assert png_array(fetch(page, "#grid")).shape == shown.shape

    page.get_by_role("tab", name="Latent interpolation").click()
    page.locator("#interpolate").click()
    expect(page.locator("#interp-caption")).to_contain_text("16 frames")
    gif = fetch(page, "#interp-gif")
    frames = gif_frames(gif)
    assert len(frames) == 16
    strip = png_array(fetch(page, "#interp-strip"))
    for f in range(16):
        assert np.array_equal(tile(frames[f], 0, 0, scale=3), tile(strip, 0, f, scale=3))
