"""Checkpoints: bitwise round trip, atomic writes, 'latest', and clear errors for damaged files."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from cgan.checkpoints import (GENERATOR_FILE, META_FILE, TRAINING_FILE, CheckpointError, latest_checkpoint,
                              list_checkpoints, read_meta, resolve_checkpoint)
from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.sampler import Sampler
from cgan.training import Trainer


def test_round_trip_is_bitwise(tmp_path, mnist_dir):
    ds = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16)
    a = Trainer(cfg, ds, torch.device("cpu"))
    for _ in range(2):
        a.iteration()
    folder = a.save(tmp_path)
    b = Trainer(cfg, ds, torch.device("cpu"))
    b.load(folder)
    for x, y in [(a.G, b.G), (a.D, b.D), (a.G_ema, b.G_ema)]:
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys() and all(torch.equal(sx[k], sy[k]) for k in sx)
    for oa, ob in [(a.opt_g, b.opt_g), (a.opt_d, b.opt_d)]:
        sa, sb = oa.state_dict(), ob.state_dict()
        assert sa["param_groups"] == sb["param_groups"]
        assert all(torch.equal(sa["state"][i][k], sb["state"][i][k]) for i in sa["state"] for k in sa["state"][i])
    assert b.progress == a.progress
    assert not list(tmp_path.glob("checkpoints/.tmp-*"))


def test_checkpoint_files_get_the_umask_mode_not_owner_only(tmp_path, tiny_export):
    """safetensors creates owner-only (0600) files; a checkpoint folder's files get the mode of any file
    written under the process's umask, so an app run by another user can read the weights."""
    from cgan.checkpoints import write_folder

    old = os.umask(0o022)
    try:
        folder = write_folder(tmp_path / "ck", {"kind": "test"}, {"a.safetensors": {"w": torch.zeros(2)}})
    finally:
        os.umask(old)
    assert {f.name: f.stat().st_mode & 0o777 for f in folder.iterdir()} == {
        "a.safetensors": 0o644, META_FILE: 0o644}
    (tmp_path / "plain").write_text("x")  # what export writes too: the mode of a plain file
    assert {f.stat().st_mode & 0o777 for f in tiny_export.iterdir()} == {(tmp_path / "plain").stat().st_mode & 0o777}


def test_latest_ignores_incomplete_folders(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / ".tmp-step-0000009-123").mkdir()  # a crash mid-write
    (run / "checkpoints" / "step-0000008").mkdir()           # no checkpoint.json: incomplete
    assert latest_checkpoint(run).name == "step-0000004"
    assert resolve_checkpoint(run) == latest_checkpoint(run)
    assert [p.name for p in list_checkpoints(run)] == ["step-0000002", "step-0000004"]


@pytest.fixture
def ckpt(tiny_run, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(latest_checkpoint(tiny_run), folder)
    return folder


def test_truncated_weights_name_the_file(ckpt):
    f = ckpt / GENERATOR_FILE
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"generator\.safetensors.*(truncated|corrupt)"):
        Sampler.load(ckpt)


def test_garbage_and_pickles_are_refused(ckpt):
    import pickle

    (ckpt / GENERATOR_FILE).write_bytes(pickle.dumps({"weight": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="generator.safetensors"):
        Sampler.load(ckpt)


def test_corrupt_json_names_the_file(ckpt):
    (ckpt / META_FILE).write_text('{"format": "cgan-studio-checkpoint", ')
    with pytest.raises(CheckpointError, match="checkpoint.json.*not valid JSON"):
        read_meta(ckpt)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
    (lambda m: m["config"].update(arch="os.system"), "unknown architecture"),
    (lambda m: m["config"].update(z_dim=10**9), "z_dim must be an integer"),
    (lambda m: m["image"].update(size=100000), "image.size"),
    (lambda m: m.update(class_names=["a"] * 3), "duplicates"),
    (lambda m: m.pop("config"), "'config' is missing"),
])
def test_hostile_or_damaged_meta_is_refused(ckpt, edit, message):
    meta = json.loads((ckpt / META_FILE).read_text())
    edit(meta)
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        Sampler.load(ckpt)


def test_mismatched_architecture_is_refused(ckpt):
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["config"]["g_width"] = 16  # weights were trained with width 8
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="generator.safetensors: tensor .* has shape"):
        Sampler.load(ckpt)


def test_exported_checkpoint_cannot_resume(tiny_export, tmp_path, mnist_dir):
    ds = load_dataset("mnist", "train", mnist_dir)
    t = Trainer(TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16), ds, torch.device("cpu"))
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        t.load(tiny_export)
    assert not (tiny_export / TRAINING_FILE).exists()


def test_missing_paths_say_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        resolve_checkpoint(tmp_path)
