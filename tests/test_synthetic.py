"""The generated-dataset download: every format decodes to the studio's own images and labels, the IDX
files train with `train.py`, requests are capped before anything is made, and the function Gradio binds
is the @spaces.GPU one when the `spaces` package is there (and the app starts the same without it)."""
from __future__ import annotations

import csv
import io
import os
import sys
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

from cgan import ui
from cgan.training_cli import main as train_main
from cgan.data import load_dataset
from cgan.studio import InputError, Studio
from conftest import TINY
from studio_helpers import free_port, start_app


@pytest.fixture(scope="module")
def handlers(tiny_root):
    return ui.Handlers(Studio(tiny_root), None, None)


def test_zip_holds_the_studio_images_and_their_labels(handlers):
    path, caption = handlers.make_dataset("mnist", ["3", "7"], "5", "11", 0.8, "zip")
    assert path.endswith("mnist_2-classes_5-per-class_seed11_psi0.8_zip.zip") and "10 generated images" in caption
    ref, labels = handlers.studio.sampler("mnist").sample([3, 7], 5, seed=11, truncation=0.8)
    with zipfile.ZipFile(path) as z:
        rows = list(csv.DictReader(io.StringIO(z.read("labels.csv").decode())))
        assert [int(r["label"]) for r in rows] == labels.tolist() and rows[0]["class"] == "3"
        for r, image in zip(rows, ref):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(z.read(r["file"])))), image)


def test_npz_and_every_class_when_none_is_chosen(handlers):
    path, _ = handlers.make_dataset("fashion-mnist", [], 2, 0, 1.0, "npz")
    data = np.load(path)
    assert data["images"].shape == (20, 28, 28) and data["labels"].tolist() == [k for k in range(10) for _ in (0, 1)]
    assert list(data["class_names"])[7] == "Sneaker"


def test_idx_files_train_with_train_py(handlers, tmp_path, capsys):
    path, _ = handlers.make_dataset("mnist", [], 10, 5, 1.0, "idx")
    folder = tmp_path / "generated"
    with zipfile.ZipFile(path) as z:
        z.extractall(folder)
        assert "python train.py --dataset mnist --split train --data-dir" in z.read("README.txt").decode()
    ds = load_dataset("mnist", "train", folder)
    ref, labels = handlers.studio.sampler("mnist").sample(list(range(10)), 10, seed=5)
    assert np.array_equal(ds.images.numpy()[:, 0], ref) and ds.labels.tolist() == labels.tolist()
    assert train_main(["--dataset", "mnist", "--split", "train", "--data-dir", str(folder), "--steps", "2", *TINY,
                       "--batch-size", "8", "--out", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("args,message", [
    (("mnist", [], 10_000, 0, 1.0, "zip"), "at most 20,000: ask for at most 2,000 per class"),
    (("mnist", [], 10_001, 0, 1.0, "zip"), "images per class must be from 1 to 10000"),
    (("mnist", ["3", "Sneaker"], 2, 0, 1.0, "zip"), "unknown class 'Sneaker'"),
    (("mnist", "3", 2, 0, 1.0, "zip"), "classes must be a list"),
    (("mnist", [], 2, 0, 1.0, "tar"), "unknown format 'tar'"),
    (("mnist", [], "1e3", 0, 1.0, "zip"), "images per class: type a whole number"),
])
def test_requests_are_refused_before_anything_is_made(handlers, args, message):
    before = set(handlers.studio.temp.folder.rglob("*")) if handlers.studio.temp.folder else set()
    with pytest.raises(InputError, match=message):
        handlers.make_dataset(*args)
    after = set(handlers.studio.temp.folder.rglob("*")) if handlers.studio.temp.folder else set()
    assert after == before


def bound_function(demo, api_name):
    return next(fn.fn for fn in demo.fns.values() if fn.api_name == api_name)


def test_the_download_is_the_function_decorated_with_spaces_gpu(tiny_root, monkeypatch):
    decorated = []

    def GPU(duration=None):  # noqa: N802 - the decorator's real name
        def wrap(fn):
            def gpu_fn(*args):
                return fn(*args)
            gpu_fn.duration = duration
            decorated.append(gpu_fn)
            return gpu_fn
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    demo = ui.build(tiny_root, Studio(tiny_root), preload=False)
    fn = bound_function(demo, "dataset")
    assert decorated and fn is decorated[0]
    assert fn.duration("mnist", ["1", "2"], 5000) == 15 and fn.duration("mnist", [], 1) == 10
    for name in ("generate", "interpolate", "morph", "real_vs_generated", "nearest"):  # the rest stays on the CPU
        assert bound_function(demo, name) not in decorated
    monkeypatch.setitem(sys.modules, "spaces", None)  # not installed: the plain function
    plain = bound_function(ui.build(tiny_root, Studio(tiny_root), preload=False), "dataset")
    assert plain not in decorated and plain.__name__ == "make_dataset"


@pytest.mark.parametrize("with_spaces", [True, False])
def test_the_app_starts_and_serves_a_download_with_and_without_spaces(tiny_root, tmp_path, with_spaces):
    from gradio_client import Client

    if with_spaces:
        try:
            import spaces  # noqa: F401
        except ImportError:
            if os.environ.get("CI") == "true":
                pytest.fail("the spaces package is missing in CI (pip install spaces)")
            pytest.skip("the spaces package is not installed")
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), CGAN_CHECKPOINTS=str(tiny_root),
               GRADIO_ANALYTICS_ENABLED="False", OMP_WAIT_POLICY="PASSIVE")
    hide = "" if with_spaces else "import sys; sys.modules['spaces'] = None; "
    log = tmp_path / "app.log"
    proc, url = start_app([sys.executable, "-c", hide + "import runpy; runpy.run_path('app.py', run_name='__main__')"],
                          env, log)
    try:
        c = Client(url, verbose=False, download_files=str(tmp_path))
        path, caption = c.predict("mnist", ["2"], "3", "9", 1.0, "npz", api_name="/dataset")
        assert np.load(path)["images"].shape == (3, 28, 28) and "made on cpu" in caption
    finally:
        proc.terminate()
        proc.wait(timeout=60)
