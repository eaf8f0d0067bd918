"""A real browser against `python app.py`: Playwright (PyPI) driving Debian's Chromium, headless.

Skipped when /usr/bin/chromium (or playwright) is absent, except with CI=true, where it must run.
Never runs `playwright install`: the browser is the system one ($CGAN_CHROMIUM overrides the path).
The accessibility check injects axe-core from the npm registry ($CGAN_AXE, or the copy .ci/run installs).

The app runs as a user starts it, with a runs folder and the Train form: `python app.py --runs RUNS
--allow-training`, on the tiny checkpoints of conftest.py; the runs view is tested against real
`train.py` processes writing into RUNS while the page watches.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from cgan.checkpoints import GENERATOR_FILE, latest_checkpoint
from cgan.studio import Studio
from conftest import TINY
from studio_helpers import REPO, free_port, gif_frames, png_array, start_app, tile

CHROMIUM = Path(os.environ.get("CGAN_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(os.environ.get("CGAN_AXE", Path.home() / ".cache" / "cgan-axe" / "node_modules" / "axe-core" / "axe.min.js"))
CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT_MS = 30_000
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", GRADIO_ANALYTICS_ENABLED="False")

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
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-runs")


@pytest.fixture(scope="module")
def app_url(tiny_root, runs_root):
    """`python app.py` as a user starts it, on a free port given through GRADIO_SERVER_PORT."""
    port = free_port()
    env = dict(ENV, CGAN_CHECKPOINTS=str(tiny_root), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               CGAN_DATA_CACHE=str(runs_root.parent / "data-cache"))  # runs started from the page decode here
    log = runs_root.parent / "app.log"
    proc, url = start_app([sys.executable, "app.py", "--runs", str(runs_root), "--allow-training"], env, log)
    yield url
    proc.terminate()
    proc.wait(timeout=60)
    assert "share=True" not in log.read_text()  # no advice to open a public link


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser, url, width=1280, height=1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return page


@pytest.fixture
def page(browser, app_url):
    pg = open_page(browser, app_url)
    expect(pg.locator("#grid-caption")).to_contain_text("seed")
    yield pg
    pg.close()


def fetch(page, selector: str) -> bytes:
    src = page.locator(f"{selector} img").first.get_attribute("src")
    response = page.request.get(src)
    assert response.ok, src
    return response.body()


def choose(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def open_tab(page, name: str) -> None:
    """Click a tab, through the "More tabs" menu when the tab bar has no room for it."""
    for _ in range(3):  # a click that lands while the page is still busy (a loaded machine) can be lost: retry
        tab = page.get_by_role("tab", name=name, exact=True)
        if tab.count() and tab.is_visible():
            tab.click()
        else:
            page.locator("button[aria-label='More tabs']").click()
            page.locator(".overflow-dropdown button", has_text=name).click()
        for _ in range(50):
            if page.locator("[role=tab][aria-selected=true]", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$")).count():
                return
            page.wait_for_timeout(100)
    raise AssertionError(f"tab {name!r} did not open; selected: {selected_tab(page)!r}")


def selected_tab(page) -> str:
    return page.locator("[role=tab][aria-selected=true]").inner_text()


# ============================================================================= exploring

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

    seed_box = page.locator("#seed textarea, #seed input").first
    seed_box.fill("123")
    seed_box.press("Enter")
    expect(caption).to_contain_text("seed 123,")
    shown = png_array(fetch(page, "#grid"))  # exactly the pixels of image 0..31 of seed 123
    assert np.array_equal(shown, studio.generate("fashion-mnist", "Sneaker", 123, 4, 8, 1.0, 3)[0])

    page.locator("#seed-next").click()  # the buttons move the one seed control
    expect(caption).to_contain_text("seed 124,")
    expect(seed_box).to_have_value("124")
    page.locator("#dice").click()  # a random seed, shown in the box, and a new grid
    expect(caption).not_to_contain_text("seed 124,")
    assert f"seed {seed_box.input_value()}," in caption.inner_text()

    open_tab(page, "Interpolation")  # the tab shows the current controls at once
    expect(page.locator("#interp-caption")).to_contain_text("class 'Sneaker': spherical interpolation")
    frames = gif_frames(fetch(page, "#interp-gif"))
    assert len(frames) == 16
    strip = png_array(fetch(page, "#interp-strip"))
    for f in range(16):  # the GIF is enlarged to >= 256 px (scale 8 here), the strip is at scale 3
        assert np.array_equal(tile(frames[f], 0, 0, scale=8)[::8, ::8], tile(strip, 0, f, scale=3)[::3, ::3])


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_the_image_comes_first(browser, app_url, width, height):
    page = open_page(browser, app_url, width, height)
    try:
        expect(page.locator("#grid img")).to_be_visible()
        box = page.locator("#grid img").bounding_box()
        assert box["y"] < height and box["height"] > 50, box  # above the fold
        if width >= 1000:  # two columns: the controls beside the image, also above the fold
            control = page.locator("#class").bounding_box()
            assert control["x"] > box["x"] + box["width"] - 5 and control["y"] < height
    finally:
        page.close()


def test_seed_box_explains_bad_text_once_and_recovers(page):
    seed_box = page.locator("#seed textarea, #seed input").first
    caption, error = page.locator("#grid-caption p"), page.locator("#seed-error")
    expect(caption).to_contain_text("seed 0,")
    before = caption.inner_text()
    seed_box.fill("5000000000")
    seed_box.press("Enter")
    expect(error).to_contain_text("seed must be from 0 to 2147483647, got 5000000000")
    page.locator("#grid-caption").click()  # leaving the box does not repeat it
    page.wait_for_timeout(500)
    assert page.locator(".toast-body").count() == 0  # no popup, no "Error (2)"
    seed_box.fill("1e3")
    seed_box.press("Enter")
    expect(error).to_contain_text("using digits only, not '1e3'")
    seed_box.fill("")
    seed_box.press("Enter")
    expect(error).to_contain_text("seed is empty: type a whole number")
    assert caption.inner_text() == before  # nothing changed meanwhile
    seed_box.fill("77")
    seed_box.press("Enter")
    expect(caption).to_contain_text("seed 77,")
    expect(error).to_have_text("")


def test_keyboard_alone_changes_psi_the_seed_and_the_grid(page):
    caption = page.locator("#grid-caption")
    psi = page.locator("#truncation input[type=range]")
    psi.focus()
    page.keyboard.press("ArrowLeft")
    expect(caption).to_contain_text("truncation 0.95")
    box = page.locator("#truncation input[type=number]")
    box.fill("0.5")
    box.press("Enter")
    expect(caption).to_contain_text("truncation 0.5")
    page.locator("#seed-next").focus()
    page.keyboard.press("Enter")
    expect(caption).to_contain_text("seed 1,")
    page.locator("#cols input[type=range]").focus()
    page.keyboard.press("ArrowLeft")
    expect(caption).to_contain_text("images 0-6")


def test_tabs_follow_the_shared_controls(page):
    open_tab(page, "Interpolation")
    interp = page.locator("#interp-caption")
    expect(interp).to_contain_text("MNIST digits, all 10 classes")
    choose(page, "Dataset", "EMNIST letters & digits")  # the open tab follows at once
    expect(interp).to_contain_text("EMNIST letters & digits, all 47 classes")
    page.locator("#seed-next").click()
    expect(interp).to_contain_text("seed 1 -> seed 1")
    open_tab(page, "Class morph")  # never blank, never the old dataset
    expect(page.locator("#morph-caption")).to_contain_text("EMNIST letters & digits: class morph '0' -> 't'")
    open_tab(page, "Grid")
    expect(page.locator("#grid-caption")).to_contain_text("EMNIST letters & digits: all 47 classes")
    expect(page.locator("#grid-caption")).to_contain_text("seed 1,")


def test_overview_rows_are_labelled_and_downloads_are_named(page):
    grid = png_array(fetch(page, "#grid"))
    assert grid.shape[0] == (10 * 30 + 2) * 3 and grid.shape[1] > (8 * 30 + 2) * 3  # a column of class names
    assert page.locator("#grid img").first.get_attribute("src").endswith("/mnist_All-classes_seed0_psi1_4x8.png")
    choose(page, "Class", "7")
    expect(page.locator("#grid-caption")).to_contain_text("class '7'")
    assert page.locator("#grid img").first.get_attribute("src").endswith("/mnist_7_seed0_psi1_4x8.png")
    assert "class '7'" in page.locator("#grid img").first.get_attribute("alt")  # alt text from the caption
    open_tab(page, "Interpolation")
    expect(page.locator("#interp-caption")).to_contain_text("class '7'")
    assert page.locator("#interp-gif img").first.get_attribute("src").endswith(
        "/mnist_7_seed0-1_spherical_psi1_16frames.gif")


def test_a_link_opens_exactly_the_view_it_names(browser, app_url):
    link = "?dataset=fashion-mnist&class=Bag&seed=42&truncation=0.5&tab=interpolation&seed_b=7&frames=8&method=linear"
    page = open_page(browser, app_url + link)
    try:
        expect(page.locator("#interp-caption")).to_contain_text(
            "Fashion-MNIST, class 'Bag': linear interpolation, seed 42 -> seed 7, 8 frames, truncation 0.5")
        assert selected_tab(page) == "Interpolation"
        href = page.locator("#share-link a").get_attribute("href")
        for part in ("dataset=fashion-mnist", "class=Bag", "seed=42", "truncation=0.5", "tab=interpolation",
                     "seed_b=7", "frames=8", "method=linear"):
            assert part in href, href
        assert len(gif_frames(fetch(page, "#interp-gif"))) == 8
    finally:
        page.close()
    page = open_page(browser, app_url + "?dataset=nope&seed=abc&frames=999&class=Bag&colour=red")
    try:
        notice = page.locator("#notice")
        expect(notice).to_contain_text("dataset 'nope' is not served here")
        expect(notice).to_contain_text("seed 'abc' ignored")
        expect(notice).to_contain_text("frames '999' ignored")
        expect(notice).to_contain_text("unknown parameter 'colour' ignored")
        expect(page.locator("#grid-caption")).to_contain_text("MNIST digits: all 10 classes")  # the defaults
    finally:
        page.close()


def test_clicking_a_grid_image_says_which_it_is_and_offers_its_neighbours(page):
    choose(page, "Class", "3")
    expect(page.locator("#grid-caption")).to_contain_text("class '3'")
    img = page.locator("#grid img").first
    natural_w, shown_w = img.evaluate("i => [i.naturalWidth, i.getBoundingClientRect().width]")
    f = shown_w / natural_w
    row, col = 1, 2  # image j = 1 * 8 + 2
    img.click(position={"x": (2 + col * 30 + 14) * 3 * f, "y": (2 + row * 30 + 14) * 3 * f})
    expect(page.locator("#pick-info")).to_contain_text("Image 10 of class 3, seed 0")
    page.locator("#nearest-here").click()
    expect(page.locator("#nn-text")).to_contain_text("Generated image 10 of class 3 (seed 0")
    assert selected_tab(page) == "Nearest real"
    open_tab(page, "Grid")
    img.click(position={"x": (2 + 0 * 30 + 14) * 3 * f, "y": (2 + 3 * 30 + 14) * 3 * f})  # j = 24
    expect(page.locator("#pick-info")).to_contain_text("Image 24 of class 3")
    page.locator("#interp-here").click()
    expect(page.locator("#interp-caption")).to_contain_text("image 24 of seed 0 -> image 0 of seed 1")
    assert selected_tab(page) == "Interpolation"


# ============================================================================= training runs

def start_training(runs_root: Path, mnist_dir: Path, name: str, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", "--dataset", "mnist", "--data-dir", str(mnist_dir), *TINY,
                             "--out", str(runs_root / name), *map(str, extra)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def progress_step(page) -> int:
    text = page.locator("#run-progress").inner_text()
    return int(text.split("step ", 1)[1].split(" ", 1)[0].replace(",", ""))


def test_runs_view_follows_a_live_run_and_explores_a_mid_run_checkpoint(browser, app_url, runs_root, mnist_dir):
    proc = start_training(runs_root, mnist_dir, "live", "--steps", 100_000, "--checkpoint-every", 20,
                          "--sample-every", 10, "--log-every", 5, "--keep", 1000)
    page = open_page(browser, app_url)
    try:
        deadline = time.time() + 60
        while latest_checkpoint(runs_root / "live") is None and time.time() < deadline:
            time.sleep(0.2)
        open_tab(page, "Runs")
        page.locator("#run input").click()
        page.get_by_role("option", name="live", exact=True).click()
        progress = page.locator("#run-progress")
        expect(progress).to_contain_text("state running")
        expect(page.locator("#runs-table")).to_contain_text("running")
        first, grid_caption = progress_step(page), page.locator("#run-grid-caption").inner_text()
        page.wait_for_function(  # the view refreshes by itself while the run trains
            f"() => parseInt(document.querySelector('#run-progress').innerText.split('step ')[1].replace(/,/g, '')) "
            f"> {first + 20}", timeout=60_000)
        expect(page.locator("#run-grid-caption")).not_to_have_text(grid_caption)
        assert page.locator("#loss-plot canvas, #loss-plot svg").count() > 0
        assert page.locator("#run-grid img").count() == 1
        chosen = page.locator("#run-checkpoint input").input_value()
        assert chosen.startswith("step-")
        page.locator("#explore").click()  # a mid-run checkpoint in the explorer
        step = int(chosen.split("-")[1])
        expect(page.locator("#grid-caption")).to_contain_text(f"live @ step {step:,}")
        assert selected_tab(page) == "Grid"
        assert proc.poll() is None  # reading never disturbed the run
        shown = png_array(fetch(page, "#grid"))
        assert shown.shape[0] == (10 * 30 + 2) * 3
    finally:
        page.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0  # stopped cleanly, with a checkpoint
    status = json.loads((runs_root / "live" / "status.json").read_text())
    assert status["state"] == "stopped"


def test_train_form_starts_and_stops_a_run_that_resumes_bitwise(browser, app_url, runs_root, mnist_dir, tmp_path):
    page = open_page(browser, app_url)
    run = runs_root / "formrun"
    try:
        open_tab(page, "Train")
        page.locator("#train-data-dir textarea, #train-data-dir input").first.fill(str(mnist_dir))
        choose(page, "Architecture", "mlp")
        page.locator("#train-steps textarea, #train-steps input").first.fill("100000")
        page.locator("#train-batch textarea, #train-batch input").first.fill("16")
        page.locator("#train-name textarea, #train-name input").first.fill("formrun")
        page.locator("#train-start").click()
        expect(page.locator("#train-status")).to_contain_text("Started formrun")
        deadline = time.time() + 120
        while time.time() < deadline:
            rows = (run / "losses.csv").read_text().splitlines() if (run / "losses.csv").is_file() else []
            if len(rows) > 2:
                break
            time.sleep(0.2)
        page.locator("#train-start").click()  # one run at a time
        expect(page.locator(".toast-body")).to_contain_text("is still training; stop it first")
        page.locator("#train-stop").click()
        expect(page.locator("#train-status")).to_contain_text("stopped (exit code 0)", timeout=120_000)
    finally:
        page.close()
    stopped = latest_checkpoint(run)
    s = int(stopped.name.split("-")[1])
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    resume = subprocess.run([sys.executable, "train.py", "--resume", str(run), "--data-dir", str(mnist_dir),
                             "--steps", str(s + 3)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr[-2000:]
    ref = subprocess.run([sys.executable, "train.py", "--dataset", "mnist", "--split", "train", "--arch", "mlp",
                          "--steps", str(s + 3), "--batch-size", "16", "--device", "auto", "--seed", "0",
                          "--no-progress", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "ref")], cwd=REPO,
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    a = load_file(latest_checkpoint(run) / GENERATOR_FILE)
    b = load_file(latest_checkpoint(tmp_path / "ref") / GENERATOR_FILE)
    assert latest_checkpoint(run).name == latest_checkpoint(tmp_path / "ref").name == f"step-{s + 3:07d}"
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_train_form_trains_on_your_own_images_by_keyboard(browser, app_url, runs_root, tmp_path):
    """Dataset "your own images" chosen and the form filled with the keyboard alone; the run decodes the
    folder, trains, finishes, and the Runs tab lists it under the folder's name."""
    from test_image_folder import make_folder

    folder = make_folder(tmp_path / "shapes")
    page = open_page(browser, app_url)
    try:
        open_tab(page, "Train")
        page.locator("#train-dataset input").first.focus()
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type("your own")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        expect(page.locator("#train-dataset input").first).to_have_value("your own images")
        for field, value in (("#train-data-dir", str(folder)), ("#train-steps", "3"), ("#train-batch", "8"),
                             ("#train-name", "ownrun")):
            box = page.locator(f"{field} textarea, {field} input").first
            box.focus()
            page.keyboard.press("ControlOrMeta+a")
            page.keyboard.type(value)
        page.locator("#train-start").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#train-status")).to_contain_text("Started ownrun")
        status = runs_root / "ownrun" / "status.json"
        deadline = time.time() + 180
        while not (status.is_file() and json.loads(status.read_text())["state"] != "running"):
            assert time.time() < deadline, "the run did not finish"
            time.sleep(0.3)
        assert json.loads(status.read_text())["state"] == "finished"
        assert "24 images in 2 classes" in (runs_root / "ownrun" / "data_report.txt").read_text()
        open_tab(page, "Runs")
        expect(page.locator("#runs-table")).to_contain_text("images from shapes", timeout=30_000)
    finally:
        page.close()


# ============================================================================= accessibility

TABS = ["Grid", "Interpolation", "Class morph", "Real vs generated", "Nearest real", "Dataset", "Model card", "Runs",
        "Train"]


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_no_serious_accessibility_violations_on_any_tab(browser, app_url, width, height):
    if not AXE.is_file():
        if CI:
            pytest.fail(f"axe-core is missing at {AXE}: .ci/run installs it from the npm registry")
        pytest.skip(f"axe-core not installed at {AXE} (npm install --prefix ~/.cache/cgan-axe axe-core)")
    page = open_page(browser, app_url, width, height)
    found = {}
    try:
        expect(page.locator("#grid-caption")).to_contain_text("seed")
        page.add_script_tag(path=str(AXE))
        for name in TABS:
            open_tab(page, name)
            page.wait_for_timeout(1500)
            result = page.evaluate("""async () => {
                const r = await axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21aa"]}});
                return r.violations.filter(v => ["serious", "critical"].includes(v.impact))
                    .map(v => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
            }""")
            if result:
                found[name] = result
    finally:
        page.close()
    assert not found, json.dumps(found, indent=1)[:4000]


def test_a_generated_dataset_downloads_from_the_page(page, tiny_root):
    import io
    import zipfile

    open_tab(page, "Dataset")
    per_class = page.locator("#data-per-class textarea, #data-per-class input").first
    per_class.fill("4")
    page.locator("#make-dataset").click()
    expect(page.locator("#data-caption")).to_contain_text("40 generated images of 10 class(es)")
    with page.expect_download() as info:
        page.locator("#data-file a").first.click()
    download = info.value
    assert download.suggested_filename == "mnist_10-classes_4-per-class_seed0_psi1_zip.zip"
    with zipfile.ZipFile(io.BytesIO(open(download.path(), "rb").read())) as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 40 and "labels.csv" in z.namelist()


def test_an_example_row_opens_its_view(page):
    page.locator("#examples button", has_text="EMNIST letters & digits: t").click()  # its worst class
    caption = page.locator("#grid-caption")
    expect(caption).to_contain_text("EMNIST letters & digits: class 't'")
    expect(caption).to_contain_text("seed 42,")
    expect(page.locator("#seed textarea, #seed input").first).to_have_value("42")
    page.locator("#examples button", has_text="MNIST digits: 0").focus()  # the examples work by keyboard too
    page.keyboard.press("Enter")
    expect(caption).to_contain_text("MNIST digits: class '0'")
