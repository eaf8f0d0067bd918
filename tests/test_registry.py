"""One fact, one place: an architecture is one registry entry in cgan/networks.py, and everything else (the
command line, defaults, checkpoint validation, sampling, the benchmark) reads it from there."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import cgan
from cgan import networks
from cgan.training_cli import main as train_main
from conftest import TINY


class ToyGenerator(nn.Module):
    def __init__(self, z_dim, num_classes, channels, size, width):
        super().__init__()
        self.num_classes, self.shape = num_classes, (channels, size, size)
        self.net = nn.Linear(z_dim + num_classes, channels * size * size)

    def forward(self, z, y):
        h = torch.cat([z, networks.class_weights(y, self.num_classes, z.dtype)], 1)
        return torch.tanh(self.net(h)).view(-1, *self.shape)


class ToyDiscriminator(nn.Module):
    def __init__(self, num_classes, channels, size, width):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Linear(channels * size * size + num_classes, 1)

    def forward(self, x, y):
        return self.net(torch.cat([x.flatten(1), networks.class_weights(y, self.num_classes, x.dtype)], 1)).squeeze(1)


def test_an_architecture_added_to_the_registry_alone_trains_saves_and_samples(monkeypatch, tmp_path, mnist_dir,
                                                                              capsys):
    toy = networks.Architecture(ToyGenerator, ToyDiscriminator, 4, 4, "hinge", True, "a one-layer toy")
    monkeypatch.setitem(networks.ARCHITECTURES, "toy", toy)
    run = tmp_path / "run"
    args = ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--arch", "toy", "--steps", "3", *TINY,
            "--checkpoint-every", "3", "--out", str(run)]
    assert train_main(args) == 0, capsys.readouterr().err
    sampler = cgan.load(run)
    cfg = sampler.meta["config"]
    assert cfg["arch"] == "toy" and cfg["loss"] == "hinge" and cfg["augment"] == "translation,cutout"  # its defaults
    images, _ = sampler.sample(["3"], 2, seed=1)
    assert images.shape == (2, 28, 28)


def test_a_bad_augmentation_policy_is_refused_before_the_run_folder_exists(tmp_path, mnist_dir, capsys):
    run = tmp_path / "run"
    rc = train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--augment", "flip", "--steps", "2", *TINY,
                     "--out", str(run)])
    assert rc == 2 and "--augment: unknown augmentation flip" in capsys.readouterr().err
    assert not run.exists()
    assert train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--augment", "cutout", "--steps", "2",
                       *TINY, "--out", str(run)]) == 0  # the same --out works at once with a good policy


def test_help_and_defaults_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, a in networks.ARCHITECTURES.items():
        assert f"{name}: {a.description}" in text and f"{name} {a.g_width}" in text and f"{name} {a.loss}" in text
    assert networks.recipe("sngan", 10_000)["augment"] == "translation,cutout"
    assert networks.recipe("sngan", 60_000)["augment"] == ""
    assert networks.recipe("dcgan", 10_000)["augment"] == ""


def test_train_py_threads(tmp_path, mnist_dir, capsys):
    import os

    before = torch.get_num_threads()
    try:
        run = tmp_path / "run"
        assert train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "2", *TINY, "--threads", "1",
                           "--out", str(run)]) == 0
        assert torch.get_num_threads() == 1
        assert "1 thread," in (run / "run.json").read_text()  # recorded with the device
        assert train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "3"]) == 0  # default
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        assert train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "2", *TINY, "--threads", "0",
                           "--out", str(tmp_path / "other")]) == 2
        assert "--threads must be at least 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
