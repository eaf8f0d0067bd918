"""Metrics for generated images: pure functions of arrays (numpy or torch), no models, no files.

  * ``frechet_distance``: Frechet distance between Gaussian fits of two feature sets (FID's formula, in
    whatever feature space the caller uses; ``cgan.evaluate`` uses the dataset evaluator's features).
  * ``precision_recall``: k-NN manifold precision and recall (Kynkaanniemi et al. 2019, k = 3).
  * ``nearest_distances`` / ``memorization``: distance from each image to its nearest training image.
  * ``accuracy``, ``per_class_accuracy``, ``balanced_accuracy``.

Distances are computed in chunks with matrix products (``|a|^2 + |b|^2 - 2 a.b``), so 10k x 10k sets of
128-d features take about a second on a CPU and memory stays bounded whatever the set sizes. scipy is not
a dependency: the matrix square root of FID is done with ``torch.linalg.eigh`` in float64.

Which of them an evaluation runs, on which images, and how each is reported: ``cgan.evaluate.METRICS``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

CHUNK_ELEMENTS = 1 << 24  # at most this many distances in memory at once (64 MiB of float32)


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))
    return t.to(dtype)


def _2d(x, name: str, dtype=torch.float32) -> torch.Tensor:
    t = _tensor(x, dtype)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (N, D) array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return t


# ----------------------------------------------------------------------------- Frechet distance

def gaussian_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    f = _2d(features, "features", torch.float64)
    if len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_from_stats(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    S1 S2 is not symmetric, but it is similar to sqrt(S1) S2 sqrt(S1), which is symmetric PSD, so the
    trace of its square root is the sum of the square roots of that matrix's eigenvalues: two symmetric
    eigendecompositions, stable even when the covariances are singular (fewer samples than dimensions)."""
    mu1, mu2, s1, s2 = (_tensor(a, torch.float64) for a in (mu1, mu2, s1, s2))
    r = _sqrtm_psd(s1)
    m = r @ s2 @ r
    eig = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0)
    fd = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * eig.sqrt().sum()
    return max(float(fd), 0.0)


def frechet_distance(features_a, features_b) -> float:
    """Frechet distance between the Gaussian fits of two (N, D) feature sets. Biased upwards for small N
    (so always compare it with a real-vs-real floor computed at the same sample sizes)."""
    return frechet_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))


# ----------------------------------------------------------------------------- distances

def _chunk_rows(n_cols: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(n_cols, 1))


def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (len(a), len(b)); clamped at 0 against rounding."""
    d = (a.square().sum(1, keepdim=True) + b_sq[None, :]).addmm_(a, b.T, alpha=-2)
    return d.clamp_(min=0)


def kth_neighbour_distances(features, k: int = 3) -> torch.Tensor:
    """Distance from each row to its k-th nearest *other* row (the radius of its k-NN ball)."""
    f = _2d(features, "features")
    if len(f) <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {len(f)}")
    f_sq = f.square().sum(1)
    out = torch.empty(len(f))
    step = _chunk_rows(len(f))
    for i in range(0, len(f), step):
        d = _sq_dists(f[i:i + step], f, f_sq)
        # k + 1 smallest: the first is the point itself (distance 0), as in the reference implementation.
        out[i:i + step] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out.sqrt_()


def nearest_distances(queries, reference) -> torch.Tensor:
    """Euclidean distance from each query row to its nearest reference row (float32 (Nq,)); exact copies give 0."""
    q, r = _2d(queries, "queries"), _2d(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dimensions but the reference has {r.shape[1]}")
    if len(r) == 0:
        raise ValueError("the reference set is empty")
    r_sq = r.square().sum(1)
    out = torch.empty(len(q))
    step = _chunk_rows(len(r))
    for i in range(0, len(q), step):
        nearest = _sq_dists(q[i:i + step], r, r_sq).argmin(1)
        # The expansion loses precision near 0 (an exact copy would read ~1e-3): recompute the winner directly.
        out[i:i + step] = (q[i:i + step] - r[nearest]).norm(dim=1)
    return out


def _fraction_in_manifold(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of queries inside at least one ball (support point, its k-NN radius)."""
    s_sq = support.square().sum(1)
    r_sq = radii.square()
    inside = 0
    step = _chunk_rows(len(support))
    for i in range(0, len(queries), step):
        d = _sq_dists(queries[i:i + step], support, s_sq)
        inside += int((d <= r_sq[None, :]).any(1).sum())
    return inside / max(len(queries), 1)


def precision_recall(real_features, fake_features, k: int = 3) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    precision: fraction of fake samples inside the real manifold (union of k-NN balls of real samples);
    recall: fraction of real samples inside the fake manifold. Low precision = unrealistic samples; low
    recall = missing variety (e.g. a generator stuck on one image per class has recall near 0)."""
    real, fake = _2d(real_features, "real features"), _2d(fake_features, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dimensions, fake {fake.shape[1]}")
    real_r, fake_r = kth_neighbour_distances(real, k), kth_neighbour_distances(fake, k)
    return {"precision": _fraction_in_manifold(fake, real, real_r),
            "recall": _fraction_in_manifold(real, fake, fake_r), "k": k}


# ----------------------------------------------------------------------------- memorization

def pixels(images) -> torch.Tensor:
    """uint8 images of any shape (N, ...) -> float32 (N, pixels) in [0, 1]."""
    t = images if torch.is_tensor(images) else torch.from_numpy(np.asarray(images))
    return t.reshape(len(t), -1).float() / 255.0


def memorization(generated, heldout, train, quantile: float = 0.01) -> dict:
    """Is the generator closer to its training images than unseen real images are?

    All three are uint8 image sets; distances are Euclidean in pixel space scaled to [0, 1] (an exact
    copy is at 0; an unseen real MNIST digit is typically about 5 from its nearest training image).
    Pixel space, not evaluator features, because a copy is a pixel-level event and features would also
    pull together distinct images of one class. Reports the median nearest-training-image distance of
    generated and of held-out real images (their ratio: below 1 means closer to the training set than
    real unseen data), and the fraction of each set closer than the ``quantile`` of the held-out
    distances ("near copies"; about ``quantile`` for data that is not copied). Caveat: smooth, typical
    images also sit closer to their neighbours than odd real ones, so a ratio a little below 1 alone is
    not proof of copying; the near-copy fraction is the sharper test."""
    train_p = pixels(train)
    gen_d = nearest_distances(pixels(generated), train_p)
    held_d = nearest_distances(pixels(heldout), train_p)
    if len(gen_d) == 0 or len(held_d) == 0:
        raise ValueError("memorization needs at least one generated and one held-out image")
    threshold = float(torch.quantile(held_d, quantile))
    gen_med, held_med = float(gen_d.median()), float(held_d.median())
    return {
        "space": "pixels in [0, 1], Euclidean",
        "generated_median": gen_med, "heldout_median": held_med,
        "median_ratio": gen_med / held_med if held_med > 0 else float("nan"),
        "copy_threshold": threshold, "quantile": quantile,
        "generated_near_copy_fraction": float((gen_d <= threshold).float().mean()),
        "heldout_near_copy_fraction": float((held_d <= threshold).float().mean()),
        "generated_exact_copy_fraction": float((gen_d < 1e-2).float().mean()),
        "num_generated": len(gen_d), "num_heldout": len(held_d), "num_train": len(train_p),
    }


# ----------------------------------------------------------------------------- accuracy

def _labels(x) -> np.ndarray:
    a = x.numpy() if torch.is_tensor(x) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {a.shape}")
    return a.astype(np.int64)


def accuracy(pred, target) -> float:
    p, t = _labels(pred), _labels(target)
    if len(p) != len(t):
        raise ValueError(f"{len(p)} predictions for {len(t)} targets")
    return float((p == t).mean()) if len(t) else float("nan")


def per_class_accuracy(pred, target, num_classes: int) -> np.ndarray:
    """Accuracy over the images of each true class; NaN for a class with no images."""
    p, t = _labels(pred), _labels(target)
    if len(p) != len(t):
        raise ValueError(f"{len(p)} predictions for {len(t)} targets")
    counts = np.bincount(t, minlength=num_classes)[:num_classes].astype(np.float64)
    correct = np.bincount(t[p == t], minlength=num_classes)[:num_classes].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, correct / counts, np.nan)


def balanced_accuracy(pred, target, num_classes: int) -> float:
    """Mean of the per-class accuracies over the classes present: every class counts the same,
    whatever its share of the images (EMNIST ByMerge classes range from 415 to 6,400 images)."""
    per = per_class_accuracy(pred, target, num_classes)
    return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")


def shortfall_se(generated, n_generated, ceiling, n_ceiling, fraction: float = 0.9) -> np.ndarray:
    """How many standard errors each class's generated accuracy falls below ``fraction`` of its ceiling
    (positive: under it; NaN where a side has no images). Both accuracies are binomial estimates, so the
    error combines the two; each is computed at an estimate kept 0.5 images inside [0, 1], so a class with
    every image right (or wrong) on a side still has an error. Why: a ceiling measured on few images, or
    one the evaluator itself barely reaches (EMNIST's real f are taken for F 92% of the time), makes the
    class's ratio noise, and noise must not count as a class drawn wrong."""
    g, c = np.asarray(generated, np.float64), np.asarray(ceiling, np.float64)
    ng, nc = np.asarray(n_generated, np.float64), np.asarray(n_ceiling, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        gv, cv = np.clip(g, 0.5 / ng, 1 - 0.5 / ng), np.clip(c, 0.5 / nc, 1 - 0.5 / nc)
        se = np.sqrt(gv * (1 - gv) / ng + fraction ** 2 * cv * (1 - cv) / nc)
        z = (fraction * c - g) / se
    return np.where((ng > 0) & (nc > 0), z, np.nan)


def nan_to_none(x):
    """JSON cannot hold NaN: map it (recursively) to None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_to_none(v) for v in x]
    return x
