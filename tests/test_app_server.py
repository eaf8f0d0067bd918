"""The launched studio on localhost, driven through gradio_client: every public endpoint, good and bad
input, and `python app.py` itself (environment variables, exit codes)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from cgan import ui  # noqa: E402
from cgan.studio import ALL_CLASSES, Studio  # noqa: E402
from studio_helpers import REPO, SHIPPED, free_port, gif_frames, png_array, shipped_names, tile  # noqa: E402

# gradio's queue uses pandas APIs that pandas 3 deprecates; not this project's code
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

ENDPOINTS = {"/generate", "/interpolate", "/morph", "/real_vs_generated", "/nearest", "/model_card", "/datasets",
             "/dataset"}


@pytest.fixture(scope="module")
def studio(tiny_root):
    return Studio(tiny_root)


@pytest.fixture(scope="module")
def server(tiny_root):
    demo = ui.build(tiny_root)
    _, url, _ = ui.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[1], verbose=False, download_files=True)


def test_named_endpoints_only(client):
    info = client.view_api(return_format="dict", print_info=False)
    assert set(info["named_endpoints"]) == ENDPOINTS
    assert not info["unnamed_endpoints"]
    with pytest.raises(ValueError):
        client.predict("mnist", api_name="/on_dataset")


def test_queue_and_cache_settings(server):
    demo, _ = server
    assert demo._queue.max_size == ui.QUEUE_MAX_SIZE
    assert demo.delete_cache == ui.DELETE_CACHE
    model_fns = [fn for fn in demo.fns.values() if fn.concurrency_id == ui.MODEL]
    assert len(model_fns) >= 5 and all(fn.concurrency_limit == ui.MODEL_CONCURRENCY for fn in model_fns)


def test_generate_serves_exact_png_pixels(client, studio):
    path, caption = client.predict("mnist", "7", 42, 3, 4, 1.0, 2, api_name="/generate")
    assert path.endswith(".png")
    expected, expected_caption = studio.generate("mnist", "7", 42, 3, 4, 1.0, 2)
    assert np.array_equal(png_array(path), expected) and caption == expected_caption


def test_generate_any_dataset_and_class_by_name(client, studio):
    """Class names of every dataset are accepted, not only those of the dropdown's first dataset."""
    for dataset, cls in [("fashion-mnist", "Sneaker"), ("emnist", "g"), ("emnist", ALL_CLASSES)]:
        path, _ = client.predict(dataset=dataset, class_name=cls, seed=2**31 - 1, rows=2, cols=3,
                                 truncation=0.7, scale=1, api_name="/generate")
        expected, _ = studio.generate(dataset, cls, 2**31 - 1, 2, 3, 0.7, 1)
        assert np.array_equal(png_array(path), expected), (dataset, cls)


def test_interpolate_returns_strip_and_full_gif(client, studio):
    strip, gif, caption = client.predict(dataset="emnist", class_name="g", seed_a=1, seed_b=2, frames=12,
                                         method="linear", truncation=1.0, scale=2, api_name="/interpolate")
    assert gif.endswith(".gif") and "linear" in caption
    expected, _, _ = studio.interpolate("emnist", "g", 1, 2, 12, "linear", 1.0, 2)
    assert np.array_equal(png_array(strip), expected)
    frames = gif_frames(gif)
    assert len(frames) == 12
    for f in range(12):  # the GIF is enlarged to at least 256 px: scale 8 here
        assert np.array_equal(tile(frames[f], 0, 0, scale=8)[::4, ::4], tile(expected, 0, f, scale=2))


def test_morph(client, studio):
    strip, gif, caption = client.predict(dataset="fashion-mnist", class_a="Sneaker", class_b="Bag", seed=3,
                                         frames=6, truncation=1.0, scale=1, api_name="/morph")
    expected, _, _ = studio.morph("fashion-mnist", "Sneaker", "Bag", 3, 6, 1.0, 1)
    assert np.array_equal(png_array(strip), expected)
    assert len(gif_frames(gif)) == 6 and "'Sneaker' -> 'Bag'" in caption


def test_real_vs_generated_and_nearest(client, studio):
    path, caption = client.predict("mnist", "5", 8, 4, 1.0, 1, api_name="/real_vs_generated")
    assert np.array_equal(png_array(path), studio.real_vs_generated("mnist", "5", 8, 4, 1.0, 1)[0])
    path, text = client.predict("mnist", "4", 1, 3, 1.0, 1, api_name="/nearest")
    expected, expected_text = studio.nearest("mnist", "4", 1, 3, 1.0, 1)
    assert np.array_equal(png_array(path), expected) and text == expected_text


def test_model_card_and_datasets(client):
    assert "EMNIST letters & digits" in client.predict("emnist", api_name="/model_card")
    d = client.predict(api_name="/datasets")
    assert list(d) == ["mnist", "fashion-mnist", "emnist"] and "Sneaker" in d["fashion-mnist"]["classes"]


GOOD = {
    "/generate": dict(dataset="mnist", class_name="3", seed=0, rows=2, cols=2, truncation=1.0, scale=1),
    "/interpolate": dict(dataset="mnist", class_name="3", seed_a=0, seed_b=1, frames=4, method="linear",
                         truncation=1.0, scale=1),
    "/morph": dict(dataset="mnist", class_a="3", class_b="8", seed=0, frames=4, truncation=1.0, scale=1),
    "/real_vs_generated": dict(dataset="mnist", class_name="3", seed=0, count=2, truncation=1.0, scale=1),
    "/nearest": dict(dataset="mnist", class_name="3", seed=0, index=0, truncation=1.0, scale=1),
    "/model_card": dict(dataset="mnist"),
}
BAD = [
    ("/generate", dict(dataset="../mnist"), "unknown dataset '../mnist'"),
    ("/generate", dict(dataset="/etc/passwd"), "unknown dataset"),
    ("/generate", dict(dataset=5), "unknown dataset 5"),
    ("/generate", dict(class_name="Sneaker"), "unknown class 'Sneaker' for MNIST digits"),
    ("/generate", dict(class_name=None), "unknown class None"),
    ("/generate", dict(seed=-1), "seed must be from 0 to 2147483647"),
    ("/generate", dict(seed=2**31), "seed must be from 0 to 2147483647"),
    ("/generate", dict(seed=0.5), "seed must be a whole number"),
    ("/generate", dict(seed="abc"), "seed: type a whole number"),
    ("/generate", dict(seed=[1]), "seed must be a whole number"),
    ("/generate", dict(rows=11), "rows must be from 1 to 10"),
    ("/generate", dict(cols=1000), "columns must be from 1 to 10"),
    ("/generate", dict(truncation=0), "truncation must be in"),
    ("/generate", dict(truncation="x"), "truncation must be a number"),
    ("/generate", dict(scale=99), "display scale must be from 1 to 8"),
    ("/interpolate", dict(seed_b=-3), "seed B must be from 0"),
    ("/interpolate", dict(frames=100), "frames must be from 2 to 48"),
    ("/interpolate", dict(method="cubic"), "unknown interpolation method 'cubic'"),
    ("/interpolate", dict(class_name="Bag"), "unknown class 'Bag'"),
    ("/morph", dict(class_a=ALL_CLASSES), "class A: choose one class"),
    ("/morph", dict(class_b="Z"), "unknown class B 'Z'"),
    ("/morph", dict(frames=1), "frames must be from 2 to 48"),
    ("/real_vs_generated", dict(count=0), "images per side must be from 1 to 10"),
    ("/nearest", dict(index=-1), "image index must be from 0 to 999"),
    ("/model_card", dict(dataset=".."), "unknown dataset '..'"),
]


@pytest.mark.parametrize("endpoint,change,message", BAD)
def test_bad_input_is_a_clear_error(client, endpoint, change, message):
    with pytest.raises(AppError) as err:
        client.predict(**(GOOD[endpoint] | change), api_name=endpoint)
    assert message in str(err.value)


def test_server_keeps_serving_after_errors(client):
    for endpoint, args in GOOD.items():  # every endpoint still answers after the error cases above
        result = client.predict(**args, api_name=endpoint)
        assert result, endpoint


def test_parallel_requests_are_queued_and_all_answered(client, studio):
    def one(seed):
        return client.predict("mnist", "1", seed, 2, 2, 1.0, 1, api_name="/generate")[0]

    with ThreadPoolExecutor(6) as pool:
        paths = list(pool.map(one, range(6)))
    for seed, path in enumerate(paths):
        assert np.array_equal(png_array(path), studio.generate("mnist", "1", seed, 2, 2, 1.0, 1)[0])


# ----------------------------------------------------------------------------- python app.py

def test_app_py_refuses_a_missing_folder(tmp_path):
    r = subprocess.run([sys.executable, "app.py", "--checkpoints", str(tmp_path / "nope")], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_app_py_serves_on_gradio_server_port(tiny_root, tmp_path):
    port = free_port()
    env = dict(os.environ, CGAN_CHECKPOINTS=str(tiny_root), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.time() + 90, None
        while time.time() < deadline and proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.3)
        assert page is not None, f"app.py did not serve on port {port}"
        assert "cgan-studio" in page
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert set(c.predict(api_name="/datasets")) == {"mnist", "fashion-mnist", "emnist"}
        c.predict(**GOOD["/interpolate"], api_name="/interpolate")
        gifs = [p for p in tmp_path.glob("cgan-studio-*/*/*.gif") if "gradio" not in p.parts[-3]]
        assert len(gifs) == 1  # the GIF went to a private temp folder, named by what it shows
        assert gifs[0].name == "mnist_3_seed0-1_linear_psi1_4frames.gif"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out  # SIGTERM shuts down cleanly ...
    assert not list(tmp_path.glob("cgan-studio-*")), "temporary folder left behind"  # ... and cleans up
    assert "gradio.live" not in out  # never a public share link


@pytest.mark.skipif(not shipped_names(), reason="no exported checkpoints in checkpoints/")
def test_shipped_checkpoints_through_the_server():
    """`checkpoints/` as shipped: every dataset answers on every endpoint."""
    demo = ui.build(SHIPPED)
    _, url, _ = ui.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    try:
        c = Client(url, verbose=False)
        datasets = c.predict(api_name="/datasets")
        assert sorted(datasets) == shipped_names()
        for name, info in datasets.items():
            a, b = info["classes"][0], info["classes"][-1]
            png_array(c.predict(name, ALL_CLASSES, 1, 10, 10, 1.0, 2, api_name="/generate")[0])
            assert len(gif_frames(c.predict(name, b, 1, 2, 16, "spherical", 1.0, 2, api_name="/interpolate")[1])) == 16
            assert len(gif_frames(c.predict(name, a, b, 1, 8, 1.0, 2, api_name="/morph")[1])) == 8
            png_array(c.predict(name, a, 1, 8, 1.0, 2, api_name="/real_vs_generated")[0])
            png_array(c.predict(name, b, 1, 0, 1.0, 2, api_name="/nearest")[0])
            assert c.predict(name, api_name="/model_card").strip()
    finally:
        demo.close()


def test_empty_checkpoints_folder_serves_a_message(tmp_path):
    demo = ui.build(tmp_path)
    _, url, _ = ui.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    try:
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "No checkpoints found" in page or "No checkpoints found" in str(demo.config)
        assert Client(url, verbose=False).predict(api_name="/datasets") == {}
    finally:
        demo.close()


@pytest.mark.skipif("emnist" not in shipped_names(), reason="no shipped emnist checkpoint")
def test_a_small_request_is_not_queued_behind_a_heavy_one():
    """An all-class, 48-frame EMNIST interpolation (seconds of work) runs in its own lane: another visitor's
    2x2 grid is answered while it is still running, instead of waiting behind it."""
    from gradio_client.utils import Status

    demo = ui.build(SHIPPED)
    _, url, _ = ui.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    try:
        heavy_client = Client(url, verbose=False, download_files=False)
        small_client = Client(url, verbose=False, download_files=False)
        heavy = heavy_client.submit("emnist", ALL_CLASSES, 1, 2, 48, "spherical", 1.0, 1, api_name="/interpolate")
        deadline = time.time() + 60
        while heavy.status().code != Status.PROCESSING and time.time() < deadline:
            time.sleep(0.02)
        assert heavy.status().code == Status.PROCESSING
        finished = {}
        waiter = threading.Thread(target=lambda: finished.setdefault("heavy", (heavy.result(timeout=120),
                                                                                time.monotonic())))
        waiter.start()
        small = small_client.predict("mnist", "3", 5, 2, 2, 1.0, 1, api_name="/generate")
        finished["small"] = time.monotonic()
        waiter.join(timeout=130)
        assert "seed 5" in small[1] and finished["heavy"][0][2].startswith("EMNIST")
        # One lane would answer the small request only after the heavy one (measured: 1.4 s instead of 0.2 s).
        assert finished["small"] < finished["heavy"][1]
    finally:
        demo.close()


def test_the_api_page_describes_the_real_contract(server):
    demo, _ = server
    endpoints = demo.get_api_info()["named_endpoints"]
    params = {name: {p["parameter_name"]: p["type"] for p in ep["parameters"]} for name, ep in endpoints.items()}
    g = params["/generate"]
    assert g["seed"]["type"] == g["rows"]["type"] == g["cols"]["type"] == g["scale"]["type"] == "integer"
    assert "enum" not in g["class_name"] and "class name of the chosen dataset" in g["class_name"]["description"]
    assert params["/interpolate"]["frames"]["type"] == "integer"
    assert params["/nearest"]["index"]["type"] == "integer"
    assert set(g["dataset"]["enum"]) == {"mnist", "fashion-mnist", "emnist"}
