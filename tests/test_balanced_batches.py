"""--balanced-classes: every class equally often in the real batches, deterministic, resumable, sharded."""
from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file

from cgan.data import write_idx
from cgan.training import BalancedBatches, EpochBatches
from cgan.training_cli import main
from conftest import TINY, synthetic_images


def imbalanced_labels() -> torch.Tensor:
    """EMNIST-like skew: class 0 has 500 images, class 1 has 7, class 2 has 40, class 3 none."""
    labels = torch.tensor([0] * 500 + [1] * 7 + [2] * 40)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


def test_every_present_class_equally_often_and_rare_images_all_used():
    labels = imbalanced_labels()
    batches = BalancedBatches(labels, num_classes=4, batch_size=16, seed=3)
    assert batches.per_epoch == EpochBatches(len(labels), 16, 3).per_epoch  # an epoch keeps its length
    idx = batches.epoch(0)
    assert idx.shape == (batches.per_epoch, 16)
    counts = torch.bincount(labels[idx.flatten()], minlength=4).tolist()
    assert counts[3] == 0 and max(counts[:3]) - min(counts[:3]) <= 1, counts
    # the rare class repeats, but walks through all of its images before any repeats a third time
    rare = idx.flatten()[labels[idx.flatten()] == 1]
    seen = torch.bincount(rare, minlength=len(labels))[labels == 1]
    assert seen.min() >= 1 and seen.max() - seen.min() <= 1
    # the common class never repeats an image inside an epoch (it is subsampled)
    common = idx.flatten()[labels[idx.flatten()] == 0]
    assert len(set(common.tolist())) == len(common)
    # a plain epoch, by contrast, mirrors the skew
    plain = torch.bincount(labels[EpochBatches(len(labels), 16, 3).epoch(0).flatten()], minlength=4).tolist()
    assert plain[0] > 10 * plain[1]


def test_order_is_a_pure_function_of_seed_and_epoch():
    labels = imbalanced_labels()
    a, b = BalancedBatches(labels, 4, 16, seed=3), BalancedBatches(labels, 4, 16, seed=3)
    assert torch.equal(a.epoch(5), b.epoch(5)) and torch.equal(a.epoch(0), b.epoch(0))
    assert not torch.equal(a.epoch(0), a.epoch(1))
    assert not torch.equal(a.epoch(0), BalancedBatches(labels, 4, 16, seed=4).epoch(0))


def test_processes_share_one_balanced_epoch_without_overlap():
    labels = imbalanced_labels()
    one = BalancedBatches(labels, 4, 8, seed=0, rank=0, world_size=1)
    ranks = [BalancedBatches(labels, 4, 8, seed=0, rank=r, world_size=2) for r in range(2)]
    shards = [r.epoch(2).flatten() for r in ranks]
    assert ranks[0].per_epoch == ranks[1].per_epoch == len(labels) // 2 // 8
    both = torch.bincount(labels[torch.cat(shards)], minlength=4).tolist()
    assert max(both[:3]) - min(both[:3]) <= 1  # balanced over all processes together
    # the common class's images are drawn without replacement across the processes too
    common = torch.cat(shards)[labels[torch.cat(shards)] == 0]
    assert len(set(common.tolist())) == len(common)
    assert len(one.epoch(2).flatten()) >= len(torch.cat(shards))


def skewed_mnist(folder):
    """Tiny official-format MNIST files where class 9 has 4 of 120 training images."""
    images, labels = synthetic_images(240, seed=5)
    keep = np.flatnonzero(labels != 9)[:116].tolist() + np.flatnonzero(labels == 9)[:4].tolist()
    folder.mkdir(parents=True)
    write_idx(folder / "train-images-idx3-ubyte", images[keep][:, 0])
    write_idx(folder / "train-labels-idx1-ubyte", labels[keep])
    write_idx(folder / "t10k-images-idx3-ubyte", images[:48, 0])
    write_idx(folder / "t10k-labels-idx1-ubyte", labels[:48])
    return folder


def straight_and_resumed(tmp_path, base, data, stop_at, steps):
    """Train ``base`` straight to ``steps``, and again stopped at ``stop_at`` and resumed; returns the straight
    run folder and both runs' final training states."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*base, "--out", str(straight)]) == 0
    stop = [*base, "--out", str(resumed)]
    stop[stop.index("--steps") + 1] = str(stop_at)
    assert main(stop) == 0
    assert main(["--resume", str(resumed), "--steps", str(steps), "--data-dir", str(data), "--no-progress"]) == 0
    state = lambda run: load_file(str(run / "checkpoints" / f"step-{steps:07d}" / "training_state.safetensors"))
    return straight, state(straight), state(resumed)


def test_train_balanced_resumes_bitwise_and_is_recorded(tmp_path):
    data = skewed_mnist(tmp_path / "mnist")
    base = ["--dataset", "mnist", "--data-dir", str(data), "--steps", "9", "--checkpoint-every", "4",
            "--log-every", "1", "--balanced-classes", "--no-progress", *TINY]
    straight, a, b = straight_and_resumed(tmp_path, base, data, 4, 9)
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((straight / "checkpoints" / "step-0000009" / "checkpoint.json").read_text())
    assert meta["config"]["balanced_classes"] is True
    # and it is a different run from the plain order (the batches really changed)
    plain = [a for a in base if a != "--balanced-classes"]
    assert main([*plain, "--out", str(tmp_path / "plain")]) == 0
    c = load_file(str(tmp_path / "plain" / "checkpoints" / "step-0000009" / "training_state.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_old_checkpoints_without_the_field_load_as_unbalanced():
    from cgan.config import TrainConfig

    d = TrainConfig().to_dict()
    del d["balanced_classes"]
    assert TrainConfig.from_dict(d).balanced_classes is False


def test_fake_labels_data_gives_the_generated_images_the_real_batchs_labels(tmp_path):
    """--fake-labels data: in every D step the generated half carries exactly the real half's labels, and G
    trains on real batches' labels too (skewed data: the rare class stays rare on both sides); the default
    draws them uniformly. Recorded in the config, and a resumed run is bitwise the straight one."""
    from cgan.config import TrainConfig
    from cgan.data import load_dataset
    from cgan.training import Trainer

    data = skewed_mnist(tmp_path / "mnist")
    ds = load_dataset("mnist", "train", data)
    seen = {}
    for mode in ("data", "uniform"):
        cfg = TrainConfig(dataset="mnist", steps=6, batch_size=32, z_dim=8, g_width=4, d_width=4, fake_labels=mode)
        trainer = Trainer(cfg, ds, torch.device("cpu"))
        d_calls, g_calls = [], []
        trainer.D.register_forward_pre_hook(lambda m, args: d_calls.append(args[1].clone()))
        trainer.G.register_forward_pre_hook(lambda m, args: g_calls.append(args[1].clone()))
        for _ in range(6):
            trainer.iteration()
            trainer.progress.step += 1
        halves = [(y[:len(y) // 2], y[len(y) // 2:]) for y in d_calls if len(y) == 64]  # D scores real + fake at once
        assert len(halves) >= 6
        seen[mode] = (all(torch.equal(r, f) for r, f in halves), torch.cat(g_calls))
    assert seen["data"][0] and not seen["uniform"][0]
    real_share = torch.bincount(ds.labels, minlength=10).float() / len(ds.labels)
    g_data, g_uniform = (torch.bincount(seen[m][1], minlength=10).float() / len(seen[m][1]) for m in ("data", "uniform"))
    rare = int(real_share.argmin())
    assert g_data[rare] < g_uniform[rare] and (g_data - real_share).abs().max() < (g_uniform - real_share).abs().max()

    base = ["--dataset", "mnist", "--data-dir", str(data), "--steps", "6", "--checkpoint-every", "3",
            "--fake-labels", "data", "--no-progress", *TINY]
    straight, a, b = straight_and_resumed(tmp_path, base, data, 3, 6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((straight / "checkpoints" / "step-0000006" / "checkpoint.json").read_text())
    assert meta["config"]["fake_labels"] == "data"
    from cgan.export import export
    from cgan.model_card import render
    card = render(export(straight, tmp_path / "export", str(data), real_per_class=2))
    assert "generated images take the real batch's labels" in card
    assert TrainConfig.from_dict({k: v for k, v in meta["config"].items() if k != "fake_labels"}).fake_labels == "uniform"
