"""The evaluator: a small CNN classifier trained on one dataset's real images, used to judge generators.

Inception features mean nothing on 28x28 grayscale digits, so (as the field does for such data) every
metric of ``cgan.evaluate`` is computed with a classifier trained on the dataset itself:

  * its predictions give GAN-test (conditional accuracy of generated images);
  * its penultimate layer (``features``, 128-d after global average pooling, a linear layer, batch norm
    and ReLU) is the embedding for the Frechet distance and k-NN precision/recall;
  * ``train_evaluator`` is also the recipe of the GAN-train classifier (trained on generated images).

Command (cgan/evaluator_cli.py)::

    python -m cgan.evaluator train --dataset mnist --data-dir ../shared/data/mnist --split test --out checkpoints/mnist
    python -m cgan.evaluator info checkpoints/mnist

``--split test`` (MNIST offline, EMNIST ByMerge): a fixed, seeded, class-stratified split of that one
split; 80% train the evaluator, 20% are held out. ``--split train`` (Fashion-MNIST): the train split
trains it, the test split is held out. The file records which (the held-out indices themselves for a
seeded split), so ``cgan.evaluate`` uses exactly the images the evaluator never saw.

File format: ``evaluator.safetensors`` holds the weights under ``model.``, the held-out indices as
``split.heldout_index`` (seeded split only), and a JSON header in the safetensors metadata under the key
``cgan_evaluator`` (architecture, classes, dataset, protocol, training record, held-out accuracy).
Nothing is unpickled; every field is checked before use and a bad file raises an error naming it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open

from .checkpoints import EVALUATOR_FILE, CheckpointError, load_module, write_tensor_file
from .data import DATASETS, EMNIST_SPLITS, DatasetError, data_fingerprint, load_dataset
from .image_folder import FOLDER_DATASET, IMAGE_SIZES, load_config_data

FORMAT = "cgan-studio-evaluator"
FORMAT_VERSION = 1
HEADER_KEY = "cgan_evaluator"
MAX_HEADER_CHARS = 1 << 20
ARCH = "cnn4-gap"
DEFAULT_WIDTH = 32
DEFAULT_FEATURE_DIM = 128
DEFAULT_HELDOUT_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
# Epochs that reach the accuracy quoted in the docs on each dataset (a few minutes to ~25 min on 1 CPU thread).
DEFAULT_EPOCHS = {"mnist": 30, "fashion-mnist": 15, "emnist": 8}


class EvaluatorError(CheckpointError):
    """An evaluator file cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------- the network

def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class EvaluatorNet(nn.Module):
    """conv(w) pool conv(2w) conv(2w) pool conv(4w) -> global average pool -> linear(D) BN ReLU -> [dropout]
    -> linear(K).

    Global average pooling instead of a flattened dense layer keeps the file small (about 0.6 MB at
    width 32) at no cost in accuracy here, and works for any image size divisible by 4. The D-dim
    post-ReLU layer is the feature space (like Inception's pool layer in FID)."""

    def __init__(self, num_classes: int, channels: int = 1, size: int = 28, width: int = DEFAULT_WIDTH,
                 feature_dim: int = DEFAULT_FEATURE_DIM, dropout: float = 0.3):
        super().__init__()
        self.num_classes, self.channels, self.size = num_classes, channels, size
        w = width
        self.body = nn.Sequential(
            *_conv_bn_relu(channels, w), nn.MaxPool2d(2),
            *_conv_bn_relu(w, 2 * w), *_conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv_bn_relu(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(4 * w, feature_dim, bias=False), nn.BatchNorm1d(feature_dim),
                                   nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (B, C, H, W) in [-1, 1] -> (B, D) penultimate features."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


def to_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float [-1, 1], the normalisation the generators use too."""
    return images_u8.float() / 127.5 - 1.0


def random_shift(x_u8: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], filling with black.

    The only augmentation: digits, letters and clothes keep their class under small shifts, while flips
    or rotations would turn some digits and letters into other symbols."""
    if max_shift <= 0:
        return x_u8
    b, _, h, w = x_u8.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (2, b), generator=gen).to(x_u8.device)
    padded = F.pad(x_u8, (max_shift,) * 4)
    rows = (torch.arange(h, device=x_u8.device)[None, :] + max_shift - shifts[0][:, None])  # (B, H)
    cols = (torch.arange(w, device=x_u8.device)[None, :] + max_shift - shifts[1][:, None])  # (B, W)
    batch = torch.arange(b, device=x_u8.device)[:, None, None, None]
    chan = torch.arange(x_u8.shape[1], device=x_u8.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _memory_format(device: torch.device):
    # Measured on CPU: channels-last convolutions train ~1.4x faster for this net; CUDA is fine either way.
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def train_evaluator(images: torch.Tensor, labels: torch.Tensor, num_classes: int, device: str | torch.device = "cpu",
                    epochs: int = 10, seed: int = 0, batch_size: int = 128, lr: float = 3e-3,
                    width: int = DEFAULT_WIDTH, feature_dim: int = DEFAULT_FEATURE_DIM, max_shift: int = 2,
                    log=None) -> EvaluatorNet:
    """Train a classifier of the evaluator's kind on uint8 (N, C, H, W) images and int64 labels.

    Used for the evaluator itself (real images) and for GAN-train (generated images), so both are the
    same recipe: AdamW with a one-cycle learning rate, random shifts of up to ``max_shift`` pixels.
    The whole set sits on ``device`` as uint8 and batches are gathered by index there (no DataLoader),
    so on a GPU a 10k-image epoch is a few dozen kernel launches. Batch order, augmentation and dropout
    are all seeded by ``seed``. Returns the model in eval mode, on ``device``."""
    device = resolve_device(device)
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"train_evaluator needs uint8 images shaped (N, C, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match {len(images)} images")
    if len(images) == 0:
        raise ValueError("train_evaluator needs at least one image")
    labels = labels.long()
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels span {int(labels.min())}..{int(labels.max())}, outside 0..{num_classes - 1}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    _, c, h, w = images.shape
    torch.manual_seed(seed)  # initial weights and dropout masks
    gen = torch.Generator().manual_seed(seed)  # batch order and shifts (drawn on the CPU, same on every device)
    fmt = _memory_format(device)
    net = EvaluatorNet(num_classes, c, h, width, feature_dim).to(device, memory_format=fmt)
    x_all, y_all = images.to(device), labels.to(device)
    n = len(images)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size  # the incomplete last batch is dropped (batch norm dislikes tiny ones)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)[: steps_per_epoch * batch_size].view(steps_per_epoch, batch_size)
        perm = perm.to(device)
        t0, total = time.time(), torch.zeros((), device=device)
        for idx in perm:
            x = to_input(random_shift(x_all[idx], max_shift, gen)).contiguous(memory_format=fmt)
            loss = F.cross_entropy(net(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {float(total) / steps_per_epoch:.4f} "
                f"({time.time() - t0:.1f} s, {steps_per_epoch * batch_size / (time.time() - t0):.0f} img/s)")
    return net.eval()


# ----------------------------------------------------------------------------- splits

def stratified_split(labels: torch.Tensor, heldout_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices), both sorted: ``round(fraction * n_k)`` random images of each
    class k are held out. Stratified so every class has its share of held-out images (EMNIST's rarest
    ByMerge class has 415 images in all)."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {heldout_fraction}")
    gen = torch.Generator().manual_seed(seed)
    held = []
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero().flatten()
        held.append(idx[torch.randperm(len(idx), generator=gen)[: round(heldout_fraction * len(idx))]])
    heldout = torch.cat(held).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[heldout] = False
    return mask.nonzero().flatten(), heldout


# ----------------------------------------------------------------------------- images in, arrays out

def as_nchw(images, channels: int, size: int, what: str = "images") -> torch.Tensor:
    """Accept uint8 (N, H, W) / (N, H, W, 3) arrays (what samplers return) or (N, C, H, W); -> uint8 NCHW."""
    t = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    if t.dtype != torch.uint8:
        raise ValueError(f"{what} must be uint8 (0..255), got {t.dtype}")
    shape = tuple(t.shape)
    if t.ndim == 3 and channels == 1 and shape[1:] == (size, size):
        return t[:, None]
    if t.ndim == 4 and shape[1:] == (channels, size, size):
        return t
    if t.ndim == 4 and channels == 3 and shape[1:] == (size, size, 3):
        return t.permute(0, 3, 1, 2)
    want = f"(N, {size}, {size})" if channels == 1 else f"(N, {size}, {size}, 3)"
    raise ValueError(f"{what} have shape {shape}; this evaluator expects {want} or (N, {channels}, {size}, {size})")


# ----------------------------------------------------------------------------- the loaded evaluator

@dataclass
class Evaluator:
    """A trained evaluator with its header (classes, dataset, protocol). Inputs are uint8 upright images."""

    net: EvaluatorNet
    header: dict
    file: Path
    heldout_index: torch.Tensor | None = None  # seeded-split protocol: indices into the source split
    device: torch.device = torch.device("cpu")
    batch: int = 1000

    @property
    def num_classes(self) -> int:
        return int(self.header["model"]["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.header["class_names"])

    @property
    def dataset(self) -> str:
        return self.header["dataset"]["name"]

    @property
    def protocol(self) -> dict:
        return self.header["protocol"]

    @torch.inference_mode()
    def _run(self, images, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.header["model"]
        x_all = as_nchw(images, m["channels"], m["size"])
        fmt = _memory_format(self.device)
        feats, logits = [], []
        for i in range(0, len(x_all), self.batch):
            x = to_input(x_all[i:i + self.batch].to(self.device)).contiguous(memory_format=fmt)
            f = self.net.features(x)
            feats.append(f.float().cpu())
            if what == "logits":
                logits.append(self.net.classifier(f).float().cpu())
        d = self.net.classifier.in_features
        f = torch.cat(feats) if feats else torch.zeros(0, d)
        lg = torch.cat(logits) if logits else torch.zeros(0, self.num_classes)
        return f, lg

    def logits(self, images) -> np.ndarray:
        """float32 (N, K) class scores."""
        return self._run(images, "logits")[1].numpy()

    def predict(self, images) -> np.ndarray:
        """int64 (N,) predicted class indices."""
        return self.logits(images).argmax(1).astype(np.int64)

    def features(self, images) -> np.ndarray:
        """float32 (N, D) penultimate features: the space of the Frechet distance and precision/recall."""
        return self._run(images, "features")[0].numpy()

    def features_and_predictions(self, images) -> tuple[np.ndarray, np.ndarray]:
        """Both in one pass (the evaluation needs both for every image set)."""
        f, lg = self._run(images, "logits")
        return f.numpy(), lg.argmax(1).numpy().astype(np.int64)


# ----------------------------------------------------------------------------- saving and loading

def evaluator_file(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file, else ``path/evaluator.safetensors``."""
    path = Path(path)
    return path / EVALUATOR_FILE if path.is_dir() else path


def save_evaluator(net: EvaluatorNet, header: dict, out: str | os.PathLike,
                   heldout_index: torch.Tensor | None = None) -> Path:
    """Write weights + header (+ held-out indices) atomically into ``out`` (a folder or a file path)."""
    out = Path(out)
    file = out / EVALUATOR_FILE if (out.is_dir() or out.suffix != ".safetensors") else out
    file.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if heldout_index is not None:
        tensors["split.heldout_index"] = heldout_index.to(torch.int32).contiguous()
    return write_tensor_file(file, tensors, metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})


def _check_header(h, file: Path) -> dict:
    def need(cond, problem):
        if not cond:
            raise EvaluatorError(f"{file}: {problem}")

    def int_in(d, key, lo, hi, where):
        v = d.get(key) if isinstance(d, dict) else None
        need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
             f"{where}.{key} must be an integer in [{lo}, {hi}], got {v!r}")

    need(isinstance(h, dict), "header is not a JSON object")
    need(h.get("format") == FORMAT, f"'format' is {h.get('format')!r}, expected {FORMAT!r}")
    need(h.get("format_version") == FORMAT_VERSION,
         f"format_version {h.get('format_version')!r} is not supported (this cgan-studio reads {FORMAT_VERSION})")
    m = h.get("model")
    need(isinstance(m, dict) and m.get("arch") == ARCH, f"model.arch must be {ARCH!r}")
    int_in(m, "num_classes", 2, 1000, "model")
    int_in(m, "channels", 1, 3, "model")
    int_in(m, "size", 8, 256, "model")
    int_in(m, "width", 1, 512, "model")
    int_in(m, "feature_dim", 1, 4096, "model")
    need(m["channels"] in (1, 3) and m["size"] % 4 == 0, "model: 1 or 3 channels and a size divisible by 4")
    names = h.get("class_names")
    need(isinstance(names, list) and len(names) == m["num_classes"]
         and all(isinstance(n, str) and 0 < len(n) <= 64 for n in names),
         "'class_names' must list one non-empty name per class")
    d = h.get("dataset")
    need(isinstance(d, dict) and (d.get("name") in DATASETS or d.get("name") == FOLDER_DATASET),
         f"dataset.name must be one of {', '.join(DATASETS)} or {FOLDER_DATASET!r} (your own images)")
    if d["name"] == FOLDER_DATASET:
        f = d.get("folder")
        need(isinstance(f, dict) and f.get("dataset") == FOLDER_DATASET and f.get("image_size") in IMAGE_SIZES
             and f.get("channels") in (1, 3) and isinstance(f.get("seed"), int)
             and isinstance(f.get("holdout_fraction"), (int, float)) and 0 <= f["holdout_fraction"] < 1
             and all(f.get(k) is None or isinstance(f[k], str) and len(f[k]) <= 4096
                     for k in ("image_folder", "labels_file")),
             "dataset.folder must describe the images (image_folder or labels_file, image_size, channels, "
             "holdout_fraction, seed)")
    need(d.get("emnist_split") in (None, *EMNIST_SPLITS), f"dataset.emnist_split {d.get('emnist_split')!r} is unknown")
    p = h.get("protocol")
    need(isinstance(p, dict) and p.get("kind") in ("seeded-split", "train-test"),
         "protocol.kind must be 'seeded-split' or 'train-test'")
    if p["kind"] == "seeded-split":
        need(p.get("split") in ("train", "test"), "protocol.split must be 'train' or 'test'")
        int_in(p, "num_images", 2, 10**8, "protocol")
    return h


def load_evaluator(folder_or_file: str | os.PathLike, device: str | torch.device = "cpu") -> Evaluator:
    """Load ``evaluator.safetensors`` (or the one inside a folder). Never unpickles; checks everything."""
    file = evaluator_file(folder_or_file)
    if not Path(folder_or_file).exists():
        raise EvaluatorError(f"{folder_or_file} does not exist; pass an {EVALUATOR_FILE} file or the checkpoint "
                             f"folder that holds one")
    if not file.is_file():
        raise EvaluatorError(f"{file}: missing; train one with `python -m cgan.evaluator train ... --out "
                             f"{file.parent}` or pass another with --evaluator")
    if file.stat().st_size < 8:
        raise EvaluatorError(f"{file}: truncated ({file.stat().st_size} bytes)")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise EvaluatorError(f"{file}: not a readable safetensors file ({e}); it is truncated or corrupt") from e
    if raw is None:
        raise EvaluatorError(f"{file}: no '{HEADER_KEY}' header in the safetensors metadata; not an evaluator file")
    if len(raw) > MAX_HEADER_CHARS:
        raise EvaluatorError(f"{file}: header larger than {MAX_HEADER_CHARS} characters; refusing it")
    try:
        header = _check_header(json.loads(raw), file)
    except json.JSONDecodeError as e:
        raise EvaluatorError(f"{file}: header is not valid JSON ({e})") from e
    m = header["model"]
    net = EvaluatorNet(m["num_classes"], m["channels"], m["size"], m["width"], m["feature_dim"])
    load_module(net, {k: v for k, v in tensors.items() if k.startswith("model.")}, file, "model.")
    heldout = None
    if header["protocol"]["kind"] == "seeded-split":
        heldout = tensors.get("split.heldout_index")
        n = header["protocol"]["num_images"]
        if heldout is None or heldout.ndim != 1 or heldout.dtype != torch.int32 or len(heldout) == 0:
            raise EvaluatorError(f"{file}: seeded-split protocol needs a 1-d int32 'split.heldout_index' tensor")
        heldout = heldout.long()
        if heldout.min() < 0 or heldout.max() >= n or len(torch.unique(heldout)) != len(heldout):
            raise EvaluatorError(f"{file}: split.heldout_index must hold distinct indices in [0, {n - 1}]")
    device = resolve_device(device)
    net = net.to(device, memory_format=_memory_format(device)).eval().requires_grad_(False)
    return Evaluator(net, header, file, heldout, device)


# ----------------------------------------------------------------------------- the train command

def check_fingerprint(evaluator: "Evaluator", split: str, images: torch.Tensor, labels: torch.Tensor,
                      where) -> None:
    """Refuse real data that is not what the evaluator's protocol was built on (when the file records it)."""
    expected = evaluator.protocol.get("sha256", {}).get(split)
    if expected is not None and data_fingerprint(images, labels) != expected:
        raise DatasetError(f"the {evaluator.dataset} {split} split read from {where} is not the data the evaluator "
                           f"{evaluator.file} was built on (SHA-256 differs); check --data-dir")


FOLDER_KEYS = ("dataset", "split", "image_folder", "labels_file", "image_size", "channels", "holdout_fraction", "seed")


def folder_spec(config: dict) -> dict:
    """What an evaluator records of a run trained on your own images: where they are and how they were
    prepared and split (a subset of the run's TrainConfig)."""
    return {k: config.get(k) for k in FOLDER_KEYS}


def load_split(dataset: dict, split: str, data_dir=None):
    """One split of the data an evaluator header's "dataset" entry names. For your own images "train" is
    the part a run trained on and "test" the part it held out; ``data_dir`` is where the images are now."""
    if dataset["name"] == FOLDER_DATASET:
        return load_config_data(dataset["folder"], split, data_dir)
    return load_dataset(dataset["name"], split, data_dir, dataset.get("emnist_split"))


def evaluator_splits(name: str, split: str, data_dir, emnist_split: str | None, heldout_fraction: float,
                     seed: int, folder: dict | None = None):
    """(train images, train labels, held-out images, held-out labels, protocol dict, held-out index or None).
    ``folder``: your own images (a folder_spec); their held-out part is held out here too."""
    where = {"name": name, "emnist_split": emnist_split, "folder": folder}
    if folder is not None and split != "train":
        raise DatasetError("an evaluator for your own images trains on the run's training part and holds out its "
                           "held-out part (--split train)")
    if split == "train":
        tr = load_split(where, "train", data_dir)
        try:
            te = load_split(where, "test", data_dir)
        except DatasetError as e:
            raise DatasetError(f"--split train holds out the test split, which could not be loaded: {e}") from e
        protocol = {"kind": "train-test", "train_split": "train", "heldout_split": "test",
                    "num_train": len(tr), "num_heldout": len(te),
                    "sha256": {"train": data_fingerprint(tr.images, tr.labels),
                               "test": data_fingerprint(te.images, te.labels)},
                    "description": f"the {name} train split ({len(tr)} images) trains the evaluator; "
                                   f"the test split ({len(te)} images) is held out"}
        if folder is not None:
            protocol["description"] = (
                f"your images: the part a run trains on ({len(tr)} images) trains the evaluator; the part it holds "
                f"out ({len(te)} images, {folder['holdout_fraction']:.0%} per class, seed {folder['seed']}) is held out")
        return tr.images, tr.labels, te.images, te.labels, protocol, None, tr.class_names
    if split != "test":
        raise DatasetError(f"--split must be 'train' (train split trains, test split held out) or 'test' "
                           f"(a seeded split of the test split), not {split!r}")
    ds = load_dataset(name, "test", data_dir, emnist_split)
    train_idx, held_idx = stratified_split(ds.labels, heldout_fraction, seed)
    protocol = {"kind": "seeded-split", "split": "test", "num_images": len(ds), "heldout_fraction": heldout_fraction,
                "seed": seed, "num_train": len(train_idx), "num_heldout": len(held_idx),
                "sha256": {"test": data_fingerprint(ds.images, ds.labels)},
                "description": f"the {name} test split ({len(ds)} images) is split per class with seed {seed}: "
                               f"{len(train_idx)} train the evaluator, {len(held_idx)} "
                               f"({heldout_fraction:.0%}) are held out (indices stored in the file)"}
    return (ds.images[train_idx], ds.labels[train_idx], ds.images[held_idx], ds.labels[held_idx], protocol,
            held_idx, ds.class_names)


def heldout_report(ev: Evaluator, images: torch.Tensor, labels: torch.Tensor) -> dict:
    from .metrics import accuracy, balanced_accuracy, per_class_accuracy

    pred = ev.predict(images)
    y = labels.numpy()
    per = per_class_accuracy(pred, y, ev.num_classes)
    return {"accuracy": accuracy(pred, y), "balanced_accuracy": balanced_accuracy(pred, y, ev.num_classes),
            "per_class": {n: (None if math.isnan(a) else round(float(a), 5)) for n, a in zip(ev.class_names, per)},
            "num_images": len(y)}


def make_header(net: EvaluatorNet, class_names, dataset: str, emnist_split: str | None, protocol: dict,
                training: dict, folder: dict | None = None) -> dict:
    """The JSON header of an evaluator file. ``protocol`` is {"kind": "train-test", ...} or
    {"kind": "seeded-split", "split": ..., "num_images": ...} with the held-out indices saved beside it."""
    width = net.body[0].out_channels
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"arch": ARCH, "num_classes": net.num_classes, "channels": net.channels, "size": net.size,
                  "width": width, "feature_dim": net.classifier.in_features,
                  "features": f"{net.classifier.in_features}-d post-ReLU layer after global average pooling "
                              f"(penultimate)"},
        "class_names": list(class_names),
        "dataset": {"name": dataset, "emnist_split": emnist_split,
                    "license": DATASETS[dataset].license if dataset in DATASETS else None,
                    **({"folder": dict(folder)} if folder is not None else {})},
        "protocol": dict(protocol),
        "training": dict(training),
    }
    return _check_header(json.loads(json.dumps(header)), Path("<new evaluator>"))


if __name__ == "__main__":  # `python -m cgan.evaluator`: the command line sits above the protocol it uses
    from cgan.evaluator_cli import main

    sys.exit(main())
