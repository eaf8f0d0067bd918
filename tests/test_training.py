"""train.py end to end on tiny synthetic IDX data: every architecture, resume, run-folder rules, DDP."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from cgan.checkpoints import list_checkpoints
from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.model_card import render
from cgan.networks import build_discriminator, minibatch_std
from cgan.training import Trainer
from cgan.training_cli import main
from conftest import REPO, TINY, same_training_state, stopped_and_resumed

CPU = torch.device("cpu")


def train(argv, capsys=None):
    return main(argv)


def losses(run):
    with open(run / "losses.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("arch,extra", [("sngan", ["--augment", "translation,cutout"]),
                                        ("dcgan", ["--label-smoothing", "0.1", "--mismatch-weight", "1"]),
                                        ("mlp", ["--loss", "hinge"])])
def test_each_architecture_trains(tmp_path, mnist_dir, arch, extra):
    run = tmp_path / arch
    argv = ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--arch", arch, "--steps", "3",
            "--log-every", "1", "--checkpoint-every", "3", "--sample-every", "3", "--out", str(run), *TINY, *extra]
    assert train(argv) == 0
    rows = losses(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("d_loss", "g_loss"))
    assert [p.name for p in list_checkpoints(run)] == ["step-0000003"]
    assert (run / "samples" / "step-0000003.png").is_file() and (run / "losses.png").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["arch"] == arch and info["invocations"][0]["argv"][0] == "train.py"
    meta = json.loads((run / "checkpoints" / "step-0000003" / "checkpoint.json").read_text())
    assert meta["class_names"] == list("0123456789") and "data_dir" not in json.dumps(meta)
    assert str(mnist_dir) not in json.dumps(meta)  # data paths are never stored


def test_epoch_sample_grids_and_keep(tmp_path, mnist_dir):
    run = tmp_path / "r"
    # 96 training images / batch 16 = 6 iterations per epoch; 2 epochs
    assert train(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--epochs", "2", "--checkpoint-every", "2",
                  "--keep", "2", "--log-every", "3", "--out", str(run), *TINY]) == 0
    assert sorted(p.name for p in (run / "samples").glob("epoch-*.png")) == ["epoch-0001.png", "epoch-0002.png"]
    assert [p.name for p in list_checkpoints(run)] == ["step-0000010", "step-0000012"]


def run_args(mnist_dir, run, steps, arch="sngan"):
    return ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--arch", arch, "--steps", str(steps),
            "--checkpoint-every", "3", "--log-every", "1", "--out", str(run), "--augment", "translation,cutout",
            *TINY]


@pytest.mark.parametrize("arch", ["sngan", "mlp"])  # mlp: dropout draws from the global RNG
def test_resume_follows_the_same_trajectory(tmp_path, mnist_dir, arch):
    """7 steps straight == 3 steps, stop, resume to 7 (crossing an epoch boundary at step 6): bitwise."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = run_args(mnist_dir, straight, 7, arch)
    args[args.index("--augment") + 1] = "translation,cutout" if arch == "sngan" else "none"
    assert train(args) == 0
    first = [a if a != str(straight) else str(resumed) for a in args]
    first[first.index("--steps") + 1] = "3"
    assert train(first) == 0
    assert train(["--resume", str(resumed), "--steps", "7", "--data-dir", str(mnist_dir), "--no-progress"]) == 0
    a = load_file(str(straight / "checkpoints" / "step-0000007" / "training_state.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-0000007" / "training_state.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), [k for k in a if not (a[k] == b[k]).all()][:5]
    ga = load_file(str(straight / "checkpoints" / "step-0000007" / "generator.safetensors"))
    gb = load_file(str(resumed / "checkpoints" / "step-0000007" / "generator.safetensors"))
    assert all((ga[k] == gb[k]).all() for k in ga)
    rows = losses(resumed)
    assert [int(r["step"]) for r in rows] == list(range(1, 8))  # appended, no duplicates
    assert [r["d_loss"] for r in rows] == [r["d_loss"] for r in losses(straight)]
    assert len(json.loads((resumed / "run.json").read_text())["invocations"]) == 2


def test_lr_warmup_ramps_both_rates_and_a_run_resumed_inside_it_matches(tmp_path, mnist_dir):
    """--lr-warmup 4: iteration k steps with min(k, 4)/4 of each rate. Adam's first update is the rate
    times a unit-size direction, so the first D update is a quarter of the plain run's; a run saved inside
    the warm-up and resumed is the straight run bit for bit (the rate is a function of the step)."""
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=2, lr_g=3e-4, lr_d=1e-4, lr_warmup=4)
    warm, plain = Trainer(cfg, ds, CPU), Trainer(replace(cfg, lr_warmup=0), ds, CPU)
    start = [p.detach().clone() for p in plain.D.parameters()]
    warm.iteration(), plain.iteration()
    moved = lambda t: torch.cat([(p.detach() - q).flatten() for p, q in zip(t.D.parameters(), start)]).norm()
    assert moved(warm) / moved(plain) == pytest.approx(0.25, rel=1e-3)
    rates = [(warm.opt_g.param_groups[0]["lr"], warm.opt_d.param_groups[0]["lr"])]
    for _ in range(5):
        warm.iteration()
        rates.append((warm.opt_g.param_groups[0]["lr"], warm.opt_d.param_groups[0]["lr"]))
    assert rates == [(3e-4 * f, 1e-4 * f) for f in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)]
    assert rates[3] == (cfg.lr_g, cfg.lr_d)  # exactly the configured rates once it is over
    resumed, saved = stopped_and_resumed(cfg, ds, tmp_path / "run", 2, 6)
    assert same_training_state(warm, resumed)
    assert "warmed up linearly over the first 4 iterations" in render(saved)  # the model card says so
    assert resumed.opt_g.param_groups[0]["lr"] == cfg.lr_g
    with pytest.raises(ValueError, match="--lr-warmup must be >= 0"):
        replace(cfg, lr_warmup=-1).validate()
    old = cfg.to_dict()
    del old["lr_warmup"]  # a checkpoint from before the option: no warm-up
    assert TrainConfig.from_dict(old).lr_warmup == 0


def test_lr_decay_anneals_both_rates_over_the_last_iterations_and_a_run_resumed_inside_it_matches(tmp_path, mnist_dir):
    """--lr-decay 3 over a 6-iteration run: iterations 4-6 train with 3/3, 2/3, 1/3 of each rate (never 0),
    with --lr-warmup the smaller factor wins, and a run saved inside the decay and resumed is the straight
    run bit for bit. train.py takes the option and the model card names it."""
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=3, lr_g=3e-4, lr_d=1e-4, steps=6,
                      lr_decay=3)
    straight = Trainer(cfg, ds, CPU)
    rates = []
    for _ in range(6):
        straight.iteration()
        rates.append((straight.opt_g.param_groups[0]["lr"], straight.opt_d.param_groups[0]["lr"]))
    assert rates == [(3e-4 * f, 1e-4 * f) for f in (1, 1, 1, 1, 2 / 3, 1 / 3)]
    assert rates[3] == (cfg.lr_g, cfg.lr_d)
    resumed, saved = stopped_and_resumed(cfg, ds, tmp_path / "run", 5, 6)
    assert same_training_state(straight, resumed)
    assert "decayed linearly over the last 3 iterations" in render(saved)
    both = Trainer(replace(cfg, lr_warmup=4, lr_decay=4), ds, CPU)  # warm-up and decay overlap
    assert [both.learning_rate_factor(k) for k in range(6)] == [0.25, 0.5, 0.75, 0.75, 0.5, 0.25]
    assert Trainer(replace(cfg, lr_decay=0), ds, CPU).learning_rate_factor(5) is None  # rates untouched
    with pytest.raises(ValueError, match="--lr-decay must be >= 0"):
        replace(cfg, lr_decay=-1).validate()
    old = cfg.to_dict()
    del old["lr_decay"]  # a checkpoint from before the option: no decay
    assert TrainConfig.from_dict(old).lr_decay == 0
    out = tmp_path / "cli"
    assert main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "2", "--lr-decay", "2",
                 "--out", str(out), *TINY]) == 0
    assert json.loads((list_checkpoints(out)[-1] / "checkpoint.json").read_text())["config"]["lr_decay"] == 2


def test_d_minibatch_std_shows_d_the_spread_of_groups_of_images_and_resumes_bit_for_bit(tmp_path, mnist_dir, capsys):
    """--d-minibatch-std 4: D's last conv also reads, for each group of 4 consecutive images, their standard
    deviation averaged over features and positions (so a group of copies stands out), the default D keeps
    its weight names (every checkpoint still loads), a run with it resumes bit for bit, train.py records it
    and refuses what cannot work with what to type instead."""
    h = torch.randn(8, 3, 2, 2)
    h[1:4] = h[0]  # the first group: four copies of one image
    out = minibatch_std(h, 4)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    assert torch.allclose(out[:4, 3], torch.full((4, 2, 2), 1e-4))  # sqrt(1e-8): no spread at all
    spread = (h[4:].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()  # the second group's, by hand
    assert torch.allclose(out[4:, 3], spread.expand(4, 2, 2)) and spread > 0.5
    with pytest.raises(ValueError, match="divisible by 4"):
        minibatch_std(torch.randn(6, 3, 2, 2), 4)
    torch.manual_seed(0)
    plain = build_discriminator("sngan", 10, 1, 28, 8)
    torch.manual_seed(0)
    with_std = build_discriminator("sngan", 10, 1, 28, 8, 4)
    assert with_std.std_features is not None and plain.std_features is None
    assert {k.replace("std_features.0.", "features.8.") for k in with_std.state_dict()} == set(plain.state_dict())
    # the convs before the new one are built first, from the same random draws: a seed still gives the
    # default D the initial weights it had before the option existed
    shared = [k for k in plain.state_dict() if k.startswith("features.") and not k.startswith("features.8.")]
    assert shared and all(torch.equal(plain.state_dict()[k], with_std.state_dict()[k]) for k in shared)
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, seed=3, steps=4, d_minibatch_std=4,
                      mismatch_weight=0.5)  # the matching-aware term scores a batch of real images alone too
    straight = Trainer(cfg, ds, CPU)
    for _ in range(4):
        straight.iteration()
    resumed, saved = stopped_and_resumed(cfg, ds, tmp_path / "run", 2, 4)
    assert same_training_state(straight, resumed)
    assert "minibatch standard deviation of groups of 4 images" in render(saved)
    old = cfg.to_dict()
    del old["d_minibatch_std"]  # a checkpoint from before the option: the plain D
    assert TrainConfig.from_dict(old).d_minibatch_std == 0
    base = ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "2", *TINY]
    assert train(base + ["--d-minibatch-std", "4", "--out", str(tmp_path / "cli")]) == 0
    assert json.loads((list_checkpoints(tmp_path / "cli")[-1] / "checkpoint.json").read_text()
                      )["config"]["d_minibatch_std"] == 4
    for extra, message in [(["--d-minibatch-std", "3"], "choose a batch size divisible by it"),
                           (["--d-minibatch-std", "1"], "0 (off) or at least 2"),
                           (["--d-minibatch-std", "4", "--arch", "dcgan"], "use --arch sngan or leave it out")]:
        assert train(base + extra + ["--out", str(tmp_path / "refused")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_resume_refuses_other_options(tmp_path, mnist_dir, tiny_run, capsys):
    assert train(["--resume", str(tiny_run), "--lr-g", "0.1", "--steps", "8"]) == 2
    err = capsys.readouterr().err
    assert "--lr-g cannot be changed when resuming" in err
    assert train(["--resume", str(tmp_path), "--steps", "8"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_out_must_be_new_or_empty(tmp_path, mnist_dir, tiny_run, capsys):
    assert train(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "1", "--out", str(tiny_run), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err


def test_clear_errors_for_bad_options(tmp_path, mnist_dir, capsys):
    base = ["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "1", "--out", str(tmp_path / "x"), *TINY]
    assert train(base + ["--label-smoothing", "0.1", "--loss", "hinge"]) == 2
    assert "bce loss only" in capsys.readouterr().err
    assert train(base + ["--arch", "dcgan", "--mismatch-weight", "1", "--mismatch-labels", "hardest"]) == 2
    assert "use --arch sngan or --mismatch-labels uniform" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert train(["--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"), "--steps", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(["--dataset", "mnist", "--arch", "resnet9000"])


def test_help_documents_every_option():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True).stdout
    for opt in ["--dataset", "--data-dir", "--split", "--emnist-split", "--arch", "--loss", "--epochs", "--steps",
                "--batch-size", "--lr-g", "--lr-d", "--z-dim", "--seed", "--out", "--resume", "--device",
                "--sample-every", "--checkpoint-every", "--keep", "--mismatch-weight", "--mismatch-labels", "--label-smoothing",
                "--lr-warmup", "--lr-decay", "--d-minibatch-std"]:
        assert opt in out


def test_ddp_two_processes_gloo(tmp_path, mnist_dir):
    """torchrun with 2 CPU processes (gloo over loopback): trains on shards and rank 0 writes a checkpoint."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           "--dataset", "mnist", "--data-dir", str(mnist_dir), "--device", "cpu", "--steps", "2",
           "--checkpoint-every", "2", "--log-every", "1", "--out", str(run), *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in list_checkpoints(run)] == ["step-0000002"]
    meta = json.loads((run / "checkpoints" / "step-0000002" / "checkpoint.json").read_text())
    assert meta["training"]["processes"] == 2
    assert meta["progress"]["images_seen"] == 2 * 2 * 16


def test_mode_seeking_pairs_same_class_latents_and_penalises_lookalikes(tmp_path, mnist_dir):
    """--mode-seeking W (MSGAN): the G batch's halves share labels, and the term is large when two latents
    of a class give the same image, small when they give different ones."""
    import torch
    from cgan.config import TrainConfig
    from cgan.data import load_dataset
    from cgan.losses import mode_seeking_loss
    from cgan.training import Trainer

    z = torch.randn(8, 16)
    same = torch.zeros(8, 1, 28, 28)
    apart = torch.cat([torch.full((4, 1, 28, 28), -1.0), torch.full((4, 1, 28, 28), 1.0)])
    assert mode_seeking_loss(same, z) > 1e4 and mode_seeking_loss(apart, z) < 1.0

    cfg = TrainConfig(dataset="mnist", g_width=8, d_width=8, z_dim=16, batch_size=10, mode_seeking=1.0)
    trainer = Trainer(cfg, load_dataset("mnist", "train", mnist_dir), torch.device("cpu"))
    seen = []
    trainer.G.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1].clone()))
    loss = trainer.g_step(cfg.batch_size)
    y = seen[-1]
    assert torch.equal(y[:5], y[5:]) and torch.isfinite(loss)
    assert train(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "3", "--mode-seeking", "1",
                  "--out", str(tmp_path / "ms"), *TINY]) == 0
    assert all(math.isfinite(float(r["g_loss"])) for r in losses(tmp_path / "ms"))
