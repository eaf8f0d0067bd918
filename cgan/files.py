"""Atomic file writes: the one way this project writes a file that must never be seen half-written.

    atomic_write(path, lambda f: f.write(data))     # f is a binary file opened on a temporary name

The content goes to a temporary sibling (".tmp-NAME-PID"), is flushed and fsynced, renamed over ``path``,
and the folder is fsynced, so a crash or a power loss at any moment leaves the old file or the new one,
never a mixture (at most a stray temporary file, which readers ignore). Checkpoint folders use the same
steps for a whole folder (checkpoints.write_folder).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder by name (a folder's fsync makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically with ``write(f)`` on a binary file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fsync_path(path.parent)
    except OSError:
        pass  # the rename is done; a folder that cannot be fsynced only weakens the power-loss guarantee
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
