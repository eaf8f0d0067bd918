"""A run's life cycle: a clean stop on SIGTERM / SIGINT (checkpoint at the step reached, exit 0, and a resume
that is bitwise the run that never stopped), RUN/status.json and the reader's view of it (running, finished,
stopped, diverged, failed, killed), and the real images a run keeps once in RUN/real_samples.safetensors.

Real `python train.py` processes on the synthetic IDX data of conftest.py, real signals and a real kill -9.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import cgan.export
from cgan.checkpoints import (GENERATOR_FILE, REAL_SAMPLES_FILE, TRAINING_FILE, CheckpointError, latest_checkpoint,
                              list_checkpoints, read_meta, real_sample)
from cgan.training_cli import main as train_main
from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.runs import STATUS_FILE, lock_holder, read_status, run_state, write_status
from cgan.sampler import load as load_sampler
from cgan.sampler import read_real_samples, real_samples_for
from cgan.training import RunControl, fit
from conftest import REPO, TINY

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
TIMING = {"seconds", "images_per_s"}  # the only columns of losses.csv that may differ between equal runs


def start(log: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended with {proc.returncode} before the moment came")
        time.sleep(poll)
    raise AssertionError("timed out")


def loss_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as f:
        return list(csv.DictReader(f))


def logged_more_than(run: Path, n: int):
    return lambda: (run / "losses.csv").is_file() and len((run / "losses.csv").read_text().splitlines()) > n + 1


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


def run_args(mnist_dir: Path, run: Path, steps: int, *extra) -> list[str]:
    return ["--dataset", "mnist", "--data-dir", str(mnist_dir), *TINY, "--steps", str(steps),
            "--checkpoint-every", "1000", "--log-every", "1", *map(str, extra), "--out", str(run)]


# ============================================================================= 1. a clean stop

def test_sigterm_stops_with_a_checkpoint_and_the_resume_is_bitwise_the_uninterrupted_run(tmp_path, mnist_dir):
    run, log = tmp_path / "run", tmp_path / "a.log"
    proc = start(log, *run_args(mnist_dir, run, 400))
    wait_for(logged_more_than(run, 5), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    err = log.read_text()
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(r"stopped at step (\d+) on SIGTERM; continue with: (python train\.py --resume .*)", last)
    assert m, last
    assert "Traceback" not in err
    s = int(m.group(1))
    assert 5 < s < 400
    assert [p.name for p in list_checkpoints(run)] == [f"step-{s:07d}"]  # --checkpoint-every 1000: only the stop's
    assert read_meta(run / "checkpoints" / f"step-{s:07d}")["step"] == s
    assert [int(r["step"]) for r in loss_rows(run)] == list(range(1, s + 1))  # every row up to the stop
    status = read_status(run)
    assert status["state"] == "stopped" and status["step"] == s and status["pid"] == proc.pid
    assert run_state(run) == "stopped"

    # Continue with the printed command (plus a new length) ...
    again = [sys.executable if a == "python" else a for a in shlex.split(m.group(2))]
    assert again[1:4] == ["train.py", "--resume", str(run)] and str(mnist_dir) in again
    r = subprocess.run([*again, "--steps", str(s + 6)], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # ... and compare with a run of the same options that never stopped.
    base = tmp_path / "base"
    r = subprocess.run([sys.executable, "train.py", *run_args(mnist_dir, base, s + 6)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    final = f"step-{s + 6:07d}"
    assert latest_checkpoint(run).name == latest_checkpoint(base).name == final
    assert same_tensors(run / "checkpoints" / final / GENERATOR_FILE, base / "checkpoints" / final / GENERATOR_FILE)
    assert same_tensors(run / "checkpoints" / final / TRAINING_FILE, base / "checkpoints" / final / TRAINING_FILE)
    resumed, straight = loss_rows(run), loss_rows(base)
    assert [int(r["step"]) for r in resumed] == list(range(1, s + 7))
    assert without_timing([r for r in resumed if int(r["step"]) > s]) == \
        without_timing([r for r in straight if int(r["step"]) > s])
    assert without_timing(resumed) == without_timing(straight)  # the rows before the stop too
    assert read_status(run)["state"] == "finished" and read_status(run)["step"] == s + 6


def test_sigint_in_process_stops_cleanly_restores_the_handlers_and_a_second_one_interrupts(tmp_path, mnist_dir,
                                                                                          request):
    """cli.main in this process: the first Ctrl-C (SIGINT) stops at the next step with exit code 0 and the
    handlers in place before are back afterwards; a second SIGINT while stopping raises KeyboardInterrupt."""
    # Python's own Ctrl-C handler, whatever an earlier test in this process left installed
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, original))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    run = tmp_path / "run"
    done = threading.Event()

    def interrupt(times: int) -> None:
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            if logged_more_than(run, 3)():
                for i in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
                    # the next one only once the first was handled (it restores the previous handler)
                    while i + 1 < times and signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]:
                        time.sleep(0.001)
                return
            time.sleep(0.01)

    sender = threading.Thread(target=interrupt, args=(1,), daemon=True)
    sender.start()
    try:
        rc = train_main(run_args(mnist_dir, run, 400))
    finally:
        done.set()
        sender.join(10)
    assert rc == 0
    assert {s: signal.getsignal(s) for s in before} == before
    s = read_status(run)["step"]
    assert read_status(run)["state"] == "stopped" and "SIGINT" in read_status(run)["message"] and 3 < s < 400
    assert [p.name for p in list_checkpoints(run)] == [f"step-{s:07d}"]

    # Twice: the second SIGINT interrupts, wherever it lands (in the stop, or just after it).
    run = tmp_path / "twice"
    done.clear()
    sender = threading.Thread(target=interrupt, args=(2,), daemon=True)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            train_main(run_args(mnist_dir, run, 400))
            time.sleep(30)
    finally:
        done.set()
        sender.join(10)
    assert {s: signal.getsignal(s) for s in before} == before
    assert read_status(run)["state"] == "stopped" and run_state(run) == "stopped"


class StopAt(RunControl):
    """A stop asked for once ``step`` iterations are done, as a signal handler would ask for it."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    @property
    def stop_reason(self):
        return "test" if self.step >= self.at else None

    @stop_reason.setter
    def stop_reason(self, value):
        pass


def test_a_stop_writes_the_pending_loss_row_and_no_second_checkpoint(tmp_path, mnist_dir):
    dataset = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, steps=100, log_every=7, checkpoint_every=5)
    run = tmp_path / "run"
    control = StopAt(10)
    trainer = fit(cfg, dataset, run, torch.device("cpu"), progress_bar=False, control=control)
    assert control.stopped and trainer.progress.step == control.step == 10
    assert [int(r["step"]) for r in loss_rows(run)] == [7, 10]  # row 10: the mean of steps 8 to 10
    assert [p.name for p in list_checkpoints(run)] == ["step-0000005", "step-0000010"]
    written = (run / "checkpoints" / "step-0000010" / GENERATOR_FILE).stat().st_mtime_ns

    # Asked to stop before its first iteration: a resumed run stops at once and keeps its checkpoint as is.
    control = StopAt(0)
    trainer = fit(cfg, dataset, run, torch.device("cpu"), resume_from=latest_checkpoint(run), progress_bar=False,
                  control=control)
    assert control.stopped and trainer.progress.step == 10
    assert [p.name for p in list_checkpoints(run)] == ["step-0000005", "step-0000010"]
    assert (run / "checkpoints" / "step-0000010" / GENERATOR_FILE).stat().st_mtime_ns == written
    assert [int(r["step"]) for r in loss_rows(run)] == [7, 10]


class StopBetweenChecks(RunControl):
    """A stop that arrives just after the loop checked for one at step ``at`` (a signal landing while that
    step's checkpoint or samples are written): only the check at the top of the next iteration sees it."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.reads = at, 0

    @property
    def stop_reason(self):
        if self.step < self.at:
            return None
        self.reads += 1
        return "test" if self.reads > 1 else None

    @stop_reason.setter
    def stop_reason(self, value):
        pass


def test_a_stop_between_two_checks_still_writes_the_pending_loss_row(tmp_path, mnist_dir):
    """CI once saw a sweep's stopped run end with a checkpoint at step 1,332 and its last loss row at 1,300:
    the steps after the last row were saved but never logged, so the run's summary named the wrong step."""
    dataset = load_dataset("mnist", "train", mnist_dir)
    cfg = TrainConfig(g_width=8, d_width=8, z_dim=16, batch_size=16, steps=100, log_every=7, checkpoint_every=5)
    run = tmp_path / "run"
    control = StopBetweenChecks(12)
    trainer = fit(cfg, dataset, run, torch.device("cpu"), progress_bar=False, control=control)
    assert control.stopped and trainer.progress.step == 12
    rows = loss_rows(run)
    assert [int(r["step"]) for r in rows] == [7, 12]  # row 12: the mean of steps 8 to 12
    assert all(float(r["d_loss"]) == float(r["d_loss"]) for r in rows)
    assert [p.name for p in list_checkpoints(run)] == ["step-0000005", "step-0000010", "step-0000012"]


# ============================================================================= 2. status.json

def test_status_of_a_finished_run(tiny_run):
    status = read_status(tiny_run)
    assert set(status) == {"state", "step", "message", "time", "pid"}
    assert status["state"] == "finished" and status["step"] == 4 and status["message"] == ""
    assert status["pid"] == os.getpid()  # the fixture trained in this process
    assert datetime.fromisoformat(status["time"]).tzinfo is not None
    assert run_state(tiny_run) == "finished"
    assert not list(tiny_run.glob(".tmp-*"))


def test_status_while_running_then_after_kill_9(tmp_path, mnist_dir):
    run = tmp_path / "run"
    proc = start(tmp_path / "a.log", *run_args(mnist_dir, run, 400))
    try:
        wait_for(logged_more_than(run, 3), proc)
        status = read_status(run)
        assert status["state"] == "running" and status["step"] == 0 and status["pid"] == proc.pid
        assert lock_holder(run) == proc.pid
        assert run_state(run) == "running"
        rows = len(loss_rows(run))
        wait_for(lambda: len(loss_rows(run)) > rows + 2, proc)  # the reader took nothing from the trainer
        assert run_state(run) == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert read_status(run)["state"] == "running"  # what the killed process left behind ...
    assert run_state(run) == "stopped"             # ... and what a reader makes of it


def test_status_after_divergence(tmp_path, mnist_dir, capsys):
    """As in test_reliability: an absurd discriminator learning rate makes the losses overflow."""
    run = tmp_path / "run"
    rc = train_main(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--arch", "mlp", "--g-width", "8",
                     "--d-width", "8", "--z-dim", "16", "--batch-size", "16", "--no-progress", "--steps", "200",
                     "--checkpoint-every", "1000", "--log-every", "1", "--lr-d", "1e4", "--out", str(run)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("error: ")
    diverged_at = int(re.search(r"at step (\d+)", last).group(1))
    status = read_status(run)
    assert status["state"] == "diverged" and status["step"] == diverged_at
    assert status["message"] == last[len("error: "):]
    assert re.search(r"non-finite|NaN or infinite", status["message"])  # the losses, or the weights at a checkpoint
    assert run_state(run) == "diverged"


def test_status_of_a_failed_run_names_the_error(tiny_run, tmp_path, mnist_dir, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "samples")
    (run / "samples").write_text("not a folder")  # training cannot write its sample grids
    assert train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "6"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    status = read_status(run)
    assert status["state"] == "failed" and status["step"] == 4
    assert last == f"error: {status['message']}" and "samples" in status["message"]
    assert run_state(run) == "failed"


def test_refused_before_training_leaves_the_status_alone(tiny_run, tmp_path, mnist_dir, capsys):
    """An error before training starts (here: --out already holds a run) never writes status.json."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / STATUS_FILE).read_bytes()
    assert train_main(run_args(mnist_dir, run, 2)) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (run / STATUS_FILE).read_bytes() == before


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "half", "not an object", "bad state",
                                    "bad step", "huge", "folder", "nested"])
def test_a_damaged_status_reads_as_unknown(tmp_path, damage):
    run = tmp_path / "run"
    run.mkdir()
    write_status(run, "running", 3, "x")
    good = (run / STATUS_FILE).read_text()
    path = run / STATUS_FILE
    if damage == "missing":
        path.unlink()
    elif damage == "folder":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes({"empty": b"", "garbage": b"\xff\xfe\0\0", "half": good[:len(good) // 2].encode(),
                          "not an object": b"[1, 2]", "bad state": good.replace("running", "flying").encode(),
                          "bad step": good.replace('"step": 3', '"step": "3"').encode(),
                          "huge": b'{"state": "running", "step": 3, "pad": "' + b"x" * 200_000 + b'"}',
                          "nested": b"[" * 100_000 + b"]" * 100_000}[damage])
    assert read_status(run) is None
    assert run_state(run) == "unknown"


def test_write_status_is_atomic_and_checks_the_state(tmp_path):
    write_status(tmp_path, "finished", 7, "fine")
    assert json.loads((tmp_path / STATUS_FILE).read_text())["step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temporary file left
    with pytest.raises(ValueError, match="unknown run state"):
        write_status(tmp_path, "paused", 7)
    assert read_status(tmp_path)["state"] == "finished"
    # a "running" status whose process is gone (no lock file, a PID that cannot exist) reads as stopped
    (tmp_path / STATUS_FILE).write_text(json.dumps({"state": "running", "step": 1, "message": "",
                                                    "time": "2026-01-01T00:00:00+00:00", "pid": 2**22 + 1}))
    assert run_state(tmp_path) == "stopped"


# ============================================================================= 3. real images in the run folder

def test_a_new_run_keeps_the_real_sample_an_export_bundles(tiny_run, mnist_dir):
    file = tiny_run / REAL_SAMPLES_FILE
    assert file.is_file() and not list(tiny_run.glob(".tmp-*"))
    checkpoint = latest_checkpoint(tiny_run)
    meta = read_meta(checkpoint)
    images, labels = read_real_samples(tiny_run, meta)  # the same checks as an exported folder's file
    ds = load_dataset("mnist", "train", mnist_dir)
    want_images, want_labels = real_sample(ds.images, ds.labels, ds.num_classes, 64, seed=meta["config"]["seed"])
    assert (images == want_images.numpy()).all() and (labels == want_labels.numpy()).all()
    assert images.dtype.name == "uint8" and labels.dtype.name == "int64" and images.shape == (96, 28, 28)
    assert cgan.export.real_sample is real_sample  # what an export writes, by the same function
    with safe_open(str(file), "pt") as f:
        assert not f.metadata()
    assert str(mnist_dir).encode() not in file.read_bytes() and b"mnist" not in file.read_bytes()

    got = real_samples_for(checkpoint)
    assert got is not None
    assert got[0].shape == (96, 28, 28) and got[1].shape == (96,) and (got[0] == images).all()
    assert load_sampler(tiny_run).real_samples()[0].shape == (96, 28, 28)


def test_real_samples_for_prefers_the_folder_and_validates_the_runs_file(tiny_run, tiny_export, tmp_path):
    exported = real_samples_for(tiny_export)  # an export's own file (4 per class)
    assert exported[0].shape == (40, 28, 28)
    loose = tmp_path / "loose"
    shutil.copytree(latest_checkpoint(tiny_run), loose)
    assert real_samples_for(loose) is None  # neither its own file nor a run around it
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    save_file({"images": torch.zeros(3, 27, 28, dtype=torch.uint8), "labels": torch.zeros(3, dtype=torch.int64)},
              str(run / REAL_SAMPLES_FILE))
    with pytest.raises(CheckpointError, match=re.escape(str(run / REAL_SAMPLES_FILE))):
        real_samples_for(latest_checkpoint(run))


def test_resume_without_data_dir_reads_the_folder_the_run_was_trained_on(tmp_path, mnist_dir, monkeypatch):
    """`--resume RUN` alone works (as the studio's stop message and status say it does): run.json records the
    --data-dir as an absolute path, so a relative one given in another folder still resolves; a later
    --data-dir (a moved copy) takes over."""
    monkeypatch.chdir(mnist_dir.parent)
    run = tmp_path / "run"
    assert train_main(["--dataset", "mnist", "--data-dir", mnist_dir.name, *TINY, "--steps", "2",
                       "--checkpoint-every", "1000", "--out", str(run), "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path)  # "mnist" no longer names the data from here
    assert train_main(["--resume", str(run), "--steps", "3", "--no-progress"]) == 0
    assert read_status(run)["step"] == 3
    copy = shutil.copytree(mnist_dir, tmp_path / "moved")
    assert train_main(["--resume", str(run), "--data-dir", "moved", "--steps", "4", "--no-progress"]) == 0
    invocations = json.loads((run / "run.json").read_text())["invocations"]
    assert [i["data_dir"] for i in invocations] == [str(mnist_dir.resolve())] * 2 + [str(copy.resolve())]
    assert read_status(run)["step"] == 4


def test_resume_keeps_the_real_samples_and_an_older_run_gains_them(tiny_run, tmp_path, mnist_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    file = run / REAL_SAMPLES_FILE
    stamp, data = file.stat().st_mtime_ns, file.read_bytes()
    assert train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "5"]) == 0
    assert file.stat().st_mtime_ns == stamp and file.read_bytes() == data
    assert run_state(run) == "finished" and read_status(run)["step"] == 5
    file.unlink()  # a run from before real_samples.safetensors
    assert train_main(["--resume", str(run), "--data-dir", str(mnist_dir), "--steps", "6"]) == 0
    assert file.read_bytes() == data
