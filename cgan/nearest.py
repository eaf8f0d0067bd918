"""Nearest real images of a generated one: the search behind the studio's "Nearest real" view.

Two sources: the real images bundled with a checkpoint (a few per class, always there), and, when the
studio is given the dataset's files (``--data-dir``), every image the model was trained on, so that "this
sample is not a copy of a training image" is checked against all of them. Distances are L2 over pixel
values 0..255. The full search keeps the images as uint8 with their squared norms precomputed, and
scores them in blocks: ||x - g||^2 = ||x||^2 + ||g||^2 - 2 x.g, one matrix-vector product per block.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DatasetError, load_dataset
from .image_folder import FOLDER_DATASET, load_config_data

log = logging.getLogger("cgan.nearest")
BLOCK = 16_384   # images converted to float32 at a time (EMNIST ByMerge train: 697,932 images, 43 blocks)


def nearest_in(images: np.ndarray, g: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` images nearest to ``g`` (brute force, for the small bundled sample): (indices, distances)."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    d = np.sqrt(((flat - g.reshape(1, -1).astype(np.float32)) ** 2).sum(1))
    order = np.argsort(d, kind="stable")[:n]
    return order, d[order]


def own_images(meta: dict, root: Path):
    """A model trained on your own images: its images in ``root`` (the studio's --data-dir), or in the
    folder of ``root`` named like the one it was trained on; the CSV of a --labels run must sit in the
    same folder under its own name. Only paths under ``root`` are read (the names come from the
    checkpoint, which a visitor of a hosted studio may have written), and the pixels must be the ones it
    was trained on (the checkpoint's SHA-256)."""
    cfg = meta["config"]
    named = Path(str(cfg.get("image_folder") or cfg.get("labels_file") and Path(cfg["labels_file"]).parent or "")).name
    if named in ("", ".", ".."):
        raise DatasetError("the checkpoint does not name the folder of its images")
    if (root / named).is_dir():
        folder = root / named
    elif root.name == named:
        folder = root
    else:  # never decode some other folder only to find it is not the same data
        raise DatasetError(f"{root} holds no folder named {named!r}, the folder this model's images were in")
    if cfg.get("labels_file"):
        csv_name = Path(str(cfg["labels_file"])).name
        if csv_name in ("", ".", "..") or not (folder / csv_name).is_file():
            raise DatasetError(f"{folder} holds no {csv_name or 'labels CSV'} of this model's images")
        cfg = {**cfg, "image_folder": str(folder), "labels_file": str(folder / csv_name)}
    else:
        cfg = {**cfg, "image_folder": str(folder), "labels_file": None}
    return load_config_data(cfg, meta["dataset"].get("split", "train"), expect=meta["dataset"]), folder


@dataclass
class TrainingSetIndex:
    """Every training image of a checkpoint, flattened uint8, with squared norms, ready to search."""

    images: np.ndarray       # uint8 (N, D)
    labels: np.ndarray       # int64 (N,)
    norms: np.ndarray        # float64 (N,): ||x||^2
    shape: tuple[int, ...]   # one image as served: (H, W) or (H, W, 3)
    description: str         # "the 60,000 images of the fashion-mnist train split"

    @classmethod
    def for_checkpoint(cls, meta: dict, data_dir: str | os.PathLike) -> "TrainingSetIndex":
        """Load the split a checkpoint was trained on from ``data_dir`` (or its sub-folder named after the
        dataset). Refused unless the image count is the one recorded in the checkpoint."""
        ds = meta["dataset"]
        root = Path(data_dir)
        if ds["name"] == FOLDER_DATASET:
            data, folder = own_images(meta, root)
        else:
            folder = root / ds["name"] if (root / ds["name"]).is_dir() else root
            data = load_dataset(ds["name"], ds.get("split", "train"), folder, ds.get("emnist_split"))
        if ds.get("num_images") != len(data):
            raise DatasetError(f"{folder} holds {len(data):,} images of {ds['name']} ({ds.get('split')}), but the "
                               f"checkpoint was trained on {ds.get('num_images')}: not the same data")
        x = data.images.numpy()
        shape = (x.shape[2], x.shape[3]) if x.shape[1] == 1 else (x.shape[2], x.shape[3], 3)
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
        flat = np.ascontiguousarray(x.reshape(len(x), -1))
        norms = np.concatenate([(flat[i:i + BLOCK].astype(np.float64) ** 2).sum(1) for i in range(0, len(flat), BLOCK)])
        split = (f"{ds['emnist_split']} " if ds.get("emnist_split") else "") + ds.get("split", "train")
        what = "your" if ds["name"] == FOLDER_DATASET else f"the {ds['name']}"
        return cls(flat, data.labels.numpy(), norms, shape,
                   f"all {len(flat):,} images of {what} {split} split it was trained on")

    def search(self, g: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The ``n`` nearest training images to ``g``: (indices, distances, seconds taken)."""
        t = time.perf_counter()
        q = g.reshape(-1).astype(np.float64)  # float64: every term is an exact integer, so a copy is at 0
        qq = float((q ** 2).sum())
        d2 = np.empty(len(self.images), np.float64)
        for i in range(0, len(self.images), BLOCK):
            d2[i:i + BLOCK] = self.norms[i:i + BLOCK] + qq - 2.0 * (self.images[i:i + BLOCK].astype(np.float64) @ q)
        order = np.argpartition(d2, min(n, len(d2) - 1))[:n] if len(d2) > n else np.arange(len(d2))
        order = order[np.lexsort((order, d2[order]))]
        return order, np.sqrt(np.maximum(d2[order], 0.0)), time.perf_counter() - t

    def image(self, i: int) -> np.ndarray:
        return self.images[i].reshape(self.shape)
