"""The studio's handler logic, free of any web framework: `cgan/ui.py` wires these methods to Gradio.

Everything a user (or an API client) sends arrives here unchecked and is validated with messages that
name the field and the allowed range; invalid input raises :class:`InputError`, which the UI turns into
a ``gr.Error``. Outputs are uint8 arrays (the UI saves them as PNG, losslessly), GIF file paths and
Markdown text.

Datasets are the sub-folders of the checkpoints folder that hold a ``checkpoint.json``. A dataset name
coming from a request is only ever looked up in that listing, never joined into a path, so no request
can reach outside the checkpoints folder. A folder that is, or directly holds, a symbolic link resolving
outside the checkpoints folder is skipped at start (listed in ``Studio.skipped``), so everything the app
reads lies under it; to serve checkpoints kept elsewhere, point --checkpoints (or $CGAN_CHECKPOINTS) there.

Seeds: image j of class k for seed S is ``Sampler.sample([k], ..., seed=S)[j]``, exactly as in
``cgan.sample`` and the Python API; a grid shows images 0..rows*cols-1 in reading order, and the
"All classes" overview shows images 0..cols-1 of every class, one row per class (column j of every row
shares latent j, so each column is one "handwriting style" across classes).

Truncation psi in (0, 1] multiplies the latent z ~ N(0, I) by psi, pulling it towards the prior's mean:
smaller psi gives more typical, cleaner images and less variety.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoints import (HUB_CARD_FILE, META_FILE, STEP_DIR, CheckpointError, check_header,
                          expected_tensors, generator_file, generator_on_meta, hub_snapshot, is_checkpoint_folder,
                          read_meta, repo_id)
from .images import label_rows, label_width, make_grid, upscale
from .data import DatasetError
from .model_card import md, render
from .nearest import TrainingSetIndex, nearest_in
from .sampler import Sampler, lerp, real_samples_for, slerp

log = logging.getLogger("cgan.studio")

ALL_CLASSES = "All classes"
MAX_SEED = 2**31 - 1             # the studio's seeds (page, API, links): what a person types, and what a browser's
                                 # numbers hold exactly; the library (cgan.sample, Sampler) takes numpy's 0..2**63-1
SEED_SLIDER_MAX = 999            # the slider's convenient range; the number box takes any seed
MAX_GRID = 10                    # rows and columns (a one-class grid of large images holds fewer: grid_limit)
MIN_FRAMES, MAX_FRAMES = 2, 48
MAX_SCALE = 8
MAX_SIDE = 4096                  # the display scale is lowered so no PNG side exceeds this many pixels
MAX_GIF_SIDE = 1024              # ... and no GIF side this many
MAX_INDEX = 999                  # image index for the nearest-neighbour view
MAX_COMPARE = 10                 # real / generated images per class in the comparison view
NEIGHBOURS = 5
METHODS = ("spherical", "linear")
GIF_FRAME_MS = 90
STRIP_WRAP = 16                  # a single-class strip wraps after this many frames
PAD = 2
PREFERRED_ORDER = ("mnist", "fashion-mnist", "emnist")
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_CARD_BYTES = 256 * 1024
MAX_RUN_ENTRIES = 6              # run checkpoints kept open for exploring at once
CARD_FILE = "MODEL_CARD.md"


class InputError(ValueError):
    """A request the studio refuses; the message is meant for the user."""


# ----------------------------------------------------------------------------- validation

def show(value, limit: int = 60) -> str:
    """A request's value for an error message: its repr, cut short (a request may send megabytes, or an
    integer with thousands of digits, which Python would refuse to print past 4,300)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and abs(int(value)) >= 10**20:
        return f"a number with about {int(abs(int(value)).bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and abs(value) >= 1e20:
        return f"{float(value):.3g}"
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit]}... ({len(r):,} characters)"


def check_int(value, name: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi]. Integral floats (42.0, as number boxes send) and typed digits ("42") are
    accepted; anything else gets a message that says what to type."""
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        if not text:
            raise InputError(f"{name} is empty: type a whole number from {lo} to {hi}")
        if not re.fullmatch(r"-?[0-9]{1,30}", text):
            raise InputError(f"{name}: type a whole number from {lo} to {hi} using digits only, not {show(value)}")
        value = int(text)
    if value is None:
        raise InputError(f"{name} is empty: type a whole number from {lo} to {hi}")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a whole number from {lo} to {hi}, not {show(value)}")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"{name} must be a whole number from {lo} to {hi}, got {show(value)}")
    v = int(value)
    if not lo <= v <= hi:
        raise InputError(f"{name} must be from {lo} to {hi}, got {show(value)}")
    return v


def check_float(value, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if value is None:
        raise InputError(f"{name} is empty: type a number from {lo} to {hi}")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number from {lo} to {hi}, not {show(value)}")
    v = float(value)
    ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and v <= hi
    if not ok:
        raise InputError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {show(value)}")
    return v


def check_view(truncation, scale) -> tuple[float, int]:
    """The truncation psi in (0, 1] and the display scale 1..MAX_SCALE that every view takes."""
    return (check_float(truncation, "truncation", 0.0, 1.0, lo_open=True),
            check_int(scale, "display scale", 1, MAX_SCALE))


def check_choice(value, name: str, choices, where: str = "") -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        shown = ", ".join(choices) if len(choices) <= 60 else ", ".join(choices[:60]) + ", ..."
        raise InputError(f"unknown {name} {show(value)}{where}; choose one of: {shown}")
    return value


# ----------------------------------------------------------------------------- helpers

class TempFiles:
    """Output files (GIFs) in one private temporary folder per process, never a fixed name.

    Only the newest ``keep`` files are kept (the web server copies each into its own cache when it
    answers), and the folder is removed when the process exits."""

    def __init__(self, keep: int = 64, prefix: str = "cgan-studio-"):
        self.keep, self.prefix = keep, prefix
        self.folder: Path | None = None
        self._files: list[Path] = []
        self._lock = threading.Lock()

    def new(self, suffix: str, name: str | None = None) -> Path:
        """A new empty file. With ``name`` (a download name such as "mnist_7_seed42.png") it is created under
        that name in a folder of its own, so two files of the same name never clash."""
        with self._lock:
            if self.folder is None or not self.folder.is_dir():
                self.folder = Path(tempfile.mkdtemp(prefix=self.prefix))
                atexit.register(self.cleanup)
            if name:
                path = Path(tempfile.mkdtemp(dir=self.folder)) / (safe_file_name(name) + suffix)
                path.touch()
            else:
                fd, tmp = tempfile.mkstemp(suffix=suffix, dir=self.folder)
                os.close(fd)
                path = Path(tmp)
            self._files.append(path)
            while len(self._files) > self.keep:
                old = self._files.pop(0)
                old.unlink(missing_ok=True)
                if old.parent != self.folder:
                    shutil.rmtree(old.parent, ignore_errors=True)
            return path

    def cleanup(self) -> None:
        with self._lock:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            self.folder, self._files = None, []


def safe_file_name(text: str, limit: int = 100) -> str:
    """A download file name from free text (class names come from checkpoints): letters, digits, '.', '-'
    and '_' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "image"
    return name[:limit]


def save_gif(frames: list[np.ndarray], path: Path, frame_ms: int = GIF_FRAME_MS) -> Path:
    """An endlessly looping animated GIF, one frame per array (uint8 grayscale or RGB). The encoder merges
    identical consecutive frames into one longer frame (seed A = seed B, class A = class B): the animation
    and its total duration are unchanged."""
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    if images[0].mode == "RGB":
        images = [im.quantize(256, dither=Image.Dither.NONE) for im in images]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0,
                   optimize=False, disposal=1)
    return path


def hstack(parts: list[np.ndarray], gap: int = 8, value: int = 255) -> np.ndarray:
    """Place arrays of equal height side by side with a light separator."""
    h = max(p.shape[0] for p in parts)
    out = []
    for i, p in enumerate(parts):
        if p.shape[0] < h:
            p = np.concatenate([p, np.full((h - p.shape[0],) + p.shape[1:], 40, np.uint8)])
        if i:
            out.append(np.full((h, gap) + p.shape[2:], value, np.uint8))
        out.append(p)
    return np.concatenate(out, axis=1)


def escapes(folder: Path, root: Path) -> bool:
    """Whether ``folder`` or anything directly in it resolves (through symbolic links) outside ``root``."""
    return any(not p.resolve().is_relative_to(root) for p in [folder, *folder.iterdir()])


def fit_scale(shape: tuple[int, ...], scale: int, limit: int = MAX_SIDE) -> int:
    """The largest display scale <= ``scale`` keeping both sides within ``limit`` pixels."""
    longest = max(shape[0], shape[1])
    return max(1, min(scale, limit // longest))


@dataclass
class DatasetEntry:
    name: str          # folder name: what API clients pass
    title: str         # what the dropdown shows
    folder: Path
    meta: dict
    real: tuple[np.ndarray, np.ndarray] | None = None   # bundled real images and labels, read at scan time
    card: str = ""     # the model card (Markdown), read at scan time
    parameters: int = 0  # of the generator
    run: bool = False    # a checkpoint of a training run, opened from the runs view
    root: Path | None = None  # the folder everything of this checkpoint must stay inside (symbolic links)


# ----------------------------------------------------------------------------- text from checkpoints

def quoted(name) -> str:
    return f"'{md(name)}'"


def safe_card(text: str) -> str:
    """A MODEL_CARD.md for display: raw HTML is shown as text and images are not loaded (a card may come
    from anywhere; the studio works offline and fetches nothing a checkpoint names)."""
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("![", "!\\[")


# ----------------------------------------------------------------------------- per-request budget

CLASS_PAGE = 16                   # classes per page of an overview ("Classes 17-32"), for checkpoints with more
MAX_OVERVIEW = 64                 # "All classes" is offered up to this many classes (one row each)
MAX_GENERATED_PIXELS = 2_000_000  # model work per request: images generated x pixels per image
MAX_GRID_PIXELS = 64 * 64 * 64    # pixels of one one-class grid: 100 images up to 45 px, 64 (8x8) at 64 px, so
                                  # the grid stays within its 150 ms target (bench/bench_studio64.py, folded G:
                                  # 8x8 100 ms p95, 10x10 144 ms colour at the default width, too close to it)
MAX_GIF_PIXELS = 24_000_000       # all frames of one GIF together, after scaling
MIN_GIF_SIDE = 256                # a GIF is enlarged to at least this many pixels: the animation is the fun part
LABEL_ROOM = 200                  # pixels of width kept for the row labels of an overview


def class_pages(k: int) -> list[str]:
    """Overview choices for a checkpoint with ``k`` classes: "All classes" (up to MAX_OVERVIEW classes),
    then, beyond CLASS_PAGE classes, pages of CLASS_PAGE classes ("Classes 17-32") to move through them."""
    pages = [ALL_CLASSES] if k <= MAX_OVERVIEW else []
    if k > CLASS_PAGE:
        pages += [f"Classes {a + 1}-{min(a + CLASS_PAGE, k)}" for a in range(0, k, CLASS_PAGE)]
    return pages


def grid_limit(size: int) -> int:
    """The most images a one-class grid of size x size px images may hold: MAX_GRID x MAX_GRID (100) up to
    45 px (so 28 and 32 px as always), fewer for larger images (64 at 64 px) to keep the grid's latency."""
    return max(1, min(MAX_GRID * MAX_GRID, MAX_GRID_PIXELS // (size * size)))


def check_grid(rows: int, cols: int, size: int) -> None:
    """Refuse a one-class grid of more images than grid_limit(size), saying what to ask for instead."""
    limit = grid_limit(size)
    if rows * cols > limit:
        def shape(r: int, c: int) -> str:
            return f"{r} row{'s' * (r != 1)} and {c} column{'s' * (c != 1)}"

        side = math.isqrt(limit)
        ideas = [shape(rows, limit // rows)] if limit >= rows else []  # same rows, fewer columns
        if not (side == rows and limit >= rows):
            ideas.append(shape(side, limit // side))  # or the largest square-ish grid
        raise InputError(f"this grid would show {rows * cols} images of {size}x{size} px; a grid of images this "
                         f"large shows at most {limit}: ask for fewer rows or columns, for example "
                         f"{' or '.join(ideas)}")


def check_budget(images: int, image_pixels: int, what: str, fewer: str) -> None:
    """Refuse a request that would generate more than MAX_GENERATED_PIXELS, saying what to ask for."""
    if images * image_pixels > MAX_GENERATED_PIXELS:
        limit = max(1, MAX_GENERATED_PIXELS // image_pixels)
        raise InputError(f"{what} would generate {images:,} images; one request may generate at most {limit:,} "
                         f"of this size: {fewer}")


def check_side(shape: tuple[int, ...], what: str, fewer: str, limit: int = MAX_SIDE) -> None:
    if max(shape[0], shape[1]) > limit:
        raise InputError(f"{what} would be {shape[1]}x{shape[0]} pixels even at display scale 1 (the limit is "
                         f"{limit} per side): {fewer}")


# ----------------------------------------------------------------------------- reading a checkpoint folder

def read_entry(folder: Path) -> DatasetEntry:
    """Everything the studio serves from a folder except the generator weights: checkpoint.json, the
    generator file's header (shapes checked against the architecture, nothing allocated), the real
    samples, the model card. All read now, at start, so a damaged file is found before anyone asks for it
    and no later change to the folder (a file swapped for a symbolic link) is ever read."""
    meta = read_meta(folder)
    generator = generator_on_meta(meta)
    check_header(generator_file(folder), expected_tensors(generator))
    title = meta["dataset"].get("title") or meta["dataset"]["name"]
    entry = DatasetEntry(folder.name, str(title), folder, meta, real=real_samples_for(folder, meta),
                         parameters=sum(p.numel() for p in generator.parameters()))
    card = folder / CARD_FILE if (folder / CARD_FILE).is_file() else folder / HUB_CARD_FILE
    if card.is_file():
        if card.stat().st_size > MAX_CARD_BYTES:
            raise CheckpointError(f"{card}: larger than {MAX_CARD_BYTES:,} bytes")
        text = card.read_text(encoding="utf-8", errors="replace")
        if card.name == HUB_CARD_FILE:  # a Hub card: its YAML metadata is for the Hub, not for reading
            text = re.sub(r"\A---\n.*?\n---\n", "", text, count=1, flags=re.S).lstrip()
        entry.card = safe_card(text)
    else:  # the same renderer that writes MODEL_CARD.md files
        entry.card = safe_card(render(folder))
    return entry


# ----------------------------------------------------------------------------- the studio

class Studio:
    """Checkpoint listing, model cache and every handler of the app."""

    def __init__(self, root: str | os.PathLike, temp: TempFiles | None = None,
                 data_dir: str | os.PathLike | None = None):
        """``root``: a folder of checkpoint folders, or several sources separated by commas, each a folder
        of checkpoint folders or a Hub repo "hf:user/repo" (served under the name "user/repo")."""
        self.sources = [part.strip() for part in str(root).split(",") if part.strip()] if isinstance(root, str) \
            else [root]
        local = [s for s in self.sources if not (isinstance(s, str) and s.startswith("hf:"))]
        self.root = Path(local[0] if local else ".")
        self.data_dir = Path(data_dir) if data_dir else None
        self._training_sets: dict[str, TrainingSetIndex] = {}
        self.temp = temp or TempFiles()
        self._lock = threading.Lock()
        self._samplers: dict[str, Sampler] = {}
        self._real_nn: dict[str, float] = {}
        self.skipped: dict[str, str] = {}
        self.entries = self._scan()

    # --- listing
    def _skip(self, key: str, where, why: str) -> None:
        """Leave a checkpoint out: one log line naming ``where`` and the problem, kept in skipped[key]."""
        self.skipped[key] = why
        log.warning("skipping %s: %s", where, why)

    def _read_or_skip(self, key: str, where, read) -> DatasetEntry | None:
        """``read()``, or None after _skip when the checkpoint cannot be served."""
        try:
            return read()
        except CheckpointError as e:
            why = str(e)
        except (OSError, ValueError, RecursionError, MemoryError) as e:
            why = f"unreadable ({type(e).__name__}: {show(str(e), 200)})"
        self._skip(key, where, why)
        return None

    def _scan(self) -> dict[str, DatasetEntry]:
        """Every usable checkpoint of every source. One that cannot be served is skipped with one log line
        that names the file and the problem (also kept in ``self.skipped``); the others are served."""
        found = {}
        for source in self.sources:
            if isinstance(source, str) and source.startswith("hf:"):
                self._scan_hub(source, found)
            else:
                self._scan_folder(Path(source), found)
        titles = [e.title for e in found.values()]
        for e in found.values():  # two checkpoints of one dataset: tell them apart by folder name
            if titles.count(e.title) > 1:
                e.title = f"{e.title} ({e.name})"
        rank = {n: i for i, n in enumerate(PREFERRED_ORDER)}
        return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))

    def _scan_hub(self, source: str, found: dict) -> None:
        """A Hub repo (from huggingface_hub's cache, or downloaded): one checkpoint named "user/repo"."""
        name = repo_id(source) or source

        def read() -> DatasetEntry:
            folder = hub_snapshot(source)
            if escapes(folder, folder.parent.parent.resolve()):  # its files live in the repo's cache folder
                raise CheckpointError(f"{folder} holds a symbolic link leading outside the repo's cache folder")
            entry = read_entry(folder)
            entry.name, entry.root = name, folder.parent.parent.resolve()
            return entry

        entry = self._read_or_skip(name, source, read)
        if entry is not None:
            found[name] = entry

    def _scan_folder(self, folder: Path, found: dict) -> None:
        if not folder.is_dir():
            raise FileNotFoundError(f"checkpoints folder {folder} does not exist")
        root = folder.resolve()
        for p in sorted(folder.iterdir()):

            def read(p=p) -> DatasetEntry | None:
                if not (p.is_dir() and is_checkpoint_folder(p)):
                    return None
                if not FOLDER_NAME.match(p.name):
                    raise CheckpointError("its name is not served (use letters, digits, '.', '_' and '-', at most "
                                          "64 characters, starting with a letter or digit)")
                if escapes(p, root):  # everything the app reads lies inside the checkpoints folder
                    raise CheckpointError(f"it is or holds a symbolic link to outside {root}")
                entry = read_entry(p)
                entry.root = root
                return entry

            entry = self._read_or_skip(p.name, p, read)
            if entry is not None:
                found[p.name] = entry

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def choices(self) -> list[tuple[str, str]]:
        """(human title, folder name) pairs for the dataset dropdown."""
        return [(e.title, e.name) for e in self.entries.values()]

    def entry(self, dataset) -> DatasetEntry:
        if not self.entries:
            raise InputError(f"no checkpoints found in {self.root}")
        return self.entries[check_choice(dataset, "dataset", self.entries)]

    def class_names(self, dataset) -> list[str]:
        return list(self.entry(dataset).meta["class_names"])

    def class_choices(self, dataset) -> list[str]:
        """The overview choice(s) first ("All classes", or pages of classes), then every class."""
        names = self.class_names(dataset)
        return class_pages(len(names)) + names

    def describe(self) -> dict:
        """Datasets and their classes, for API clients."""
        return {e.name: {"title": e.title, "classes": list(e.meta["class_names"]),
                         "image_size": e.meta["image"]["size"], "channels": e.meta["image"]["channels"]}
                for e in self.entries.values()}

    # --- checkpoints of training runs
    def add_run_checkpoint(self, runs_root: str | os.PathLike, run: str, step: str) -> str:
        """Serve checkpoint RUNS/run/checkpoints/step like an exported folder (Grid, interpolation, morph,
        and, with the run's real sample, real-vs-generated and nearest). ``run`` and ``step`` must be plain
        names of existing folders (the UI offers only listed ones); returns the name to use as the dataset.
        At most MAX_RUN_ENTRIES run checkpoints are kept open; the oldest is closed first."""
        if not (isinstance(run, str) and FOLDER_NAME.match(run) and isinstance(step, str) and STEP_DIR.match(step)):
            raise InputError(f"no checkpoint {show(run)}/{show(step)}")
        root = Path(runs_root)
        folder = root / run / "checkpoints" / step
        key = f"{run}/{step}"
        with self._lock:
            if key in self.entries:
                return key
            if not (folder / META_FILE).is_file():
                raise InputError(f"run {run} has no complete checkpoint {step} (pruned meanwhile?); choose another")
            resolved = root.resolve()
            if escapes(folder, resolved) or escapes(folder.parent.parent, resolved):
                raise CheckpointError(f"{folder} is or holds a symbolic link to outside {resolved}")
            entry = read_entry(folder)
            entry.name, entry.title = key, f"{run} @ step {int(step.split('-')[1]):,}"
            entry.run, entry.root = True, resolved
            # Loaded now: a running training keeps only its newest checkpoints and may prune this one soon.
            self._samplers[key] = Sampler.load(folder)
            self.entries[key] = entry
            opened = [k for k, e in self.entries.items() if e.run]
            for old in opened[:-MAX_RUN_ENTRIES]:
                self.entries.pop(old, None)
                self._samplers.pop(old, None)
        return key

    # --- model cache
    def sampler(self, dataset) -> Sampler:
        entry = self.entry(dataset)
        s = self._samplers.get(entry.name)
        if s is None:
            with self._lock:
                s = self._samplers.get(entry.name)
                if s is None:
                    if escapes(entry.folder, entry.root or self.root.resolve()):  # changed since the scan
                        raise CheckpointError(f"{entry.folder} now holds a symbolic link leading outside "
                                              f"{self.root}; restart the studio once it is fixed")
                    t = time.perf_counter()
                    s = Sampler.load(entry.folder)
                    self._samplers[entry.name] = s
                    log.info("loaded %s in %.2f s", entry.folder, time.perf_counter() - t)
        return s

    def preload(self) -> None:
        """Load every model and run it once (so the first request is not the slow one). A model that fails
        to load is dropped from the listing with one log line; the others are served."""
        for name in self.names:
            try:
                self.sampler(name).sample([0], 1, seed=0)
            except (CheckpointError, OSError, ValueError, RuntimeError, MemoryError) as e:
                entry = self.entries.pop(name)
                self._skip(name, entry.folder, str(e) if isinstance(e, CheckpointError) else
                           f"the generator cannot be loaded ({type(e).__name__}: {show(str(e), 200)})")
        if self.data_dir is not None:
            self.index_training_sets()

    def index_training_sets(self) -> None:
        """With a data folder, index every image each checkpoint was trained on, for the nearest-neighbour
        view. A checkpoint whose data is not there (or not the same) keeps its bundled sample, with a log
        line saying why."""
        for name, e in self.entries.items():
            t = time.perf_counter()
            try:
                self._training_sets[name] = TrainingSetIndex.for_checkpoint(e.meta, self.data_dir)
            except (DatasetError, OSError, ValueError, MemoryError) as err:
                log.warning("%s: nearest neighbours search the bundled sample only: %s", name, err)
                continue
            log.info("%s: indexed %s in %.1f s", name, self._training_sets[name].description,
                     time.perf_counter() - t)

    def real(self, dataset) -> tuple[np.ndarray, np.ndarray] | None:
        return self.entry(dataset).real

    def _real_or_error(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        real = self.real(dataset)
        if real is None:
            raise InputError(f"the {self.entry(dataset).title} checkpoint has no bundled real images "
                             "(real_samples.safetensors)")
        return real

    def _class(self, sampler: Sampler, value, name: str = "class") -> int:
        """The index of one class, by name."""
        names = sampler.class_names
        if value in class_pages(len(names)) and value not in names:
            raise InputError(f"{name}: choose one class here, not {show(value)}")
        return names.index(check_choice(value, name, names, f" for {self._title(sampler)}"))

    def _classes(self, sampler: Sampler, value) -> tuple[list[int], str | None]:
        """Class indices for a class name, "All classes" or a page ("Classes 65-128"), and for an overview
        a description of the rows (None for one class)."""
        names = sampler.class_names
        k = len(names)
        if value in names:
            return [names.index(value)], None
        pages = class_pages(k)
        if value in pages:
            if value == ALL_CLASSES:
                return list(range(k)), f"all {k} classes (one row each)"
            a, b = (int(x) for x in value.split(" ", 1)[1].split("-"))
            return list(range(a - 1, b)), f"classes {a}-{b} of {k} (one row each)"
        if value == ALL_CLASSES:
            raise InputError(f"this checkpoint has {k:,} classes, more than one view shows ({MAX_OVERVIEW}): choose "
                             f"a page of classes ({pages[0]!r} to {pages[-1]!r}) or one class")
        check_choice(value, "class", pages + names, f" for {self._title(sampler)}")
        raise AssertionError("unreachable")

    def _title(self, sampler: Sampler) -> str:
        """What the captions call a model: its entry's title ("MNIST digits", "my-run @ step 2,500")."""
        for e in self.entries.values():
            if e.folder == sampler.folder:
                return md(e.title)
        return md(sampler.meta["dataset"].get("title") or sampler.dataset)

    # --- generate
    def generate(self, dataset, class_name, seed, rows=4, cols=8, truncation=1.0, scale=3):
        """A grid of class ``class_name`` (rows x cols: images 0..rows*cols-1 of the seed), or for an overview
        ("All classes", or a page of classes) one row per class of images 0..cols-1. Returns (uint8 image,
        caption)."""
        s = self.sampler(dataset)
        classes, overview = self._classes(s, class_name)
        seed = check_int(seed, "seed", 0, MAX_SEED)
        rows = check_int(rows, "rows", 1, MAX_GRID)
        cols = check_int(cols, "columns", 1, MAX_GRID)
        psi, scale = check_view(truncation, scale)
        size = s.meta["image"]["size"]
        if overview:
            rows = len(classes)
            what = f"{overview}, images 0-{cols - 1}"
        else:
            what = f"class {quoted(s.class_names[classes[0]])}, images 0-{rows * cols - 1} in reading order"
        if not overview:
            check_grid(rows, cols, size)
        fewer = "ask for fewer columns or rows, or one class"
        check_budget(rows * cols, size * size, "this grid", fewer)
        check_side(grid_shape(rows, cols, size), "this grid", fewer)
        images, _ = s.sample(classes, cols if overview else rows * cols, seed=seed, truncation=psi)
        grid = make_grid(images, rows, cols, pad=PAD)
        used, labels = self._grid_scale(s, classes, overview, grid.shape, scale)
        caption = f"{self._title(s)}: {what}; seed {seed}, truncation {psi:g}"
        if used < scale:
            caption += f" (display scale lowered to {used} to stay within {MAX_SIDE} px)"
        image = upscale(grid, used)
        return (label_rows(image, labels, size, PAD, used) if labels else image), caption

    @staticmethod
    def _grid_scale(s: Sampler, classes: list[int], overview, shape, scale: int) -> tuple[int, list[str]]:
        """The display scale of a grid and, for an overview, its row labels (class names), which take
        LABEL_ROOM pixels of the width budget."""
        if not overview:
            return fit_scale(shape, scale), []
        return fit_scale(shape, scale, MAX_SIDE - LABEL_ROOM), [s.class_names[c] for c in classes]

    def cell_at(self, dataset, class_name, seed, rows, cols, truncation, scale, x, y) -> dict | None:
        """Which image of the grid ``generate`` returns for these arguments lies at pixel (x, y) of it:
        {"class": name, "index": j, "seed": S, "truncation": psi}, or None between images."""
        s = self.sampler(dataset)
        classes, overview = self._classes(s, class_name)
        seed = check_int(seed, "seed", 0, MAX_SEED)
        rows, cols = check_int(rows, "rows", 1, MAX_GRID), check_int(cols, "columns", 1, MAX_GRID)
        psi, scale = check_view(truncation, scale)
        x, y = check_int(x, "x", 0, 10**6), check_int(y, "y", 0, 10**6)
        size = s.meta["image"]["size"]
        if not overview:
            check_grid(rows, cols, size)
        rows = len(classes) if overview else rows
        used, labels = self._grid_scale(s, classes, overview, grid_shape(rows, cols, size), scale)
        x -= label_width(labels, used) if labels else 0
        r, dy = divmod(y // used - PAD, size + PAD)
        c, dx = divmod(x // used - PAD, size + PAD) if x >= 0 else (-1, 0)
        if not (0 <= r < rows and 0 <= c < cols) or dy >= size or dx >= size:
            return None
        k, j = (classes[r], c) if overview else (classes[0], r * cols + c)
        return {"class": s.class_names[k], "index": j, "seed": seed, "truncation": psi}

    # --- latent interpolation
    def interpolate(self, dataset, class_name, seed_a, seed_b, frames=16, method="spherical", truncation=1.0, scale=3,
                    index_a=0, index_b=0):
        """Frames from image ``index_a`` of seed A to image ``index_b`` of seed B (same class; image 0 unless
        given). Returns (strip, GIF path, caption). For an overview the strip has one row per class and each
        GIF frame shows them all."""
        s = self.sampler(dataset)
        classes, overview = self._classes(s, class_name)
        seed_a = check_int(seed_a, "seed A", 0, MAX_SEED)
        seed_b = check_int(seed_b, "seed B", 0, MAX_SEED)
        index_a = check_int(index_a, "image index A", 0, MAX_INDEX)
        index_b = check_int(index_b, "image index B", 0, MAX_INDEX)
        frames = check_int(frames, "frames", MIN_FRAMES, MAX_FRAMES)
        method = check_choice(method, "interpolation method", METHODS)
        psi, scale = check_view(truncation, scale)
        self._check_animation(s, len(classes), frames)
        with torch.inference_mode():
            # Truncated ends: both interpolations commute with scaling both ends by psi.
            ends = torch.cat([s.latents(seed_a, [index_a], psi), s.latents(seed_b, [index_b], psi)])
            t = torch.linspace(0, 1, frames)
            z = (slerp if method == "spherical" else lerp)(ends[:1], ends[1:], t)
            zz = z.repeat(len(classes), 1)
            y = torch.tensor(classes, dtype=torch.int64).repeat_interleave(frames)
            images = s.generate(zz, y)
            images = images.reshape((len(classes), frames) + images.shape[1:])
        title = f"{self._title(s)}, " + (overview or f"class {quoted(s.class_names[classes[0]])}")
        ends_text = (f"seed {seed_a} -> seed {seed_b}" if index_a == index_b == 0 else
                     f"image {index_a} of seed {seed_a} -> image {index_b} of seed {seed_b}")
        caption = f"{title}: {method} interpolation, {ends_text}, {frames} frames, truncation {psi:g}"
        what = class_name if overview else s.class_names[classes[0]]
        name = f"{self.entry(dataset).name}_{what}_seed{seed_a}-{seed_b}_{method}_psi{psi:g}_{frames}frames"
        return self._strip_and_gif(images, scale, caption,
                                   [s.class_names[c] for c in classes] if overview else None, name)

    # --- class morph
    def morph(self, dataset, class_a, class_b, seed, frames=16, truncation=1.0, scale=3):
        """One latent (image 0 of the seed), class conditioning blended from A to B: the class weights
        (1-t)*onehot(A) + t*onehot(B). Returns (strip, GIF path, caption)."""
        s = self.sampler(dataset)
        a = self._class(s, class_a, "class A")
        b = self._class(s, class_b, "class B")
        seed = check_int(seed, "seed", 0, MAX_SEED)
        frames = check_int(frames, "frames", MIN_FRAMES, MAX_FRAMES)
        psi, scale = check_view(truncation, scale)
        self._check_animation(s, 1, frames)
        with torch.inference_mode():
            z = s.latents(seed, [0], psi).repeat(frames, 1)
            t = torch.linspace(0, 1, frames)[:, None]
            eye = torch.eye(s.num_classes)
            w = (1 - t) * eye[a] + t * eye[b]
            images = s.generate(z, w)[None]
        caption = (f"{self._title(s)}: class morph {quoted(s.class_names[a])} -> {quoted(s.class_names[b])}, "
                   f"seed {seed}, {frames} frames, truncation {psi:g}")
        name = f"{self.entry(dataset).name}_morph_{s.class_names[a]}-to-{s.class_names[b]}_seed{seed}_psi{psi:g}"
        return self._strip_and_gif(images, scale, caption, None, name)

    @staticmethod
    def _check_animation(s: Sampler, n_rows: int, frames: int) -> None:
        """The budget of an interpolation or morph: n_rows x frames images, a strip and a GIF."""
        size = s.meta["image"]["size"]
        fewer = "ask for fewer frames, or one class"
        check_budget(n_rows * frames, size * size, "this animation", fewer)
        strip_rows, strip_cols = (math.ceil(frames / min(frames, STRIP_WRAP)), min(frames, STRIP_WRAP)) \
            if n_rows == 1 else (n_rows, frames)
        check_side(grid_shape(strip_rows, strip_cols, size), "this strip of frames", fewer)
        gif_cols = min(n_rows, MAX_GRID)
        check_side(grid_shape(math.ceil(n_rows / gif_cols), gif_cols, size), "one frame of this animation",
                   "choose one class or a smaller page of classes", MAX_GIF_SIDE)

    def _strip_and_gif(self, images: np.ndarray, scale: int, caption: str, labels: list[str] | None = None,
                       name: str | None = None):
        """images: (rows, frames, H, W[, 3]). Strip: one row per class, labelled when ``labels`` are given (a
        single row wraps after STRIP_WRAP frames); GIF frame t: every row's frame t, tiled up to 10 per line,
        enlarged to at least MIN_GIF_SIDE pixels."""
        n_rows, frames = images.shape[:2]
        if n_rows == 1:
            cols = min(frames, STRIP_WRAP)
            strip = make_grid(images[0], math.ceil(frames / cols), cols, pad=PAD)
        else:
            strip = make_grid(images.reshape((-1,) + images.shape[2:]), n_rows, frames, pad=PAD)
        used = fit_scale(strip.shape, scale, MAX_SIDE - LABEL_ROOM if labels else MAX_SIDE)
        strip = upscale(strip, used)
        if labels:
            strip = label_rows(strip, labels, images.shape[2], PAD, used)
        gif_cols = min(n_rows, MAX_GRID)
        gif_rows = math.ceil(n_rows / gif_cols)
        frame_list = [make_grid(images[:, f], gif_rows, gif_cols, pad=PAD) for f in range(frames)]
        wanted = max(scale, math.ceil(MIN_GIF_SIDE / max(frame_list[0].shape[:2])))
        g_scale = fit_scale(frame_list[0].shape, wanted, MAX_GIF_SIDE)
        while g_scale > 1 and frames * frame_list[0].shape[0] * frame_list[0].shape[1] * g_scale ** 2 > MAX_GIF_PIXELS:
            g_scale -= 1
        path = save_gif([upscale(f, g_scale) for f in frame_list], self.temp.new(".gif", name))
        return strip, str(path), caption

    # --- real vs generated
    def real_vs_generated(self, dataset, class_name, seed, count=8, truncation=1.0, scale=3):
        """Bundled real images of the class (left) beside generated images 0..count-1 (right); one row
        per class for an overview. Returns (image, caption)."""
        s = self.sampler(dataset)
        classes, overview = self._classes(s, class_name)
        seed = check_int(seed, "seed", 0, MAX_SEED)
        count = check_int(count, "images per side", 1, MAX_COMPARE)
        psi, scale = check_view(truncation, scale)
        real_images, real_labels = self._real_or_error(dataset)
        size = s.meta["image"]["size"]
        fewer = "ask for fewer images per side, or one class"
        check_budget(len(classes) * count, size * size, "this comparison", fewer)
        check_side(grid_shape(len(classes), 2 * count, size), "this comparison", fewer)
        fake, _ = s.sample(classes, count, seed=seed, truncation=psi)
        blank = np.full(fake.shape[1:], 40, np.uint8)
        left = []
        for c in classes:
            picks = list(real_images[real_labels == c][:count])
            left.extend(picks + [blank] * (count - len(picks)))
        image = hstack([make_grid(np.stack(left), len(classes), count, pad=PAD),
                        make_grid(fake, len(classes), count, pad=PAD)])
        what = overview or f"class {quoted(s.class_names[classes[0]])}"
        caption = (f"{self._title(s)}, {what}: left, real images from the bundled sample; right, generated "
                   f"images 0-{count - 1} of seed {seed} (truncation {psi:g})")
        return upscale(image, fit_scale(image.shape, scale)), caption

    # --- nearest real neighbour
    def nearest(self, dataset, class_name, seed, index=0, truncation=1.0, scale=3):
        """Generated image ``index`` of the class beside its NEIGHBOURS nearest bundled real images
        (L2 distance over pixel values 0..255, searched across all classes). Returns (image, Markdown)."""
        s = self.sampler(dataset)
        classes, overview = self._classes(s, class_name)
        k = classes[0]  # an overview is not one class: its first class stands in, and the text says so
        seed = check_int(seed, "seed", 0, MAX_SEED)
        index = check_int(index, "image index", 0, MAX_INDEX)
        psi, scale = check_view(truncation, scale)
        full = self._training_sets.get(self.entry(dataset).name)
        real_images, real_labels = (None, None) if full is not None else self._real_or_error(dataset)
        g, _ = s.sample([k], 1, seed=seed, truncation=psi, start=index)
        if full is not None:
            order, dist, took = full.search(g[0], NEIGHBOURS)
            found, found_labels = np.stack([full.image(i) for i in order]), full.labels[order]
            searched = f"Searched: {full.description} (in {took * 1000:.0f} ms); a copy of a training image would " \
                       f"be at distance 0."
        else:
            order, dist = nearest_in(real_images, g[0], NEIGHBOURS)
            found, found_labels = real_images[order], real_labels[order]
            per_class = np.bincount(real_labels, minlength=s.num_classes)
            trained_on = self.entry(dataset).meta["dataset"].get("num_images")
            searched = (f"Searched: the {len(real_images):,} real images bundled with this checkpoint "
                        f"({int(per_class.min())}-{int(per_class.max())} per class, all classes)"
                        + (f", a sample of the {trained_on:,} images it was trained on: a copy of a training image "
                           f"outside this sample would not be found here (start the studio with --data-dir to "
                           f"search all of them)." if isinstance(trained_on, int) else "."))
        image = hstack([make_grid(g, 1, 1, pad=PAD), make_grid(found, 1, len(order), pad=PAD)])
        ref = self.real_reference(dataset, k)
        names = s.class_names
        lines = []
        if overview:
            lines += [f"*{md(class_name)} is not one class: showing the first, {quoted(names[k])}. Choose a class "
                      f"above to search for another.*", ""]
        lines += [f"Generated image {index} of class **{md(names[k])}** (seed {seed}, truncation {psi:g}), left, and "
                  f"its {len(order)} nearest real images, right (L2 distance over pixel values 0-255).", "",
                  searched, "", "| rank | real class | distance |", "|---|---|---|"]
        lines += [f"| {i + 1} | {md(names[int(c)])} | {d:.0f} |" for i, (c, d) in enumerate(zip(found_labels, dist))]
        if ref is not None:
            lines += ["", f"For scale: a bundled real {quoted(names[k])} image's nearest other bundled real "
                          f"{quoted(names[k])} image is at a median distance of {ref:.0f}; a copy of a bundled "
                          f"image would be at distance 0."]
        return upscale(image, fit_scale(image.shape, scale)), "\n".join(lines)

    def real_reference(self, dataset, k: int) -> float | None:
        """Median distance from a bundled real image of class k to its nearest other one of class k."""
        name = self.entry(dataset).name
        key = f"{name}/{k}"
        if key not in self._real_nn:
            real = self.real(dataset)
            x = real[0][real[1] == k].reshape(-1, real[0][0].size).astype(np.float64) if real else None
            if x is None or len(x) < 2:
                return None
            sq = (x * x).sum(1)
            d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
            np.fill_diagonal(d2, np.inf)
            self._real_nn[key] = float(np.median(np.sqrt(d2.min(1))))
        return self._real_nn[key]

    # --- model card
    def model_card(self, dataset) -> str:
        """MODEL_CARD.md of the checkpoint when present, else a card built from checkpoint.json; both read
        when the studio started."""
        return self.entry(dataset).card


def grid_shape(rows: int, cols: int, size: int) -> tuple[int, int]:
    """Height and width in pixels of a make_grid of rows x cols images of size x size at scale 1."""
    return rows * (size + PAD) + PAD, cols * (size + PAD) + PAD
