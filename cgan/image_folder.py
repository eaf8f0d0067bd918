"""Your own images: a folder with one subfolder per class (or a CSV of path,label) as a training dataset.

    python train.py --image-folder my-images/            # my-images/cat/*.jpg, my-images/dog/*.png, ...
    python train.py --labels labels.csv                  # rows "path,label"; paths relative to the CSV

What happens, in order:
  1. scan: every file under the folder is listed (hidden files, symbolic links leading out of the folder
     and anything that is not a regular file are skipped and reported); nothing is decoded yet;
  2. defaults: the image size is the one of 28, 32, 64 nearest to the median shorter side, the channels
     are 1 when every file is stored as greyscale and 3 otherwise (reading file headers only);
  3. decode once, in parallel threads (Pillow releases the GIL while decoding and resizing), into a uint8
     cache keyed by the file list (path, size, modification time, label) and the preprocessing, so a
     changed file or option means a new cache and a later run or a --resume starts from it in seconds;
  4. split: per class, a fixed fraction of the images is held out for evaluation, chosen by a hash of
     (seed, file path): deterministic, and a file keeps its side when other files come or go.

Preprocessing rules (also in ``train.py --help``), in this order:
  * EXIF orientation applied (photos come upright);
  * transparency (RGBA, LA, palette with transparency) composited onto white;
  * 16-bit and 32-bit greyscale scaled to 8 bits (65535 -> 255); CMYK, YCbCr, LAB, HSV converted to RGB;
  * --channels 1: ITU-R 601-2 luma (Pillow's "L"); --channels 3: RGB (grey images repeated);
  * the shorter side scaled to the image size (Lanczos), then the centre square cropped; a file with
    more pixels than Pillow's decompression-bomb limit is refused before decoding.

Bad input gets a report, not a crash: counts per class, files skipped and why (the first few named),
classes with fewer than MIN_CLASS_IMAGES images warned; an empty folder or a single class is refused.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import statistics
import sys
import time
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import Dataset, DatasetError, data_fingerprint, default_cache_dir, load_dataset
from .distributed import real_core_count
from .files import atomic_write, atomic_write_text

FOLDER_DATASET = "folder"            # TrainConfig.dataset and checkpoint dataset.name of a folder run
IMAGE_SIZES = (28, 32, 64)
CACHE_VERSION = 1                    # bump when the preprocessing changes: old caches are then not used
MIN_CLASS_IMAGES = 10                # fewer than this in a class: warned (hundreds are better)
MAX_DECODED_BYTES = 2 << 30          # decoded pixels held in memory: refused above 2 GiB (e.g. 170k 64px RGB)
MAX_FILES = 2_000_000
MAX_NAME_CHARS = 64                  # class names as checkpoints store them
EXAMPLES_PER_REASON = 5              # files named per skip reason in the report
DEFAULT_HOLDOUT_FRACTION = 0.1
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}

# Skip reasons, as the report words them.
NOT_IMAGE = "not an image"
CORRUPT = "truncated or corrupt image"
BOMB = "too many pixels (decompression-bomb limit)"
HIDDEN = "hidden file or folder"
OUTSIDE = "symbolic link leading out of the folder (not followed)"
NOT_FILE = "not a regular file"
LOOSE = "not inside a class folder"
MISSING = "listed in the CSV but missing"
UNREADABLE = "cannot be read (permissions)"
DUPLICATE = "listed twice in the CSV"
BAD_ROW = "CSV row without exactly two fields (path,label)"


def display_name(raw: str, limit: int = MAX_NAME_CHARS) -> str:
    """A folder or label name as it may be shown: undecodable bytes become U+FFFD, control and format
    characters become "?", whitespace is collapsed, at most ``limit`` characters. (Escaping for Markdown
    or HTML is the studio's and the model card's job; this only makes the text printable.)"""
    raw = os.fspath(raw) if isinstance(raw, os.PathLike) else raw
    text = os.fsencode(raw).decode("utf-8", "replace") if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
    text = re.sub(r"\s+", " ", text).strip()
    text = "".join("?" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") else ch for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_path(path: str) -> str:
    """A file path for the report: printable, whatever bytes its name holds."""
    return display_name(path, 200)


@dataclass
class FileList:
    """The result of a scan: the files to decode, their labels, the class names, what was skipped."""

    root: Path
    files: list[str]                   # paths relative to root (str; undecodable bytes surrogate-escaped)
    labels: list[int]
    class_names: list[str]             # display names, in class-index order
    skipped: dict[str, list[str]] = field(default_factory=dict)   # reason -> paths
    stats: list[tuple[int, int]] = field(default_factory=list)    # (size, mtime_ns) per file

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(path)

    def fingerprint(self, *extra) -> str:
        """SHA-256 of the file list (path bytes, size, modification time, label) and ``extra``."""
        h = hashlib.sha256(json.dumps([CACHE_VERSION, self.class_names, *extra]).encode())
        for path, label, (size, mtime) in zip(self.files, self.labels, self.stats):
            h.update(os.fsencode(path) + b"\0" + f"{label},{size},{mtime}\n".encode())
        return h.hexdigest()


def _inside(path: Path, root_real: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(root_real)
    except (OSError, ValueError):
        return False


def _entries(root: Path, rel: str, fl: FileList, root_real: Path):
    """(path, stat) of each entry of root/rel, sorted by name. Hidden entries, symbolic links leading out
    of the folder and entries that cannot be read go to the report instead."""
    try:
        entries = sorted(os.scandir(root / rel), key=lambda e: os.fsencode(e.name))
    except OSError:
        fl.skip(UNREADABLE, rel or ".")
        return
    for e in entries:
        path = f"{rel}/{e.name}" if rel else e.name
        if e.name.startswith("."):
            fl.skip(HIDDEN, path)
        elif e.is_symlink() and not _inside(root / path, root_real):
            fl.skip(OUTSIDE, path)
        else:
            try:
                yield path, os.stat(root / path)
            except OSError:
                fl.skip(UNREADABLE, path)


def _walk(root: Path, rel: str, found: list[str], fl: FileList, root_real: Path, seen: set) -> None:
    """Every regular file under root/rel (recursive), sorted by name; special files go to the report.
    Directory links inside the folder are followed once."""
    for path, st in _entries(root, rel, fl, root_real):
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key not in seen:  # a link back to a parent would loop
                seen.add(key)
                _walk(root, path, found, fl, root_real, seen)
        elif stat.S_ISREG(st.st_mode):
            found.append(path)
            fl.stats.append((st.st_size, st.st_mtime_ns))
        else:
            fl.skip(NOT_FILE, path)
        if len(found) > MAX_FILES:
            raise DatasetError(f"{root} holds more than {MAX_FILES:,} files; point --image-folder at the images only")


def scan_folder(root: str | os.PathLike) -> FileList:
    """One subfolder per class (like torchvision's ImageFolder); images may sit deeper inside it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"--image-folder {root} does not exist or is not a folder")
    root_real = Path(os.path.realpath(root))
    fl = FileList(root, [], [], [])
    seen = {(root.stat().st_dev, root.stat().st_ino)}
    names: dict[str, int] = {}
    for name, st in _entries(root, "", fl, root_real):
        if stat.S_ISDIR(st.st_mode):
            seen.add((st.st_dev, st.st_ino))
            found, stats_before = [], len(fl.stats)
            _walk(root, name, found, fl, root_real, seen)
            if not found:
                fl.skip("empty class folder", name)
                del fl.stats[stats_before:]
                continue
            label = len(fl.class_names)
            fl.class_names.append(_unique(display_name(name) or f"class {label}", names))
            fl.files += found
            fl.labels += [label] * len(found)
        elif stat.S_ISREG(st.st_mode):
            fl.skip(LOOSE, name)
        else:
            fl.skip(NOT_FILE, name)
    return fl


def _unique(name: str, taken: dict[str, int]) -> str:
    """Distinct display names: two folders whose names differ only in undecodable bytes stay two classes."""
    base, n = name, taken.get(name, 0)
    while name in taken:
        n += 1
        name = f"{base[: MAX_NAME_CHARS - 6]} ({n})"
    taken[name] = 1
    return name


def scan_csv(labels_file: str | os.PathLike, root: str | os.PathLike | None = None) -> FileList:
    """Rows "path,label" (a header row "path,label" is optional); paths relative to ``root`` (default: the
    CSV's folder). Class order: labels sorted by name."""
    labels_file = Path(labels_file)
    if not labels_file.is_file():
        raise DatasetError(f"--labels {labels_file} does not exist or is not a file")
    root = Path(root) if root is not None else labels_file.parent
    root_real = Path(os.path.realpath(root))
    fl = FileList(root, [], [], [])
    rows, seen = [], set()
    with open(labels_file, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if n == 1 and [c.strip().lower() for c in row] == ["path", "label"]:
                continue
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                fl.skip(BAD_ROW, f"line {n}")
                continue
            path, label = row[0].strip(), row[1].strip()
            if path in seen:
                fl.skip(DUPLICATE, path)
                continue
            seen.add(path)
            target = root / path
            if Path(path).is_absolute() or not _inside(target, root_real):
                fl.skip(OUTSIDE if target.is_symlink() else "path leading out of the folder", path)
                continue
            if any(part.startswith(".") for part in Path(path).parts):
                fl.skip(HIDDEN, path)
                continue
            try:
                st = os.stat(target)
            except FileNotFoundError:
                fl.skip(MISSING, path)
                continue
            except OSError:
                fl.skip(UNREADABLE, path)
                continue
            if not stat.S_ISREG(st.st_mode):
                fl.skip(NOT_FILE, path)
                continue
            rows.append((path, label, (st.st_size, st.st_mtime_ns)))
            if len(rows) > MAX_FILES:
                raise DatasetError(f"{labels_file} lists more than {MAX_FILES:,} files")
    names: dict[str, int] = {}
    order = sorted({label for _, label, _ in rows})
    index = {label: i for i, label in enumerate(order)}
    fl.class_names = [_unique(display_name(label) or f"class {i}", names) for i, label in enumerate(order)]
    for path, label, st in rows:
        fl.files.append(path)
        fl.labels.append(index[label])
        fl.stats.append(st)
    return fl


# ----------------------------------------------------------------------------- decoding

class Skip(Exception):
    """One file cannot be used; ``reason`` is one of the report's words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def open_image(path: Path) -> Image.Image:
    """Open (headers only) and refuse decompression bombs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Skip(BOMB) from None
    except UnidentifiedImageError:
        raise Skip(NOT_IMAGE) from None
    except PermissionError:
        raise Skip(UNREADABLE) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise Skip(CORRUPT) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise Skip(CORRUPT)
    if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        img.close()
        raise Skip(BOMB)
    return img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-/32-bit integer and float greyscale to 8 bits: integers by 65535 -> 255 (values up to 255 in a
    32-bit image are kept as they are), floats in [0, 1] by 1 -> 255, other floats clipped to 0..255."""
    a = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
    elif img.mode.startswith("I;16") or (a.size and a.max() > 255):
        a = a / 257.0
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L")


def _flatten(img: Image.Image) -> Image.Image:
    """Any Pillow mode to "L" or "RGB" by the module's stated rules."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        composed = Image.alpha_composite(white, rgba)
        return composed.convert("L" if img.mode in ("LA", "La") else "RGB")
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _to_8bit(img)
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One file as uint8 (channels, size, size), by the stated rules; raises Skip with the reason."""
    img = open_image(path)
    try:
        with img:
            if img.format == "JPEG":  # DCT-domain downscaling: 2-8x faster decoding of large photos
                img.draft("L" if channels == 1 else "RGB", (size, size))
            try:
                img.load()
                img = ImageOps.exif_transpose(img)
                img = _flatten(img)
            except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
                raise Skip(CORRUPT) from None
            img = img.convert("L" if channels == 1 else "RGB")
            w, h = img.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            img = img.resize((size, size), Image.Resampling.LANCZOS, box=box)
            a = np.asarray(img, dtype=np.uint8)
    except MemoryError:
        raise Skip(BOMB) from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def probe(path: Path) -> tuple[int, bool] | None:
    """(shorter side, stored as greyscale) from the header alone, or None when the file is unusable."""
    try:
        with open_image(path) as img:
            return min(img.size), img.mode in GREY_MODES
    except Skip:
        return None


def nearest_size(side: float) -> int:
    """The supported image size nearest to ``side`` (ties go to the larger)."""
    return min(IMAGE_SIZES, key=lambda s: (abs(s - side), -s))


def _progress(total: int, what: str, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=what, disable=not show, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)


# ----------------------------------------------------------------------------- the cache

def cache_root() -> Path:
    return default_cache_dir() / "image-folders"


def _cache_file(key: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{64}", key or ""):
        raise DatasetError(f"not a cache key: {shown_path(str(key))!r}")
    return cache_root() / f"{key}.safetensors"


def _save_cache(key: str, images: np.ndarray, labels: np.ndarray, keys: np.ndarray, info: dict) -> None:
    from safetensors.torch import save

    data = save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels),
                 "keys": torch.from_numpy(keys)}, metadata={"cgan_image_folder": json.dumps(info)})
    atomic_write(_cache_file(key), lambda f: f.write(data))


def _load_cache(key: str):
    """(images, labels, keys, info) from the cache, or None when there is no usable entry."""
    from safetensors import SafetensorError, safe_open

    file = _cache_file(key)
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as f:
            info = json.loads((f.metadata() or {})["cgan_image_folder"])
            images, labels, keys = f.get_tensor("images"), f.get_tensor("labels"), f.get_tensor("keys")
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
        return None  # a damaged cache entry is decoded again, never trusted
    ok = (images.dtype == torch.uint8 and images.ndim == 4 and labels.dtype == torch.int64 and keys.dtype == torch.int64
          and len(images) == len(labels) == len(keys) and isinstance(info, dict))
    return (images, labels, keys, info) if ok else None


def path_key(path: str) -> int:
    """A stable 63-bit number per relative path: the held-out split sorts by it."""
    return int.from_bytes(hashlib.sha256(os.fsencode(path)).digest()[:8], "big") >> 1


# ----------------------------------------------------------------------------- the whole pipeline

@dataclass
class FolderSource:
    """Where a folder dataset's images are and how they are prepared: what a run's config records."""

    image_folder: str | None
    labels_file: str | None
    image_size: int = 0          # 0: choose from the images
    channels: int = 0            # 0: choose from the images
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    seed: int = 0

    def scan(self) -> FileList:
        if self.labels_file:
            return scan_csv(self.labels_file, self.image_folder)
        if not self.image_folder:
            raise DatasetError("name the images with --image-folder DIR (one subfolder per class) or --labels FILE.csv")
        return scan_folder(self.image_folder)

    @property
    def where(self) -> str:
        return self.labels_file or self.image_folder or "?"


def choose_defaults(fl: FileList, src: FolderSource, progress: bool) -> tuple[int, int]:
    """--image-size and --channels for the ones not given, from the files' headers (cached per file list)."""
    if src.image_size and src.channels:
        return src.image_size, src.channels
    file = cache_root() / f"defaults-{fl.fingerprint('defaults')}.json"
    found = None
    try:
        found = json.loads(file.read_text())
        side, grey = float(found["median_side"]), bool(found["all_grey"])
    except (OSError, ValueError, KeyError, TypeError):
        found = None
    if found is None:
        with _progress(len(fl.files), "reading image headers", progress) as bar, \
                ThreadPoolExecutor(real_core_count()) as pool:
            probes = []
            for p in pool.map(probe, (fl.root / f for f in fl.files), chunksize=64):
                probes.append(p)
                bar.update()
        usable = [p for p in probes if p is not None]
        if not usable:
            raise DatasetError(f"{src.where}: none of the {len(fl.files):,} files is an image Pillow can read")
        side, grey = statistics.median(p[0] for p in usable), all(p[1] for p in usable)
        try:
            atomic_write_text(file, json.dumps({"median_side": side, "all_grey": grey}))
        except OSError:
            pass  # only a missed shortcut for next time
    return (src.image_size or nearest_size(side)), (src.channels or (1 if grey else 3))


def decode_all(fl: FileList, size: int, channels: int, progress: bool,
               threads: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode every listed file in parallel into one preallocated uint8 array; returns (images of the
    files that decoded, their indices into fl.files, timing)."""
    n = len(fl.files)
    need = n * channels * size * size
    if need > MAX_DECODED_BYTES:
        raise DatasetError(f"{n:,} images of {channels}x{size}x{size} need {need / 2**30:.1f} GiB decoded, more than "
                           f"the {MAX_DECODED_BYTES / 2**30:.0f} GiB this tool holds in memory: use fewer images, a "
                           f"smaller --image-size or --channels 1")
    out = np.empty((n, channels, size, size), np.uint8)
    ok = np.zeros(n, bool)
    reasons: list[str | None] = [None] * n

    def one(i: int) -> None:
        try:
            out[i] = decode(fl.root / fl.files[i], size, channels)
            ok[i] = True
        except Skip as e:
            reasons[i] = e.reason

    threads = threads or real_core_count()
    t = time.perf_counter()
    with _progress(n, "decoding images", progress) as bar, ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(one, range(n), chunksize=16), start=1):
            bar.update()
            if done % 256 == 0:
                bar.set_postfix(skipped=int(done - ok[:done].sum()), refresh=False)
    seconds = time.perf_counter() - t
    for i, r in enumerate(reasons):
        if r is not None:
            fl.skip(r, fl.files[i])
    index = np.flatnonzero(ok)
    return out[index] if len(index) < n else out, index, {
        "seconds": round(seconds, 3), "images_per_second": round(n / seconds, 1) if seconds > 0 else None,
        "threads": threads}


def build_report(fl: FileList, labels: np.ndarray, class_names: list[str], timing: dict, size: int,
                 channels: int, src: FolderSource) -> dict:
    counts = np.bincount(labels, minlength=len(class_names)) if len(labels) else np.zeros(len(class_names), int)
    skipped = {reason: {"count": len(paths), "examples": [shown_path(p) for p in paths[:EXAMPLES_PER_REASON]]}
               for reason, paths in sorted(fl.skipped.items())}
    warnings_ = [f"class {name!r} has only {int(c)} image{'s' if c != 1 else ''}; a class needs at least "
                 f"{MIN_CLASS_IMAGES} (hundreds are better) to be learned"
                 for name, c in zip(class_names, counts) if c < MIN_CLASS_IMAGES]
    return {"source": shown_path(src.where), "image_size": size, "channels": channels,
            "images": int(len(labels)), "files_listed": len(fl.files),
            "classes": {name: int(c) for name, c in zip(class_names, counts)},
            "skipped": skipped, "warnings": warnings_, "decode": timing}


def format_report(report: dict) -> str:
    """The report as the terminal and RUN/data_report.txt show it."""
    lines = [f"{report['source']}: {report['images']:,} images in {len(report['classes'])} classes, prepared as "
             f"{report['channels']}x{report['image_size']}x{report['image_size']}"]
    d = report.get("decode") or {}
    if d.get("from_cache"):
        lines.append(f"  read from the decode cache in {d.get('cache_seconds', 0):.1f} s")
    elif d.get("seconds") is not None:
        lines.append(f"  decoded {report['files_listed']:,} files in {d['seconds']:.1f} s "
                     f"({d.get('images_per_second') or 0:,.0f} images/s, {d.get('threads')} threads)")
    width = max(len(n) for n in report["classes"]) if report["classes"] else 0
    for name, c in report["classes"].items():
        lines.append(f"  {name:<{width}}  {c:>8,}")
    skipped = report.get("skipped") or {}
    if skipped:
        total = sum(s["count"] for s in skipped.values())
        lines.append(f"  skipped {total:,} file{'s' if total != 1 else ''}:")
        for reason, s in skipped.items():
            more = f" (and {s['count'] - len(s['examples']):,} more)" if s["count"] > len(s["examples"]) else ""
            lines.append(f"    {s['count']:,} {reason}: {', '.join(s['examples'])}{more}")
    for w in report.get("warnings") or []:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


def _refuse_unusable(report: dict, src: FolderSource) -> None:
    populated = [n for n, c in report["classes"].items() if c > 0]
    if not report["images"]:
        raise DatasetError(f"{src.where}: no usable images. A folder dataset is one subfolder per class holding "
                           f"image files (PNG, JPEG, ...), or --labels FILE.csv with rows path,label.\n"
                           + format_report(report))
    if len(populated) < 2:
        raise DatasetError(f"{src.where}: images of {len(populated)} class only; a class-conditional GAN needs at "
                           f"least two classes: put the images in one subfolder per class.\n" + format_report(report))


@dataclass
class FolderData:
    """A decoded folder: every usable image (both sides of the split), its class, its path key."""

    images: torch.Tensor     # uint8 (N, C, S, S)
    labels: torch.Tensor     # int64 (N,)
    keys: torch.Tensor       # int64 (N,): path_key of each image's file
    class_names: list[str]
    report: dict
    fingerprint: str

    def split(self, split: str, fraction: float, seed: int) -> torch.Tensor:
        """Indices of the "train" part, the held-out "test" part, or "all". Per class, the images sorted
        by a hash of (seed, path) and the first round(fraction * n) held out (at least one when the class
        has two or more images and fraction > 0)."""
        if split == "all":
            return torch.arange(len(self.labels))
        salt = int.from_bytes(hashlib.sha256(f"holdout:{seed}".encode()).digest()[:8], "big") >> 1
        order = torch.from_numpy(np.bitwise_xor(self.keys.numpy(), salt))
        held = []
        for c in range(len(self.class_names)):
            idx = torch.nonzero(self.labels == c).flatten()
            k = 0 if fraction <= 0 or len(idx) < 2 else min(len(idx) - 1, max(1, round(fraction * len(idx))))
            held.append(idx[torch.argsort(order[idx])[:k]])
        test = torch.sort(torch.cat(held)).values if held else torch.zeros(0, dtype=torch.long)
        if split == "test":
            return test
        mask = torch.ones(len(self.labels), dtype=torch.bool)
        mask[test] = False
        return torch.nonzero(mask).flatten()


def read_folder(src: FolderSource, progress: bool = True, log=None) -> tuple[FolderData, int, int]:
    """Scan, choose defaults, decode (or read the cache). Returns (data, image size, channels)."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if src.image_size and src.image_size not in IMAGE_SIZES:
        raise DatasetError(f"--image-size must be one of {', '.join(map(str, IMAGE_SIZES))}, not {src.image_size}")
    if src.channels not in (0, 1, 3):
        raise DatasetError(f"--channels must be 1 or 3, not {src.channels}")
    fl = src.scan()
    if not fl.files:
        report = build_report(fl, np.zeros(0, np.int64), fl.class_names, {}, src.image_size, src.channels, src)
        _refuse_unusable(report, src)
    size, channels = choose_defaults(fl, src, progress)
    key = fl.fingerprint(size, channels)
    t = time.perf_counter()
    cached = cached_folder(key)
    if cached is not None:
        cached.report["decode"] = {**cached.report.get("decode", {}), "from_cache": True,
                                   "cache_seconds": round(time.perf_counter() - t, 3)}
        return cached, size, channels
    images, index, timing = decode_all(fl, size, channels, progress)
    labels = np.asarray(fl.labels, np.int64)[index]
    keys = np.asarray([path_key(fl.files[i]) for i in index], np.int64)
    # Classes left without images (every file skipped) are dropped, and said so.
    counts = np.bincount(labels, minlength=len(fl.class_names))
    kept = [c for c in range(len(fl.class_names)) if counts[c] > 0]
    for c in range(len(fl.class_names)):
        if counts[c] == 0:
            fl.skip("class with no usable image (dropped)", fl.class_names[c])
    remap = np.full(len(fl.class_names), -1, np.int64)
    remap[kept] = np.arange(len(kept))
    labels = remap[labels]
    class_names = [fl.class_names[c] for c in kept]
    report = build_report(fl, labels, class_names, timing, size, channels, src)
    _refuse_unusable(report, src)
    try:
        _save_cache(key, images, labels, keys, {"class_names": class_names, "report": report})
    except OSError as e:
        log(f"warning: could not write the decode cache in {cache_root()} ({e}); the next run decodes again")
    return (FolderData(torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(keys), class_names,
                       report, key), size, channels)


def cached_folder(key: str) -> FolderData | None:
    """The decoded folder stored under ``key`` in the cache, or None."""
    cached = _load_cache(key)
    if cached is None:
        return None
    images, labels, keys, info = cached
    return FolderData(images, labels, keys, list(info["class_names"]), info["report"], key)


def folder_title(src: FolderSource) -> str:
    where = Path(src.image_folder) if src.image_folder else Path(src.labels_file or "?")
    return display_name(f"images from {where.name or where}", 120)


def load_folder_dataset(src: FolderSource, split: str = "train", progress: bool = True,
                        log=None) -> tuple[Dataset, FolderData]:
    """The ``split`` ("train", the held-out "test", or "all") of a folder as a Dataset, plus the decoded
    folder (its report and fingerprint)."""
    data, size, channels = read_folder(src, progress, log)
    src.image_size, src.channels = size, channels
    idx = data.split(split, src.holdout_fraction, src.seed)
    if len(idx) == 0:
        raise DatasetError(f"{src.where}: the {split} part is empty (holdout fraction {src.holdout_fraction})")
    ds = Dataset(FOLDER_DATASET, split, data.images[idx], data.labels[idx], tuple(data.class_names))
    return ds, data


# ----------------------------------------------------------------------------- one entry point for all data

def folder_source(cfg: dict, image_folder=None, labels_file=None) -> FolderSource:
    """The FolderSource a run's config (TrainConfig.to_dict()) records; ``image_folder``/``labels_file``
    replace the recorded paths (the images moved)."""
    return FolderSource(image_folder or cfg.get("image_folder"), labels_file or cfg.get("labels_file"),
                        int(cfg.get("image_size") or 0), int(cfg.get("channels") or 0),
                        float(cfg.get("holdout_fraction", DEFAULT_HOLDOUT_FRACTION)), int(cfg.get("seed", 0)))


def load_config_data(cfg: dict, split: str | None = None, data_dir=None, progress: bool = False,
                     expect: dict | None = None) -> Dataset:
    """The data a run's config names, built-in or a folder. For a folder run, ``data_dir`` (when given) is
    where its images are now (a folder, or the CSV); ``expect`` is the checkpoint's "dataset" entry: its
    "sha256" (of the split it trained on) must match, so changed images are refused, and its "fingerprint"
    finds the decode cache when the images are no longer here."""
    split = split or cfg.get("split", "train")
    if cfg.get("dataset") != FOLDER_DATASET:
        return load_dataset(cfg["dataset"], split, data_dir, cfg.get("emnist_split"))
    expect = expect or {}
    given = Path(data_dir) if data_dir else None
    src = folder_source(cfg, *((None, given) if given and given.is_file() else (given, None)))
    if src.image_size not in IMAGE_SIZES or src.channels not in (1, 3):
        raise DatasetError("the config records no valid image size or channels for its folder dataset")
    here = bool(src.labels_file and Path(src.labels_file).is_file() or
                not src.labels_file and src.image_folder and Path(src.image_folder).is_dir())
    if here:
        data, _, _ = read_folder(src, progress)
    else:  # the images are gone from here, but their decoded copy may not be
        data = cached_folder(expect["fingerprint"]) if expect.get("fingerprint") else None
        if data is None:
            raise DatasetError(f"the images of this model were read from {shown_path(src.where)}, which is not "
                               f"here; pass the folder that holds them now (--image-folder, or --data-dir)")
    if expect.get("sha256"):
        trained = data.split(expect.get("split", cfg.get("split", "train")), src.holdout_fraction, src.seed)
        if data_fingerprint(data.images[trained], data.labels[trained]) != expect["sha256"]:
            raise DatasetError(f"the images in {shown_path(src.where)} are not the ones this model was trained on "
                               f"(files added, removed or changed since): not the same data")
    idx = data.split(split, src.holdout_fraction, src.seed)
    if len(idx) == 0:
        raise DatasetError(f"{shown_path(src.where)}: the {split} part is empty (holdout fraction {src.holdout_fraction})")
    return Dataset(FOLDER_DATASET, split, data.images[idx], data.labels[idx], tuple(data.class_names),
                   about={k: expect[k] for k in ("title", "license", "fingerprint", "sha256") if k in expect} or None)
