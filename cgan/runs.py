"""Run folders: what `train.py` writes besides checkpoints, and the rules that keep a run recoverable.

    RUN/run.json        every command line that worked on the run, the config, the code version
    RUN/losses.csv      one row per --log-every steps; the header is on disk before the first step
    RUN/status.json     what the run is doing: running, finished, stopped, diverged or failed (run_state)
    RUN/real_samples.safetensors   64 real images per class, as an export bundles them (written once)
    RUN/.lock           held (fcntl.flock) by the one process training in this folder
    RUN/checkpoints/    see checkpoints.py

A run must never be stranded: a loss log left empty or NUL-padded by a crash or a power loss is repaired
on --resume, a damaged newest checkpoint is moved aside so the run resumes from the newest intact one, and
a run that stopped before its first checkpoint can be started again with the same --out.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from .checkpoints import (GENERATOR_FILE, REAL_SAMPLES_FILE, TRAINING_FILE, CheckpointError, list_checkpoints,
                          pid_alive, read_meta, real_sample, tensor_header, write_tensor_file)
from .files import atomic_write_text

LOSS_COLUMNS = ["step", "epoch", "images_seen", "seconds", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s"]
LOSS_FILE = "losses.csv"
LOCK_FILE = ".lock"
RUN_FILE = "run.json"
STATUS_FILE = "status.json"
STATES = ("running", "finished", "stopped", "diverged", "failed")
MAX_STATUS_BYTES = 64 * 1024
REAL_PER_CLASS = 64  # as many real images per class as an export bundles by default


class RunInUse(OSError):
    """Another live process holds the run folder."""


# ----------------------------------------------------------------------------- one writer per run folder

def lock_run(run_dir: Path):
    """Take the run folder for this process: an exclusive ``flock`` on RUN/.lock, held until the returned
    file is closed or the process ends (the kernel releases it even after kill -9, so a crash never leaves
    a stale lock). A second process on the same folder is refused, naming the holder's PID."""
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunInUse(f"run folder {run_dir} is already in use by PID {holder} (another train.py on the same "
                       f"folder); wait for it to finish or stop it, then try again") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


# ----------------------------------------------------------------------------- what the run is doing

def write_status(run_dir: Path, state: str, step: int, message: str = "") -> None:
    """RUN/status.json, atomically (temporary file, fsync, rename): the run's state, its step, a one-line
    message, the time and the writer's PID. Written by the training process only (it holds the lock)."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; one of: {', '.join(STATES)}")
    record = {"state": state, "step": int(step), "message": str(message),
              "time": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"), "pid": os.getpid()}
    atomic_write_text(Path(run_dir) / STATUS_FILE, json.dumps(record, indent=2) + "\n")


def read_status(run_dir: Path) -> dict | None:
    """RUN/status.json as written by ``write_status``, or None when it is missing, unreadable or damaged
    (never raises)."""
    try:
        path = Path(run_dir) / STATUS_FILE
        with open(path, "rb") as f:
            raw = f.read(MAX_STATUS_BYTES + 1)
        if len(raw) > MAX_STATUS_BYTES:
            return None
        status = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(status, dict) or status.get("state") not in STATES:
        return None
    step, pid = status.get("step"), status.get("pid")
    if type(step) is not int or step < 0 or not (pid is None or type(pid) is int):
        return None
    if not isinstance(status.get("message", ""), str) or not isinstance(status.get("time", ""), str):
        return None
    return status


def lock_holder(run_dir: Path) -> int | None:
    """The PID written in RUN/.lock by the last process that took the run (read only: no lock is taken)."""
    try:
        with open(Path(run_dir) / LOCK_FILE, "rb") as f:
            text = f.read(64).decode("ascii").strip()
        pid = int(text)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def run_state(run_dir: Path) -> str:
    """What a run is doing, for readers such as the studio, without disturbing it (no lock is taken):
    "running" while status.json says so and the training process is alive; "stopped" when it says running
    but that process is gone (killed); otherwise the recorded state ("finished", "stopped", "diverged",
    "failed"); "unknown" when there is no readable status.json."""
    status = read_status(run_dir)
    if status is None:
        return "unknown"
    if status["state"] != "running":
        return status["state"]
    pid = lock_holder(run_dir) or status.get("pid")
    return "running" if isinstance(pid, int) and pid > 0 and pid_alive(pid) else "stopped"


# ----------------------------------------------------------------------------- real images of the run

def write_real_samples(run_dir: Path, dataset, seed: int, per_class: int = REAL_PER_CLASS) -> Path:
    """RUN/real_samples.safetensors: the real images an export of this run bundles (``per_class`` per
    class, chosen with ``seed``), so a run checkpoint can show real images without its dataset. Atomic;
    the tensors only, no dataset path."""
    images, labels = real_sample(dataset.images, dataset.labels, dataset.num_classes, per_class, seed=seed)
    return write_tensor_file(Path(run_dir) / REAL_SAMPLES_FILE, {"images": images, "labels": labels})


# ----------------------------------------------------------------------------- the loss log

def create_loss_log(path: Path) -> None:
    """A new losses.csv holding only its header, on disk (fsynced) before training starts, so that a
    crash at any moment leaves a log that --resume can read."""
    atomic_write_text(path, ",".join(LOSS_COLUMNS) + "\r\n")  # csv's own line ending, as the writer appends


def loss_records(path: Path, tail: int | None = None) -> list[list[str]]:
    """The complete, numeric rows of a loss log, as text (of its last ``tail`` bytes only, when given: a
    reader that wants the newest row need not read a long log whole). Tolerates what a crash leaves: an
    empty or NUL-padded file (a power loss after the size grew but before the data landed), a half-written
    last line, a missing header. Rows with a missing or non-numeric field are dropped."""
    try:
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - tail) if tail is not None else 0
            f.seek(start)
            if start:
                f.readline()  # the line the tail starts in may be cut: begin at the next one
            text = f.read().replace(b"\0", b"").decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for record in csv.reader(io.StringIO(text)):
        if len(record) != len(LOSS_COLUMNS) or not record[0].isdigit():
            continue
        try:
            [float(v) for v in record]
        except ValueError:
            continue
        records.append(record)
    return records


def read_loss_rows(path: Path, tail: int | None = None) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in zip(LOSS_COLUMNS, r)} for r in loss_records(path, tail)]


def repair_loss_log(path: Path, step: int) -> None:
    """Rewrite the log as its header plus its readable rows up to ``step`` (the checkpoint resumed from;
    later rows are re-done), atomically."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(LOSS_COLUMNS)
    writer.writerows(r for r in loss_records(path) if int(r[0]) <= step)
    atomic_write_text(path, out.getvalue())


# ----------------------------------------------------------------------------- recoverable runs

def verify_checkpoint(folder: Path) -> None:
    """Cheap checks that a training checkpoint can be resumed: checkpoint.json valid, both tensor files
    present with headers that describe exactly their bytes (a truncated or cut file fails here)."""
    read_meta(folder)
    tensor_header(folder / GENERATOR_FILE)
    tensor_header(folder / TRAINING_FILE)


def newest_intact_checkpoint(run_dir: Path, move_damaged: bool = True, warn=print) -> Path | None:
    """The newest checkpoint of the run that passes ``verify_checkpoint``. Damaged newer ones are moved to
    RUN/checkpoints/damaged-step-... (kept, never deleted; no longer "latest") with a warning naming them."""
    for folder in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(folder)
            return folder
        except CheckpointError as e:
            if move_damaged:
                aside = folder.with_name(f"damaged-{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}")
                os.rename(folder, aside)
                warn(f"warning: {folder} is damaged ({e}); moved it to {aside} and looking for an older checkpoint")
            else:
                warn(f"warning: {folder} is damaged ({e}); looking for an older checkpoint")
    return None


def recorded_invocations(run_dir: Path) -> list:
    """run.json's command records, oldest first, unchecked (the callers check what they read); [] when the
    file is missing or unreadable (messages that use it then say less, they never fail)."""
    try:
        invocations = json.loads((run_dir / RUN_FILE).read_text())["invocations"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return invocations if isinstance(invocations, list) else []


def original_command(run_dir: Path) -> str | None:
    """The first command line recorded in run.json, for messages that say how to start a run again."""
    invocations = recorded_invocations(run_dir)
    argv = invocations[0].get("argv") if invocations and isinstance(invocations[0], dict) else None
    if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
        return "python " + " ".join(argv)
    return None


def recorded_data_dir(run_dir: Path) -> str | None:
    """The data folder the run's latest command gave (run.json), if it is still a folder: what --resume reads
    when no --data-dir is given. None for a run without one (downloaded data, your own images) or from before
    run.json recorded it."""
    for invocation in reversed(recorded_invocations(run_dir)):
        folder = invocation.get("data_dir") if isinstance(invocation, dict) else None
        if isinstance(folder, str) and "\0" not in folder and len(folder) <= 4096:
            return folder if os.path.isdir(folder) else None
    return None


def reusable_without_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a run folder that never reached a checkpoint (so --out may reuse it)."""
    return (run_dir / RUN_FILE).is_file() and not list_checkpoints(run_dir)


def reset_run_without_checkpoint(run_dir: Path) -> None:
    """Clear what a run that never reached a checkpoint wrote (losses, samples, real samples, status,
    temporary files and checkpoint folders), keeping run.json (its history) and any damaged-* checkpoint
    folders. The new run may have other options, so its real samples are chosen again."""
    for name in (LOSS_FILE, "losses.png", REAL_SAMPLES_FILE, STATUS_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for p in run_dir.glob(".tmp-*"):
        if p.is_file():
            p.unlink(missing_ok=True)
    shutil.rmtree(run_dir / "samples", ignore_errors=True)
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)
