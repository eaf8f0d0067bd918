"""The scripts in bench/ behind the quality record (bench/QUALITY.md): each does what the record says it did,
on tiny real runs."""
from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cgan
from cgan.checkpoints import GENERATOR_FILE, write_tensor_file
from cgan.training_cli import main as train


def bench_script(name: str):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standing_statistics_come_from_the_generator_alone(tmp_path, tiny_export):
    """`bench/standing_statistics.py` (a measured lever, bench/QUALITY.md): the re-measured batch-norm statistics
    depend only on the generator's weights, not on the statistics it had (corrupted ones give the same bytes),
    the copy loads and samples, and its stale evaluation is dropped."""
    module = bench_script("standing_statistics")
    corrupted = tmp_path / "corrupted"
    shutil.copytree(tiny_export, corrupted)
    (corrupted / "evaluation.json").write_text("{}")
    weights = load_file(str(corrupted / GENERATOR_FILE))
    stats = [k for k in weights if k.endswith(("running_mean", "running_var"))]
    assert stats
    write_tensor_file(corrupted / GENERATOR_FILE, {k: v * 100 + 5 if k in stats else v for k, v in weights.items()})
    for src, out in ((tiny_export, tmp_path / "a"), (corrupted, tmp_path / "b")):
        module.main([str(src), str(out), "--batches", "3", "--batch-size", "32"])
    a, b = load_file(str(tmp_path / "a" / GENERATOR_FILE)), load_file(str(tmp_path / "b" / GENERATOR_FILE))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], weights[k]) for k in weights if k not in stats and "num_batches" not in k)
    assert not torch.allclose(a[stats[0]], weights[stats[0]] * 100 + 5)
    assert not (tmp_path / "b" / "evaluation.json").exists()
    images, labels = cgan.load(tmp_path / "b").sample([0, 1], per_class=2, seed=1)
    assert images.shape[0] == 4 and labels.tolist() == [0, 0, 1, 1]


def test_extra_ema_lengths_leave_the_run_as_train_py_makes_it(tmp_path, mnist_dir):
    """`bench/ema_lengths.py` (a measured lever, bench/QUALITY.md): the run it trains is bitwise the one
    train.py trains, an extra average with the served decay is bitwise the served generator, another length
    differs and loads as a model; and a continuation is refused (its averages have no warm-up)."""
    module = bench_script("ema_lengths")
    args = ["--dataset", "mnist", "--split", "train", "--data-dir", str(mnist_dir), "--g-width", "8", "--d-width", "8",
            "--z-dim", "16", "--batch-size", "16", "--steps", "12", "--checkpoint-every", "6", "--no-progress",
            "--threads", "1"]
    assert module.main(["--ema-lengths", "0.999,power:2", *args, "--out", str(tmp_path / "extra")]) == 0
    assert train([*args, "--out", str(tmp_path / "plain")]) == 0
    step = "step-0000012"
    served = load_file(str(tmp_path / "extra" / "checkpoints" / step / "generator.safetensors"))
    plain = load_file(str(tmp_path / "plain" / "checkpoints" / step / "generator.safetensors"))
    same = load_file(str(tmp_path / "extra" / "ema-0.999" / step / "generator.safetensors"))
    power = load_file(str(tmp_path / "extra" / "ema-power2" / step / "generator.safetensors"))
    assert all(torch.equal(served[k], plain[k]) and torch.equal(served[k], same[k]) for k in served)
    assert not all(torch.equal(served[k], power[k]) for k in served)
    assert (tmp_path / "extra" / "ema-power2" / "step-0000006").is_dir()
    sampler = cgan.load(tmp_path / "extra" / "ema-power2" / step)
    assert sampler.meta["ema_length"] == "power:2" and sampler.sample([0], per_class=2)[0].shape == (2, 28, 28)
    with pytest.raises(SystemExit, match="random weights only"):
        module.main(["--ema-lengths", "0.998", "--init-from", str(tmp_path / "plain"), "--out", str(tmp_path / "c")])
    assert module.decay("power:2", 1) == 0 and module.decay("0.999", 1) == 0.1


def test_the_discriminator_probe_reads_a_runs_d_and_refuses_an_export(tiny_run, tiny_export, mnist_dir):
    """`bench/probe_discriminator.py` (why a fresh D teaches a trained G little): on a real checkpoint it scores
    every class's real and generated images with the run's own D and G; an export has no D: a clear stop."""
    module = bench_script("probe_discriminator")
    r = module.probe(tiny_run / "checkpoints" / "step-0000004", str(mnist_dir), per_class=4)
    assert r["step"] == 4 and len(r["per_class"]) == 10
    assert math.isclose(sum(c["share"] for c in r["per_class"].values()), 1.0, abs_tol=1e-3)
    assert r["gap"] == pytest.approx(r["real_logit"] - r["fake_logit"], abs=1e-5)
    assert r["spread_in_class"] > 0 and all(math.isfinite(r[k]) for k in ("corr_log_share_real", "corr_log_share_fake"))
    with pytest.raises(SystemExit, match="an exported folder has no discriminator"):
        module.probe(tiny_export, str(mnist_dir), per_class=4)
