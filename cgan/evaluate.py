"""Evaluate a generator against real data with the dataset's evaluator classifier.

    python -m cgan.evaluate CHECKPOINT [--data-dir DIR] [--quick] [--write] [--json FILE] [--device cpu]

CHECKPOINT is an exported folder, a checkpoint folder or a run folder (its latest checkpoint). The
evaluator is CHECKPOINT/evaluator.safetensors, or ``--evaluator PATH``. By default the results are only
printed (a table); ``--write`` merges them into CHECKPOINT/evaluation.json under "full" or "quick"
(checkpoint.json is never touched); ``--json FILE`` writes this run's JSON to FILE.

What is measured (Shmelkov et al. 2018; Kynkaanniemi et al. 2019), each beside its real-data reference:
  * conditional accuracy (GAN-test): evaluator accuracy on generated images w.r.t. the requested class,
    class-balanced and per class, beside the evaluator's accuracy on real held-out images (the ceiling);
  * GAN-train: a fresh classifier of the evaluator's kind trained only on generated images, tested on
    the real held-out images, beside the same recipe trained on as many real images (stored in the
    evaluator file when it was trained);
  * Frechet distance in the evaluator's 128-d features, generated vs real held-out, beside the
    real-vs-real floor at the same sample sizes and class mix; per class too;
  * precision / recall (k-NN manifolds, k = 3) in the same features, beside real-vs-real;
  * memorization: pixel distance of each generated image to its nearest GAN-training image, beside the
    same for real held-out images.

Each metric is one entry in METRICS (in this file): a function of the inputs every metric shares
(MetricInputs) and how the metric is shown. Adding a metric is one entry there (plus a pure function in
cgan/metrics.py for a new formula): the result dict, evaluation.json, the printed table and the model
card follow.

The protocol (which real images play which part, sample counts, seeds) is fixed per dataset and printed
with the results. ``--quick`` is a smaller version of it for tests and training-time monitoring (well
under a minute on 2 CPU cores); its numbers are noisier and are stored under their own key.

Python::

    from cgan.evaluate import evaluate, evaluate_sampler, load_real_data, protocol_for
    result = evaluate("checkpoints/mnist", data_dir="../shared/data/mnist", quick=True)
    # in a training loop, without files: wrap the EMA generator in a cgan.Sampler
    real = load_real_data(evaluator, data_dir, gan_split="test")            # once
    result = evaluate_sampler(sampler, evaluator, real, protocol_for("mnist", quick=True))
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checkpoints import CheckpointError, resolve_checkpoint
from .data import DatasetError
from .files import atomic_write_text
from .evaluator import (Evaluator, as_nchw, check_fingerprint, load_evaluator, load_split, stratified_split,
                        train_evaluator)
from .metrics import (accuracy, balanced_accuracy, frechet_distance, memorization, nan_to_none,
                      per_class_accuracy, precision_recall, shortfall_se)

RESULTS_FILE = "evaluation.json"
# Every class's conditional accuracy >= CLASS_TARGET of its ceiling; a class misses it when its shortfall
# is beyond CLASS_TARGET_SE standard errors (3, as for memorization: 47 classes are 47 chances of noise).
CLASS_TARGET, CLASS_TARGET_SE = 0.90, 3.0
REAL_SEED = 0  # real-side subsets and halves: fixed, so the floor and ceilings never change with --seed
# The quality targets of the shipped models (issue 12): conditional accuracy >= 0.99 of the ceiling, FD
# <= 3x the real-vs-real floor overall and <= 4x for every class, precision and recall each within 0.05
# of real vs real, and GAN-train per dataset (Fashion-MNIST's: the best published class-conditional
# result we know on this protocol family).
CONDITIONAL_TARGET, FD_TARGET, FD_CLASS_TARGET, PR_TOLERANCE = 0.99, 3.0, 4.0, 0.05
GAN_TRAIN_TARGETS = {"mnist": 0.985, "fashion-mnist": 0.862, "emnist": 0.84}


# ----------------------------------------------------------------------------- protocol

@dataclass(frozen=True)
class Protocol:
    """Sample counts and seeds of one evaluation. ``seed`` picks the generated latents and the GAN-train
    initialisation; the real-side subsets use the fixed REAL_SEED."""

    name: str                 # "full" or "quick"
    per_class: int            # generated images per class for GAN-test (class-balanced)
    gan_train_images: int     # generated images that train the GAN-train classifier (real class mix)
    gan_train_epochs: int     # 0: skip GAN-train
    heldout_max: int          # real held-out images used at most (0: all)
    fd_max: int               # each of the two held-out halves for FD / precision / recall, at most
    memorization_max: int     # generated and held-out images checked for memorization, at most
    batch_size: int = 128     # GAN-train batch (the evaluator's recipe)
    k: int = 3                # k of the k-NN precision / recall
    seed: int = 0

    def reference_key(self) -> dict:
        """What a stored real-train reference (see ``real_train_reference``) depends on."""
        return {"gan_train_images": self.gan_train_images, "gan_train_epochs": self.gan_train_epochs,
                "heldout_max": self.heldout_max, "batch_size": self.batch_size}


# dataset -> (full, quick). EMNIST has 47 classes, so fewer GAN-test images per class.
# Fields: name, per_class, gan_train_images, gan_train_epochs, heldout_max, fd_max, memorization_max.
QUICK = Protocol("quick", 100, 1000, 15, 2000, 500, 300)
PROTOCOLS = {
    "mnist": (Protocol("full", 1000, 10_000, 10, 0, 5000, 2000), QUICK),
    "fashion-mnist": (Protocol("full", 1000, 10_000, 10, 0, 5000, 2000), QUICK),
    "emnist": (Protocol("full", 300, 14_100, 10, 0, 5000, 2000), replace(QUICK, per_class=20, gan_train_images=940)),
}
DEFAULT_PROTOCOLS = (Protocol("full", 500, 10_000, 10, 0, 5000, 2000), replace(QUICK, per_class=50))


def protocol_for(dataset: str, quick: bool = False, seed: int = 0) -> Protocol:
    full, fast = PROTOCOLS.get(dataset, DEFAULT_PROTOCOLS)
    return replace(fast if quick else full, seed=seed)


# ----------------------------------------------------------------------------- real data

@dataclass
class RealData:
    """The real images of the protocol, uint8 (N, C, H, W).

    heldout: images the evaluator never saw (ceilings, FD floor, precision/recall, GAN-train test);
    evaluator_train: the images that trained the evaluator (source of the real-train reference);
    gan_train: the GAN's training images minus the held-out ones (the memorization reference), or None."""

    dataset: str
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor
    evaluator_train_images: torch.Tensor
    evaluator_train_labels: torch.Tensor
    gan_train_images: torch.Tensor | None
    notes: list[str] = field(default_factory=list)


def load_real_data(evaluator: Evaluator, data_dir=None, gan_split: str | None = None) -> RealData:
    """Load the evaluator's protocol data from ``data_dir``; ``gan_split`` is the split the generator was
    trained on ("train", "test" or "all"; default: the split that trained the evaluator)."""
    name, p = evaluator.dataset, evaluator.protocol
    notes = []

    def load(split):
        ds = load_split(evaluator.header["dataset"], split, data_dir)
        if list(ds.class_names) != evaluator.class_names:
            raise DatasetError(f"{name} {split} classes {list(ds.class_names)[:5]}... differ from the evaluator's")
        check_fingerprint(evaluator, split, ds.images, ds.labels, data_dir or "the download cache")
        return ds

    if p["kind"] == "seeded-split":
        source = p["split"]
        ds = load(source)
        if len(ds) != p["num_images"]:
            raise DatasetError(f"the {name} {source} split in {data_dir} has {len(ds)} images, but the evaluator "
                               f"{evaluator.file} was trained on a split of {p['num_images']}; these are other files")
        mask = torch.zeros(len(ds), dtype=torch.bool)
        mask[evaluator.heldout_index] = True
        held_x, held_y = ds.images[mask], ds.labels[mask]
        tr_x, tr_y = ds.images[~mask], ds.labels[~mask]
        heldout_split = source
        notes.append(f"evaluator: trained on {len(tr_y)} images of the {name} {source} split; {len(held_y)} "
                     f"({p.get('heldout_fraction', 0):.0%} per class, seed {p.get('seed')}) are held out")
    else:
        tr, te = load("train"), load("test")
        for got, key, split in ((len(tr), "num_train", "train"), (len(te), "num_heldout", "test")):
            if p.get(key) is not None and got != p[key]:
                raise DatasetError(f"the {name} {split} split in {data_dir} has {got} images; the evaluator "
                                   f"{evaluator.file} expects {p[key]}")
        held_x, held_y, tr_x, tr_y = te.images, te.labels, tr.images, tr.labels
        source, heldout_split = "train", "test"
        notes.append(f"evaluator: trained on the {name} train split ({len(tr_y)} images); the test split "
                     f"({len(held_y)} images) is held out")

    gan_split = gan_split or source
    if gan_split not in ("train", "test", "all"):
        raise ValueError(f"gan_split must be 'train', 'test' or 'all', got {gan_split!r}")
    parts, seen = [], False
    for part in (["train", "test"] if gan_split == "all" else [gan_split]):
        if part == heldout_split:
            seen = True
            if p["kind"] == "seeded-split":
                parts.append(tr_x)  # the rest of the split: everything but the held-out images
        elif part == source:
            parts.append(tr_x)
        else:
            parts.append(load(part).images)
    gan_train = torch.cat(parts) if parts else None
    if seen:
        notes.append(f"the GAN was trained on the {name} {gan_split} split, which includes the held-out images: "
                     f"they are unseen by the evaluator but NOT by the generator, so the FD floor, precision/recall "
                     f"and GAN-train test use data the generator has seen")
    else:
        notes.append(f"the GAN was trained on the {name} {gan_split} split; the held-out images are unseen by "
                     f"both the generator and the evaluator")
    if gan_train is None or len(gan_train) == 0:
        notes.append("memorization: no GAN-training images outside the held-out set; skipped")
        gan_train = None
    else:
        notes.append(f"memorization reference: the {len(gan_train)} GAN-training images outside the held-out set")
    return RealData(name, held_x, held_y, tr_x, tr_y, gan_train, notes)


def _subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """About ``n`` indices, the same share of every class (all of them when n is 0 or >= len)."""
    if n <= 0 or n >= len(labels):
        return torch.arange(len(labels))
    return stratified_split(labels, n / len(labels), seed)[1]


def _class_counts(total: int, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """``total`` split over classes in proportion to ``labels`` (largest remainders), at least 1 each."""
    freq = np.bincount(labels.numpy(), minlength=num_classes)[:num_classes].astype(np.float64)
    share = total * freq / freq.sum()
    counts = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return np.maximum(counts, 1)


@dataclass
class RealSplits:
    """The protocol's fixed real subsets (indices into ``RealData.heldout_*``)."""

    heldout: torch.Tensor   # held-out images used (capped at heldout_max)
    half_a: torch.Tensor    # FD floor / PR: half A (compared with B), the class mix of generated FD sets
    half_b: torch.Tensor    # the reference half


def protocol_subsets(real: RealData, protocol: Protocol) -> RealSplits:
    held = _subset(real.heldout_labels, protocol.heldout_max, REAL_SEED)
    a, b = stratified_split(real.heldout_labels[held], 0.5, REAL_SEED + 1)
    a, b = held[a], held[b]
    a = a[_subset(real.heldout_labels[a], protocol.fd_max, REAL_SEED + 2)]
    b = b[_subset(real.heldout_labels[b], protocol.fd_max, REAL_SEED + 3)]
    return RealSplits(held, a, b)


# ----------------------------------------------------------------------------- the classifier recipe

def gan_train_accuracy(images: torch.Tensor, labels: torch.Tensor, real: RealData, splits: RealSplits,
                       evaluator: Evaluator, protocol: Protocol, device=None) -> dict:
    """Train the evaluator's recipe on (images, labels); test on the protocol's real held-out images."""
    device = device or evaluator.device
    net = train_evaluator(images, labels, evaluator.num_classes, device, protocol.gan_train_epochs,
                          seed=protocol.seed, batch_size=protocol.batch_size,
                          width=evaluator.header["model"]["width"],
                          feature_dim=evaluator.header["model"]["feature_dim"])
    clf = Evaluator(net, evaluator.header, evaluator.file, None, torch.device(device))
    y = real.heldout_labels[splits.heldout].numpy()
    pred = clf.predict(real.heldout_images[splits.heldout])
    k = evaluator.num_classes
    return {"accuracy": accuracy(pred, y), "balanced_accuracy": balanced_accuracy(pred, y, k),
            "per_class": per_class_accuracy(pred, y, k), "num_train": len(labels), "num_test": len(y)}


def real_train_reference(evaluator: Evaluator, real: RealData, protocol: Protocol, device=None) -> dict:
    """GAN-train's recipe trained on *real* evaluator-train images with the same class counts (fewer where
    a class has fewer): what GAN-train would score if the generator were the data. Stored in the
    evaluator file by ``python -m cgan.evaluator train``, so evaluations do not pay for it."""
    splits = protocol_subsets(real, protocol)
    counts = _class_counts(protocol.gan_train_images, real.heldout_labels[splits.heldout], evaluator.num_classes)
    gen = torch.Generator().manual_seed(REAL_SEED + 4)
    picks = []
    for k, n in enumerate(counts):
        idx = (real.evaluator_train_labels == k).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    idx = torch.cat(picks)
    r = gan_train_accuracy(real.evaluator_train_images[idx], real.evaluator_train_labels[idx], real, splits,
                           evaluator, replace(protocol, seed=0), device)
    return {**protocol.reference_key(), "accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"],
            "num_train": r["num_train"], "num_test": r["num_test"]}


# ----------------------------------------------------------------------------- generation

def _generate(sampler, counts: np.ndarray, seed: int, channels: int, size: int):
    """counts[k] images of class k (images 0..counts[k]-1 of the seed, so smaller sets are prefixes)."""
    images, labels = [], []
    for k, n in enumerate(counts):
        if n == 0:
            continue
        x, y = sampler.sample([k], int(n), seed=seed)
        x = as_nchw(x, channels, size, what="generated images")
        y = torch.as_tensor(np.asarray(y)).long()
        if len(x) != n or y.shape != (n,) or bool((y != k).any()):
            raise ValueError(f"sampler returned {len(x)} images labelled {torch.unique(y).tolist()} when asked "
                             f"for {n} of class {k}")
        images.append(x)
        labels.append(y)
    return torch.cat(images), torch.cat(labels)


def _prefix_index(labels: torch.Tensor, counts: np.ndarray) -> torch.Tensor:
    """Indices of the first counts[k] images of each class k in a class-major set."""
    out = []
    for k, n in enumerate(counts):
        idx = (labels == k).nonzero().flatten()
        out.append(idx[: int(n)])
    return torch.cat(out)


# ----------------------------------------------------------------------------- the metrics

def _per_class_dict(names, values) -> dict:
    return {n: (None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 5))
            for n, v in zip(names, values)}


def _ratio(a, b):
    return a / b if b and not math.isnan(b) and not math.isnan(a) else float("nan")


def compared(generated: float, real: float) -> dict:
    """The result of a simple metric: its value on generated images, on real ones, and their ratio."""
    return {"generated": generated, "real": real, "ratio": _ratio(generated, real)}


@dataclass
class MetricInputs:
    """What ``evaluate_sampler`` prepares once and every metric reads. The generated set is class-major and
    holds, for each class, the most images any metric asks for; the index arrays pick each metric's set
    from it (image j of class k is the same image in every set, so smaller sets are prefixes)."""

    evaluator: Evaluator
    protocol: Protocol
    real: RealData
    splits: RealSplits
    generated_images: torch.Tensor        # uint8 (N, C, H, W)
    generated_labels: torch.Tensor        # (N,) int64: the class each image was asked for
    generated_features: np.ndarray        # (N, D) evaluator features
    generated_predictions: np.ndarray     # (N,) evaluator predictions
    test_index: np.ndarray                # GAN-test set: protocol.per_class images of every class
    fd_index: np.ndarray                  # FD / precision / recall set: half A's class mix
    train_counts: np.ndarray              # GAN-train images per class (the data's class mix; zeros: skipped)
    heldout_images: torch.Tensor          # the protocol's real held-out images (splits.heldout), uint8...
    heldout_labels: torch.Tensor          # ...their labels...
    heldout_predictions: np.ndarray       # ...and the evaluator's predictions of them
    features_a: np.ndarray                # real half A (the FD floor's other side) and its labels
    labels_a: torch.Tensor
    features_b: np.ndarray                # real half B (the reference of FD / precision / recall)
    labels_b: torch.Tensor
    device: object = None                 # where GAN-train trains (None: the evaluator's device)
    log: Callable[[str], None] = lambda s: None  # progress lines (the command prints them on stderr)


@dataclass(frozen=True)
class Metric:
    """One metric: adding a metric is one entry in METRICS (plus, for a new formula, a pure function in
    metrics.py). The entry is all that the result dict, evaluation.json, ``format_report`` and the model
    card's table need, so nothing else is edited.

    ``compute`` returns the dict stored under the metric's key, or None when it is not measured this time
    (e.g. memorization without GAN-training images). A simple metric returns ``compared(generated, real)``
    and is shown as one row, ``label`` with values in ``fmt`` (also in the model card); ``target`` =
    (field, ">=" or "<=", bound) adds a quality target on that field of its dict (the built-in targets,
    with their own rules and wording, stay in ``targets`` and the card's summary). Metrics with more to
    show give ``report_rows`` (entry -> rows of (label, generated, real, ratio[, fmt])); the model card
    keeps its own rows for those (model_card.CARD_ROWS)."""

    compute: Callable[[MetricInputs], dict | None]
    label: str
    fmt: str = "{:.4f}"
    target: tuple[str, str, float] | None = None
    report_rows: Callable[[dict], list[tuple]] | None = None

    def __post_init__(self):
        if self.target is not None and self.target[1] not in (">=", "<="):
            raise ValueError(f"a target is (field, '>=' or '<=', bound), got {self.target!r}")

    def rows(self, entry: dict) -> list[tuple]:
        if self.report_rows is not None:
            return self.report_rows(entry)
        return [(self.label, entry.get("generated"), entry.get("real"), entry.get("ratio"), self.fmt)]

    def target_name(self, key: str) -> str | None:
        return None if self.target is None else f"{key}_{self.target[0]}{self.target[1]}{self.target[2]:g}"


def conditional_accuracy(x: MetricInputs) -> dict:
    """GAN-test: the evaluator's class-balanced accuracy on generated images w.r.t. the requested class,
    beside its accuracy on real held-out images (the ceiling)."""
    K, names = x.evaluator.num_classes, x.evaluator.class_names
    held_y = x.heldout_labels.numpy()
    real_per = per_class_accuracy(x.heldout_predictions, held_y, K)
    real_bal = balanced_accuracy(x.heldout_predictions, held_y, K)
    real_acc, ceiling_source, n_ceiling = accuracy(x.heldout_predictions, held_y), "measured", len(held_y)
    real_count = np.bincount(held_y, minlength=K)[:K]
    stored = x.evaluator.header.get("heldout")
    if len(x.splits.heldout) < len(x.real.heldout_labels) and stored is not None:
        # A capped protocol (quick) would measure the ceilings on a handful of images of EMNIST's rare
        # classes; the evaluator file holds them measured on every held-out image, so use those.
        per = [stored["per_class"].get(n) for n in names]  # by name: the file's JSON keys are sorted
        real_per = np.array([np.nan if v is None else v for v in per], dtype=np.float64)
        real_bal, real_acc = stored["balanced_accuracy"], stored["accuracy"]
        ceiling_source, n_ceiling = "stored in the evaluator file", stored["num_images"]
        real_count = np.bincount(x.real.heldout_labels.numpy(), minlength=K)[:K]
    i = x.test_index
    gen_y = x.generated_labels[i].numpy()
    gen_per = per_class_accuracy(x.generated_predictions[i], gen_y, K)
    gen_bal = float(np.nanmean(gen_per))
    with np.errstate(divide="ignore", invalid="ignore"):
        class_ratio = gen_per / real_per
    worst = int(np.nanargmin(class_ratio)) if np.isfinite(class_ratio).any() else 0
    z = shortfall_se(gen_per, np.bincount(gen_y, minlength=K)[:K], real_per, real_count, CLASS_TARGET)
    under = sorted((k for k in range(K) if z[k] > CLASS_TARGET_SE), key=lambda k: class_ratio[k])
    return {
        "generated": {"balanced_accuracy": gen_bal, "per_class": _per_class_dict(names, gen_per),
                      "num_images": int(len(i))},
        "real_heldout": {"balanced_accuracy": real_bal, "accuracy": real_acc, "source": ceiling_source,
                         "per_class": _per_class_dict(names, real_per), "num_images": int(n_ceiling),
                         "per_class_count": {n: int(c) for n, c in zip(names, real_count)}},
        "ratio": _ratio(gen_bal, real_bal),
        "per_class_ratio": _per_class_dict(names, class_ratio),
        "worst_class": {"class": names[worst], "ratio": float(class_ratio[worst])},
        # standard errors under CLASS_TARGET of the ceiling, and the classes beyond CLASS_TARGET_SE, worst first
        "per_class_shortfall_se": _per_class_dict(names, z),
        "classes_under_target": [names[k] for k in under],
    }


def gan_train(x: MetricInputs) -> dict | None:
    """A fresh classifier of the evaluator's recipe trained on generated images, tested on real held-out
    ones, beside the same recipe trained on real images (stored in the evaluator file)."""
    protocol = x.protocol
    if protocol.gan_train_epochs <= 0:
        return None
    t = time.time()
    i = _prefix_index(x.generated_labels, x.train_counts)
    r = gan_train_accuracy(x.generated_images[i], x.generated_labels[i], x.real, x.splits, x.evaluator,
                           protocol, x.device)
    ref = x.evaluator.header.get("reference", {}).get(protocol.name)
    if ref is not None and {k: ref.get(k) for k in protocol.reference_key()} != protocol.reference_key():
        ref = None  # stored for other protocol settings: not comparable
    x.log(f"GAN-train classifier trained and tested in {time.time() - t:.1f} s")
    return {"accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"],
            "per_class": _per_class_dict(x.evaluator.class_names, r["per_class"]), "num_train": r["num_train"],
            "num_test": r["num_test"], "epochs": protocol.gan_train_epochs, "real_train_reference": ref,
            "ratio_to_reference": _ratio(r["accuracy"], ref["accuracy"]) if ref else None}


def frechet(x: MetricInputs) -> dict:
    """Frechet distance in evaluator features, generated (half A's class mix) vs real half B, beside the
    real-vs-real floor (half A vs half B); per class too."""
    g_fd, gy_fd = x.generated_features[x.fd_index], x.generated_labels[x.fd_index]
    f_a, f_b, y_a, y_b = x.features_a, x.features_b, x.labels_a, x.labels_b
    fd_gen, fd_floor = frechet_distance(g_fd, f_b), frechet_distance(f_a, f_b)
    per_fd = {}
    for k, name in enumerate(x.evaluator.class_names):
        ga, ra, rb = g_fd[(gy_fd == k).numpy()], f_a[(y_a == k).numpy()], f_b[(y_b == k).numpy()]
        if min(len(ga), len(ra), len(rb)) < 2:
            per_fd[name] = {"generated": None, "floor": None, "ratio": None, "n": int(len(rb))}
            continue
        g, f = frechet_distance(ga, rb), frechet_distance(ra, rb)
        per_fd[name] = {"generated": g, "floor": f, "ratio": _ratio(g, f), "n": int(len(rb))}
    ratios = [v["ratio"] for v in per_fd.values() if v["ratio"] is not None]
    return {"generated": fd_gen, "floor": fd_floor, "ratio": _ratio(fd_gen, fd_floor),
            "per_class": per_fd, "per_class_max_ratio": max(ratios) if ratios else None,
            "num_generated": int(len(x.fd_index)), "num_real_a": int(len(f_a)), "num_real_b": int(len(f_b))}


def precision_and_recall(x: MetricInputs) -> dict:
    """k-NN precision / recall in evaluator features: generated vs real half B, beside half A vs half B."""
    k = x.protocol.k
    return {"generated": precision_recall(x.features_b, x.generated_features[x.fd_index], k),
            "real": precision_recall(x.features_b, x.features_a, k)}


def memorization_check(x: MetricInputs) -> dict | None:
    """Pixel distance of generated and of held-out images to their nearest GAN-training image."""
    if x.real.gan_train_images is None or x.protocol.memorization_max <= 0:
        return None
    n = x.protocol.memorization_max
    g = torch.Generator().manual_seed(x.protocol.seed)
    gi = torch.from_numpy(x.fd_index)[torch.randperm(len(x.fd_index), generator=g)[:n]]
    hg = torch.Generator().manual_seed(REAL_SEED + 5)
    hi = x.splits.heldout[torch.randperm(len(x.splits.heldout), generator=hg)[:n]]
    return memorization(x.generated_images[gi], x.real.heldout_images[hi], x.real.gan_train_images)


# The report's rows of the metrics that show more than generated / real / ratio.
def _conditional_rows(c: dict) -> list[tuple]:
    w = c["worst_class"]["class"]
    return [("conditional accuracy (balanced)", c["generated"]["balanced_accuracy"],
             c["real_heldout"]["balanced_accuracy"], c["ratio"]),
            (f"  worst class ({w})", c["generated"]["per_class"][w], c["real_heldout"]["per_class"][w],
             c["worst_class"]["ratio"])]


def _gan_train_rows(gt: dict) -> list[tuple]:
    ref = gt["real_train_reference"]
    return [("GAN-train accuracy (vs real-train)", gt["accuracy"], ref["accuracy"] if ref else None,
             gt["ratio_to_reference"]),
            ("  class-balanced", gt["balanced_accuracy"], ref["balanced_accuracy"] if ref else None,
             _ratio(gt["balanced_accuracy"], ref["balanced_accuracy"]) if ref else None)]


def _frechet_rows(fd: dict) -> list[tuple]:
    return [("Frechet distance (vs floor)", fd["generated"], fd["floor"], fd["ratio"], "{:.3f}"),
            ("  per class, worst ratio", None, None, fd["per_class_max_ratio"])]


def _precision_recall_rows(pr: dict) -> list[tuple]:
    g, r = pr["generated"], pr["real"]
    return [("precision (vs real-real)", g["precision"], r["precision"], _ratio(g["precision"], r["precision"])),
            ("recall (vs real-real)", g["recall"], r["recall"], _ratio(g["recall"], r["recall"]))]


def _memorization_rows(m: dict) -> list[tuple]:
    return [("memorization: median NN dist", m["generated_median"], m["heldout_median"], m["median_ratio"],
             "{:.3f}"),
            (f"  near copies (<= {m['copy_threshold']:.2f})", m["generated_near_copy_fraction"],
             m["heldout_near_copy_fraction"], None)]


# key in the result dict (and evaluation.json) -> Metric; computed and shown in this order.
METRICS = {
    "conditional_accuracy": Metric(conditional_accuracy, "conditional accuracy (balanced)",
                                   report_rows=_conditional_rows),
    "gan_train": Metric(gan_train, "GAN-train accuracy (vs real-train)", report_rows=_gan_train_rows),
    "frechet": Metric(frechet, "Frechet distance (vs floor)", "{:.3f}", report_rows=_frechet_rows),
    "precision_recall": Metric(precision_and_recall, "precision / recall (vs real-real)",
                               report_rows=_precision_recall_rows),
    "memorization": Metric(memorization_check, "memorization: median NN dist", "{:.3f}",
                           report_rows=_memorization_rows),
}


# ----------------------------------------------------------------------------- the evaluation

def evaluate_sampler(sampler, evaluator: Evaluator, real: RealData, protocol: Protocol, device=None,
                     log=None) -> dict:
    """All metrics (METRICS) for one sampler. ``sampler`` needs ``sample(classes, per_class, seed) ->
    (uint8 images, labels)`` (a ``cgan.Sampler``, or anything that behaves like one); nothing is read or
    written."""
    t_start = time.time()
    timing = {}
    log = log or (lambda s: None)
    K = evaluator.num_classes
    m = evaluator.header["model"]
    splits = protocol_subsets(real, protocol)

    # --- real side: features and predictions of the held-out images
    t = time.time()
    held_x, held_y = real.heldout_images[splits.heldout], real.heldout_labels[splits.heldout]
    held_f, held_p = evaluator.features_and_predictions(held_x)
    pos = torch.full((len(real.heldout_labels),), -1, dtype=torch.long)
    pos[splits.heldout] = torch.arange(len(splits.heldout))
    f_a, f_b = held_f[pos[splits.half_a].numpy()], held_f[pos[splits.half_b].numpy()]
    y_a, y_b = real.heldout_labels[splits.half_a], real.heldout_labels[splits.half_b]
    timing["real_features"] = time.time() - t

    # --- generated sets: class-balanced (GAN-test), class mix of half A (FD / PR), class mix of the data (GAN-train)
    t = time.time()
    n_test = np.full(K, protocol.per_class, dtype=np.int64)
    n_fd = np.bincount(y_a.numpy(), minlength=K)[:K]
    n_train = (_class_counts(protocol.gan_train_images, held_y, K) if protocol.gan_train_epochs > 0
               else np.zeros(K, dtype=np.int64))
    n_all = np.maximum.reduce([n_test, n_fd, n_train])
    gen_x, gen_y = _generate(sampler, n_all, protocol.seed, m["channels"], m["size"])
    timing["generate"] = time.time() - t
    log(f"generated {len(gen_y)} images in {timing['generate']:.1f} s")
    t = time.time()
    gen_f, gen_p = evaluator.features_and_predictions(gen_x)
    timing["generated_features"] = time.time() - t

    inputs = MetricInputs(evaluator, protocol, real, splits, gen_x, gen_y, gen_f, gen_p,
                          test_index=_prefix_index(gen_y, n_test).numpy(),
                          fd_index=_prefix_index(gen_y, n_fd).numpy(), train_counts=n_train,
                          heldout_images=held_x, heldout_labels=held_y, heldout_predictions=held_p,
                          features_a=f_a, labels_a=y_a, features_b=f_b, labels_b=y_b, device=device, log=log)
    measured = {}
    for key, metric in METRICS.items():
        t = time.time()
        measured[key] = metric.compute(inputs)
        if measured[key] is not None:
            timing[key] = time.time() - t

    timing["total"] = time.time() - t_start
    result = {
        "protocol": {**asdict(protocol), "notes": list(real.notes),
                     "evaluator": str(evaluator.file), "evaluator_protocol": evaluator.protocol.get("description"),
                     "real_seed": REAL_SEED, "sampler_seed": protocol.seed,
                     "num_heldout": int(len(splits.heldout)),
                     "features": evaluator.header["model"].get("features", "penultimate layer")},
        "dataset": evaluator.dataset,
        **measured,
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
        "device": str(evaluator.device),
    }
    result["targets"] = targets(result)
    return nan_to_none(result)


def targets(r: dict) -> dict:
    """The quality targets, each with its measured value and whether it is met (None: not measured): the
    built-in ones below, then the ``target`` of each registered metric."""
    cond, fd, memo, gt = r["conditional_accuracy"], r["frechet"], r["memorization"], r["gan_train"]
    per = [v for v in cond["per_class_ratio"].values() if v is not None]
    under = cond.get("classes_under_target")  # absent from results written before it existed
    every = {"value": min(per) if per else None, "met": bool(per and min(per) >= CLASS_TARGET)}
    if under is not None:  # the lowest ratio can be noise (a ceiling on few images): misses count when measurable
        every.update(met=bool(per) and not under, under=under)
    far = fd.get("per_class_max_ratio")  # the farthest class's FD / its own floor
    out = {
        f"conditional_ratio>={CONDITIONAL_TARGET:g}": {"value": cond["ratio"],
                                                       "met": bool(cond["ratio"] >= CONDITIONAL_TARGET)},
        f"every_class_ratio>={CLASS_TARGET:.2f}": every,
        f"fd<={FD_TARGET:g}x_floor": {"value": fd["ratio"], "met": bool(fd["ratio"] <= FD_TARGET)},
        f"every_class_fd<={FD_CLASS_TARGET:g}x_floor": {"value": far,
                                                        "met": bool(far <= FD_CLASS_TARGET) if far is not None else None},
    }
    goal = GAN_TRAIN_TARGETS.get(r["dataset"])
    if goal is not None:
        out[f"gan_train>={goal:g}"] = {"value": gt["accuracy"] if gt else None,
                                       "met": bool(gt["accuracy"] >= goal) if gt else None}
    pr = r.get("precision_recall")
    for field in ("precision", "recall"):  # within PR_TOLERANCE of real vs real, either way
        gen, real = (pr["generated"][field], pr["real"][field]) if pr else (None, None)
        out[f"{field}_within_{PR_TOLERANCE:g}_of_real"] = {
            "value": gen, "real": real, "met": bool(abs(gen - real) <= PR_TOLERANCE) if pr else None}
    if memo is not None:
        # "No worse than real held-out data": generated near copies no more frequent than held-out ones,
        # within 3 binomial standard errors of the generated fraction.
        q, n = memo["heldout_near_copy_fraction"], memo["num_generated"]
        limit = q + 3 * math.sqrt(max(q * (1 - q), 1e-12) / n)
        out["memorization<=heldout"] = {"value": memo["generated_near_copy_fraction"], "limit": limit,
                                        "median_ratio": memo["median_ratio"],
                                        "met": bool(memo["generated_near_copy_fraction"] <= limit)}
    else:
        out["memorization<=heldout"] = {"value": None, "met": None}
    for key, metric in METRICS.items():
        if metric.target is None:
            continue
        field, op, bound = metric.target
        v = (r.get(key) or {}).get(field)
        measured = isinstance(v, (int, float)) and math.isfinite(v)
        out[metric.target_name(key)] = {"value": v if measured else None, "bound": bound,
                                        "met": (v >= bound if op == ">=" else v <= bound) if measured else None}
    return out


def check_compatible(sampler, evaluator: Evaluator) -> None:
    meta = getattr(sampler, "meta", None) or {}
    ds = meta.get("dataset", {})
    if ds.get("name") not in (None, evaluator.dataset):
        raise CheckpointError(f"the checkpoint is a {ds.get('name')} generator but the evaluator {evaluator.file} "
                              f"is for {evaluator.dataset}")
    if ds.get("name") == "emnist" and ds.get("emnist_split") != evaluator.header["dataset"].get("emnist_split"):
        raise CheckpointError(f"the checkpoint is an EMNIST {ds.get('emnist_split')} generator but the evaluator "
                              f"{evaluator.file} is for EMNIST {evaluator.header['dataset'].get('emnist_split')}")
    names = getattr(sampler, "class_names", None)
    if names is not None and list(names) != evaluator.class_names:
        raise CheckpointError(f"the checkpoint's classes {list(names)[:6]}... differ from the evaluator's "
                              f"{evaluator.class_names[:6]}...")
    image = meta.get("image")
    m = evaluator.header["model"]
    if image and (image.get("channels"), image.get("size")) != (m["channels"], m["size"]):
        raise CheckpointError(f"the checkpoint makes {image.get('channels')}x{image.get('size')}^2 images; the "
                              f"evaluator expects {m['channels']}x{m['size']}^2")


def evaluate(checkpoint, data_dir=None, quick: bool = False, device: str = "cpu", seed: int = 0,
             evaluator=None, log=None) -> dict:
    """Load a checkpoint and its evaluator, evaluate with the dataset's protocol; returns the result dict.
    ``evaluator``: a path (file or folder), an already loaded Evaluator, or None for the checkpoint's own."""
    from .sampler import Sampler

    folder = resolve_checkpoint(checkpoint)
    sampler = Sampler.load(folder, _device(device))
    if isinstance(evaluator, Evaluator):
        ev = evaluator
    else:
        ev = load_evaluator(Path(evaluator) if evaluator is not None else folder, _device(device))
    check_compatible(sampler, ev)
    real = load_real_data(ev, data_dir, gan_split=sampler.meta["dataset"].get("split"))
    result = evaluate_sampler(sampler, ev, real, protocol_for(ev.dataset, quick, seed), log=log)
    cfg = sampler.meta["config"]
    result["checkpoint"] = {"folder": str(folder), "kind": sampler.meta["kind"], "step": sampler.meta["step"],
                            "arch": cfg.get("arch"), "dataset": sampler.meta["dataset"],
                            "exported_from": sampler.meta.get("exported_from")}
    result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return result


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------- output

def _f(x, fmt="{:.4f}"):
    return "-" if x is None else fmt.format(x)


def format_report(r: dict) -> str:
    p, cond, fd, gt = r["protocol"], r["conditional_accuracy"], r["frechet"], r["gan_train"]
    ck = r.get("checkpoint", {})
    lines = [f"evaluation of {ck.get('folder', 'an in-memory sampler')} (step {ck.get('step', '-')}, "
             f"{ck.get('arch', '-')}) on {r['dataset']}: {p['name']} protocol",
             "", "protocol:"]
    lines += [f"  - {n}" for n in p["notes"]]
    ceil = cond["real_heldout"]
    lines += [f"  - ceilings (evaluator accuracy on real held-out images): {ceil['source']}, "
              f"{ceil['num_images']} images"]
    lines += [f"  - held-out images used: {p['num_heldout']} (real subsets seed {p['real_seed']}); generated with "
              f"sampler seed {p['sampler_seed']}: {p['per_class']} per class for GAN-test, "
              f"{fd['num_generated']} (half A's class mix) for FD / precision / recall, "
              f"{gt['num_train'] if gt else 0} (the data's class mix) for GAN-train",
              f"  - FD / precision / recall: generated vs held-out half B ({fd['num_real_b']}); floor: held-out "
              f"half A ({fd['num_real_a']}) vs half B; features: {p['features']}",
              f"  - GAN-train: evaluator recipe, {p['gan_train_epochs']} epochs, batch {p['batch_size']}, tested on "
              f"the {p['num_heldout']} held-out images; memorization: up to {p['memorization_max']} generated and "
              f"held-out images, nearest GAN-training image in pixel space"]
    lines += ["", f"{'metric':<34}{'generated':>12}{'real':>12}{'ratio':>9}"]

    def row(name, g, rl, ratio, fmt="{:.4f}"):
        lines.append(f"{name:<34}{_f(g, fmt):>12}{_f(rl, fmt):>12}{_f(ratio, '{:.3f}'):>9}")

    for key, metric in METRICS.items():
        if r.get(key):  # None: not measured this time (or a metric added after these results were written)
            for cells in metric.rows(r[key]):
                row(*cells)

    lines += ["", f"{'class':<13} {'real acc':>8} {'gen acc':>8} {'ratio':>7} {'GAN-tr':>7} {'FD':>8} {'floor':>8} "
                  f"{'FD/fl':>7} {'n':>5} {'SE under':>8}"]
    short = cond.get("per_class_shortfall_se") or {}  # results written before it existed lack it
    for name in cond["per_class_ratio"]:
        f = fd["per_class"][name]
        lines.append(f"{name[:13]:<13} {_f(cond['real_heldout']['per_class'][name], '{:.3f}'):>8} "
                     f"{_f(cond['generated']['per_class'][name], '{:.3f}'):>8} "
                     f"{_f(cond['per_class_ratio'][name], '{:.3f}'):>7} "
                     f"{_f(gt['per_class'][name] if gt else None, '{:.3f}'):>7} "
                     f"{_f(f['generated'], '{:.2f}'):>8} {_f(f['floor'], '{:.2f}'):>8} {_f(f['ratio'], '{:.2f}'):>7} "
                     f"{f['n']:>5} {_f(short.get(name), '{:.1f}'):>8}")
    lines += ["", "quality targets:"]
    for name, t in r["targets"].items():
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        under, rule = t.get("under"), ""
        if under is not None:
            rule = (f" (measurably under: {', '.join(under) or 'none'}; a class misses when its generated accuracy "
                    f"is more than {CLASS_TARGET_SE:g} standard errors under {CLASS_TARGET:g} of its ceiling)")
        lines.append(f"  {name:<28}{_f(t['value']):>10}  {mark}{rule}")
    lines.append(f"\n{r['timing_s'].get('total', 0):.1f} s on {r['device']}")
    return "\n".join(lines)


def write_results(folder: Path, result: dict) -> Path:
    """Merge ``result`` into folder/evaluation.json under its protocol's name; atomic rename."""
    file = Path(folder) / RESULTS_FILE
    data = {}
    if file.is_file():
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{file}: not valid JSON ({e}); move it away to write new results") from e
        if not isinstance(data, dict):
            raise CheckpointError(f"{file}: top level is not a JSON object; move it away to write new results")
    data[result["protocol"]["name"]] = result
    return atomic_write_text(file, json.dumps(data, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="exported folder, checkpoint folder or run folder")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's official files")
    p.add_argument("--evaluator", default=None, help="evaluator.safetensors or its folder (default: in CHECKPOINT)")
    p.add_argument("--quick", action="store_true", help="the small protocol (tests, monitoring)")
    p.add_argument("--write", action="store_true", help=f"store the results in CHECKPOINT/{RESULTS_FILE}")
    p.add_argument("--json", default=None, help="also write this run's results as JSON to this file")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="sampler / GAN-train seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = evaluate(args.checkpoint, args.data_dir, args.quick, args.device, args.seed, args.evaluator,
                          log=lambda s: print(s, file=sys.stderr, flush=True))
    except (CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True))
    if args.write:
        print(f"wrote {write_results(Path(result['checkpoint']['folder']), result)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
