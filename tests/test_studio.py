"""The studio's handlers (cgan/studio.py) on real checkpoints: tiny ones built here, and the shipped
ones in checkpoints/ when present. Class routing is checked with each shipped evaluator."""
from __future__ import annotations

import math
import re
import os
from pathlib import Path
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cgan
from cgan import studio as studio_mod
from cgan.studio import ALL_CLASSES, MAX_SEED, InputError, Studio, TempFiles, check_float, check_int
from studio_helpers import REAL_PER_CLASS, SHIPPED, gif_frames, shipped_names, tile

SOURCES = ["tiny"] + (["shipped"] if shipped_names() else [])


@pytest.fixture(scope="module")
def studio(tiny_root):
    return Studio(tiny_root)


@pytest.fixture(scope="module", params=SOURCES)
def any_studio(request, tiny_root):
    """The tiny studio, then (when checkpoints/ holds exports) one on the shipped checkpoints."""
    return Studio(tiny_root if request.param == "tiny" else SHIPPED)


# ----------------------------------------------------------------------------- listing and safety

def test_lists_checkpoint_folders_with_human_names(studio):
    assert studio.names == ["mnist", "fashion-mnist", "emnist"]  # preferred order; junk folders ignored
    assert studio.choices() == [("MNIST digits", "mnist"), ("Fashion-MNIST", "fashion-mnist"),
                                ("EMNIST letters & digits", "emnist")]
    assert studio.class_choices("fashion-mnist")[:1] == [ALL_CLASSES]
    assert "Sneaker" in studio.class_choices("fashion-mnist")
    assert len(studio.class_names("emnist")) == 47 and "g" in studio.class_names("emnist")
    d = studio.describe()
    assert d["mnist"]["classes"] == list("0123456789") and d["emnist"]["title"] == "EMNIST letters & digits"


def test_threads_follow_the_real_core_count():
    from cgan.distributed import configure_torch

    before = torch.get_num_threads()
    try:
        assert configure_torch() == len(os.sched_getaffinity(0)) == torch.get_num_threads()  # as app.py calls it
        assert configure_torch(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["..", "../mnist", "mnist/..", "/etc", "mnist/", "./mnist", "MNIST", "",
                                  "not-a-checkpoint", "README.txt", "MNIST digits", None, 3, ["mnist"]])
def test_dataset_names_outside_the_listing_are_refused(studio, tiny_root, name):
    with pytest.raises(InputError, match="dataset"):
        studio.generate(name, "1", 0)


def test_absolute_path_of_a_checkpoint_is_refused(studio, tiny_root):
    with pytest.raises(InputError, match="unknown dataset"):
        studio.generate(str(tiny_root / "mnist"), "1", 0)


def test_broken_and_oddly_named_folders_are_skipped(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist")
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist copy")      # name with a space: not listed
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "checkpoint.json").write_text("{not json")
    s = Studio(tmp_path)
    assert s.names == ["mnist"]
    assert "broken" in s.skipped and "not valid JSON" in s.skipped["broken"]


def test_duplicate_titles_are_told_apart(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist")
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist-b")
    assert Studio(tmp_path).choices() == [("MNIST digits (mnist)", "mnist"), ("MNIST digits (mnist-b)", "mnist-b")]


def test_models_load_once(studio):
    a = studio.sampler("mnist")
    assert studio.sampler("mnist") is a
    studio.generate("mnist", "3", 1, 2, 2)
    assert studio.sampler("mnist") is a


# ----------------------------------------------------------------------------- generate

def test_grid_shape_and_scale(studio):
    img, caption = studio.generate("mnist", "7", 5, rows=3, cols=4, truncation=1.0, scale=1)
    assert img.dtype == np.uint8 and img.shape == (3 * 30 + 2, 4 * 30 + 2)
    big, _ = studio.generate("mnist", "7", 5, rows=3, cols=4, truncation=1.0, scale=3)
    assert big.shape == (3 * img.shape[0], 3 * img.shape[1])
    assert np.array_equal(big[::3, ::3], img)
    assert "'7'" in caption and "seed 5" in caption


def test_all_classes_is_one_row_per_class(studio):
    img, caption = studio.generate("emnist", ALL_CLASSES, 2, rows=1, cols=10, scale=1)
    assert img.shape[0] == 47 * 30 + 2 and img.shape[1] > 10 * 30 + 2  # the grid, and a column of row labels
    assert "47 classes" in caption
    grid = studio.generate("emnist", "Classes 1-16", 2, rows=1, cols=10, scale=1)[0][:, -(10 * 30 + 2):]
    assert np.array_equal(img[:16 * 30 + 2, -(10 * 30 + 2):], grid)  # the first page is the first 16 rows


def test_overview_rows_are_labelled_with_class_names(studio):
    from cgan.images import label_rows

    img, _ = studio.generate("emnist", ALL_CLASSES, 2, rows=1, cols=4, scale=2)
    names = studio.class_names("emnist")
    width = img.shape[1] - (4 * 30 + 2) * 2
    labels = img[:, :width]
    for r in range(47):  # every row's label column holds dark text pixels, centred on the row
        band = labels[(2 + 30 * r) * 2:(30 + 30 * r) * 2]
        assert (band < 128).any(), names[r]
    blank = label_rows(np.zeros((img.shape[0], 8), np.uint8), [""] * 47, 28, 2, 2)[:, :-8]
    assert (blank == 255).all()  # no text: no dark pixels, so the check above sees the names


def test_large_outputs_lower_the_display_scale(studio):
    img, caption = studio.generate("emnist", ALL_CLASSES, 2, rows=1, cols=10, scale=8)
    assert max(img.shape) <= studio_mod.MAX_SIDE and "display scale lowered to 2" in caption


def test_same_seed_same_images_other_seed_other_images(studio):
    a, _ = studio.generate("fashion-mnist", "Sneaker", 123, 2, 5, 1.0, 1)
    b, _ = studio.generate("fashion-mnist", "Sneaker", 123, 2, 5, 1.0, 1)
    c, _ = studio.generate("fashion-mnist", "Sneaker", 124, 2, 5, 1.0, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_seed_consistency_with_cgan_sample(any_studio):
    """Image j of class k for seed S is cgan.load(...).sample([k], ..., seed=S)[j], bit for bit."""
    for name in any_studio.names:
        folder = any_studio.entries[name].folder
        sampler = cgan.load(folder)
        k = sampler.num_classes - 1
        cls = sampler.class_names[k]
        grid, _ = any_studio.generate(name, cls, 2024, 3, 7, 0.8, 1)
        ref, labels = sampler.sample([cls], 21, seed=2024, truncation=0.8)
        assert (labels == k).all()
        for j in range(21):
            assert np.array_equal(tile(grid, j // 7, j % 7), ref[j]), (name, j)
        overview, _ = any_studio.generate(name, ALL_CLASSES, 7, 1, 3, 1.0, 1)
        overview = overview[:, -(3 * 30 + 2):]  # without the column of class names
        every, _ = sampler.sample(range(sampler.num_classes), 3, seed=7)
        for kk in range(sampler.num_classes):
            for j in range(3):
                assert np.array_equal(tile(overview, kk, j), every[kk * 3 + j])
        # a bigger grid starts with the same images
        small, _ = any_studio.generate(name, cls, 2024, 1, 3, 0.8, 1)
        assert np.array_equal(small, grid[:small.shape[0], :small.shape[1]])


def test_class_routing_reaches_the_generator(studio):
    """The class sent is the class the generator is conditioned on (checked against the generator itself)."""
    s = studio.sampler("fashion-mnist")
    z = cgan.latents(9, range(10), s.z_dim)
    for k, name in enumerate(s.class_names):
        grid, _ = studio.generate("fashion-mnist", name, 9, 1, 10, 1.0, 1)
        direct = s.generate(z, torch.full((10,), k, dtype=torch.int64), batch=10)
        for j in range(10):
            assert np.array_equal(tile(grid, 0, j), direct[j]), (name, j)


def test_truncation_scales_the_latent(studio):
    s = studio.sampler("mnist")
    grid, _ = studio.generate("mnist", "4", 3, 1, 10, 0.5, 1)
    direct = s.generate(cgan.latents(3, range(10), s.z_dim) * 0.5, torch.full((10,), 4), batch=10)
    assert all(np.array_equal(tile(grid, 0, j), direct[j]) for j in range(10))
    full, _ = studio.generate("mnist", "4", 3, 1, 10, 1.0, 1)
    assert not np.array_equal(grid, full)


# ----------------------------------------------------------------------------- interpolation and morph

def test_interpolation_frames_and_gif(studio):
    strip, gif, caption = studio.interpolate("mnist", "3", 10, 11, 16, "spherical", 1.0, 2)
    assert strip.shape == (2 * (30 + 2), 2 * (16 * 30 + 2))
    frames = gif_frames(gif)
    assert len(frames) == 16
    for f in range(16):  # every GIF frame is the strip's frame, pixel for pixel, enlarged to >= 256 px
        assert frames[f].shape == (8 * 32, 8 * 32)
        assert np.array_equal(tile(frames[f], 0, 0, scale=8)[::4, ::4], tile(strip, 0, f, scale=2))
    # the ends are image 0 of seed A and of seed B (up to the last bit of float32 batch arithmetic)
    s = studio.sampler("mnist")
    a, _ = s.sample(["3"], 1, seed=10)
    b, _ = s.sample(["3"], 1, seed=11)
    assert np.abs(tile(strip, 0, 0, scale=2)[::2, ::2].astype(int) - a[0]).max() <= 1
    assert np.abs(tile(strip, 0, 15, scale=2)[::2, ::2].astype(int) - b[0]).max() <= 1
    assert "spherical" in caption and "16 frames" in caption


def test_interpolation_methods_differ_and_strip_wraps(studio):
    lin, gif_l, _ = studio.interpolate("fashion-mnist", "Bag", 1, 2, 20, "linear", 1.0, 1)
    sph, gif_s, _ = studio.interpolate("fashion-mnist", "Bag", 1, 2, 20, "spherical", 1.0, 1)
    assert lin.shape == sph.shape == (2 * 30 + 2, 16 * 30 + 2)  # 20 frames wrap after 16
    assert not np.array_equal(lin, sph)
    assert np.abs(tile(lin, 0, 0).astype(int) - tile(sph, 0, 0)).max() <= 1  # same ends
    assert gif_l != gif_s and len(gif_frames(gif_l)) == 20


def test_interpolation_all_classes(studio):
    strip, gif, _ = studio.interpolate("emnist", ALL_CLASSES, 1, 2, 4, "linear", 1.0, 1)
    assert strip.shape[0] == 47 * 30 + 2 and strip.shape[1] > 4 * 30 + 2  # with a column of class names
    frames = gif_frames(gif)
    assert len(frames) == 4 and frames[0].shape == (5 * 30 + 2, 10 * 30 + 2)


def test_class_morph_goes_from_class_a_to_class_b(studio):
    strip, gif, caption = studio.morph("fashion-mnist", "Sneaker", "Ankle boot", 5, 8, 1.0, 1)
    assert strip.shape == (30 + 2, 8 * 30 + 2) and len(gif_frames(gif)) == 8
    s = studio.sampler("fashion-mnist")
    a, _ = s.sample(["Sneaker"], 1, seed=5)
    b, _ = s.sample(["Ankle boot"], 1, seed=5)
    assert np.abs(tile(strip, 0, 0).astype(int) - a[0]).max() <= 1
    assert np.abs(tile(strip, 0, 7).astype(int) - b[0]).max() <= 1
    # the middle is the generator's output for blended class weights
    z = cgan.latents(5, [0], s.z_dim)
    w = torch.zeros(1, s.num_classes)
    w[0, 7], w[0, 9] = 4 / 7, 3 / 7
    mid = s.generate(z, w)[0]
    assert np.abs(tile(strip, 0, 3).astype(int) - mid).max() <= 1
    assert "'Sneaker' -> 'Ankle boot'" in caption


def test_gif_files_are_unique_and_pruned(tiny_root):
    temp = TempFiles(keep=3)
    s = Studio(tiny_root, temp=temp)
    paths = [s.morph("mnist", "1", "7", i, 2, 1.0, 1)[1] for i in range(5)]
    assert len(set(paths)) == 5
    assert [os.path.exists(p) for p in paths] == [False, False, True, True, True]
    assert all(Path(p).parent.parent == temp.folder for p in paths)  # a folder each: names never clash
    assert [Path(p).name for p in paths] == [f"mnist_morph_1-to-7_seed{i}_psi1.gif" for i in range(5)]
    assert len([p for p in temp.folder.iterdir()]) == 3  # pruned folders are removed too
    folder = temp.folder
    temp.cleanup()
    assert not folder.exists()


# ----------------------------------------------------------------------------- real vs generated, nearest

def test_real_vs_generated(studio):
    img, caption = studio.real_vs_generated("mnist", "5", 8, 4, 1.0, 1)
    width = 4 * 30 + 2
    assert img.shape == (32, 2 * width + 8)
    real_images, real_labels = studio.sampler("mnist").real_samples()
    mine = real_images[real_labels == 5][:4]
    fake, _ = studio.sampler("mnist").sample(["5"], 4, seed=8)
    for j in range(4):
        assert np.array_equal(tile(img, 0, j), mine[j])
        assert np.array_equal(tile(img[:, width + 8:], 0, j), fake[j])
    assert "left, real" in caption


def test_real_vs_generated_all_classes(studio):
    img, _ = studio.real_vs_generated("emnist", ALL_CLASSES, 8, 2, 1.0, 1)
    assert img.shape == (47 * 30 + 2, 2 * (2 * 30 + 2) + 8)


def test_nearest_neighbour_is_the_true_nearest(studio):
    img, text = studio.nearest("mnist", "4", 1, 3, 1.0, 1)
    s = studio.sampler("mnist")
    g, _ = s.sample(["4"], 1, seed=1, start=3)
    assert np.array_equal(tile(img, 0, 0), g[0])
    real_images, real_labels = s.real_samples()
    d = np.sqrt(((real_images.reshape(len(real_images), -1).astype(np.float64) - g.reshape(1, -1)) ** 2).sum(1))
    best = np.argsort(d, kind="stable")[:5]
    right = img[:, 30 + 2 + 8:]
    for i, j in enumerate(best):
        assert np.array_equal(tile(right, 0, i), real_images[j])
    assert f"| 1 | {s.class_names[real_labels[best[0]]]} | {d[best[0]]:.0f} |" in text
    assert "median distance" in text


def test_nearest_neighbour_finds_a_copy(tiny_root, tmp_path):
    """Put a generated image into the bundled sample: the check must report distance 0."""
    s = Studio(tiny_root)
    g, _ = s.sampler("mnist").sample(["2"], 1, seed=77, start=5)
    real_images, real_labels = s.sampler("mnist").real_samples()
    s.entries["mnist"].real = (np.concatenate([real_images, g]), np.concatenate([real_labels, [2]]))
    _, text = s.nearest("mnist", "2", 77, 5, 1.0, 1)
    assert "| 1 | 2 | 0 |" in text


def test_image_index_selects_image_j(studio):
    img, _ = studio.nearest("emnist", "g", 4, 17, 1.0, 1)
    ref, _ = studio.sampler("emnist").sample(["g"], 18, seed=4)
    assert np.array_equal(tile(img, 0, 0), ref[17])


# ----------------------------------------------------------------------------- model card

def test_built_model_card(studio):
    card = studio.model_card("emnist").replace("\\", "")  # Markdown escapes of checkpoint text
    for text in ("# EMNIST letters & digits: class-conditional GAN", "NIST Special Database 19", "sngan",
                 "latent size 128", "bymerge", "training time to this step", "47 classes", "## Metrics"):
        assert text in card, text


def test_model_card_file_is_preferred(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist")
    (tmp_path / "mnist" / "MODEL_CARD.md").write_text("# My card\n\nFID: 1.0\n")
    assert Studio(tmp_path).model_card("mnist") == "# My card\n\nFID: 1.0\n"


def test_model_card_shows_bundled_evaluation(tiny_root, tmp_path):
    """A folder without MODEL_CARD.md gets the card `python -m cgan.model_card` would write, with the
    numbers of its evaluation.json; another tool's evaluation.json costs only the metrics table."""
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist")
    (tmp_path / "mnist" / "MODEL_CARD.md").unlink(missing_ok=True)
    shutil.copy(SHIPPED / "mnist" / "evaluation.json", tmp_path / "mnist" / "evaluation.json")
    card = Studio(tmp_path).model_card("mnist")
    assert "## In short" in card and "| GAN-train accuracy" in card and "98.15%" in card
    (tmp_path / "mnist" / "evaluation.json").write_text('{"gan_test": {"accuracy": 0.9871}, "fid": 1.234}')
    card = Studio(tmp_path).model_card("mnist")
    assert "No evaluation stored yet" in card and "## Model" in card  # not the cgan.evaluate format


def test_example_classes_are_chosen_by_measurement_not_by_a_noisy_ratio(tiny_root, tmp_path):
    """The studio's examples: the best class is the one whose generated images the evaluator recognises most
    often, not the top ratio to a ceiling (a class the evaluator hardly knows, like EMNIST's f, gets a ratio
    above 1 from a handful of images); the worst is the one furthest under target in standard errors."""
    import json
    from cgan.ui import _best_and_worst
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist")
    evaluation = tmp_path / "mnist" / "evaluation.json"
    names = [str(i) for i in range(10)]
    generated = {n: 0.95 for n in names} | {"3": 0.04, "6": 0.99, "8": 0.99}
    ceiling = {n: 0.97 for n in names} | {"3": 0.035, "8": 0.98}
    ratio = {n: generated[n] / ceiling[n] for n in names}  # "3": 1.14, the top ratio
    shortfall = {n: -1.0 for n in names} | {"1": 2.0, "5": 4.5, "7": None}
    cond = {"generated": {"per_class": generated}, "real_heldout": {"per_class": ceiling},
            "per_class_ratio": ratio | {"1": 0.5}, "per_class_shortfall_se": shortfall}
    evaluation.write_text(json.dumps({"full": {"conditional_accuracy": cond}}))
    entry = Studio(tmp_path).entries["mnist"]
    assert _best_and_worst(entry) == ("8", "5")  # 6 and 8 tie at 0.99: 8, the class known better by the evaluator
    del cond["per_class_shortfall_se"]  # an evaluation written before standard errors: the lowest ratio
    evaluation.write_text(json.dumps({"quick": {"conditional_accuracy": cond}}))
    assert _best_and_worst(Studio(tmp_path).entries["mnist"]) == ("8", "1")
    evaluation.write_text('{"fid": 1.2}')  # another tool's file: the first and the last class
    assert _best_and_worst(Studio(tmp_path).entries["mnist"]) == ("0", "9")


# ----------------------------------------------------------------------------- bad input

BAD = [
    (dict(class_name="Sneaker"), "unknown class 'Sneaker' for MNIST digits"),
    (dict(class_name=7), "unknown class 7"),
    (dict(seed=-1), "seed must be from 0 to 2147483647"),
    (dict(seed=2**31), "seed must be from 0 to 2147483647"),
    (dict(seed=1.5), "seed must be a whole number"),
    (dict(seed="12x"), "seed: type a whole number from 0 to 2147483647 using digits only, not '12x'"),
    (dict(seed="1e3"), "seed: type a whole number from 0 to 2147483647 using digits only"),
    (dict(seed=""), "seed is empty: type a whole number from 0 to 2147483647"),
    (dict(seed=None), "seed is empty: type a whole number"),
    (dict(seed=True), "seed must be a whole number from 0 to 2147483647, not True"),
    (dict(seed=" 99999999999 "), "seed must be from 0 to 2147483647, got 99999999999"),
    (dict(seed=math.nan), "seed must be a whole number"),
    (dict(rows=0), "rows must be from 1 to 10"),
    (dict(rows=11), "rows must be from 1 to 10"),
    (dict(cols=100), "columns must be from 1 to 10"),
    (dict(truncation=0), "truncation must be in"),
    (dict(truncation=1.5), "truncation must be in"),
    (dict(truncation="high"), "truncation must be a number from 0.0 to 1.0, not 'high'"),
    (dict(truncation=None), "truncation is empty"),
    (dict(scale=9), "display scale must be from 1 to 8"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_generate_refuses_bad_input(studio, change, message):
    args = dict(dataset="mnist", class_name="3", seed=0, rows=2, cols=2, truncation=1.0, scale=1) | change
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        studio.generate(**args)


@pytest.mark.parametrize("call,message", [
    (lambda s: s.interpolate("mnist", "3", 0, -2, 8, "linear"), "seed B must be from 0"),
    (lambda s: s.interpolate("mnist", "3", 0, 1, 1, "linear"), "frames must be from 2 to 48"),
    (lambda s: s.interpolate("mnist", "3", 0, 1, 49, "linear"), "frames must be from 2 to 48"),
    (lambda s: s.interpolate("mnist", "3", 0, 1, 8, "cubic"), "unknown interpolation method 'cubic'"),
    (lambda s: s.morph("mnist", ALL_CLASSES, "3", 0, 8), "class A: choose one class"),
    (lambda s: s.morph("mnist", "3", "x", 0, 8), "unknown class B 'x'"),
    (lambda s: s.nearest("mnist", "3", 0, 1000), "image index must be from 0 to 999"),
    (lambda s: s.real_vs_generated("mnist", "3", 0, 11), "images per side must be from 1 to 10"),
    (lambda s: s.model_card("../mnist"), "unknown dataset"),
])
def test_other_handlers_refuse_bad_input(studio, call, message):
    with pytest.raises(InputError, match=message):
        call(studio)


def test_missing_real_sample_is_a_clear_error(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "mnist", tmp_path / "mnist")
    (tmp_path / "mnist" / "real_samples.safetensors").unlink()
    s = Studio(tmp_path)
    with pytest.raises(InputError, match="no bundled real images"):
        s.real_vs_generated("mnist", "3", 0)
    with pytest.raises(InputError, match="no bundled real images"):
        s.nearest("mnist", "3", 0)
    assert s.generate("mnist", "3", 0, 1, 1, 1.0, 1)[0].shape == (32, 32)  # the rest still works


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no checkpoints found"):
        Studio(tmp_path).generate("mnist", "3", 0)
    with pytest.raises(FileNotFoundError):
        Studio(tmp_path / "nope")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(), st.none(), st.booleans(),
                 st.lists(st.integers(), max_size=2)))
def test_check_int_accepts_exactly_the_integers_in_range(value):
    typed = value.strip().replace(",", "").replace("_", "") if isinstance(value, str) else None
    number = int(typed) if typed is not None and re.fullmatch(r"-?[0-9]{1,30}", typed) else value
    try:
        v = check_int(value, "seed", 0, MAX_SEED)
    except InputError as e:
        assert "seed" in str(e) and len(str(e)) < 200
        ok = (isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
              and number == int(number) and 0 <= number <= MAX_SEED)
        assert not ok
    else:
        assert isinstance(v, int) and 0 <= v <= MAX_SEED and v == number and not isinstance(value, bool)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(), st.none()))
def test_check_float_truncation(value):
    try:
        v = check_float(value, "truncation", 0.0, 1.0, lo_open=True)
    except InputError:
        assert not (isinstance(value, (int, float)) and 0 < value <= 1)
    else:
        assert 0 < v <= 1


# ----------------------------------------------------------------------------- shipped checkpoints

@pytest.mark.skipif(not shipped_names(), reason="no exported checkpoints in checkpoints/")
@pytest.mark.parametrize("name", shipped_names() or ["none"])
def test_shipped_class_routing_with_evaluator(name):
    """The requested class is the one generated, as judged by the checkpoint's own evaluator.

    The majority-vote check covers the classes the evaluator itself recognises on held-out real images
    (per-class accuracy >= 0.8): EMNIST ByMerge has look-alike classes (O/0, I/1, L, q/9) that even the
    evaluator gets wrong on real data half the time, so a vote there says nothing about routing."""
    folder = SHIPPED / name
    if not (folder / "evaluator.safetensors").is_file():
        pytest.skip(f"checkpoints/{name} has no evaluator.safetensors yet")
    from cgan.evaluator import load_evaluator  # must exist once evaluators ship

    evaluator = load_evaluator(folder)
    real_accuracy = evaluator.header["heldout"]["per_class"]
    s = Studio(SHIPPED)
    classes = s.class_names(name)
    hits, majority_ok, recognisable = 0, 0, 0
    for k, cls in enumerate(classes):
        grid, _ = s.generate(name, cls, 0, 2, 10, 1.0, 1)
        images = np.stack([tile(grid, r, c) for r in range(2) for c in range(10)])
        predicted = np.asarray(evaluator.predict(images))
        assert predicted.shape == (20,), f"predict must return one label per image, got {predicted.shape}"
        hits += int((predicted == k).sum())
        if real_accuracy[cls] >= 0.8:
            recognisable += 1
            majority_ok += int(np.bincount(predicted, minlength=len(classes)).argmax() == k)
    accuracy = hits / (20 * len(classes))
    assert accuracy >= 0.75, f"{name}: only {accuracy:.0%} of generated images are classified as the requested class"
    assert recognisable >= 0.8 * len(classes)
    assert majority_ok >= math.ceil(0.95 * recognisable), \
        f"{name}: the requested class is the evaluator's majority vote for only {majority_ok}/{recognisable} classes"


@pytest.mark.skipif(not shipped_names(), reason="no exported checkpoints in checkpoints/")
def test_shipped_checkpoints_listed_with_real_samples():
    s = Studio(SHIPPED)
    for name in s.names:
        real = s.real(name)
        assert real is not None, f"checkpoints/{name} has no real_samples.safetensors"
        assert set(np.unique(real[1])) == set(range(len(s.class_names(name))))
        assert s.model_card(name).strip()


def test_tiny_fixture_bundles_real_images(studio):
    images, labels = studio.sampler("mnist").real_samples()
    assert images.dtype == np.uint8 and np.bincount(labels).max() == REAL_PER_CLASS


def test_identical_frames_keep_the_animation_length(studio):
    _, gif, _ = studio.interpolate("mnist", "3", 5, 5, 16, "spherical", 1.0, 1)
    from PIL import Image

    im = Image.open(gif)
    durations = []
    for i in range(im.n_frames):
        im.seek(i)
        durations.append(im.info["duration"])
    assert sum(durations) == 16 * studio_mod.GIF_FRAME_MS


def test_nearest_on_an_overview_uses_its_first_class_and_says_what_was_searched(studio):
    img, text = studio.nearest("mnist", ALL_CLASSES, 1, 0, 1.0, 1)
    assert np.array_equal(tile(img, 0, 0), studio.sampler("mnist").sample(["0"], 1, seed=1)[0][0])
    assert "is not one class: showing the first, '0'" in text
    n = 10 * REAL_PER_CLASS
    assert f"Searched: the {n} real images bundled with this checkpoint ({REAL_PER_CLASS}-{REAL_PER_CLASS} per class" in text
    assert "would not be found here" in text and "A copy of a training image would be at distance 0" not in text


def test_typed_digits_are_a_seed(studio):
    a, _ = studio.generate("mnist", "3", " 1,024 ", 1, 2, 1.0, 1)
    b, _ = studio.generate("mnist", "3", 1024, 1, 2, 1.0, 1)
    assert np.array_equal(a, b)


def test_nearest_searches_every_training_image_when_the_data_is_there(tiny_export, mnist_dir, tmp_path):
    """With --data-dir the search covers all the training images: a training image planted equal to the
    generated one is found at distance 0, and the distances are the brute-force ones."""
    from cgan.data import load_dataset, write_idx

    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_export, root / "mnist")
    probe = Studio(root)
    g, _ = probe.sampler("mnist").sample(["2"], 1, seed=77, start=5)
    train = load_dataset("mnist", "train", mnist_dir)
    images, labels = train.images.numpy()[:, 0].copy(), train.labels.numpy().astype(np.uint8)
    images[40], labels[40] = g[0], 2
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    write_idx(data / "train-images-idx3-ubyte.gz", images)
    write_idx(data / "train-labels-idx1-ubyte.gz", labels)
    s = Studio(root, data_dir=tmp_path / "data")
    s.preload()
    img, text = s.nearest("mnist", "2", 77, 5, 1.0, 1)
    assert f"Searched: all {len(images)} images of the mnist train split it was trained on (in " in text
    assert "| 1 | 2 | 0 |" in text and np.array_equal(tile(img[:, 30 + 2 + 8:], 0, 0), g[0])
    d = np.sqrt(((images.reshape(len(images), -1).astype(np.float64) - g.reshape(1, -1)) ** 2).sum(1))
    best = np.argsort(d, kind="stable")[:5]
    for i, j in enumerate(best):
        assert f"| {i + 1} | {labels[j]} | {d[j]:.0f} |" in text
    # data that is not what the checkpoint was trained on is refused: the bundled sample is searched
    write_idx(data / "train-images-idx3-ubyte.gz", images[:50])
    write_idx(data / "train-labels-idx1-ubyte.gz", labels[:50])
    other = Studio(root, data_dir=tmp_path / "data")
    other.preload()
    assert "bundled with this checkpoint" in other.nearest("mnist", "2", 77, 5, 1.0, 1)[1]
