"""Your own images: a folder of class subfolders (or a CSV) trains, resumes, exports, evaluates and serves;
every kind of bad input gets a line in the report (or a clear refusal) and costs nothing else.

The folders are written here: PNG and JPEG, grey and RGB, odd sizes, and the damaged files a real
folder holds (text files, truncated images, a decompression bomb, CMYK, palettes, 16-bit, alpha)."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from cgan.image_folder import (BOMB, CORRUPT, HIDDEN, LOOSE, MIN_CLASS_IMAGES, NOT_FILE, NOT_IMAGE, OUTSIDE,
                               FolderSource, decode, display_name, format_report, load_folder_dataset,
                               nearest_size, read_folder)
from cgan.training_cli import main as train
from conftest import TINY


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test decodes into its own cache (CGAN_DATA_CACHE), so nothing leaks between tests."""
    monkeypatch.setenv("CGAN_DATA_CACHE", str(tmp_path / "cache"))


def class_image(k: int, i: int, size: tuple[int, int], rgb: bool) -> Image.Image:
    """Class k: a bright bar at a height set by k, on noise; RGB ones tinted by class."""
    w, h = size
    rng = np.random.default_rng(1000 * k + i)
    a = rng.integers(0, 60, (h, w), dtype=np.uint8)
    row = int(h * (0.2 + 0.25 * k))
    a[row:row + max(2, h // 8), w // 8: w - w // 8] = 255
    if not rgb:
        return Image.fromarray(a, "L")
    tint = np.array([(1.0, 0.5, 0.2), (0.2, 0.6, 1.0), (0.5, 1.0, 0.5)][k % 3])
    return Image.fromarray((a[..., None] * tint).astype(np.uint8), "RGB")


def make_folder(root: Path, per_class=(12, 12), rgb=False, sizes=((30, 34), (41, 29), (36, 36)),
                names=("circle", "square")) -> Path:
    """One subfolder per class; PNG and JPEG alternate; sizes cycle through ``sizes``."""
    for k, (name, n) in enumerate(zip(names, per_class)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = class_image(k, i, sizes[i % len(sizes)], rgb)
            img.save(root / name / (f"{i:03d}.png" if i % 2 else f"{i:03d}.jpg"), quality=95)
    return root


def report_of(folder: Path, **kw):
    data, size, channels = read_folder(FolderSource(str(folder), None, **kw), progress=False)
    return data, data.report, size, channels


# ----------------------------------------------------------------------------- defaults, rules and the cache

def test_defaults_come_from_the_images(tmp_path):
    grey = make_folder(tmp_path / "grey")
    data, report, size, channels = report_of(grey)
    assert (size, channels) == (32, 1)  # median shorter side 30-34 -> 32; every file greyscale
    assert report["classes"] == {"circle": 12, "square": 12} and report["images"] == 24
    assert data.images.shape == (24, 1, 32, 32)
    colour = make_folder(tmp_path / "colour", rgb=True, sizes=((70, 60), (64, 90)))
    data, report, size, channels = report_of(colour)
    assert (size, channels) == (64, 3) and data.images.shape == (24, 3, 64, 64)
    assert [nearest_size(s) for s in (10, 29.9, 30, 31, 48, 200)] == [28, 28, 32, 32, 64, 64]
    # the stated options win over the defaults
    data, report, size, channels = report_of(colour, image_size=28, channels=1)
    assert data.images.shape == (24, 1, 28, 28)


def test_resize_rule_is_shorter_side_then_centre_crop(tmp_path):
    """A 40x20 image, left half black, right half white, a red 10x20 block in the middle: the centre
    square (10..30) holds the block; at 28 px the block fills the whole square."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 20:] = 255
    a[:, 10:30] = (255, 0, 0)
    Image.fromarray(a).save(tmp_path / "wide.png")
    out = decode(tmp_path / "wide.png", 28, 3)
    assert out.shape == (3, 28, 28)
    inner = out[:, :, 3:-3]  # Lanczos rings a little at the crop's edges, where its support reaches past them
    assert (inner[0] > 250).all() and (inner[1] < 5).all() and (inner[2] < 5).all()
    grey = decode(tmp_path / "wide.png", 28, 1)[:, :, 3:-3]
    assert abs(int(grey.mean()) - 76) <= 1  # ITU-R 601-2 luma of pure red: 0.299 * 255


def test_conversion_rules_for_alpha_palette_cmyk_and_16_bit(tmp_path):
    # fully transparent RGBA -> white; opaque keeps its colour
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, 16:] = (0, 0, 255, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = decode(tmp_path / "alpha.png", 32, 3)
    assert (out[:, :, :14] == 255).all() and (out[2, :, 18:] == 255).all() and (out[0, :, 18:] == 0).all()
    # grey with alpha -> grey on white
    la = Image.new("LA", (32, 32), (0, 0))
    la.save(tmp_path / "la.png")
    assert (decode(tmp_path / "la.png", 32, 1) == 255).all()
    # palette with a transparent index -> that index white
    p = Image.new("P", (32, 32), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.paste(0, (0, 0, 16, 32))
    p.save(tmp_path / "palette.png", transparency=0)
    out = decode(tmp_path / "palette.png", 32, 3)
    assert (out[:, :, :14] == 255).all() and tuple(out[:, 0, 20]) == (10, 200, 30)
    # 16-bit greyscale -> 8 bits by 65535 -> 255
    sixteen = np.full((32, 32), 257 * 100, np.uint16)
    sixteen[:, 16:] = 65535
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    out = decode(tmp_path / "sixteen.png", 32, 1)
    assert (out[0, :, :14] == 100).all() and (out[0, :, 18:] == 255).all()
    # CMYK JPEG -> RGB
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    out = decode(tmp_path / "cmyk.jpg", 32, 3)
    assert out[0].mean() > 240 and out[1].mean() < 15 and out[2].mean() < 15


def test_decoding_happens_once_then_the_cache_answers(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    first, report, *_ = report_of(folder)
    assert not report["decode"].get("from_cache") and report["decode"]["images_per_second"] > 0
    second, report2, *_ = report_of(folder)
    assert report2["decode"]["from_cache"] and second.fingerprint == first.fingerprint
    assert (second.images == first.images).all() and (second.labels == first.labels).all()
    # another size is another cache entry
    third, report3, *_ = report_of(folder, image_size=28)
    assert not report3["decode"].get("from_cache") and third.fingerprint != first.fingerprint
    # a changed file is a new cache entry, decoded again
    img = folder / "circle" / "001.png"
    class_image(1, 99, (32, 32), False).save(img)
    os.utime(img, ns=(1, 1))
    fourth, report4, *_ = report_of(folder)
    assert not report4["decode"].get("from_cache") and fourth.fingerprint != first.fingerprint


def test_holdout_is_per_class_deterministic_and_stable(tmp_path):
    folder = make_folder(tmp_path / "imgs", per_class=(20, 10))
    data, *_ = report_of(folder)
    test = data.split("test", 0.2, seed=0)
    assert sorted(data.labels[test].tolist()) == [0] * 4 + [1] * 2
    assert (data.split("test", 0.2, seed=0) == test).all()
    assert not (data.split("test", 0.2, seed=1) == test).all()
    train = data.split("train", 0.2, seed=0)
    assert len(set(train.tolist()) | set(test.tolist())) == 30 and not set(train.tolist()) & set(test.tolist())
    held_keys = set(data.keys[test].tolist())
    # adding files never moves an existing file to the other side unless it is pushed out by the fraction
    make_folder(folder, per_class=(30, 10))
    more, *_ = report_of(folder)
    more_held = set(more.keys[more.split("test", 0.2, seed=0)].tolist())
    assert {k for k in held_keys if k in set(more.keys.tolist())} - more_held <= held_keys
    assert len(more_held & held_keys) >= 5


# ----------------------------------------------------------------------------- bad input: a report, not a crash

def good_then(tmp_path, bad):
    """A good two-class folder, then ``bad(folder)`` adds something; returns the report text and data."""
    folder = make_folder(tmp_path / "imgs")
    bad(folder)
    data, report, *_ = report_of(folder)
    text = format_report(report)
    assert report["classes"] == {"circle": 12, "square": 12}, text  # nothing else was lost
    assert data.images.shape[0] == 24
    return text, report


def test_a_file_that_is_not_an_image(tmp_path):
    text, report = good_then(tmp_path, lambda f: (f / "circle" / "notes.txt").write_text("hello"))
    assert f"1 {NOT_IMAGE}: circle/notes.txt" in text


def test_a_truncated_image(tmp_path):
    def bad(f):
        data = (f / "square" / "001.png").read_bytes()
        (f / "square" / "zz-cut.png").write_bytes(data[: len(data) // 2])
        jpg = (f / "square" / "000.jpg").read_bytes()
        (f / "square" / "zz-cut.jpg").write_bytes(jpg[:200])
    text, report = good_then(tmp_path, bad)
    assert report["skipped"][CORRUPT]["count"] == 2
    assert "square/zz-cut.png" in text and "square/zz-cut.jpg" in text


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    text, report = good_then(tmp_path, lambda f: (f / "circle" / "bomb.png").write_bytes(png_claiming(60_000, 60_000)))
    assert f"1 {BOMB}: circle/bomb.png" in text


def test_hidden_files_and_folders(tmp_path):
    def bad(f):
        (f / "circle" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (f / ".thumbnails").mkdir()
        class_image(0, 1, (32, 32), False).save(f / ".thumbnails" / "a.png")
    text, report = good_then(tmp_path, bad)
    assert report["skipped"][HIDDEN]["count"] == 2 and "circle/.DS_Store" in text and ".thumbnails" in text


def test_symbolic_links_out_of_the_folder_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    class_image(0, 5, (32, 32), False).save(outside / "secret.png")

    def bad(f):
        (f / "circle" / "link.png").symlink_to(outside / "secret.png")
        (f / "leak").symlink_to(outside)
        (f / "square" / "inside.png").symlink_to(f / "square" / "001.png")  # inside: followed
    folder = tmp_path / "imgs"
    make_folder(folder)
    bad(folder)
    data, report, *_ = report_of(folder)
    text = format_report(report)
    assert report["classes"] == {"circle": 12, "square": 13}
    assert report["skipped"][OUTSIDE]["count"] == 2 and "circle/link.png" in text and "leak" in text


def test_special_files_and_loose_files(tmp_path):
    def bad(f):
        os.mkfifo(f / "circle" / "pipe")  # opening it would block forever
        class_image(0, 1, (32, 32), False).save(f / "stray.png")
    text, report = good_then(tmp_path, bad)
    assert f"1 {NOT_FILE}: circle/pipe" in text and f"1 {LOOSE}: stray.png" in text


def test_cmyk_palette_sixteen_bit_and_alpha_files_are_used_not_skipped(tmp_path):
    def bad(f):
        Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(f / "circle" / "cmyk.jpg")
        Image.new("P", (32, 32), 3).save(f / "circle" / "palette.gif")
        Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(f / "circle" / "sixteen.png")
        Image.new("RGBA", (32, 32), (9, 9, 9, 0)).save(f / "circle" / "alpha.png")
    folder = tmp_path / "imgs"
    make_folder(folder)
    bad(folder)
    data, report, *_ = report_of(folder)
    assert report["classes"] == {"circle": 16, "square": 12} and not report["skipped"]
    assert report["channels"] == 3  # a colour file among them: RGB


def test_a_class_with_too_few_images_is_warned(tmp_path):
    folder = make_folder(tmp_path / "imgs", per_class=(12, 3))
    data, report, *_ = report_of(folder)
    text = format_report(report)
    assert f"warning: class 'square' has only 3 images; a class needs at least {MIN_CLASS_IMAGES}" in text
    assert report["classes"] == {"circle": 12, "square": 3}


def test_empty_folder_and_single_class_are_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(["--image-folder", str(empty), "--steps", "1", "--out", str(tmp_path / "r1"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no usable images" in err and "one subfolder per class" in err and "Traceback" not in err
    one = make_folder(tmp_path / "one", per_class=(12,), names=("only",))
    assert train(["--image-folder", str(one), "--steps", "1", "--out", str(tmp_path / "r2"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "needs at least two classes" in err and "only" in err
    # a class whose every file is unusable is dropped, said so, and the rest stands or falls on its own
    broken = make_folder(tmp_path / "broken")
    for p in (broken / "square").iterdir():
        p.write_bytes(b"not an image")
    assert train(["--image-folder", str(broken), "--steps", "1", "--out", str(tmp_path / "r3"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "needs at least two classes" in err and "12 not an image" in err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_hostile_and_undecodable_class_names_are_printable(tmp_path):
    folder = make_folder(tmp_path / "imgs", names=("<img src=x onerror=alert(1)>", "**bold**"))
    raw = os.fsencode(str(folder)) + b"/caf\xe9\x07 bad"  # Latin-1 bytes and a control character
    os.makedirs(raw)
    for i in range(12):
        class_image(2, i, (32, 32), False).save(os.fsdecode(raw + f"/{i}.png".encode()))
    data, report, *_ = report_of(folder)
    assert list(report["classes"]) == ["**bold**", "<img src=x onerror=alert(1)>", "caf\ufffd? bad"]
    assert display_name("a\nb\u202ec" + "x" * 100).startswith("a b?c") and len(display_name("x" * 100)) == 64


def test_labels_csv_with_bad_rows(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    rows = ["path,label"] + [f"circle/{p.name},round" for p in sorted((folder / "circle").iterdir())] + \
        [f"square/{p.name},boxy" for p in sorted((folder / "square").iterdir())] + \
        ["square/001.png,boxy", "missing.png,round", "../outside.png,round", "just-one-field", "/etc/passwd,round"]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    data, size, channels = read_folder(FolderSource(None, str(folder / "labels.csv")), progress=False)
    text = format_report(data.report)
    assert data.report["classes"] == {"boxy": 12, "round": 12}
    for words in ("listed twice in the CSV: square/001.png", "listed in the CSV but missing: missing.png",
                  "path leading out of the folder: ../outside.png, /etc/passwd", "exactly two fields"):
        assert words in text, text


# ----------------------------------------------------------------------------- the whole path: train, resume, export, serve

def folder_train(folder: Path, out: Path, steps: int, *extra) -> int:
    return train(["--image-folder", str(folder), "--steps", str(steps), "--out", str(out), "--checkpoint-every", "2",
                  "--seed", "3", *TINY, *extra])


@pytest.mark.parametrize("size,rgb", [(28, False), (32, True), (64, True)])
def test_folder_run_trains_exports_samples_and_serves(tmp_path, size, rgb, capsys):
    from cgan.export import export
    from cgan import load
    from cgan.studio import Studio

    folder = make_folder(tmp_path / "my images", rgb=rgb)
    run = tmp_path / "run"
    assert folder_train(folder, run, 2, "--image-size", str(size)) == 0
    err = capsys.readouterr().err
    assert "24 images in 2 classes" in err and "held out for evaluation" in err
    assert "circle" in (run / "data_report.txt").read_text()
    assert json.loads((run / "data_report.json").read_text())["classes"] == {"circle": 12, "square": 12}
    ck = run / "checkpoints" / "step-0000002"
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["dataset"]["name"] == "folder" and meta["dataset"]["title"] == "images from my images"
    assert meta["class_names"] == ["circle", "square"]
    assert (meta["image"]["channels"], meta["image"]["size"]) == (3 if rgb else 1, size)
    served = tmp_path / "served"
    export(ck, served / "mine")
    images, labels = load(served / "mine").sample(["square"], 3, seed=0)
    assert images.shape[0] == 3 and images.shape[1:3] == (size, size) and images.dtype == np.uint8
    studio = Studio(str(served))
    studio.preload()
    grid, caption = studio.generate("mine", "square", 7, rows=2, cols=3, scale=1)[:2]
    assert "square" in caption
    real = studio.real("mine")
    assert real is not None and real[0].shape[1:3] == (size, size)


def test_resume_from_the_cache_is_bitwise_the_uninterrupted_run(tmp_path, capsys):
    folder = make_folder(tmp_path / "imgs")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert folder_train(folder, straight, 4) == 0
    assert folder_train(folder, resumed, 2) == 0
    capsys.readouterr()
    assert train(["--resume", str(resumed), "--steps", "4", "--no-progress"]) == 0
    assert "resuming from step-0000002" in capsys.readouterr().err
    for name in ("training_state.safetensors", "generator.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step-0000004" / name))
        b = load_file(str(resumed / "checkpoints" / "step-0000004" / name))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), name
    # the Runs tab lists it under its folder's name
    from cgan.run_view import RunView
    row = [r for r in RunView(tmp_path).table() if r[0] == "resumed"][0]
    assert row[1] == "images from imgs" and row[3].startswith("4")
    # the images changed since: --resume refuses rather than training on other data
    class_image(0, 50, (32, 32), False).save(folder / "circle" / "new.png")
    assert train(["--resume", str(resumed), "--steps", "6", "--no-progress"]) == 2
    assert "not the ones this model was trained on" in capsys.readouterr().err


def test_the_studio_searches_every_training_image_and_shows_hostile_names_safely(tmp_path):
    from cgan.export import export
    from cgan.model_card import render
    from cgan.studio import Studio

    hostile = "<img src=x onerror=alert(1)>"
    folder = make_folder(tmp_path / "pets", names=(hostile, "[link](http://evil)"))
    run = tmp_path / "run"
    assert folder_train(folder, run, 2) == 0
    served = tmp_path / "served"
    export(run / "checkpoints" / "step-0000002", served / "pets")
    exported = json.loads((served / "pets" / "checkpoint.json").read_text())
    assert exported["config"]["image_folder"] == "pets" and str(tmp_path) not in json.dumps(exported)
    card = render(served / "pets")
    assert hostile not in card and "&lt;img" in card and "](http://evil)" not in card
    # with the images' folder as --data-dir: every training image is searched
    studio = Studio(str(served), data_dir=tmp_path)
    studio.preload()
    classes = studio.class_names("pets")
    assert hostile in classes  # the name itself is kept; every place that shows it escapes it
    image, text = studio.nearest("pets", classes[0], 5)
    assert "all 22 images of your train split it was trained on" in text, text
    assert hostile not in text
    grid, caption = studio.generate("pets", classes[0], 1, rows=1, cols=2, scale=1)[:2]
    assert hostile not in caption
    # other images under the same name are refused, and the bundled sample answers instead
    (folder / "[link](http://evil)" / "000.jpg").unlink()
    studio = Studio(str(served), data_dir=tmp_path)
    studio.preload()
    image, text = studio.nearest("pets", classes[0], 5)
    assert "bundled with this checkpoint" in text


def test_folder_evaluator_and_evaluation(tmp_path, capsys):
    from cgan.evaluate import main as evaluate_main
    from cgan.evaluator_cli import main as evaluator_main

    folder = make_folder(tmp_path / "imgs", per_class=(40, 40))
    run = tmp_path / "run"
    assert folder_train(folder, run, 2) == 0
    ck = run / "checkpoints" / "step-0000002"
    assert evaluator_main(["train", "--out", str(ck), "--epochs", "1", "--width", "8", "--no-reference"]) == 0
    err = capsys.readouterr().err
    assert "your images: the part a run trains on (72 images) trains the evaluator" in err, err
    assert evaluate_main([str(ck), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "conditional accuracy" in out and "Fr" in out
    # moved images: --data-dir says where they are now; changed images are refused
    moved = tmp_path / "moved"
    folder.rename(moved)
    assert evaluate_main([str(ck), "--quick", "--data-dir", str(moved)]) == 0
    capsys.readouterr()
    class_image(0, 77, (32, 32), False).save(moved / "circle" / "zzz.png")
    assert evaluate_main([str(ck), "--quick", "--data-dir", str(moved)]) == 2
    assert "not the" in capsys.readouterr().err


def test_the_train_form_starts_a_run_on_your_own_images(tmp_path):
    """The studio's Train form: dataset "your own images" and the data folder is the image folder; the
    child train.py decodes, trains and finishes, and the Runs tab lists the run."""
    import time

    from cgan.launcher import Launcher
    from cgan.run_view import RunView
    from cgan.studio import InputError

    folder = make_folder(tmp_path / "shapes")
    launcher = Launcher(tmp_path / "runs")
    fields = ("folder", str(folder), "train", "balanced", "mlp", "3", "8", "cpu", "0")
    argv, _ = launcher.command(*fields, "x")
    assert argv[argv.index("--image-folder") + 1] == str(folder) and "--dataset" not in argv and "--data-dir" not in argv
    with pytest.raises(InputError, match="type the folder that holds them"):
        launcher.command("folder", "", *fields[2:], "y")
    with pytest.raises(InputError, match="type the folder that holds your images"):
        launcher.command("folder", str(tmp_path / "nowhere"), *fields[2:], "y")
    name = launcher.start(*fields, "mine")
    deadline = time.time() + 120
    while launcher.running():
        assert time.time() < deadline, launcher.log_tail()
        time.sleep(0.2)
    assert launcher.proc.returncode == 0, launcher.log_tail()
    assert "24 images in 2 classes" in launcher.log_tail(40)
    row = [r for r in RunView(tmp_path / "runs").table() if r[0] == name][0]
    assert row[1] == "images from shapes" and "finished" in row[4]
