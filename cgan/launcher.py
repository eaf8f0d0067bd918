"""Start and stop a training run from the studio's Train form (opt-in, local only).

One run at a time, as a child process: ``python train.py ...`` with an argument list built from validated
fields (never a shell, never a string the user typed as a command). Stop sends SIGTERM, on which train.py
writes a checkpoint and exits, so a stopped run resumes exactly. Off unless the app was started with
--allow-training, and refused on a hosted Space (SPACE_ID set) unless forced.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .data import DATASETS, EMNIST_SPLITS, SPLITS
from .image_folder import FOLDER_DATASET
from .networks import ARCHITECTURES
from .studio import MAX_SEED, InputError, check_choice, check_int, show

REPO = Path(__file__).resolve().parent.parent
DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_STEPS = 10_000_000
MAX_BATCH = 4096
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOG_FOLDER = ".train-logs"   # inside the runs folder: train.py needs an empty --out


def training_allowed(allow: bool, force_on_space: bool = False) -> tuple[bool, str]:
    """Whether the Train form may be shown, and why not."""
    if not allow:
        return False, "start the app with --allow-training to train from the page"
    if os.environ.get("SPACE_ID") and not force_on_space:
        return False, ("training from the page is off on a hosted Space (SPACE_ID is set); pass "
                       "--force-training-on-space to allow it anyway")
    return True, ""


class Launcher:
    """At most one child training process; its log goes to RUNS/.train-logs/NAME.log."""

    def __init__(self, runs_root: str | Path, train_script: Path = REPO / "train.py"):
        self.root = Path(runs_root)
        self.script = train_script
        self.proc: subprocess.Popen | None = None
        self.run_name: str | None = None
        self._lock = threading.Lock()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, dataset, data_dir, split, emnist_split, arch, steps, batch_size, device, seed,
                name=None) -> tuple[list[str], str]:
        """The argument list for train.py from the form's fields, every one validated. Returns (argv, run name)."""
        dataset = check_choice(dataset, "dataset", [*DATASETS, FOLDER_DATASET])
        split = check_choice(split, "split", SPLITS)
        arch = check_choice(arch, "architecture", ARCHITECTURES)
        device = check_choice(device, "device", DEVICES)
        steps = check_int(steps, "steps", 1, MAX_STEPS)
        batch_size = check_int(batch_size, "batch size", 1, MAX_BATCH)
        seed = check_int(seed, "seed", 0, MAX_SEED)
        argv = [sys.executable, str(self.script), "--split", split, "--arch", arch,
                "--steps", str(steps), "--batch-size", str(batch_size), "--device", device, "--seed", str(seed),
                "--no-progress"]
        if dataset == "emnist":
            argv += ["--emnist-split", check_choice(emnist_split or "balanced", "EMNIST split", EMNIST_SPLITS)]
        if dataset == FOLDER_DATASET and data_dir in (None, ""):
            raise InputError("your own images: type the folder that holds them (one subfolder per class) as the "
                             "data folder")
        if data_dir not in (None, ""):
            if not isinstance(data_dir, str) or len(data_dir) > 4096 or "\0" in data_dir:
                raise InputError(f"data folder must be a folder path, got {show(data_dir)}")
            folder = Path(data_dir).expanduser()
            if not folder.is_dir():
                raise InputError(f"data folder {show(data_dir)} does not exist; " + (
                    "type the folder that holds your images (one subfolder per class)" if dataset == FOLDER_DATASET
                    else "leave it empty to download the dataset, or type the folder that holds its official files"))
            argv += ["--image-folder" if dataset == FOLDER_DATASET else "--data-dir", str(folder.resolve())]
        if dataset != FOLDER_DATASET:
            argv += ["--dataset", dataset]
        if name in (None, ""):
            name = f"{dataset}-{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not isinstance(name, str) or not RUN_NAME.match(name):
            raise InputError(f"run name {show(name)}: use letters, digits, '.', '_' and '-' (at most 64)")
        if (self.root / name).exists():
            raise InputError(f"a run named {name!r} exists already; choose another name")
        return argv + ["--out", str(self.root / name)], name

    def start(self, *fields, **kw) -> str:
        """Start a run; returns its name. Refused while another run started here is going."""
        with self._lock:
            if self.running():
                raise InputError(f"run {self.run_name} is still training; stop it first (one run at a time)")
            argv, name = self.command(*fields, **kw)
            logs = self.root / LOG_FOLDER
            logs.mkdir(parents=True, exist_ok=True)
            log = open(logs / f"{name}.log", "w")
            env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            self.run_name = name
            return name

    def stop(self, timeout: float = 120) -> str:
        """SIGTERM the run (it writes a checkpoint and exits); returns what happened."""
        with self._lock:
            if not self.running():
                return "no run started here is training"
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return f"run {self.run_name} is still writing its checkpoint; it stops by itself"
            return f"run {self.run_name} stopped (exit code {rc}); resume it with python train.py --resume " \
                   f"{self.root / self.run_name}"

    def log_tail(self, lines: int = 12) -> str:
        if not self.run_name:
            return ""
        try:
            text = (self.root / LOG_FOLDER / f"{self.run_name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop a run still going when the app exits (it checkpoints first)."""
        if self.running():
            self.stop(timeout=60)
