"""Reliability, round two: one bad folder never takes the studio down, big models are refused before they
are allocated, a run is never stranded (early kill -9, damaged log, damaged newest checkpoint, a second
process on the same folder), every request has a budget, checkpoint text is shown as text, and the data
reader refuses bombs and absurd headers with the file's name.

Real files and real processes throughout: truncated files, `python app.py` and `python train.py` as
subprocesses, a real `kill -9`, a real second trainer, peak memory read from the kernel (ru_maxrss).
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cgan.checkpoints import (GENERATOR_FILE, META_FILE, REAL_SAMPLES_FILE, TRAINING_FILE, CheckpointError,
                              latest_checkpoint, list_checkpoints, prune_checkpoints, read_meta, write_folder)
from cgan.training_cli import main as train_main
from cgan.data import DatasetError, read_idx, write_idx
from cgan.networks import build_generator
from cgan.studio import ALL_CLASSES, MAX_GIF_SIDE, MAX_SIDE, InputError, Studio, class_pages
from conftest import REPO, TINY
from studio_helpers import SHIPPED, free_port, gif_frames, shipped_names

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", GRADIO_ANALYTICS_ENABLED="False")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# Peak resident memory of this process image in KiB. Not ru_maxrss: Linux carries that over from the forking
# parent (here the pytest process, itself ~1 GB) across exec, which would hide what the child used.
PEAK = "int(next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')).split()[1])"


def peak_rss(module: str, *argv: str, timeout: float = 300) -> tuple[int, str, float]:
    """Run ``python -m module argv`` and return (exit code, stderr, peak resident memory in MiB)."""
    script = ("import runpy, sys\n"
              f"sys.argv = [{module!r}, *{list(map(str, argv))!r}]\n"
              "try:\n"
              f"    runpy.run_module({module!r}, run_name='__main__')\n"
              "finally:\n"
              f"    print('PEAK', {PEAK}, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    peak = [ln for ln in r.stderr.splitlines() if ln.startswith("PEAK ")]
    assert peak, r.stderr[-2000:]
    return r.returncode, r.stderr, int(peak[-1].split()[1]) / 1024


needs_shipped = pytest.mark.skipif("mnist" not in shipped_names(), reason="no shipped mnist checkpoint")


# ============================================================================= 1. one bad folder, the rest served

@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory, tiny_root) -> Path:
    """Good copies of mnist plus folders that each fail in their own way."""
    root = tmp_path_factory.mktemp("hostile") / "checkpoints"
    shutil.copytree(tiny_root / "mnist", root / "mnist")             # first dataset: nested evaluation.json
    (root / "mnist" / "evaluation.json").write_text(nested(100_000))
    (root / "mnist" / "MODEL_CARD.md").unlink(missing_ok=True)
    shutil.copytree(tiny_root / "mnist", root / "mnist-copy")        # good
    shutil.copytree(tiny_root / "mnist", root / "truncated")
    with open(root / "truncated" / GENERATOR_FILE, "r+b") as f:      # `truncate -s` as in the report
        f.truncate(4000)
    shutil.copytree(tiny_root / "mnist", root / "wrong-shapes")
    g = load_file(root / "wrong-shapes" / GENERATOR_FILE)
    g = {k: (torch.zeros(v.shape[0] + 1, *v.shape[1:], dtype=v.dtype) if v.ndim else v) for k, v in g.items()}
    save_file(g, root / "wrong-shapes" / GENERATOR_FILE)
    shutil.copytree(tiny_root / "mnist", root / "bad name!")          # not served because of its name
    return root


def test_studio_skips_each_bad_folder_with_one_log_line_and_serves_the_rest(hostile_root, caplog):
    caplog.set_level(logging.WARNING, logger="cgan.studio")
    s = Studio(hostile_root)
    s.preload()
    assert s.names == ["mnist", "mnist-copy"]
    assert set(s.skipped) == {"truncated", "wrong-shapes", "bad name!"}
    assert "truncated" in s.skipped["truncated"] and GENERATOR_FILE in s.skipped["truncated"]
    assert "has shape" in s.skipped["wrong-shapes"]
    assert "name is not served" in s.skipped["bad name!"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(lines) == 3 and all("\n" not in ln for ln in lines)
    assert any(f"truncated/{GENERATOR_FILE}" in ln for ln in lines)
    assert "is not valid JSON (or is nested too deeply)" in s.model_card("mnist")  # costs only its table
    assert s.generate("mnist-copy", "3", 0, 1, 2, 1.0, 1)[0].shape == (32, 62)


def test_a_model_that_fails_to_load_is_dropped_and_the_others_served(tiny_root, tmp_path, caplog):
    """A generator file that passes the header check but is rotten inside (NaN weights) fails in preload:
    that folder is dropped with one log line, not the app."""
    caplog.set_level(logging.WARNING, logger="cgan.studio")
    for name in ("mnist", "nan"):
        shutil.copytree(tiny_root / "mnist", tmp_path / name)
    f = tmp_path / "nan" / GENERATOR_FILE
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in load_file(f).items()}, f)
    s = Studio(tmp_path)
    assert s.names == ["mnist", "nan"]
    s.preload()
    assert s.names == ["mnist"] and "NaN" in s.skipped["nan"]
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture(scope="module")
def app_process(hostile_root, tmp_path_factory):
    """`python app.py --checkpoints HOSTILE` as a real process, with TMPDIR pointing at a folder we watch."""
    tmp = tmp_path_factory.mktemp("apptmp")
    port = free_port()
    env = dict(ENV, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), TMPDIR=str(tmp))
    env.pop("GRADIO_TEMP_DIR", None)
    log = tmp_path_factory.mktemp("applog") / "app.log"
    proc = subprocess.Popen([sys.executable, "app.py", "--checkpoints", str(hostile_root)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            time.sleep(0.3)
    assert proc.poll() is None, f"app.py exited with {proc.returncode}: {log.read_text()[-3000:]}"
    yield proc, url, tmp, log
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_app_py_starts_and_serves_the_good_folders(app_process):
    from gradio_client import Client

    proc, url, tmp, log = app_process
    c = Client(url, verbose=False, download_files=False)
    assert sorted(c.predict(api_name="/datasets")) == ["mnist", "mnist-copy"]
    c.predict("mnist-copy", "3", 0, 1, 2, 1.0, 1, api_name="/generate")
    text = log.read_text()
    assert "Traceback" not in text and "RecursionError" not in text
    for name in ("truncated", "wrong-shapes", "bad name!"):
        assert sum(ln.startswith("skipping") and name in ln for ln in text.splitlines()) == 1, text


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_served_files_live_in_a_private_temporary_folder_removed_at_exit(app_process):
    from gradio_client import Client

    proc, url, tmp, log = app_process
    c = Client(url, verbose=False, download_files=False)
    c.predict("mnist", "1", 0, 1, 2, "linear", 1.0, 1, api_name="/interpolate")
    assert not (tmp / "gradio").exists(), "the machine-wide Gradio cache was used"
    private = list(tmp.glob("cgan-studio-gradio-*"))
    assert len(private) == 1 and oct(private[0].stat().st_mode & 0o777) == "0o700"
    assert [p for p in private[0].rglob("*") if p.is_file()], "nothing served from the private folder"
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    assert not private[0].exists()


# ============================================================================= 2. too big: refused before allocating

def big_config(folder: Path, **config) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    image = config.pop("image", None)
    classes = config.pop("classes", None)
    meta["config"].update(config)
    if image:
        meta["image"].update(image)
    if classes:
        meta["class_names"] = [f"c{i}" for i in range(classes)]
    (folder / META_FILE).write_text(json.dumps(meta))


@needs_shipped
@pytest.mark.parametrize("config,message", [
    (dict(arch="mlp", z_dim=4096, g_width=1024, image={"size": 128, "channels": 3}, classes=1000),
     "more than this product serves"),
    (dict(arch="mlp", z_dim=4096, g_width=1024, image={"size": 64, "channels": 3}, classes=1000),
     "more than this product serves"),
    (dict(g_width=48), "has shape"),  # inside the caps, but not what the file holds
    (dict(arch="mlp", g_width=1024, image={"size": 28, "channels": 1}), "tensors do not match"),
])
def test_big_or_mismatched_models_are_refused_at_the_process_baseline(tmp_path, config, message):
    good = tmp_path / "good"
    shutil.copytree(SHIPPED / "mnist", good)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    big_config(bad, **config)
    rc, err, peak = peak_rss("cgan.sample", bad, "--per-class", "1", "--out", tmp_path / "x.npz")
    assert rc == 2 and message in err and "Traceback" not in err, err
    rc0, err0, baseline = peak_rss("cgan.sample", good, "--per-class", "1", "--out", tmp_path / "y.npz")
    assert rc0 == 0, err0
    assert peak < baseline + 64, (peak, baseline)  # MiB; the generator itself is 4 MiB


def test_image_size_and_text_fields_are_capped(tiny_export, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_export, folder)
    for edit, message in [(lambda m: m["image"].update(size=256), r"image.size must be an integer in \[8, 128\]"),
                          (lambda m: m["dataset"].update(title="x" * 201), "dataset.title must be a string"),
                          (lambda m: m["dataset"].update(license={"a": 1}), "dataset.license must be a string"),
                          (lambda m: m["dataset"].update(name="n" * 65), "'dataset' must name the dataset")]:
        meta = read_meta(tiny_export)
        edit(meta)
        (folder / META_FILE).write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=message):
            read_meta(folder)


def test_training_refuses_networks_over_the_size_cap(tmp_path, mnist_dir, capsys):
    rc = train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--arch", "mlp", "--g-width", "4096",
                     "--steps", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "the limit is 50,000,000" in err and "--g-width" in err, err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


# ============================================================================= 3. an early kill -9 never strands a run

def start(log: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 120, poll: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended with {proc.returncode} before the moment came")
        time.sleep(poll)
    raise AssertionError("timed out")


def test_kill_9_at_the_first_checkpoint_then_resume_finishes(tmp_path, mnist_dir):
    run = tmp_path / "run"
    args = ["--dataset", "mnist", "--data-dir", mnist_dir, *TINY, "--steps", 40, "--checkpoint-every", 25,
            "--log-every", 50, "--out", run]
    proc = start(tmp_path / "a.log", *args)
    wait_for(lambda: (run / "checkpoints" / "step-0000025").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run / "losses.csv").read_text().startswith("step,epoch,"), "the header was not on disk"
    for attempt in range(2):  # every later --resume works, not only the first
        r = subprocess.run([sys.executable, "train.py", "--resume", str(run), "--data-dir", str(mnist_dir),
                            "--steps", str(50 + 10 * attempt)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    rows = (run / "losses.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and [ln.split(",")[0] for ln in rows[1:]] == ["50", "60"]
    assert (run / "losses.png").is_file() and latest_checkpoint(run).name == "step-0000060"


@pytest.mark.parametrize("damage", ["empty", "nul", "half line", "garbage"])
def test_a_damaged_loss_log_is_repaired_on_resume(tiny_run, tmp_path, mnist_dir, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    log = run / "losses.csv"
    good = log.read_bytes()
    log.write_bytes({"empty": b"", "nul": b"\0" * 700, "half line": good + b"5,0.1,80,0.",
                     "garbage": b"\xff\xfe" + good[:40] + b"\0\0\n1,2\n"}[damage])
    assert train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "6"]) == 0
    lines = log.read_text().splitlines()
    steps = [ln.split(",")[0] for ln in lines[1:]]
    assert lines[0].startswith("step,epoch,") and steps[-2:] == ["5", "6"] and "\0" not in log.read_text()
    if damage == "half line":
        assert steps == ["1", "2", "3", "4", "5", "6"]


def test_plotting_never_stops_training(tiny_run, tmp_path, mnist_dir, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "losses.png").unlink()
    (run / "losses.png").mkdir()  # the picture cannot be written
    assert train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "6"]) == 0
    err = capsys.readouterr().err
    assert "could not draw" in err and "losses.csv" in err and "training goes on" in err
    assert latest_checkpoint(run).name == "step-0000006"


# ============================================================================= 4. a budget for every request

@pytest.fixture(scope="module")
def many_classes(tmp_path_factory, tiny_export) -> Path:
    """An export with 1000 classes (the validated maximum): a real generator and real-sample file."""
    root = tmp_path_factory.mktemp("many") / "checkpoints"
    meta = read_meta(tiny_export)
    meta["class_names"] = [f"c{i}" for i in range(1000)]
    cfg = meta["config"]
    torch.manual_seed(0)
    g = build_generator(cfg["arch"], cfg["z_dim"], 1000, 1, 28, cfg["g_width"]).eval()
    real = {"images": torch.randint(0, 256, (2000, 28, 28), dtype=torch.uint8),
            "labels": torch.arange(2000, dtype=torch.int64) % 1000}
    write_folder(root / "thousand", meta, {GENERATOR_FILE: g.state_dict(), REAL_SAMPLES_FILE: real})
    return root


def test_many_classes_are_paged_and_every_request_stays_within_its_budget(many_classes):
    s = Studio(many_classes)
    pages = class_pages(1000)
    assert s.class_choices("thousand")[:len(pages)] == pages and len(pages) == 63  # no "All classes" over 64
    assert pages[0] == "Classes 1-16" and pages[-1] == "Classes 993-1000"
    for call in (lambda c: s.generate("thousand", c, 0, 1, 10),
                 lambda c: s.interpolate("thousand", c, 0, 1, 48),
                 lambda c: s.real_vs_generated("thousand", c, 0, 10)):
        with pytest.raises(InputError, match="choose a page of classes .'Classes 1-16' to 'Classes 993-1000'"):
            call(ALL_CLASSES)
    t = time.perf_counter()
    grid, caption = s.generate("thousand", "Classes 993-1000", 3, 1, 10, 1.0, 8)
    assert grid.shape[0] == (8 * 30 + 2) * 8 and max(grid.shape) <= MAX_SIDE and "classes 993-1000" in caption
    strip, gif, _ = s.interpolate("thousand", "Classes 17-32", 0, 1, 48, "linear", 1.0, 8)
    frames = gif_frames(gif)
    assert len(frames) == 48 and max(frames[0].shape) <= MAX_GIF_SIDE and max(strip.shape) <= MAX_SIDE
    image, _ = s.real_vs_generated("thousand", "Classes 65-80", 0, 10, 1.0, 8)
    assert max(image.shape) <= MAX_SIDE
    assert time.perf_counter() - t < 60  # generous: the point is that nothing runs for minutes


def test_a_big_single_class_grid_is_refused_with_what_to_ask_for(tiny_export, tmp_path):
    """128 px images: a 64-class page of 10 columns would be 10 M pixels of model work: refused, saying what
    to ask for instead; a one-class grid holds at most 16 of them."""
    meta = read_meta(tiny_export)
    meta["image"]["size"] = 128
    meta["class_names"] = [f"k{i}" for i in range(64)]
    cfg = meta["config"]
    g = build_generator(cfg["arch"], cfg["z_dim"], 64, 1, 128, cfg["g_width"]).eval()
    write_folder(tmp_path / "big", meta, {GENERATOR_FILE: g.state_dict()})
    s = Studio(tmp_path)
    with pytest.raises(InputError, match="ask for fewer columns or rows, or one class"):
        s.generate("big", ALL_CLASSES, 0, 1, 10)
    with pytest.raises(InputError, match="pixels even at display scale 1"):
        s.generate("big", ALL_CLASSES, 0, 1, 1)
    with pytest.raises(InputError, match="at most 122 of this size: ask for fewer frames, or one class"):
        s.interpolate("big", "Classes 1-16", 0, 1, 8)
    # a one-class grid of images this large is capped by its latency target (grid_limit): 16 at 128 px
    with pytest.raises(InputError, match="shows at most 16: ask for fewer rows or columns, for example"):
        s.generate("big", "k3", 0, 10, 10, 1.0, 8)
    image, caption = s.generate("big", "k3", 0, 3, 4, 1.0, 8)
    assert max(image.shape) <= MAX_SIDE and "display scale lowered" in caption


# ============================================================================= 5. checkpoint text is shown as text

PLANTED_IMG = "<img src=http://127.0.0.1:9/planted.png>"
PLANTED_LINK = "[click](http://127.0.0.1:9/phish)"


@pytest.fixture(scope="module")
def planted_root(tmp_path_factory, tiny_export) -> Path:
    root = tmp_path_factory.mktemp("planted") / "checkpoints"
    shutil.copytree(tiny_export, root / "mnist")
    meta = read_meta(root / "mnist")
    meta["class_names"] = [PLANTED_IMG, PLANTED_LINK, "*bold*", "a|b"] + [str(i) for i in range(4, 10)]
    meta["dataset"]["title"] = "<b>Title</b> www.example.com"
    meta["dataset"]["license"] = "<a href=http://127.0.0.1:9/x>licence</a>"
    (root / "mnist" / META_FILE).write_text(json.dumps(meta))
    (root / "mnist" / "MODEL_CARD.md").unlink(missing_ok=True)
    shutil.copytree(root / "mnist", root / "carded")
    (root / "carded" / "MODEL_CARD.md").write_text(f"# Card\n\n![x](http://127.0.0.1:9/card.png) {PLANTED_IMG}\n")
    return root


def test_checkpoint_text_is_escaped_in_captions_cards_and_errors(planted_root):
    s = Studio(planted_root)
    texts = [s.generate("mnist", PLANTED_IMG, 0, 1, 1)[1], s.generate("mnist", ALL_CLASSES, 0, 1, 1)[1],
             s.morph("mnist", PLANTED_IMG, PLANTED_LINK, 0, 2)[2], s.nearest("mnist", PLANTED_IMG, 0)[1],
             s.real_vs_generated("mnist", "*bold*", 0, 1)[1], s.model_card("mnist"), s.model_card("carded")]
    for text in texts[:-1]:
        assert "<img" not in text and "<a " not in text and "<b>" not in text, text
        assert not re.search(r"(?<!\\)\]\(http", text) and "![" not in text and "http://" not in text, text
    assert "&lt;img src=http:\\/\\/127.0.0.1:9/planted.png&gt;" in texts[0]
    card = texts[-1]  # a MODEL_CARD.md is a document (its links stay links) but shows no HTML and loads no image
    assert card.startswith("# Card") and "<img" not in card and "![" not in card and "&lt;img" in card


def test_browser_fetches_nothing_a_checkpoint_names(planted_root):
    """The page with the planted names, the card with a planted image, a caption naming the class: no
    request leaves for the planted addresses and no planted element is in the page."""
    pytest.importorskip("playwright")
    if not Path("/usr/bin/chromium").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI")
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    from cgan import ui

    demo = ui.build(planted_root, Studio(planted_root))
    _, url, _ = ui.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    requests = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox", "--disable-background-networking"])
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            page.wait_for_selector("#grid img", timeout=60_000)
            page.get_by_role("tab", name="Model card").click()
            page.wait_for_timeout(500)
            page.get_by_role("tab", name="Grid").click()
            page.locator("#class input").click()
            page.get_by_role("option", name=PLANTED_IMG).click()
            page.wait_for_function("document.querySelector('#grid-caption').innerText.includes('planted')",
                                   timeout=30_000)
            html = page.content()
            browser.close()
    finally:
        demo.close()
    assert not [u for u in requests if "127.0.0.1:9" in u], requests
    assert 'src="http://127.0.0.1:9' not in html and 'href="http://127.0.0.1:9' not in html


# ============================================================================= 6. one process per run folder

def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path, mnist_dir):
    run = tmp_path / "run"
    first = start(tmp_path / "a.log", "--dataset", "mnist", "--data-dir", mnist_dir, *TINY, "--steps", 400,
                  "--checkpoint-every", 2, "--log-every", 1, "--out", run)
    wait_for(lambda: latest_checkpoint(run) is not None, first, poll=0.05)
    second = subprocess.run([sys.executable, "train.py", "--resume", str(run), "--data-dir", str(mnist_dir),
                             "--steps", "500"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"already in use by PID {first.pid}" in second.stderr
    again = subprocess.run([sys.executable, "train.py", "--dataset", "mnist", "--data-dir", str(mnist_dir), *TINY,
                            "--steps", "4", "--out", str(run)], cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and f"already in use by PID {first.pid}" in again.stderr
    assert first.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()[-2000:]
    steps = [int(ln.split(",")[0]) for ln in (run / "losses.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 401))  # no loss row lost
    assert latest_checkpoint(run).name == "step-0000400"
    # the lock dies with its holder: the run can be resumed now
    assert subprocess.run([sys.executable, "train.py", "--resume", str(run), "--data-dir", str(mnist_dir),
                           "--steps", "402"],
                          cwd=REPO, env=ENV, capture_output=True, timeout=120).returncode == 0


def test_prune_sweeps_temporary_folders_of_dead_writers_only(tmp_path):
    folder = tmp_path / "checkpoints"
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for pid in (live.pid, dead.pid):
            (folder / f".tmp-step-0000005-{pid}").mkdir(parents=True)
            (folder / f".tmp-step-0000005-{pid}" / GENERATOR_FILE).write_bytes(b"x")
        prune_checkpoints(tmp_path, keep=3)
        assert sorted(p.name for p in folder.iterdir()) == [f".tmp-step-0000005-{live.pid}"]
    finally:
        live.kill()
        live.wait()


# ============================================================================= 7. real samples are validated

def bad_real(folder: Path, kind: str) -> None:
    f = folder / REAL_SAMPLES_FILE
    t = load_file(f)
    images, labels = t["images"], t["labels"]
    t = {"shape": {"images": images[:, :20].contiguous(), "labels": labels},
         "float labels": {"images": images, "labels": labels.float()},
         "out of range": {"images": images, "labels": labels + 100},
         "negative": {"images": images, "labels": labels - 5},
         "length": {"images": images, "labels": labels[:-3]},
         "float images": {"images": images.float(), "labels": labels},
         "extra": {"images": images, "labels": labels, "more": labels.clone()}}[kind]
    save_file(t, f)


@pytest.mark.parametrize("kind,message", [
    ("shape", "'images' must be uint8 of shape"), ("float images", "'images' must be uint8"),
    ("float labels", "'labels' must be int64"), ("out of range", "labels must be class indices 0 to 9"),
    ("negative", "labels must be class indices"), ("length", "one per image"), ("extra", "exactly the tensors")])
def test_bad_real_samples_are_refused_with_the_file_named(tiny_export, tmp_path, kind, message):
    shutil.copytree(tiny_export, tmp_path / "mnist")
    shutil.copytree(tiny_export, tmp_path / "good")
    bad_real(tmp_path / "mnist", kind)
    s = Studio(tmp_path)
    assert s.names == ["good"]
    assert REAL_SAMPLES_FILE in s.skipped["mnist"] and message in s.skipped["mnist"], s.skipped["mnist"]
    assert s.nearest("good", "3", 0)[1].startswith("Generated image 0")


# ============================================================================= 8. nothing is read after the scan

def test_files_swapped_for_links_after_start_are_never_read(tiny_export, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_export, root / "mnist")
    (root / "mnist" / "MODEL_CARD.md").write_text("# The real card\n")
    s = Studio(root)
    for name in ("MODEL_CARD.md", "evaluation.json", REAL_SAMPLES_FILE, GENERATOR_FILE):
        (root / "mnist" / name).unlink(missing_ok=True)
        (root / "mnist" / name).symlink_to("/etc/os-release")
    assert s.model_card("mnist") == "# The real card\n"
    real = s.real("mnist")
    assert real is not None and real[0].shape[1:] == (28, 28)
    with pytest.raises(CheckpointError, match="symbolic link leading outside"):
        s.generate("mnist", "3", 0, 1, 1)  # the generator was not loaded yet: refused, not read


# ============================================================================= 9. no dead ends

def test_a_run_killed_before_its_first_checkpoint_can_be_started_again(tmp_path, mnist_dir):
    run = tmp_path / "run"
    args = ["--dataset", "mnist", "--data-dir", mnist_dir, *TINY, "--steps", 400, "--checkpoint-every", 1000,
            "--log-every", 1, "--out", run]
    proc = start(tmp_path / "a.log", *args)
    wait_for(lambda: (run / "losses.csv").is_file() and len((run / "losses.csv").read_text().splitlines()) > 3,
             proc, poll=0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    r = subprocess.run([sys.executable, "train.py", "--resume", str(run), "--data-dir", str(mnist_dir)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "start it again with its first command" in r.stderr, r.stderr
    assert f"--out {run}" in r.stderr  # the command, ready to copy
    r = subprocess.run([sys.executable, "train.py", "--dataset", "mnist", "--data-dir", str(mnist_dir), *TINY,
                        "--steps", "6", "--checkpoint-every", "3", "--log-every", "1", "--out", str(run)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "reusing" in r.stderr, r.stderr
    steps = [ln.split(",")[0] for ln in (run / "losses.csv").read_text().splitlines()[1:]]
    assert steps == ["1", "2", "3", "4", "5", "6"] and latest_checkpoint(run).name == "step-0000006"
    assert len(json.loads((run / "run.json").read_text())["invocations"]) == 2


def test_a_folder_with_checkpoints_is_never_reused(tiny_run, tmp_path, mnist_dir, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rc = train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), *TINY, "--steps", "2", "--out", str(run)])
    assert rc == 2 and "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(run)] == ["step-0000002", "step-0000004"]


@pytest.mark.parametrize("damage", ["truncate training state", "truncate generator", "bad json", "missing file"])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_run_resumes(tiny_run, tmp_path, mnist_dir, capsys,
                                                                       damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    newest = run / "checkpoints" / "step-0000004"
    if damage == "truncate training state":
        with open(newest / TRAINING_FILE, "r+b") as f:
            f.truncate(5000)
    elif damage == "truncate generator":
        with open(newest / GENERATOR_FILE, "r+b") as f:
            f.truncate(f.seek(0, 2) - 1)
    elif damage == "bad json":
        (newest / META_FILE).write_text("{not json")
    else:
        (newest / TRAINING_FILE).unlink()
    assert train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "6"]) == 0
    err = capsys.readouterr().err
    assert "step-0000004 is damaged" in err and "moved it to" in err and "resuming from step-0000002" in err
    aside = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("damaged-step-0000004")]
    assert len(aside) == 1  # kept, not deleted
    assert [p.name for p in list_checkpoints(run)][-1] == "step-0000006"


# ============================================================================= 10. smaller things

def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    bomb = tmp_path / "t10k-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(header)
        zeros = bytes(1 << 24)
        for _ in range(48):  # 800 MB of zeros behind a header announcing 7,840 bytes
            f.write(zeros)
    assert bomb.stat().st_size < 2_000_000
    script = ("import numpy, torch\nbase = " + PEAK + "\nfrom cgan.data import read_idx, DatasetError\n"
              f"try:\n    read_idx({str(bomb)!r})\nexcept DatasetError as e:\n    print('ERR', e)\n"
              "print('PEAK', (" + PEAK + " - base) // 1024)\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert "ERR" in out and "more than 7,840 bytes" in out and str(bomb) in out, out + r.stderr
    assert int(out.split("PEAK")[1]) < 50, out  # MiB above the interpreter with torch and numpy loaded


@pytest.mark.parametrize("dims,message", [
    ([2**32 - 1] * 3, "more than the 1,073,741,824 this reader accepts"),
    ([2**31, 2**31, 2**31, 2**31], "more than the"),
    ([5, 0], "holds more than 0 bytes"),
])
def test_absurd_idx_headers_name_the_file(tmp_path, dims, message):
    f = tmp_path / "x-idx3-ubyte"
    f.write_bytes(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + b"\x01" * 10)
    with pytest.raises(DatasetError) as e:
        read_idx(f)
    assert str(f) in str(e.value) and message in str(e.value) and "-" not in str(e.value).split("holds")[-1][:3]


def test_idx_round_trip_still_exact(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)
    write_idx(tmp_path / "short.gz", a)
    data = gzip.decompress((tmp_path / "short.gz").read_bytes())[:-5]
    (tmp_path / "short.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DatasetError, match="holds 5,483 bytes"):
        read_idx(tmp_path / "short.gz")


@pytest.mark.parametrize("value", [10**4000, -(10**4000), 10**30, 1e300, -1e30],
                         ids=["4001 digits", "-4001 digits", "10^30", "1e300", "-1e30"])
def test_huge_numbers_are_not_echoed_in_full(tiny_root, value):
    s = Studio(tiny_root)
    with pytest.raises(InputError) as e:
        s.generate("mnist", "3", value, 1, 1)
    message = str(e.value)
    assert len(message) < 120 and "seed must be from 0 to" in message, message
