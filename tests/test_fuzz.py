"""Fuzzing the studio's handlers (hypothesis, no deadline): random and extreme values for every input of
generate / interpolate / morph / real_vs_generated / nearest / model_card. A handler either answers within
the output caps or refuses with the studio's own InputError; any other exception is a bug. The caps are
checked on what was really computed and produced: images run through the generator (counted on the
sampler), PNG sides, GIF frame counts and GIF sides. Then a shorter round through the running app with
gradio_client: only clear errors, never the "internal error" that the UI reports for unexpected exceptions.

Checkpoints: the tiny mnist / fashion-mnist / emnist exports of studio_helpers (emnist has 47 classes, so
"All classes" exercises the largest outputs).
"""
from __future__ import annotations

import math
import os
import re

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from cgan import studio as studio_mod  # noqa: E402
from cgan.studio import (ALL_CLASSES, MAX_COMPARE, MAX_FRAMES, MAX_GIF_SIDE, MAX_GRID,  # noqa: E402
                         MAX_INDEX, MAX_SIDE, NEIGHBOURS, InputError, Studio)
from studio_helpers import free_port, png_array  # noqa: E402

FUZZ = settings(deadline=None, max_examples=int(os.environ.get("CGAN_FUZZ_EXAMPLES", 150)), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MAX_MESSAGE = 2000  # an error message never echoes a huge request back


class Counting:
    """Wraps a sampler's generate() to count the images the generator really produced per request."""

    def __init__(self, sampler):
        self.inner, self.images = sampler.generate, 0

    def __call__(self, z, y, *args, **kwargs):
        out = self.inner(z, y, *args, **kwargs)
        self.images += len(out)
        return out


@pytest.fixture(scope="module")
def studio(tiny_root):
    s = Studio(tiny_root)
    s.preload()
    s.counters = {}
    for name in s.names:
        sampler = s.sampler(name)
        s.counters[name] = sampler.generate = Counting(sampler)
    return s


def produced(s: Studio) -> int:
    return sum(c.images for c in s.counters.values())


# ----------------------------------------------------------------------------- strategies

LONG = st.text(min_size=2_000, max_size=20_000)
HOSTILE_TEXT = st.sampled_from(["", " ", "../mnist", "/etc/passwd", "mnist\x00", "%2e%2e%2f", "All classes ",
                                "ALL CLASSES", "7\x00", "٧", "７", "NaN", "inf", "-1", "1e309", "0x10", "None",
                                "{}", "[]", "<script>alert(1)</script>", "\ud7ff", "🎲" * 50])
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308,
                                                                      5e-324, 2.0**63, 2.0**31]),
    st.text(max_size=30), LONG, HOSTILE_TEXT,
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def mostly(draw, valid, hostile, bad_percent: int = 8):
    """A valid value, or (bad_percent of the time) a hostile one: with ~7 inputs per request about half
    the requests are valid, so both the answers and the refusals are exercised."""
    return draw(hostile) if draw(st.integers(0, 99)) < bad_percent else draw(valid)


def number(lo: int, hi: int):
    """Integers in range (as int, or integral float as number boxes send); else near misses and junk."""
    edges = st.sampled_from([lo, hi])
    return mostly(st.one_of(st.integers(lo, hi), edges, st.integers(lo, hi).map(float)),
                  st.one_of(st.integers(lo - 3, lo - 1), st.integers(hi + 1, hi + 3), st.floats(lo - 1, hi + 1),
                            JUNK))


def fraction():
    return mostly(st.one_of(st.floats(0.0, 1.0, exclude_min=True), st.sampled_from([1, 1.0, 1e-300, 5e-324])),
                  st.one_of(st.floats(-2, 2), st.sampled_from([0, 0.0, -0.0, 1.0000001]), JUNK))


@st.composite
def dataset_and_class(draw, studio):
    names = studio.names
    dataset = draw(mostly(st.sampled_from(names), JUNK))
    return dataset, draw(class_of(studio, dataset))


def class_of(studio, dataset):
    """A class of ``dataset`` (of the first dataset when it is junk), "All classes", or junk."""
    known = studio.class_names(dataset) if dataset in studio.names else studio.class_names(studio.names[0])
    classes = known + [ALL_CLASSES]  # also where "All classes" is not allowed: it must be refused cleanly
    return mostly(st.sampled_from(classes), st.one_of(JUNK, st.integers(0, len(known) - 1)))


def answer(handler, *args):
    """The handler's result, or None when it refused with a clear, bounded InputError (any other exception
    fails the test). Records which of the two happened as a hypothesis event."""
    try:
        result = handler(*args)
    except InputError as e:
        message = str(e)
        assert message and len(message) <= MAX_MESSAGE, message[:200]
        event("refused")
        return None
    event("answered")
    return result


def check_png_side(image: np.ndarray, limit: int = MAX_SIDE) -> None:
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim in (2, 3) and max(image.shape[:2]) <= limit, image.shape


def check_gif(path: str, frames: int) -> None:
    with Image.open(path) as im:
        assert im.format == "GIF" and max(im.size) <= MAX_GIF_SIDE, im.size
        assert 1 <= im.n_frames <= min(frames, MAX_FRAMES)  # equal neighbours merge into one frame


def classes_of(studio, dataset) -> int:
    return len(studio.class_names(dataset))


# ----------------------------------------------------------------------------- handlers

@FUZZ
@given(data=st.data())
def test_fuzz_generate(studio, data):
    dataset, cls = data.draw(dataset_and_class(studio))
    seed, rows, cols = data.draw(number(0, studio_mod.MAX_SEED)), data.draw(number(1, MAX_GRID)), \
        data.draw(number(1, MAX_GRID))
    psi, scale = data.draw(fraction()), data.draw(number(1, studio_mod.MAX_SCALE))
    before = produced(studio)
    out = answer(studio.generate, dataset, cls, seed, rows, cols, psi, scale)
    if out is None:
        return
    image, caption = out
    n = produced(studio) - before
    cap = MAX_GRID * max(MAX_GRID, classes_of(studio, dataset))  # rows x cols, or every class x cols
    assert 1 <= n <= cap, n
    check_png_side(image)
    assert isinstance(caption, str) and len(caption) <= MAX_MESSAGE


@FUZZ
@given(data=st.data())
def test_fuzz_interpolate(studio, data):
    dataset, cls = data.draw(dataset_and_class(studio))
    seed_a, seed_b = data.draw(number(0, studio_mod.MAX_SEED)), data.draw(number(0, studio_mod.MAX_SEED))
    frames = data.draw(number(studio_mod.MIN_FRAMES, MAX_FRAMES))
    method = data.draw(mostly(st.sampled_from(studio_mod.METHODS), JUNK))
    psi, scale = data.draw(fraction()), data.draw(number(1, studio_mod.MAX_SCALE))
    before = produced(studio)
    out = answer(studio.interpolate, dataset, cls, seed_a, seed_b, frames, method, psi, scale)
    if out is None:
        return
    strip, gif, caption = out
    n = produced(studio) - before
    assert 1 <= n <= MAX_FRAMES * classes_of(studio, dataset), n
    check_png_side(strip)
    check_gif(gif, int(frames))


@FUZZ
@given(data=st.data())
def test_fuzz_morph(studio, data):
    dataset, cls_a = data.draw(dataset_and_class(studio))
    cls_b = data.draw(class_of(studio, dataset))
    seed, frames = data.draw(number(0, studio_mod.MAX_SEED)), data.draw(number(studio_mod.MIN_FRAMES, MAX_FRAMES))
    psi, scale = data.draw(fraction()), data.draw(number(1, studio_mod.MAX_SCALE))
    before = produced(studio)
    out = answer(studio.morph, dataset, cls_a, cls_b, seed, frames, psi, scale)
    if out is None:
        return
    strip, gif, caption = out
    assert 1 <= produced(studio) - before <= MAX_FRAMES
    check_png_side(strip)
    check_gif(gif, int(frames))


@FUZZ
@given(data=st.data())
def test_fuzz_real_vs_generated(studio, data):
    dataset, cls = data.draw(dataset_and_class(studio))
    seed, count = data.draw(number(0, studio_mod.MAX_SEED)), data.draw(number(1, MAX_COMPARE))
    psi, scale = data.draw(fraction()), data.draw(number(1, studio_mod.MAX_SCALE))
    before = produced(studio)
    out = answer(studio.real_vs_generated, dataset, cls, seed, count, psi, scale)
    if out is None:
        return
    image, caption = out
    # images are drawn in blocks of CHUNK (10), so at most MAX_COMPARE per class
    assert 1 <= produced(studio) - before <= MAX_COMPARE * classes_of(studio, dataset)
    check_png_side(image)


@FUZZ
@given(data=st.data())
def test_fuzz_nearest(studio, data):
    dataset, cls = data.draw(dataset_and_class(studio))
    seed, index = data.draw(number(0, studio_mod.MAX_SEED)), data.draw(number(0, MAX_INDEX))
    psi, scale = data.draw(fraction()), data.draw(number(1, studio_mod.MAX_SCALE))
    before = produced(studio)
    out = answer(studio.nearest, dataset, cls, seed, index, psi, scale)
    if out is None:
        return
    image, text = out
    assert 1 <= produced(studio) - before <= 10  # one block of CHUNK latents holding image j
    check_png_side(image)
    assert len(re.findall(r"^\| \d+ \|", text, flags=re.M)) == NEIGHBOURS  # one table row per neighbour


@FUZZ
@given(dataset=mostly(st.sampled_from(["mnist", "emnist"]), JUNK, 50))
def test_fuzz_model_card(studio, dataset):
    out = answer(studio.model_card, dataset)
    if out is None:
        return
    card = out
    assert isinstance(card, str) and 0 < len(card) <= studio_mod.MAX_CARD_BYTES * 2


@pytest.mark.parametrize("call,images", [
    (lambda s: s.generate("emnist", ALL_CLASSES, studio_mod.MAX_SEED, MAX_GRID, MAX_GRID, 1.0, 8), 47 * 10),
    (lambda s: s.generate("mnist", "7", 0, MAX_GRID, MAX_GRID, 1.0, 8), 100),
    (lambda s: s.interpolate("emnist", ALL_CLASSES, 0, 1, MAX_FRAMES, "spherical", 1.0, 8), 47 * MAX_FRAMES),
    (lambda s: s.morph("emnist", "a", "Z", 0, MAX_FRAMES, 1.0, 8), MAX_FRAMES),
    (lambda s: s.real_vs_generated("emnist", ALL_CLASSES, 0, MAX_COMPARE, 1.0, 8), 47 * 10),
    (lambda s: s.nearest("emnist", "Z", 0, MAX_INDEX, 1.0, 8), 10),
])
def test_largest_requests_stay_within_the_caps(studio, call, images):
    """The biggest request each handler accepts: the generator work and every output side stay capped."""
    before = produced(studio)
    out = call(studio)
    assert produced(studio) - before == images
    check_png_side(out[0])
    if isinstance(out[1], str) and out[1].endswith(".gif"):
        check_gif(out[1], MAX_FRAMES)


# ----------------------------------------------------------------------------- through the running app

@pytest.fixture(scope="module")
def client(tiny_root):
    from gradio_client import Client

    from cgan import ui

    demo = ui.build(tiny_root)
    _, url, _ = ui.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    yield Client(url, verbose=False, download_files=True)
    demo.close()


# JSON can carry: no NaN/inf for the client's encoder, no lone surrogates.
JSON_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False,
                      allow_infinity=False), st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
                      st.text(st.characters(blacklist_categories=("Cs",)), min_size=2000, max_size=5000),
                      st.lists(st.integers(), max_size=2), HOSTILE_TEXT)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@settings(FUZZ, max_examples=int(os.environ.get("CGAN_FUZZ_API_EXAMPLES", 40)))
@given(endpoint=st.sampled_from(["/generate", "/interpolate", "/morph", "/real_vs_generated", "/nearest"]),
       data=st.data())
def test_fuzz_api(client, endpoint, data):
    from gradio_client.exceptions import AppError

    def value(good):
        return data.draw(st.one_of(st.just(good), JSON_JUNK))

    common = dict(truncation=value(1.0), scale=value(1))
    args = {
        "/generate": dict(dataset=value("emnist"), class_name=value(ALL_CLASSES), seed=value(3), rows=value(2),
                          cols=value(3)),
        "/interpolate": dict(dataset=value("mnist"), class_name=value("3"), seed_a=value(1), seed_b=value(2),
                             frames=value(4), method=value("linear")),
        "/morph": dict(dataset=value("fashion-mnist"), class_a=value("Bag"), class_b=value("Sneaker"),
                       seed=value(1), frames=value(3)),
        "/real_vs_generated": dict(dataset=value("mnist"), class_name=value("5"), seed=value(1), count=value(2)),
        "/nearest": dict(dataset=value("mnist"), class_name=value("4"), seed=value(1), index=value(3)),
    }[endpoint] | common
    try:
        result = client.predict(**args, api_name=endpoint)
    except AppError as e:
        message = str(e)
        assert "internal error" not in message, message
        assert message.strip() and len(message) <= MAX_MESSAGE + 200, message[:300]
        return
    image = png_array(result[0])
    assert max(image.shape[:2]) <= MAX_SIDE
    if endpoint in ("/interpolate", "/morph"):
        check_gif(result[1], MAX_FRAMES)
