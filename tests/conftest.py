"""Shared fixtures: paths to the real offline data, tiny synthetic IDX datasets, a tiny trained run."""
from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep rather than spin: on 2 shared cores spinning made a 70 ms grid take 2 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

from cgan.data import write_idx

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CGAN_DATA_DIR", REPO.parent / "shared" / "data"))  # as app.py --data-dir
TINY = ["--g-width", "8", "--d-width", "8", "--z-dim", "16", "--batch-size", "16", "--no-progress"]

torch.set_num_threads(min(2, os.cpu_count() or 1))


def training_state(t) -> dict:
    """A Trainer's G, D, EMA and optimiser tensors by name: what a bitwise comparison of two runs compares."""
    out = {f"g.{k}": v for k, v in t.G.state_dict().items()}
    out.update({f"d.{k}": v for k, v in t.D.state_dict().items()})
    out.update({f"ema.{k}": v for k, v in t.G_ema.state_dict().items()})
    for name, opt in (("opt_g", t.opt_g), ("opt_d", t.opt_d)):
        for i, s in opt.state_dict()["state"].items():
            out.update({f"{name}.{i}.{k}": v for k, v in s.items()})
    return out


def same_training_state(a, b) -> bool:
    """Two Trainers hold bit-identical weights, EMA and optimiser state."""
    sa, sb = training_state(a), training_state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def stopped_and_resumed(cfg, dataset, folder: Path, stop_at: int, steps: int):
    """A CPU Trainer run to ``stop_at`` iterations and saved into ``folder``, then loaded into a new Trainer
    and run on to ``steps``: (that resumed Trainer, the checkpoint folder it was loaded from)."""
    from cgan.training import Trainer

    first = Trainer(cfg, dataset, torch.device("cpu"))
    for _ in range(stop_at):
        first.iteration()
    saved = first.save(folder)
    resumed = Trainer(cfg, dataset, torch.device("cpu"))
    resumed.load(saved)
    for _ in range(steps - stop_at):
        resumed.iteration()
    return resumed, saved


def synthetic_images(n: int, classes: int = 10, size: int = 28, seed: int = 0, channels: int = 1):
    """Class-dependent images: a bright bar whose position encodes the class, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, (n, channels, size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        row = 2 + int(k) * (size - 4) // classes
        images[i, :, row:row + 2, 4:size - 4] = 255
    return images, labels.astype(np.uint8)


def write_mnist_like(folder: Path, n_train: int = 96, n_test: int = 48, classes: int = 10,
                     gz: bool = True, prefix: str = "", parts=("train", "test"), transpose: bool = False):
    """Official-format IDX files (train-images-idx3-ubyte[.gz], t10k-..., or emnist-SPLIT-... names)."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for part, n in (("train", n_train), ("test", n_test)):
        if part not in parts:
            continue
        images, labels = synthetic_images(n, classes, seed=0 if part == "train" else 1)
        images = images[:, 0]
        if transpose:
            images = images.transpose(0, 2, 1)
        name = part if prefix else ("train" if part == "train" else "t10k")
        write_idx(folder / f"{prefix}{name}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}{name}-labels-idx1-ubyte{ext}", labels)
    return folder


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("idx") / "mnist")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A checkpoints folder with tiny mnist, fashion-mnist and emnist exports, for the studio tests."""
    from studio_helpers import tiny_checkpoints

    return tiny_checkpoints(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, mnist_dir) -> Path:
    """A run folder trained for 4 steps with checkpoints at 2 and 4."""
    from cgan.training_cli import main

    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "4", "--checkpoint-every", "2",
                 "--log-every", "1", "--out", str(run), *TINY]) == 0
    return run


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_run, mnist_dir) -> Path:
    from cgan.export import export

    return export(tiny_run, tmp_path_factory.mktemp("export") / "mnist", str(mnist_dir), real_per_class=4)


def needs_shared_data(*names: str):
    missing = [n for n in names if not (SHARED_DATA / n).is_dir()]
    in_ci = os.environ.get("CI") == "true"
    return pytest.mark.skipif(bool(missing) and not in_ci, reason=f"real data not found in {SHARED_DATA}")
