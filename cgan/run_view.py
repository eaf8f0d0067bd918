"""The studio's view of training runs: what a folder of run folders holds, read without disturbing them.

Reading never takes the run's lock and never writes. A checkpoint is only offered once its folder is
complete (the atomic rename makes a half-written one invisible: a ``step-*`` folder with its
``checkpoint.json``), a loss log is read as far as it is readable, and a run whose files are damaged is
listed as damaged with the reason, never an error for the whole view.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoints import list_checkpoints
from .image_folder import FOLDER_DATASET
from .model_card import md
from .runs import LOSS_FILE, RUN_FILE, read_loss_rows, run_state

SAMPLE_NAME = re.compile(r"^(step|epoch)-(\d+)\.png$")
MAX_RUN_JSON = 1 << 20
MAX_RUNS = 200                # newest first; a folder with more lists these
MAX_GRID_BYTES = 64 << 20     # a sample grid PNG larger than this is not shown
LOG_TAIL_BYTES = 4096         # the end of a loss log holds its newest rows


@dataclass
class RunSummary:
    name: str
    folder: Path
    dataset: str = "?"
    arch: str = "?"
    step: int = 0               # last logged or checkpointed step
    total: int = 0              # --steps of the run
    state: str = "unknown"      # running, finished, stopped, diverged, failed, unknown, damaged
    images_per_s: float | None = None
    last_checkpoint: float | None = None   # time of the newest complete checkpoint (epoch seconds)
    problem: str = ""           # why a run is listed as damaged
    seconds_per_step: float | None = None   # training time per step so far (for the time left)


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def ago(t: float | None, now: float | None = None) -> str:
    return "no checkpoint yet" if t is None else duration((now or time.time()) - t) + " ago"


class RunView:
    """Read-only access to the runs under one folder; every method copes with damaged runs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def is_run(p: Path) -> bool:
        """A run folder: not hidden, holding run.json or checkpoints/."""
        try:
            return p.is_dir() and not p.name.startswith(".") and ((p / RUN_FILE).is_file() or
                                                                  (p / "checkpoints").is_dir())
        except OSError:
            return False

    def run_names(self) -> list[str]:
        """Run folders, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            try:
                if self.is_run(p):
                    found.append((p.stat().st_mtime, p.name))
            except OSError:
                continue
        return [n for _, n in sorted(found, reverse=True)[:MAX_RUNS]]

    def folder(self, name) -> Path:
        """The folder of run ``name``: a plain name of a run folder directly under the root, never a path."""
        if not (isinstance(name, str) and name and Path(name).name == name and name not in (".", "..")
                and self.is_run(self.root / name)):
            raise KeyError(f"no run named {name!r} in {self.root}")
        return self.root / name

    def summary(self, name: str) -> RunSummary:
        """What the table shows of a run; reads only the end of its loss log."""
        folder = self.root / name
        r = RunSummary(name, folder)
        try:
            info_file = folder / RUN_FILE
            if info_file.is_file():
                if info_file.stat().st_size > MAX_RUN_JSON:
                    raise ValueError(f"{RUN_FILE} is larger than {MAX_RUN_JSON} bytes")
                info = json.loads(info_file.read_text())
                cfg = info.get("config", {}) if isinstance(info, dict) else {}
                r.dataset = str(cfg.get("dataset", "?"))[:64]
                about = info.get("dataset") if isinstance(info, dict) else None
                if r.dataset == FOLDER_DATASET and isinstance(about, dict) and isinstance(about.get("title"), str):
                    r.dataset = about["title"][:64]  # your own images: "images from pets"
                r.arch = str(cfg.get("arch", "?"))[:32]
                r.total = cfg.get("steps") if isinstance(cfg.get("steps"), int) else 0
            rows = read_loss_rows(folder / LOSS_FILE, tail=LOG_TAIL_BYTES)
            if rows:
                last = rows[-1]
                r.step, r.images_per_s = int(last["step"]), last["images_per_s"]
                r.seconds_per_step = last["seconds"] / last["step"] if last["step"] > 0 else None
            ckpts = list_checkpoints(folder)
            if ckpts:
                r.last_checkpoint = ckpts[-1].stat().st_mtime
                r.step = max(r.step, int(ckpts[-1].name.split("-")[1]))
            r.state = run_state(folder)
        except (OSError, ValueError, RecursionError, UnicodeDecodeError) as e:
            r.state, r.problem = "damaged", f"{type(e).__name__}: {str(e)[:200]}"
        return r

    def summaries(self) -> list[RunSummary]:
        return [self.summary(name) for name in self.run_names()]

    def table(self, summaries: list[RunSummary] | None = None) -> list[list]:
        """One row per run for the runs table."""
        now = time.time()
        rows = []
        for r in self.summaries() if summaries is None else summaries:
            progress = f"{r.step:,} / {r.total:,}" if r.total else f"{r.step:,}"
            rate = f"{r.images_per_s:,.0f}" if r.images_per_s else ""
            rows.append([r.name, r.dataset, r.arch, progress, r.state + (f" ({r.problem})" if r.problem else ""),
                         rate, ago(r.last_checkpoint, now)])
        return rows

    # --- one run
    def losses(self, name: str) -> tuple[list[tuple[float, float, str]], list[tuple[float, float, str]]]:
        """(loss points, logit points) as (step, value, series) for line plots."""
        rows = read_loss_rows(self.folder(name) / LOSS_FILE)
        loss = [(r["step"], r[k], label) for r in rows for k, label in (("d_loss", "D loss"), ("g_loss", "G loss"))]
        logits = [(r["step"], r[k], label) for r in rows
                  for k, label in (("d_real", "D on real (mean logit)"), ("d_fake", "D on fake (mean logit)"))]
        return loss, logits

    def sample_grids(self, name: str) -> list[tuple[str, Path]]:
        """Saved sample grids, oldest first: ("step 2,500", path) and ("epoch 3", path), in the order written."""
        folder = self.folder(name) / "samples"
        if not folder.is_dir():
            return []
        found = []
        for p in folder.iterdir():
            m = SAMPLE_NAME.match(p.name)
            if m and p.is_file():
                try:
                    found.append((p.stat().st_mtime, f"{m.group(1)} {int(m.group(2)):,}", p))
                except OSError:
                    continue
        return [(label, p) for _, label, p in sorted(found)]

    def grid_image(self, path: Path) -> np.ndarray | None:
        """A sample grid as an array, or None if it vanished or is not a readable PNG (being replaced)."""
        try:
            if path.stat().st_size > MAX_GRID_BYTES:
                return None
            with Image.open(path) as im:
                if im.format != "PNG" or im.width * im.height > 64_000_000:
                    return None
                return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
        except (OSError, ValueError, Image.DecompressionBombError):
            return None

    def checkpoints(self, name: str) -> list[str]:
        """Complete checkpoints of the run, newest first (folder names)."""
        return [p.name for p in reversed(list_checkpoints(self.folder(name)))]

    def progress_text(self, run: str | RunSummary) -> str:
        r = run if isinstance(run, RunSummary) else self.summary(run)
        parts = [f"**{md(r.name)}**: {md(r.dataset)}, {md(r.arch)}; state **{r.state}**"]
        if r.total:
            parts.append(f"step {r.step:,} of {r.total:,} ({100 * r.step / max(r.total, 1):.0f}%)")
        else:
            parts.append(f"step {r.step:,}")
        if r.images_per_s:
            parts.append(f"{r.images_per_s:,.0f} images/s")
            if r.state == "running" and r.total > r.step and r.seconds_per_step:
                parts.append(f"about {duration(r.seconds_per_step * (r.total - r.step))} left")
        parts.append(f"last checkpoint {ago(r.last_checkpoint)}")
        if r.problem:
            parts.append(f"damaged: {md(r.problem)}")
        return "; ".join(parts)
