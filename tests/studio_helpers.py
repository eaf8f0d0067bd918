"""Shared by the studio tests: tiny real checkpoints, the shipped ones, free ports, PNG/GIF decoding.

The tiny checkpoints are made exactly as shipped ones are, with `train.py` and `python -m cgan.export`
(run in-process to save interpreter start-up), a few steps of a width-8 model. Data: the official files
under $CGAN_DATA_DIR (default ../shared/data next to the repository) when present; otherwise small
synthetic datasets written in the official IDX format, so the tests never need a network.
"""
from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from cgan.data import write_idx

REPO = Path(__file__).resolve().parent.parent
SHIPPED = Path(os.environ.get("CGAN_TEST_CHECKPOINTS", REPO / "checkpoints"))  # the shipped checkpoints
DATA = Path(os.environ.get("CGAN_DATA_DIR", REPO.parent / "shared" / "data"))

# name -> (train.py options, data sub-folder, IDX stem prefix, number of classes)
TINY = {
    "mnist": (["--dataset", "mnist", "--split", "test"], "mnist", "t10k", 10),
    "fashion-mnist": (["--dataset", "fashion-mnist", "--split", "test"], "fashion-mnist", "t10k", 10),
    "emnist": (["--dataset", "emnist", "--emnist-split", "bymerge", "--split", "test"], "emnist",
               "emnist-bymerge-test", 47),
}
TINY_OPTIONS = ["--steps", "4", "--g-width", "8", "--d-width", "8", "--batch-size", "16", "--no-progress",
                "--checkpoint-every", "4"]
REAL_PER_CLASS = 16



def synthetic_idx(folder: Path, prefix: str, num_classes: int, per_class: int = 24) -> Path:
    """A small dataset in the official IDX format: class k is a bar at an angle set by k, plus noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28] - 13.5
    images, labels = [], []
    for k in range(num_classes):
        angle = np.pi * k / num_classes
        for _ in range(per_class):
            a = angle + rng.normal(0, 0.05)
            d = np.abs(xx * np.sin(a) - yy * np.cos(a))
            img = np.clip(255 * (d < 2.0 + rng.uniform(0, 1)) * (np.hypot(xx, yy) < 11), 0, 255)
            images.append(np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8))
            labels.append(k)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.stack(images))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(labels, np.uint8))
    return folder


def data_dir_for(name: str, scratch: Path) -> Path:
    _, sub, prefix, k = TINY[name]
    real = DATA / sub
    if (real / f"{prefix}-images-idx3-ubyte.gz").is_file() or (real / f"{prefix}-images-idx3-ubyte").is_file():
        return real
    return synthetic_idx(scratch / "data" / sub, prefix, k)


def tiny_checkpoints(tmp_path_factory) -> Path:
    """A checkpoints folder with tiny mnist, fashion-mnist and emnist exports (the session fixture
    ``tiny_root`` of conftest.py builds it once)."""
    from cgan import training_cli as cli, export

    base = tmp_path_factory.mktemp("studio")
    root = base / "checkpoints"
    for name, (options, *_rest) in TINY.items():
        data = data_dir_for(name, base)
        run = base / "runs" / name
        assert cli.main(options + ["--data-dir", str(data), "--out", str(run)] + TINY_OPTIONS) == 0
        assert export.main([str(run), str(root / name), "--data-dir", str(data),
                            "--real-per-class", str(REAL_PER_CLASS)]) == 0
    (root / "not-a-checkpoint").mkdir()          # ignored: no checkpoint.json
    (root / "README.txt").write_text("ignored")  # ignored: not a folder
    return root


def shipped_names() -> list[str]:
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "checkpoint.json").is_file())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_array(data: bytes | str | Path) -> np.ndarray:
    """Decode a PNG (bytes or file) and check it is one; grayscale PNGs decode to (H, W)."""
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    im = Image.open(io.BytesIO(raw))
    im.load()
    assert im.format == "PNG"
    return np.asarray(im)


def gif_frames(data: bytes | str | Path) -> list[np.ndarray]:
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    assert raw[:6] in (b"GIF87a", b"GIF89a"), "not a GIF file"
    im = Image.open(io.BytesIO(raw))
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("L")))
    return frames


def tile(grid: np.ndarray, r: int, c: int, size: int = 28, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Cell (r, c) of a grid made by cgan.images.make_grid, optionally upscaled by ``scale``."""
    y, x = (pad + r * (size + pad)) * scale, (pad + c * (size + pad)) * scale
    return grid[y:y + size * scale, x:x + size * scale]


def start_app(command: list[str], env: dict, log: Path, timeout: float = 120):
    """Start the studio as a real process (``command`` run from the repository, output to ``log``) and wait
    until it serves its page. Returns (process, url); the app must listen on $GRADIO_SERVER_PORT."""
    import subprocess
    import time
    import urllib.request

    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/"
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError(f"the app did not start ({' '.join(command[1:])}):\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
