"""Run folders: what `train.py` writes besides checkpoints, and the rules that keep a run recoverable.

    RUN/run.json        every command line that worked on the run, the config, the code version
    RUN/losses.csv      one row per --log-every steps; the header is on disk before the first step
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
from pathlib import Path

from .checkpoints import (GENERATOR_FILE, TRAINING_FILE, CheckpointError, list_checkpoints, read_meta,
                          tensor_header)

LOSS_COLUMNS = ["step", "epoch", "images_seen", "seconds", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s"]
LOSS_FILE = "losses.csv"
LOCK_FILE = ".lock"
RUN_FILE = "run.json"


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


# ----------------------------------------------------------------------------- the loss log

def create_loss_log(path: Path) -> None:
    """A new losses.csv holding only its header, on disk (fsynced) before training starts, so that a
    crash at any moment leaves a log that --resume can read."""
    with open(path, "w", newline="") as f:
        csv.writer(f).writerow(LOSS_COLUMNS)
        f.flush()
        os.fsync(f.fileno())


def loss_records(path: Path) -> list[list[str]]:
    """The complete, numeric rows of a loss log, as text. Tolerates what a crash leaves: an empty or
    NUL-padded file (a power loss after the size grew but before the data landed), a half-written last
    line, a missing header. Rows with a missing or non-numeric field are dropped."""
    try:
        text = path.read_bytes().replace(b"\0", b"").decode("utf-8", errors="replace")
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


def read_loss_rows(path: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in zip(LOSS_COLUMNS, r)} for r in loss_records(path)]


def repair_loss_log(path: Path, step: int) -> None:
    """Rewrite the log as its header plus its readable rows up to ``step`` (the checkpoint resumed from;
    later rows are re-done), atomically."""
    kept = [r for r in loss_records(path) if int(r[0]) <= step]
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LOSS_COLUMNS)
        writer.writerows(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def original_command(run_dir: Path) -> str | None:
    """The first command line recorded in run.json, for messages that say how to start a run again."""
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())
        argv = info["invocations"][0]["argv"]
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            return "python " + " ".join(argv)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    return None


def reusable_without_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a run folder that never reached a checkpoint (so --out may reuse it)."""
    return (run_dir / RUN_FILE).is_file() and not list_checkpoints(run_dir)


def reset_run_without_checkpoint(run_dir: Path) -> None:
    """Clear what a run that never reached a checkpoint wrote (losses, samples, temporary checkpoint
    folders), keeping run.json (its history) and any damaged-* checkpoint folders."""
    for name in (LOSS_FILE, "losses.png"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "samples", ignore_errors=True)
    folder = run_dir / "checkpoints"
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)
