"""`train.py --init-from MODEL --d-warmup N`: a run that starts from a trained generator (an export, a run, a
Hub repo) with a fresh discriminator, which first trains alone. Real tiny runs on the synthetic IDX data."""
from __future__ import annotations

import csv
import math
import shutil

import torch
from safetensors.torch import load_file

from cgan.checkpoints import GENERATOR_FILE, TRAINING_FILE, CheckpointError, file_sha256, read_meta
from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.training import Trainer
from cgan.training_cli import main as train
from conftest import TINY, write_mnist_like


def args(mnist_dir, run, steps, *extra):
    return ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", str(steps), "--log-every", "1",
            "--checkpoint-every", "2", *TINY, *map(str, extra), "--out", str(run)]


def generator_of(run, step):
    return load_file(run / "checkpoints" / f"step-{step:07d}" / GENERATOR_FILE)


def training_of(run, step):
    return load_file(run / "checkpoints" / f"step-{step:07d}" / TRAINING_FILE)


def test_starts_from_the_export_trains_d_alone_first_and_resumes_bitwise(tmp_path, mnist_dir, tiny_export):
    start = load_file(tiny_export / GENERATOR_FILE)
    run = tmp_path / "continued"
    assert train(args(mnist_dir, run, 2, "--init-from", tiny_export, "--d-warmup", "2")) == 0
    cfg = read_meta(run / "checkpoints" / "step-0000002")["config"]
    assert cfg["init_from"] == str(tiny_export) and cfg["init_sha256"] == file_sha256(tiny_export / GENERATOR_FILE)
    assert cfg["init_steps"] == read_meta(tiny_export)["step"] == 4 and cfg["d_warmup"] == 2
    # During the warm-up G's weights and its EMA are exactly the trained generator's (G's batch-norm running
    # statistics follow the fakes D sees; they are not used for drawing)
    ema, training = generator_of(run, 2), training_of(run, 2)
    assert all(torch.equal(ema[k], start[k]) for k in start)
    assert all(torch.equal(training[f"g.{k}"], start[k]) for k in start if "running" not in k and "num_batches" not in k)
    with open(run / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"] and all(math.isfinite(float(r["g_loss"])) for r in rows)

    # After it G trains, and a resumed run is bitwise the one that never stopped
    assert train(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "4", "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert train(args(mnist_dir, straight, 4, "--init-from", tiny_export, "--d-warmup", "2")) == 0
    moved = generator_of(run, 4)
    assert any(not torch.equal(moved[k], start[k]) for k in start if moved[k].is_floating_point())
    for a, b in ((generator_of(run, 4), generator_of(straight, 4)), (training_of(run, 4), training_of(straight, 4))):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Its export's model card says where it started, without the local path
    from cgan.export import export
    from cgan.model_card import render
    card = render(export(straight, tmp_path / "export", str(mnist_dir), real_per_class=4))
    assert "Continued from a generator trained for 4 steps (mnist, weights SHA-256 " in card
    assert "fresh discriminator that trained alone for the first 2" in card and str(tiny_export.parent) not in card
    # A model continued again counts every step its generator was trained
    again = tmp_path / "again"
    assert train(args(mnist_dir, again, 1, "--init-from", straight)) == 0
    assert read_meta(again / "checkpoints" / "step-0000001")["config"]["init_steps"] == 4 + 4


def test_the_fresh_discriminator_may_be_wider_than_the_models(tmp_path, mnist_dir, tiny_export):
    """--d-width (and --d-minibatch-std) with --init-from: the D is new, so its design is free (the model's when
    not given); G's is not."""
    run = tmp_path / "wide-d"
    assert train(args(mnist_dir, run, 2, "--init-from", tiny_export, "--d-warmup", "1", "--d-width", "12")) == 0
    meta = read_meta(run / "checkpoints" / "step-0000002")
    assert meta["config"]["d_width"] == 12 and meta["config"]["g_width"] == 8
    plain = tmp_path / "plain"
    assert train(args(mnist_dir, plain, 2, "--init-from", tiny_export)) == 0
    assert read_meta(plain / "checkpoints" / "step-0000002")["config"]["d_width"] == 8
    wide_d, plain_d = training_of(run, 2), training_of(plain, 2)
    assert wide_d["d.features.0.bias"].numel() > plain_d["d.features.0.bias"].numel()  # the D really is wider
    shapes = lambda tensors: {k: t.shape for k, t in tensors.items()}  # noqa: E731
    assert shapes(generator_of(run, 2)) == shapes(generator_of(plain, 2))  # G has the model's shapes in both
    # ... and may read the minibatch standard deviation; the model continued again keeps that D design
    std = tmp_path / "std-d"
    assert train(args(mnist_dir, std, 2, "--init-from", tiny_export, "--d-minibatch-std", "4")) == 0
    assert any(k.startswith("d.std_features.") for k in training_of(std, 2))
    again = tmp_path / "std-again"
    assert train(args(mnist_dir, again, 1, "--init-from", std)) == 0
    assert read_meta(again / "checkpoints" / "step-0000001")["config"]["d_minibatch_std"] == 4


def test_refuses_what_does_not_fit_before_a_run_folder_exists(tmp_path, mnist_dir, tiny_export, capsys):
    run = tmp_path / "run"
    assert train(args(mnist_dir, run, 1, "--init-from", tiny_export, "--g-width", "16")) == 2
    assert "--g-width 16 differs from the model in" in capsys.readouterr().err
    assert train(args(mnist_dir, run, 1, "--d-warmup", "5")) == 2
    assert "give --init-from too" in capsys.readouterr().err
    assert train(args(mnist_dir, run, 1, "--init-from", tmp_path / "nowhere")) == 2
    assert "does not exist" in capsys.readouterr().err
    emnist = write_mnist_like(tmp_path / "emnist", n_train=94, classes=47, prefix="emnist-balanced-", transpose=True)
    other = ["--dataset", "emnist", "--emnist-split", "balanced", "--data-dir", str(emnist), "--steps", "1", *TINY,
             "--init-from", str(tiny_export), "--out", str(run)]
    assert train(other) == 2
    assert "draws 10 classes of 1x28x28 images, this data has 47 classes" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_export, broken)
    with open(broken / GENERATOR_FILE, "r+b") as f:
        f.truncate(100)
    assert train(args(mnist_dir, run, 1, "--init-from", broken)) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert not run.exists()


def test_the_library_refuses_a_generator_that_changed_since_the_run_began(tmp_path, mnist_dir, tiny_export):
    meta = read_meta(tiny_export)
    cfg = TrainConfig.from_dict({**meta["config"], "init_from": str(tiny_export), "init_sha256": "0" * 64})
    trainer = Trainer(cfg, load_dataset("mnist", "train", mnist_dir), torch.device("cpu"))
    try:
        trainer.start_from(tiny_export)
    except CheckpointError as e:
        assert "has changed since this run was started from it" in str(e)
    else:
        raise AssertionError("a generator with another SHA-256 was loaded")


def test_the_dataset_defaults_to_the_models_own(tmp_path, tiny_root):
    """`--init-from checkpoints/emnist` alone means EMNIST ByMerge, the model's data (the split is still
    yours to choose: here only the test split exists)."""
    from studio_helpers import synthetic_idx
    data = synthetic_idx(tmp_path / "emnist", "emnist-bymerge-test", 47, per_class=2)
    run = tmp_path / "run"
    assert train(["--init-from", str(tiny_root / "emnist"), "--split", "test", "--data-dir", str(data), "--steps", "1",
                  "--batch-size", "16", "--no-progress", "--out", str(run)]) == 0
    meta = read_meta(run / "checkpoints" / "step-0000001")
    assert (meta["config"]["dataset"], meta["config"]["emnist_split"], len(meta["class_names"])) == ("emnist", "bymerge", 47)
