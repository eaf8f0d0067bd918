"""The fast training paths give the same results as the plain ones."""
from __future__ import annotations

from dataclasses import replace

import torch

from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.training import Trainer

CPU = torch.device("cpu")


def test_device_and_dataloader_paths_draw_the_same_batches(mnist_dir):
    ds = load_dataset("mnist", "train", mnist_dir)  # 96 images: 6 batches of 16 per epoch
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=3)
    fast, naive = Trainer(cfg, ds, CPU), Trainer(replace(cfg, loader="dataloader"), ds, CPU)
    seen = []
    for _ in range(14):  # crosses two epoch boundaries
        (xa, ya), (xb, yb) = fast.next_batch(), naive.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        seen.append(ya)
    assert fast.progress.epoch == 2 and fast.progress.batch == 2
    # every image exactly once per epoch, in a new order each epoch
    first = torch.cat([fast.batches.epoch(0).flatten()])
    assert sorted(first.tolist()) == list(range(96))
    assert not torch.equal(fast.batches.epoch(0), fast.batches.epoch(1))


def test_a_full_iteration_is_identical_on_both_paths(mnist_dir):
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, augment="translation,cutout")
    a, b = Trainer(cfg, ds, CPU), Trainer(replace(cfg, loader="dataloader"), ds, CPU)
    for _ in range(3):
        assert torch.equal(a.iteration(), b.iteration())


def test_compiled_steps_match_eager(mnist_dir):
    """torch.compile (inductor, C++ on CPU) of a tiny DCGAN: a few steps stay within float tolerance.
    (Not the MLP: compiled dropout draws its masks from another generator, so it differs by design.)"""
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(arch="dcgan", loss="bce", g_width=4, d_width=4, z_dim=8, batch_size=16)
    eager, compiled = Trainer(cfg, ds, CPU), Trainer(replace(cfg, compile=True), ds, CPU)
    for _ in range(3):
        le, lc = eager.iteration(), compiled.iteration()
        torch.testing.assert_close(lc, le, rtol=1e-4, atol=1e-5)
    for (name, pe), pc in zip(eager.G.state_dict().items(), compiled.G.state_dict().values()):
        torch.testing.assert_close(pc, pe, rtol=1e-4, atol=1e-5, msg=name)
