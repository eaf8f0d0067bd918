"""Datasets: read the official files (IDX for the MNIST family, binary batches for CIFAR-10).

Every dataset becomes two tensors held in memory: ``images`` uint8 (N, C, H, W), upright, 0 = black,
and ``labels`` int64 (N,) in 0..K-1, plus human class names. The whole of a 28x28 dataset is a few tens
of megabytes, so the training loop keeps it on the device and draws batches by index (see
``training.py``); there is no per-item Python dataset object on the hot path.

Two ways to get the files:
  * offline: ``data_dir`` names a folder holding the official files (gzipped or not); nothing is
    downloaded;
  * online: torchvision downloads them into a cache folder, and the same readers parse them.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test", "all")
EMNIST_SPLITS = ("balanced", "bymerge", "byclass", "letters", "digits", "mnist")

DIGITS = tuple(string.digits)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# EMNIST "balanced" and "bymerge" merge the 15 lower-case letters that look like their capitals.
EMNIST_MERGED = tuple(string.digits + string.ascii_uppercase + "abdefghnqrt")
EMNIST_CLASSES = {
    "balanced": EMNIST_MERGED,
    "bymerge": EMNIST_MERGED,
    "byclass": tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase),
    "letters": tuple(string.ascii_lowercase),
    "digits": DIGITS,
    "mnist": DIGITS,
}


class DatasetError(RuntimeError):
    """A dataset cannot be loaded; the message says what to do about it."""


@dataclass(frozen=True)
class DatasetInfo:
    """Everything about one dataset: adding a dataset is one entry in DATASETS (plus a reader, if its files
    are in a format none of the readers below knows)."""

    name: str          # "mnist", "fashion-mnist", ...
    title: str         # human name for the UI
    channels: int
    size: int          # images are size x size
    license: str
    classes: tuple[str, ...] | dict[str, tuple[str, ...]]  # class names, or per EMNIST-style split
    reader: str = "idx"                                   # "idx" (MNIST family) or "cifar" (binary batches)
    torchvision: str | None = None                        # the torchvision class that downloads it


DATASETS = {
    "mnist": DatasetInfo("mnist", "MNIST digits", 1, 28, "CC BY-SA 3.0 (LeCun, Cortes, Burges)", DIGITS,
                         torchvision="MNIST"),
    "fashion-mnist": DatasetInfo("fashion-mnist", "Fashion-MNIST", 1, 28, "MIT (Zalando Research)", FASHION_CLASSES,
                                 torchvision="FashionMNIST"),
    "emnist": DatasetInfo("emnist", "EMNIST letters & digits", 1, 28,
                          "derived from NIST Special Database 19 (Cohen et al. 2017)", EMNIST_CLASSES,
                          torchvision="EMNIST"),
    "kmnist": DatasetInfo("kmnist", "Kuzushiji-MNIST", 1, 28, "CC BY-SA 4.0 (ROIS-DS / NII)", KMNIST_CLASSES,
                          torchvision="KMNIST"),
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", 3, 32, "see https://www.cs.toronto.edu/~kriz/cifar.html",
                           CIFAR10_CLASSES, reader="cifar"),
}


@dataclass
class Dataset:
    name: str
    split: str
    images: torch.Tensor          # uint8 (N, C, H, W), upright
    labels: torch.Tensor          # int64 (N,)
    class_names: tuple[str, ...]
    emnist_split: str | None = None
    about: dict | None = None     # a dataset outside DATASETS (your own images): title, license, fingerprint

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)


def class_names_for(name: str, emnist_split: str | None = None) -> tuple[str, ...]:
    if name not in DATASETS:
        raise DatasetError(unknown_dataset_message(name))
    classes = DATASETS[name].classes
    return classes[emnist_split or "balanced"] if isinstance(classes, dict) else classes


def unknown_dataset_message(name: str) -> str:
    return f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of a split's pixels and labels: "is this the same data?" The MNIST-family files share their
    names, so a wrong --data-dir (Fashion-MNIST's t10k files for MNIST) would otherwise load without
    complaint; a copied folder of your own images has new file dates but the same fingerprint."""
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- file readers

MAX_IDX_BYTES = 1 << 30  # 1 GiB of pixels: EMNIST byclass train, the largest official file, holds 547 MB


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array. The header is read and checked first; then
    exactly the bytes it announces are read (streaming, for gzip), so a file larger or smaller than its
    header says, or a decompression bomb, is refused before its contents are held in memory."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DatasetError(f"{path} is not an IDX file (bad magic number)")
            dtype_code, ndim = head[2], head[3]
            if dtype_code != 0x08:
                raise DatasetError(f"{path}: only unsigned-byte IDX files are supported (type 0x{dtype_code:02x})")
            if not 1 <= ndim <= 4:
                raise DatasetError(f"{path}: {ndim} dimensions in the header; IDX image and label files have 1 to 3")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DatasetError(f"{path} is truncated (header incomplete)")
            shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            expected = math.prod(shape)  # Python integers: no overflow, however large the header's numbers
            if expected > MAX_IDX_BYTES:
                raise DatasetError(f"{path}: header says shape {shape} ({expected:,} bytes), more than the "
                                   f"{MAX_IDX_BYTES:,} this reader accepts; the file is corrupt or not a dataset file")
            data = bytearray(expected)
            got = f.readinto(memoryview(data)) if expected else 0
            while got < expected:  # gzip may return fewer bytes per call
                n = f.readinto(memoryview(data)[got:])
                if not n:
                    break
                got += n
            extra = len(f.read(1))
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # gzip raises these for truncated or non-gzip files
        raise DatasetError(f"cannot read IDX file {path}: {e}") from e
    if got != expected or extra:
        held = f"{got:,}" if got != expected else f"more than {expected:,}"
        raise DatasetError(f"{path}: header says shape {shape} ({expected:,} bytes) but the file holds {held} "
                           f"bytes; the file is truncated or corrupt, download it again")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    """The official file ``stem`` in ``folder`` (or its torchvision-style ``raw/``), gzipped or not."""
    for sub in (folder, folder / "raw"):
        for candidate in (sub / stem, sub / (stem + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def idx_stems(name: str, split: str, emnist_split: str | None) -> tuple[str, str]:
    """(images, labels) file names of one split, as the official distributions name them."""
    part = "train" if split == "train" else "t10k"
    if name == "emnist":
        part = "train" if split == "train" else "test"
        prefix = f"emnist-{emnist_split}-{part}"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    return f"{part}-images-idx3-ubyte", f"{part}-labels-idx1-ubyte"


def _read_idx_split(folder: Path, name: str, split: str, emnist_split: str | None):
    stems = idx_stems(name, split, emnist_split)
    found = [_find(folder, s) for s in stems]
    missing = [s for s, f in zip(stems, found) if f is None]
    if missing:
        return None, missing
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{found[0]} and {found[1]} do not match: images {images.shape}, labels {labels.shape}")
    images = images[:, None, :, :]
    if name == "emnist":
        # EMNIST stores every image transposed; fix it here, once, so nothing downstream sees it sideways.
        images = images.transpose(0, 1, 3, 2)
    labels = labels.astype(np.int64)
    if name == "emnist" and emnist_split == "letters":
        labels = labels - 1  # official letters labels are 1..26
    return (images, labels), []


CIFAR_BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def _read_cifar_split(folder: Path, split: str):
    """CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    roots = [folder, folder / "cifar-10-batches-bin"]
    root = next((r for r in roots if (r / CIFAR_BATCHES[split][0]).is_file()), folder)
    missing = [f for f in CIFAR_BATCHES[split] if not (root / f).is_file()]
    if missing:
        return None, missing
    chunks = []
    for f in CIFAR_BATCHES[split]:
        raw = np.fromfile(root / f, dtype=np.uint8)
        if raw.size % 3073:
            raise DatasetError(f"{root / f} is truncated or corrupt ({raw.size} bytes is not a whole number of records)")
        chunks.append(raw.reshape(-1, 3073))
    raw = np.concatenate(chunks)
    return (raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)), []


def _read_split(folder: Path, name: str, split: str, emnist_split: str | None):
    if DATASETS[name].reader == "cifar":
        return _read_cifar_split(folder, split)
    return _read_idx_split(folder, name, split, emnist_split)


# ----------------------------------------------------------------------------- downloads

CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"


def default_cache_dir() -> Path:
    return Path(os.environ.get("CGAN_DATA_CACHE", Path.home() / ".cache" / "cgan-studio" / "data"))


def download(name: str, cache_dir: Path, emnist_split: str | None) -> Path:
    """Download the official files with torchvision's helpers; returns the folder that holds them."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        if DATASETS[name].reader == "cifar":
            # The binary batches, not torchvision's CIFAR10 class: that one reads Python pickles.
            download_and_extract_archive(CIFAR10_BINARY_URL, str(cache_dir), md5=CIFAR10_BINARY_MD5)
            return cache_dir / "cifar-10-batches-bin"
        cls = getattr(tvd, DATASETS[name].torchvision)
        kwargs = {"split": emnist_split} if name == "emnist" else {}
        for train in (True, False):
            cls(str(cache_dir), train=train, download=True, **kwargs)
        return cache_dir / cls.__name__ / "raw"
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on failures
        raise DatasetError(
            f"could not download {name} into {cache_dir} ({e}). Without network access, put the official "
            f"files in a folder and pass it with --data-dir (e.g. --data-dir ../shared/data/{name})") from e


# ----------------------------------------------------------------------------- entry point

def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 emnist_split: str | None = None, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name. ``data_dir`` reads local official files; otherwise torchvision downloads."""
    if name not in DATASETS:
        raise DatasetError(unknown_dataset_message(name))
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if name == "emnist":
        emnist_split = emnist_split or "balanced"
        if emnist_split not in EMNIST_SPLITS:
            raise DatasetError(f"unknown EMNIST split {emnist_split!r}; choose one of: {', '.join(EMNIST_SPLITS)}")
    else:
        emnist_split = None

    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DatasetError(f"--data-dir {folder} does not exist or is not a folder")
    else:
        folder = download(name, Path(cache_dir) if cache_dir else default_cache_dir(), emnist_split)

    parts = ["train", "test"] if split == "all" else [split]
    arrays, missing = [], {}
    for part in parts:
        result, miss = _read_split(folder, name, part, emnist_split)
        if miss:
            missing[part] = miss
        else:
            arrays.append(result)
    if missing:
        lines = [f"{name} {part} split: missing {', '.join(m)} (or .gz) in {folder}" for part, m in missing.items()]
        hint = ""
        if split != "test" and "test" not in missing and _read_split(folder, name, "test", emnist_split)[1] == []:
            hint = " This folder holds only the test split: pass --split test to train on it."
        elif name == "emnist":
            hint = " EMNIST splits hold different images: use --emnist-split to name the split the files are for."
        raise DatasetError("; ".join(lines) + "." + hint +
                           " The official files come from the dataset's home page or torchvision's download (omit --data-dir).")
    images = np.concatenate([a[0] for a in arrays])
    labels = np.concatenate([a[1] for a in arrays])
    class_names = class_names_for(name, emnist_split)
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DatasetError(f"{name} labels span {labels.min()}..{labels.max()} but the dataset has "
                           f"{len(class_names)} classes; the label file does not belong to these images")
    info = DATASETS[name]
    if images.shape[1:] != (info.channels, info.size, info.size):
        raise DatasetError(f"{name} images have shape {images.shape[1:]}, expected "
                           f"{(info.channels, info.size, info.size)}")
    return Dataset(name, split, torch.from_numpy(np.ascontiguousarray(images)),
                   torch.from_numpy(labels), class_names, emnist_split)


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 array as the bytes of an IDX file (header, then the values)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if the name ends in .gz). Used by tests and tools."""
    payload = idx_bytes(array)
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
