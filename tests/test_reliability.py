"""Reliability and security (issue 6): training survives kill -9, divergence and full or unwritable disks;
checkpoints are data (safetensors + JSON only, every field checked); names sent to the app never leave
checkpoints/; the Gradio server serves no file beyond its own outputs and takes no uploads.

Training runs are real `python train.py` processes on the synthetic IDX data of conftest.py. The kill tests
use an MLP of width 256, whose checkpoint (41 MB, fsynced) takes ~70 ms to write, so a write can be caught
in the act: the test polls the run folder and, the moment the wanted stage of a write is visible, freezes
the trainer with SIGSTOP, re-reads the folder while it is frozen and SIGKILLs it. A stopped process never
runs another instruction, so this is exactly a kill -9 at that instant, and the test knows which stage it
hit. The disk tests mount small tmpfs file systems (real ENOSPC and EROFS errors from the kernel); they are
skipped where mounting is not permitted (not root).
"""
from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import cgan
from cgan.checkpoints import (GENERATOR_FILE, META_FILE, TRAINING_FILE, CheckpointError, latest_checkpoint,
                              list_checkpoints, read_meta)
from cgan.training_cli import main as train_main
from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.studio import InputError, Studio
from cgan.training import Trainer
from conftest import REPO, TINY

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", GRADIO_ANALYTICS_ENABLED="False")
# width-256 MLP: a 41 MB checkpoint, so that each write lasts long enough to be caught mid-way
BIG = ["--arch", "mlp", "--g-width", "256", "--d-width", "256", "--z-dim", "16", "--batch-size", "16",
       "--no-progress", "--log-every", "1", "--checkpoint-every", "1", "--keep", "2"]
TMP_DIR = re.compile(r"^\.tmp-step-(\d+)-(\d+)$")
STEP_DIR = re.compile(r"^step-(\d+)$")


# ============================================================================= helpers: processes and run folders

def start(log: Path, *args) -> subprocess.Popen:
    """`python train.py ARGS` in the background; stderr goes to ``log`` (read after it ends)."""
    return subprocess.Popen([sys.executable, "train.py", *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def listing(run: Path) -> tuple[list[int], dict[str, tuple[int, int, set[str]]]]:
    """(complete checkpoint steps, {temporary folder: (step, writer pid, files in it)}) as on disk now."""
    done, tmp = [], {}
    try:
        entries = list(os.scandir(run / "checkpoints"))
    except FileNotFoundError:
        return done, tmp
    for e in entries:
        try:
            names = set(os.listdir(e.path))
        except (FileNotFoundError, NotADirectoryError):
            continue  # renamed or removed while we looked
        if m := TMP_DIR.match(e.name):
            tmp[e.name] = (int(m.group(1)), int(m.group(2)), names)
        elif (m := STEP_DIR.match(e.name)) and META_FILE in names:
            done.append(int(m.group(1)))
    return sorted(done), tmp


def wait_stopped(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in "Tt":
                return
        time.sleep(0.0005)
    raise AssertionError(f"process {pid} did not stop")


def freeze_when(proc: subprocess.Popen, run: Path, want, log: Path, timeout: float = 120):
    """Poll ``run`` until ``want(done, tmp)``; SIGSTOP the trainer and return the listing if it still holds
    while the trainer is frozen (otherwise let it go on and keep polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trainer ended (rc {proc.returncode}) before the moment to kill it: "
                                 f"{log.read_text()[-2000:]}")
        if want(*listing(run)):
            os.kill(proc.pid, signal.SIGSTOP)
            wait_stopped(proc.pid)
            state = listing(run)
            if want(*state):
                return state
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.001)
    raise AssertionError("timed out waiting for the moment to kill the trainer")


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def trainer_for(folder: Path, data: Path) -> Trainer:
    cfg = TrainConfig.from_dict(read_meta(folder)["config"])
    return Trainer(cfg, load_dataset(cfg.dataset, cfg.split, data), torch.device("cpu"))


def assert_run_usable(run: Path, data: Path) -> int:
    """Every checkpoint the run lists loads completely (generator for sampling; G, D, optimisers and
    progress for resuming the latest); returns the latest step."""
    done, _ = listing(run)
    latest = latest_checkpoint(run)
    assert latest is not None and latest.name == f"step-{done[-1]:07d}"
    assert cgan.load(run).folder == latest  # what the app and `cgan.load` pick
    for folder in list_checkpoints(run):
        s = cgan.load(folder)
        assert s.sample([0], 1, seed=0)[0].shape == (1, 28, 28)
    t = trainer_for(latest, data)
    t.load(latest)  # every tensor checked for name, shape, dtype and finiteness
    assert t.progress.step == done[-1]
    return done[-1]


def losses(run: Path) -> list[dict]:
    with open(run / "losses.csv", newline="") as f:
        return list(csv.DictReader(f))


# ============================================================================= kill -9

# The stages of write_folder(): files appear in the hidden temporary folder in this order, then it is renamed.
STAGES = [
    ("temporary folder made, generator.safetensors being written", lambda n: GENERATOR_FILE not in n),
    ("generator.safetensors done, training_state.safetensors being written",
     lambda n: GENERATOR_FILE in n and TRAINING_FILE not in n),
    ("both tensor files done, checkpoint.json not yet written", lambda n: TRAINING_FILE in n and META_FILE not in n),
    ("checkpoint.json written, folder not yet renamed into place", lambda n: META_FILE in n),
]
TARGET = 24


def test_kill_9_during_checkpoint_writes_then_resume(tmp_path, mnist_dir):
    """Kill the trainer at each stage of a checkpoint write and at random moments; after every kill the run
    folder is loadable and `--resume` goes on; the finished run equals one that was never interrupted."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    new_run = ["--dataset", "mnist", "--data-dir", mnist_dir, *BIG, "--steps", TARGET]
    reference = start(tmp_path / "ref.log", *new_run, "--out", ref)  # runs alongside, uninterrupted
    last, hit = 0, []
    moments = STAGES + [("a random moment", None)] * 2
    for i, (what, stage) in enumerate(moments):
        log = tmp_path / f"kill-{i}.log"
        if i == 0:
            proc = start(log, *new_run, "--out", run)
        else:
            proc = start(log, "--resume", run, "--data-dir", mnist_dir, "--steps", TARGET, "--no-progress")

        def mine(tmp, proc=proc):  # temporary folders of this process (a killed one may have left its own)
            return {name: v for name, v in tmp.items() if v[1] == proc.pid}

        if stage is not None:
            done, tmp = freeze_when(proc, run, lambda d, t: bool(d) and d[-1] > last and
                                    any(stage(n) for _, _, n in mine(t).values()), log)
            kill9(proc)
            ((in_flight, _, files),) = mine(listing(run)[1]).values()
            assert stage(files), what  # it really died at that stage: the half-written folder is still there
        else:
            freeze_when(proc, run, lambda d, t: bool(d) and d[-1] > last, log)
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(random.uniform(0.0, 0.5))
            kill9(proc)
            in_flight = None
        step = assert_run_usable(run, mnist_dir)
        if in_flight is not None:
            assert step == in_flight - 1  # the interrupted checkpoint is ignored, the previous one is latest
        hit.append((what, step))
        assert step > last
        last = step
    log = tmp_path / "final.log"
    final = start(log, "--resume", run, "--data-dir", mnist_dir, "--steps", TARGET, "--no-progress")
    assert final.wait(timeout=300) == 0, log.read_text()
    assert reference.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()

    assert assert_run_usable(run, mnist_dir) == TARGET
    assert [p.name for p in list_checkpoints(run)] == [f"step-{TARGET - 1:07d}", f"step-{TARGET:07d}"]  # --keep 2
    assert listing(run)[1] == {}, "temporary folders of killed writers were not swept"
    rows = losses(run)
    assert [int(r["step"]) for r in rows] == list(range(1, TARGET + 1))  # re-done steps logged once
    # Same trajectory as the uninterrupted run, bit for bit: weights, optimiser state and losses.
    for name in (GENERATOR_FILE, TRAINING_FILE):
        a = load_file(run / "checkpoints" / f"step-{TARGET:07d}" / name)
        b = load_file(ref / "checkpoints" / f"step-{TARGET:07d}" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    cols = ("d_loss", "g_loss", "d_real", "d_fake")
    assert [[r[c] for c in cols] for r in rows] == [[r[c] for c in cols] for r in losses(ref)]
    invocations = json.loads((run / "run.json").read_text())["invocations"]
    assert len(invocations) == len(moments) + 1 and all(inv["resumed"] for inv in invocations[1:])
    print("kills:", hit)


def test_resume_of_a_run_killed_before_its_first_checkpoint_says_so(tmp_path, mnist_dir):
    run = tmp_path / "run"
    log = tmp_path / "log"
    proc = start(log, "--dataset", "mnist", "--data-dir", mnist_dir, *BIG, "--steps", TARGET, "--out", run)
    freeze_when(proc, run, lambda d, t: bool(t), log)  # the very first write
    kill9(proc)
    assert listing(run)[0] == []
    r = subprocess.run([sys.executable, "train.py", "--resume", str(run), "--data-dir", str(mnist_dir)], cwd=REPO,
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "holds no complete checkpoint to resume from" in r.stderr
    assert "Traceback" not in r.stderr
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        cgan.load(run)


# ============================================================================= divergence

@pytest.mark.parametrize("log_every", [1, 7])
def test_divergence_stops_with_a_clear_message_and_no_bad_checkpoint(tmp_path, mnist_dir, capsys, log_every):
    """An absurd discriminator learning rate (1e4, Adam) makes D's weights explode; the losses and the
    optimiser state overflow after ~20 steps. Training must stop with one clear line, exit code 2, and every
    checkpoint left behind must be finite. log_every 1 exercises the loss check, 7 the check of the weights
    at checkpoint time (steps between loss checks)."""
    run = tmp_path / "run"
    rc = train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--arch", "mlp", "--g-width", "8",
                     "--d-width", "8", "--z-dim", "16", "--batch-size", "16", "--no-progress", "--steps", "200",
                     "--checkpoint-every", "1", "--log-every", str(log_every), "--keep", "1000", "--lr-d", "1e4",
                     "--out", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and re.search(r"non-finite|NaN or infinite", err[-1]), err[-1]
    assert "start a new run" in err[-1] and "Traceback" not in "\n".join(err)
    diverged_at = int(re.search(r"at step (\d+)", err[-1]).group(1))
    folders = list_checkpoints(run)
    assert folders, "the good checkpoints before the divergence were kept"
    assert int(folders[-1].name[5:]) < diverged_at
    for folder in folders:  # every tensor written is finite
        for name in (GENERATOR_FILE, TRAINING_FILE):
            for key, t in load_file(folder / name).items():
                assert not t.is_floating_point() or torch.isfinite(t).all(), (folder.name, name, key)
    trainer_for(folders[-1], mnist_dir).load(folders[-1])
    text = (run / "losses.csv").read_text().lower()
    assert "nan" not in text and "inf" not in text


@pytest.mark.parametrize("option,value", [("--lr-d", "inf"), ("--lr-g", "nan"), ("--mismatch-weight", "inf"),
                                          ("--label-smoothing", "nan")])
def test_non_finite_options_are_refused_at_start(tmp_path, mnist_dir, capsys, option, value):
    run = tmp_path / "run"
    extra = ["--loss", "bce"] if option == "--label-smoothing" else []
    rc = train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "5", "--out", str(run),
                     option, value, *TINY, *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "must be a finite number" in err and not run.exists(), err


# ============================================================================= unwritable and full disks

@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(size, read_only=False) -> a fresh tmpfs folder (unmounted afterwards)."""
    mounted = []

    def make(size: str, read_only: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True,
                               text=True)
        except FileNotFoundError:
            pytest.skip("no mount command here")
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); needs root")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path, leave: int = 0) -> int:
    """Write into ``path`` until the file system has at most ``leave`` bytes free; returns the bytes written."""
    written = 0
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            while shutil.disk_usage(path.parent).free > leave:
                try:
                    n = f.write(b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
                written += n or 0
                if not n:
                    break
    return written


@pytest.mark.parametrize("where", ["under a file", "/proc", "read-only file system", "small disk"])
def test_unwritable_or_small_output_folder_is_refused_at_start(tmp_path, mnist_dir, capsys, mount_tmpfs, where):
    if where == "under a file":
        (tmp_path / "file").write_text("x")
        out, message = tmp_path / "file" / "run", "cannot write into"
    elif where == "/proc":
        out, message = Path("/proc/cgan-studio-run"), "cannot write into"
    elif where == "read-only file system":
        out, message = mount_tmpfs("8m", read_only=True) / "run", "Read-only file system"
    else:
        out, message = mount_tmpfs("16m") / "run", "MiB free on the disk"
    t = time.perf_counter()
    rc = train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--steps", "100000", "--out", str(out),
                     *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "choose another --out" in err, err
    assert time.perf_counter() - t < 30  # refused before training, not after 100,000 steps
    assert not (out / "checkpoints").exists()


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, mnist_dir, mount_tmpfs):
    """The disk fills up while training (another process takes every free byte, and keeps taking what is
    freed): the trainer stops with one clear line, the checkpoints already written stay complete, no
    half-written folder is left, and after space is freed `--resume` goes on."""
    disk = mount_tmpfs("330m")  # > 200 MiB free at start (train.py checks), room for 3 checkpoints of 41 MB
    run, filler, log = disk / "run", disk / "filler", tmp_path / "log"
    proc = start(log, "--dataset", "mnist", "--data-dir", mnist_dir, *BIG, "--steps", 1000, "--out", run)
    done, _ = freeze_when(proc, run, lambda d, t: len(d) >= 2, log)
    leave = 4 << 20  # room for the small writes (losses.csv, sample grids), not for a 41 MB checkpoint
    fill(filler, leave)  # while the trainer is frozen: the disk is now (nearly) full
    os.kill(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        fill(filler, leave)  # take back whatever the trainer frees
        time.sleep(0.002)
    rc = proc.wait(timeout=10)
    err = log.read_text()
    assert rc == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training stopped") and "No space left on device" in last, last
    assert re.search(r"could not write \S+(generator|training_state)\.safetensors", last), last  # mid-checkpoint
    assert "is intact" in last and f"--resume {run}" in last and "Traceback" not in err
    step = assert_run_usable(run, mnist_dir)
    assert step >= done[-1] and f"step-{step:07d}" in last
    assert listing(run)[1] == {}, "a half-written checkpoint folder was left behind"
    filler.unlink()
    r = subprocess.run([sys.executable, "train.py", "--resume", str(run), "--data-dir", str(mnist_dir),
                        "--steps", str(step + 2), "--no-progress"], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert assert_run_usable(run, mnist_dir) == step + 2


def test_write_error_keeps_the_previous_checkpoint_byte_for_byte(tmp_path, mnist_dir, mount_tmpfs):
    """In process: Trainer.save() on a full disk raises OSError (not safetensors' own error type), removes
    its temporary folder, and leaves the earlier checkpoint untouched, also when re-writing that same step."""
    disk = mount_tmpfs("4m")
    t = Trainer(TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16),
                load_dataset("mnist", "train", mnist_dir), torch.device("cpu"))
    t.iteration()
    first = t.save(disk)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    fill(disk / "filler")
    for again in (False, True):  # the next step, then the same step (the replace-in-place path)
        if not again:
            t.iteration()
        else:
            t.progress.step = 1
        with pytest.raises(OSError, match="No space left on device"):
            t.save(disk)
        assert [p.name for p in list_checkpoints(disk)] == ["step-0000001"]
        assert {p.name: p.read_bytes() for p in first.iterdir()} == before
        assert not [p for p in (disk / "checkpoints").iterdir() if p.name.startswith(".")]


# ============================================================================= checkpoints are data

@pytest.fixture
def ckpt(tiny_run, tmp_path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(latest_checkpoint(tiny_run), folder)
    return folder


def rewrite(file: Path, fn) -> None:
    tensors = load_file(file)
    save_file(fn(tensors), file)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int32])
def test_wrong_dtype_is_refused(ckpt, dtype):
    rewrite(ckpt / GENERATOR_FILE, lambda t: {k: v.to(dtype) for k, v in t.items()})
    with pytest.raises(CheckpointError, match=rf"generator\.safetensors: tensor .* {dtype}, expected .* torch.float32"):
        cgan.load(ckpt)


def test_wrong_shape_under_the_right_name_is_refused(ckpt):
    def transpose(t):
        k = next(k for k, v in t.items() if v.ndim == 2 and v.shape[0] != v.shape[1])
        return t | {k: t[k].T.contiguous()}
    rewrite(ckpt / GENERATOR_FILE, transpose)
    with pytest.raises(CheckpointError, match="has shape"):
        cgan.load(ckpt)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(ckpt, mnist_dir, value):
    def poison(t):
        k = next(k for k, v in t.items() if v.is_floating_point())
        v = t[k].clone()
        v.view(-1)[0] = value
        return t | {k: v}
    good = load_file(ckpt / TRAINING_FILE)
    rewrite(ckpt / GENERATOR_FILE, poison)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        cgan.load(ckpt)
    save_file(good, ckpt / TRAINING_FILE)
    rewrite(ckpt / TRAINING_FILE, lambda t: t | {"d." + k[2:]: v for k, v in poison(
        {k: v for k, v in t.items() if k.startswith("d.")}).items()})
    with pytest.raises(CheckpointError, match=r"training_state\.safetensors: tensor d\..* NaN or infinite"):
        trainer_for(ckpt, mnist_dir).load(ckpt)


@pytest.mark.parametrize("change,message", [
    (lambda t: t | {"evil": torch.zeros(3)}, r"unexpected \['evil'\]"),
    (lambda t: dict(list(t.items())[1:]), "missing"),
])
def test_extra_or_missing_tensors_are_refused(ckpt, change, message):
    rewrite(ckpt / GENERATOR_FILE, change)
    with pytest.raises(CheckpointError, match=message):
        cgan.load(ckpt)


class Payload:
    """Unpickling this creates a marker file: proof of code execution if anything ever unpickles it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
@pytest.mark.parametrize("target", [GENERATOR_FILE, TRAINING_FILE, META_FILE])
def test_pickles_are_never_unpickled(ckpt, tmp_path, mnist_dir, how, target):
    marker = tmp_path / "pwned"
    payload = {"weight": Payload(marker)}
    if how == "pickle":
        raw = pickle.dumps(payload)
        pickle.loads(raw)  # the payload is live: loading it as a pickle runs code
    else:
        torch.save(payload, tmp_path / "p.pt")
        raw = (tmp_path / "p.pt").read_bytes()
        torch.load(tmp_path / "p.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    (ckpt / target).write_bytes(raw)
    with pytest.raises(CheckpointError, match=target.replace(".", r"\.")):
        if target == TRAINING_FILE:
            trainer_for(ckpt, mnist_dir).load(ckpt)
        else:
            cgan.load(ckpt)
    assert not marker.exists()


def test_pickled_weights_beside_a_missing_safetensors_file_are_ignored(ckpt, tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps({"weight": Payload(marker)})
    (ckpt / GENERATOR_FILE).unlink()
    for name in ("generator.pt", "generator.pth", "generator.bin", "generator.ckpt", "generator.pkl"):
        (ckpt / name).write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"generator\.safetensors: missing"):
        cgan.load(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0, 7, 8, 100, "half", "last byte"])
@pytest.mark.parametrize("target", [GENERATOR_FILE, TRAINING_FILE])
def test_truncated_tensor_files_are_refused(ckpt, mnist_dir, cut, target):
    f = ckpt / target
    data = f.read_bytes()
    n = {"half": len(data) // 2, "last byte": len(data) - 1}.get(cut, cut)
    f.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=rf"{target.replace('.', r'[.]')}: (truncated|not a readable)"):
        if target == TRAINING_FILE:
            trainer_for(ckpt, mnist_dir).load(ckpt)
        else:
            cgan.load(ckpt)


def safetensors_bytes(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


@pytest.mark.parametrize("content", [
    safetensors_bytes({}, length=2**60),  # header length: an exabyte
    safetensors_bytes({"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40_000_000_000]}},
                      b"\0" * 16),  # a 40 GB tensor in a 100-byte file
    safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "v": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),  # overlapping
    safetensors_bytes({"w": {"dtype": "X99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),  # unknown dtype
    safetensors_bytes(b"\xff\xfe not json", b""),
])
def test_hostile_safetensors_headers_are_refused_without_allocating(ckpt, content):
    (ckpt / GENERATOR_FILE).write_bytes(content)
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"generator\.safetensors"):
        cgan.load(ckpt)
    assert time.perf_counter() - t < 5


def test_huge_json_is_refused_before_parsing(ckpt):
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["padding"] = "x" * (2 << 20)
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="larger than 1048576 bytes"):
        cgan.load(ckpt)


def test_deeply_nested_json_is_refused(ckpt, tmp_path):
    """'[[[[...]]]]' within the size limit: json.loads raises RecursionError, which must not escape."""
    (ckpt / META_FILE).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        cgan.load(ckpt)
    root = tmp_path / "root"  # and the app still starts, listing the folder as skipped
    shutil.copytree(ckpt, root / "deep")
    s = Studio(root)
    assert s.names == [] and "nested too deeply" in s.skipped["deep"]


class Replace:
    """Returned by an edit to replace the whole JSON document."""

    def __init__(self, doc):
        self.doc = doc


def edit_meta(folder: Path, fn) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    out = fn(meta)
    (folder / META_FILE).write_text(json.dumps(out.doc if isinstance(out, Replace) else meta))


# Cases test_checkpoints.py does not already build (it has: format_version 99, arch "os.system", z_dim 1e9,
# image.size 100000, duplicate class names, no config).
HOSTILE_META = [
    (lambda m: m.pop("format"), "'format' is None"),
    (lambda m: m.update(format="pickle"), "'format' is 'pickle'"),
    (lambda m: m.pop("format_version"), "format_version None is not supported"),
    (lambda m: m.update(format_version="1"), "format_version '1' is not supported"),
    (lambda m: m.update(format_version=True), "format_version True is not supported"),
    (lambda m: m.update(format_version=0), "format_version 0 is not supported"),
    (lambda m: m.update(kind="pickle"), "'kind' must be"),
    (lambda m: m.update(config=["sngan"]), "'config' is missing or not an object"),
    (lambda m: m["config"].pop("arch"), "unknown architecture None"),
    (lambda m: m["config"].update(arch=["sngan"]), "unknown architecture"),
    (lambda m: m["config"].update(arch={"sngan": 1}), "unknown architecture"),
    (lambda m: m["config"].update(z_dim="16"), "z_dim must be an integer"),
    (lambda m: m["config"].update(z_dim=True), "z_dim must be an integer"),
    (lambda m: m["config"].update(z_dim=16.0), "z_dim must be an integer"),
    (lambda m: m["config"].update(z_dim=-1), "z_dim must be an integer"),
    (lambda m: m["config"].update(g_width=10**6), "g_width must be an integer"),
    (lambda m: m["config"].update(d_width=None), "d_width must be an integer"),
    (lambda m: m.pop("image"), "'image' is missing"),
    (lambda m: m["image"].update(channels=2), "1 or 3 channels"),
    (lambda m: m["image"].update(size=30), "divisible by 4"),
    (lambda m: m["image"].update(size=4), "image.size"),
    (lambda m: m["image"].update(size="28"), "image.size"),
    (lambda m: m.update(class_names="0123456789"), "'class_names' must be a list"),
    (lambda m: m.update(class_names=[]), "'class_names' must be a list"),
    (lambda m: m.update(class_names=[str(i) for i in range(1001)]), "'class_names' must be a list"),
    (lambda m: m.update(class_names=["x" * 65] + m["class_names"][1:]), "'class_names' must be a list"),
    (lambda m: m.update(class_names=[""] + m["class_names"][1:]), "'class_names' must be a list"),
    (lambda m: m.update(class_names=list(range(10))), "'class_names' must be a list"),
    (lambda m: m.pop("dataset"), "'dataset' must name the dataset"),
    (lambda m: m.update(dataset={"name": 7}), "'dataset' must name the dataset"),
    (lambda m: m.update(step=-1), "step must be an integer"),
    (lambda m: m.update(step="5"), "step must be an integer"),
    (lambda m: m.update(step=10**13), "step must be an integer"),
    (lambda m: Replace([m]), "top level is not a JSON object"),
    (lambda m: Replace("checkpoint"), "top level is not a JSON object"),
    (lambda m: Replace(None), "top level is not a JSON object"),
]


@pytest.mark.parametrize("edit,message", HOSTILE_META)
def test_hostile_meta_fields_are_refused(ckpt, edit, message):
    edit_meta(ckpt, edit)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        cgan.load(ckpt)


@pytest.mark.parametrize("text", ['{"format": NaN}', '{"step": Infinity}', "null", "", "\ufeff{}", "\x00" * 64])
def test_odd_json_documents_are_refused(ckpt, text):
    (ckpt / META_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json"):
        cgan.load(ckpt)


def test_path_like_meta_fields_are_only_labels(ckpt, tiny_export, tmp_path):
    """Fields that look like paths are never used as paths: the loader reads its own folder only."""
    def edit(m):
        m["dataset"]["name"] = "../../../etc/passwd"
        m["dataset"]["title"] = "/etc/shadow"
        m["generator"] = str(tiny_export / GENERATOR_FILE)
        m["exported_from"] = {"step": 1, "checkpoint": "/etc"}
    edit_meta(ckpt, edit)
    s = cgan.load(ckpt)
    assert s.folder == ckpt and s.dataset == "../../../etc/passwd"
    own = load_file(ckpt / GENERATOR_FILE)
    assert all(torch.equal(v, own[k]) for k, v in s.generator.state_dict().items())


@pytest.mark.parametrize("target,link", [(GENERATOR_FILE, "/dev/zero"), (GENERATOR_FILE, "/etc/passwd"),
                                         (META_FILE, "/dev/urandom"), (META_FILE, "/etc/passwd"),
                                         (GENERATOR_FILE, "/proc/self/environ")])
def test_symlinked_files_are_refused_without_leaking_them(ckpt, target, link):
    (ckpt / target).unlink()
    (ckpt / target).symlink_to(link)
    t = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        cgan.load(ckpt)
    assert time.perf_counter() - t < 5  # /dev/zero is endless: never read
    assert "root:" not in str(err.value) and "PATH=" not in str(err.value)  # no file contents in the message


HOSTILE_CONFIG = [
    ("batch_size", "16", "batch_size (--batch-size) must be an integer"),
    ("lr_g", "1e-4", "lr_g (--lr-g) must be a finite number"),
    ("lr_d", float("inf"), "lr_d (--lr-d) must be a finite number"),
    ("amp", "yes", "amp (--amp) must be true or false"),
    ("ema_decay", None, "ema_decay (--ema-decay) must be a finite number"),
    ("loader", "x", "unknown loader 'x'"),
    ("seed", "0", "seed (--seed) must be an integer"),
    ("loss", ["hinge"], "loss (--loss) must be a string"),
    ("workers", -1, "--workers must be >= 0"),
    ("mismatch_labels", "worst", "unknown --mismatch-labels 'worst'; choose one of: uniform, hardest"),
    ("mismatch_labels", "hardest", "give it a weight too (--mismatch-weight 0.5)"),
    ("__class__", "x", "unknown config fields"),
]


@pytest.mark.parametrize("field,value,message", HOSTILE_CONFIG)
def test_resume_refuses_a_hostile_training_config(tiny_run, tmp_path, mnist_dir, capsys, field, value, message):
    """--resume takes the whole training config from checkpoint.json: damaged or hostile values are refused
    with one clear line (no traceback), before anything is trained."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    latest = latest_checkpoint(run)
    edit_meta(latest, lambda m: m["config"].update({field: value}))
    rc = train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "6"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert latest_checkpoint(run) == latest


# ============================================================================= names from the app never escape

@pytest.fixture(scope="module")
def traversal_root(tmp_path_factory, tiny_export):
    """checkpoints/ with one real export, plus links: one inside (allowed), two leading outside (refused)."""
    base = tmp_path_factory.mktemp("traversal")
    root, outside = base / "checkpoints", base / "outside"
    shutil.copytree(tiny_export, root / "mnist")
    shutil.copytree(tiny_export, outside / "secret")
    (root / "alias").symlink_to(root / "mnist")              # a link within checkpoints/: fine
    (root / "escape").symlink_to(outside / "secret")         # a folder link to outside: not listed
    (root / "sneaky").mkdir()                                # a real folder whose weights link outside
    for p in (outside / "secret").iterdir():
        (root / "sneaky" / p.name).symlink_to(p)
    (root / "etc").symlink_to("/etc")                        # not a checkpoint at all
    return root


TRAVERSAL = ["..", "../mnist", "mnist/..", "mnist/../mnist", "./mnist", "/", "/etc/passwd", "..%2Fmnist",
             "%2e%2e%2fmnist", "%2E%2E/outside/secret", "mnist%00", "mnist\x00", "mnist\x00/../../etc",
             "..\\mnist", "mnist\\..\\..", "~/", "~root", "file:///etc/passwd", "//etc/passwd", "mnist/",
             "ｍnist", "mnist\u200b", " mnist", "MNIST", "escape", "sneaky", "etc", "etc/passwd",
             "escape/../mnist", "../outside/secret", "alias/../../outside/secret"]


def test_links_leading_outside_are_not_listed(traversal_root):
    s = Studio(traversal_root)
    assert s.names == ["mnist", "alias"]
    assert "outside" in s.skipped["escape"] and "outside" in s.skipped["sneaky"]


@pytest.mark.parametrize("name", TRAVERSAL + [str(Path("/") / "outside"), None, 0, ["mnist"], {"mnist": 1}])
def test_handlers_refuse_names_outside_the_listing(traversal_root, name):
    s = Studio(traversal_root)
    for call in (lambda: s.generate(name, "1", 0, 1, 1, 1.0, 1), lambda: s.model_card(name),
                 lambda: s.interpolate(name, "1", 0, 1, 2, "linear", 1.0, 1),
                 lambda: s.morph(name, "1", "2", 0, 2, 1.0, 1), lambda: s.real_vs_generated(name, "1", 0, 1, 1.0, 1),
                 lambda: s.nearest(name, "1", 0, 0, 1.0, 1)):
        with pytest.raises(InputError, match="unknown dataset"):
            call()
    with pytest.raises(InputError, match="unknown dataset"):
        s.generate(str(traversal_root.parent / "outside" / "secret"), "1", 0)
    assert s.generate("alias", "1", 0, 1, 1, 1.0, 1)[0].shape == (32, 32)


# ----------------------------------------------------------------------------- the running app

@pytest.fixture(scope="module")
def app(traversal_root):
    from cgan import ui
    from gradio_client import Client
    from studio_helpers import free_port

    studio = Studio(traversal_root)
    demo = ui.build(traversal_root, studio)
    _, url, _ = ui.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    yield demo, url.rstrip("/"), Client(url, verbose=False, download_files=False), studio
    demo.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_api_refuses_names_outside_the_listing(app):
    from gradio_client.exceptions import AppError

    _, _, client, _ = app
    assert sorted(client.predict(api_name="/datasets")) == ["alias", "mnist"]
    for name in TRAVERSAL:
        with pytest.raises(AppError) as err:
            client.predict(name, "1", 0, 1, 1, 1.0, 1, api_name="/generate")
        assert "unknown dataset" in str(err.value) and "internal error" not in str(err.value), name
        with pytest.raises(AppError, match="unknown dataset"):
            client.predict(name, api_name="/model_card")
    assert client.predict("mnist", "1", 0, 1, 1, 1.0, 1, api_name="/generate")[1].startswith("MNIST")


def http(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_server_serves_its_outputs_and_nothing_else(app, traversal_root):
    demo, url, client, studio = app
    strip, gif, _ = client.predict("mnist", "1", "7", 0, 4, 1.0, 1, api_name="/morph")
    for out in (strip, gif):
        status, body = http(out["url"])
        assert status == 200 and body[:4] in (b"\x89PNG", b"GIF8")
    served = Path(gif["path"])
    secrets = [Path("/etc/passwd"), REPO / "app.py", traversal_root / "mnist" / META_FILE,
               traversal_root / "mnist" / GENERATOR_FILE, traversal_root.parent / "outside" / "secret" / META_FILE]
    paths = [str(p) for p in secrets] + [
        "app.py", "../../../../etc/passwd", f"{served.parent}/../../../etc/passwd",
        f"{served.parent}/..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "/etc/passwd%00.png",
        f"{served}%00/../../../etc/passwd", str(traversal_root / "etc" / "passwd"), "/proc/self/environ",
        "file:///etc/passwd", "http://127.0.0.1:1/x", "http://localhost/etc/passwd"]
    paths += [str(p) for p in studio.temp.folder.glob("*/*.gif")]  # the studio's own GIF folder: not served
    assert paths[-1].endswith(".gif")
    for p in paths:
        status, body = http(f"{url}/gradio_api/file={p}")
        assert status in (403, 404), (p, status, body[:100])
        assert b"root:" not in body and b"cgan-studio-checkpoint" not in body
    for route in ("/file=/etc/passwd", "/gradio_api/file=/etc/", "/static/../../etc/passwd", "/assets/../app.py"):
        status, body = http(url + route)
        assert b"root:" not in body and b"import argparse" not in body, route


def test_uploads_are_refused(app):
    _, url, _, _ = app
    boundary = "cgan"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"0" * 4096 + \
        f"\r\n--{boundary}--\r\n".encode()
    status, text = http(f"{url}/gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 413 and b"maximum allowed size of 0 bytes" in text


def test_gradio_settings(app):
    from cgan import ui

    import gradio as gr

    demo, url, _, _ = app
    assert not demo.share and demo.share_url is None and url.startswith("http://127.0.0.1:")
    assert demo.allowed_paths == [] and demo.max_file_size == 0
    assert demo._queue.max_size == ui.QUEUE_MAX_SIZE
    with pytest.raises(ValueError, match="never opens a public share link"):
        ui.launch(gr.Blocks(), share=True)
