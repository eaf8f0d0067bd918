"""Sampling from a checkpoint: the Python API behind `cgan.sample`, the app and the evaluation.

Seed addressing: the latent of image j for seed S is drawn from its own random stream, seeded with
(S, j), and does not depend on the class. So image j of class k depends only on (S, k, j): asking for
more images, or for other classes, never changes the ones already seen, and row j of an "all classes"
overview shows every class drawn from the same latent.

Truncation (psi in (0, 1]) scales the latent towards the prior's mean (zero): smaller psi gives more
typical, cleaner images and less variety (the "truncation trick" of BigGAN / StyleGAN, here in z space).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoints import (REAL_SAMPLES_FILE, STEP_DIR, CheckpointError, allocation_error, read_generator, read_meta,
                          read_tensors, resolve_checkpoint, tensor_header)
from .networks import fold_for_inference

MAX_SEED = 2**63 - 1
CHUNK = 10  # images per generator call in sample(); fixed so that results never depend on N


def latents(seed: int, indices, z_dim: int) -> torch.Tensor:
    """Latents for image indices ``indices`` under ``seed``: one float32 row of N(0, 1) per index."""
    if not (0 <= int(seed) <= MAX_SEED):
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {seed}")
    rows = [np.random.default_rng([int(seed), int(j)]).standard_normal(z_dim, dtype=np.float32) for j in indices]
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, z_dim)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents (rows of a and b) at fractions t (shape (T,))."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t[:, None]


@dataclass
class Sampler:
    """A generator loaded for inference, with what is needed to use it: class names, image shape, meta."""

    generator: torch.nn.Module
    meta: dict
    folder: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Sampler":
        folder = resolve_checkpoint(path)
        meta = read_meta(folder)
        device = torch.device(device)
        try:
            g = fold_for_inference(read_generator(folder, meta).to(device).requires_grad_(False))
        except (RuntimeError, MemoryError) as e:
            if not allocation_error(e):
                raise
            raise CheckpointError(f"{folder}: not enough memory to load this generator on {device}; close other "
                                  f"programs or use a smaller model") from None
        if device.type == "cpu":
            # Measured: channels-last convolutions and upsampling are ~2x faster on CPU for this model.
            g = g.to(memory_format=torch.channels_last)
        return cls(g, meta, folder, device)

    # --- description
    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    @property
    def z_dim(self) -> int:
        return int(self.meta["config"]["z_dim"])

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]["name"]

    def class_index(self, cls: int | str) -> int:
        """A class by index or by name ("7", "Sneaker", "g"); a clear error lists the choices."""
        names = self.class_names
        if isinstance(cls, str):
            if cls in names:
                return names.index(cls)
            raise ValueError(f"unknown class {cls!r} for {self.dataset}; choose one of: {', '.join(names)}")
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool) and 0 <= int(cls) < len(names):
            return int(cls)
        raise ValueError(f"class index must be an integer in [0, {len(names) - 1}], got {cls!r}")

    # --- generation
    def latents(self, seed: int, indices, truncation: float = 1.0) -> torch.Tensor:
        """The latents of images ``indices`` for ``seed``, scaled by the truncation psi: the one place where
        truncation is applied (sampling, the studio's interpolation and morph all come through here)."""
        if not 0 < truncation <= 1:
            raise ValueError(f"truncation must be in (0, 1], got {truncation}")
        return latents(seed, indices, self.z_dim) * truncation

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, y: torch.Tensor, batch: int = 256) -> np.ndarray:
        """Images for latents z (B, z_dim) and classes y (B,) indices or (B, K) class weights, as uint8."""
        from .images import to_uint8

        out = []
        for i in range(0, len(z), batch):
            x = self.generator(z[i:i + batch].to(self.device), y[i:i + batch].to(self.device))
            out.append(to_uint8(x))
        if not out:
            c, s = self.meta["image"]["channels"], self.meta["image"]["size"]
            return np.zeros((0, s, s) if c == 1 else (0, s, s, 3), np.uint8)
        return np.concatenate(out)

    def sample(self, classes, per_class: int, seed: int = 0, truncation: float = 1.0,
               start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``per_class`` images for each class in ``classes`` (indices or names), class-major.

        Image j (j = start .. start+per_class-1) of class k uses latent (seed, j). The generator always
        runs on fixed blocks of CHUNK latents (j rounded down to a multiple of CHUNK, one class per
        block), so the arithmetic behind image (seed, k, j) is identical bit for bit whatever the number
        of images asked for. Returns (images uint8, labels int64)."""
        if not 0 < truncation <= 1:
            raise ValueError(f"truncation must be in (0, 1], got {truncation}")
        if per_class < 0 or start < 0:
            raise ValueError("per_class and start must be >= 0")
        ks = [self.class_index(c) for c in classes]
        first, end = start - start % CHUNK, start + per_class
        blocks = range(first, end, CHUNK)
        z = self.latents(seed, range(first, first + CHUNK * len(blocks)), truncation)
        out = []
        for k in ks:
            y = torch.full((CHUNK,), k, dtype=torch.int64)
            images = np.concatenate([self.generate(z[i * CHUNK:(i + 1) * CHUNK], y, batch=CHUNK)
                                     for i in range(len(blocks))]) if blocks else self.generate(z[:0], y[:0])
            out.append(images[start - first:end - first])
        labels = np.repeat(np.asarray(ks, dtype=np.int64), per_class)
        images = np.concatenate(out) if out else self.generate(z[:0], torch.zeros(0, dtype=torch.int64))
        return images, labels

    def real_samples(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The bundled real images (uint8, upright) and labels of an exported checkpoint, or of the run a
        run checkpoint belongs to (see ``real_samples_for``), if any."""
        return real_samples_for(self.folder, self.meta)


MAX_REAL_SAMPLES = 100_000


def read_real_samples(folder: Path, meta: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """``real_samples.safetensors`` of a checkpoint folder, validated against its checkpoint.json: uint8
    images (N, H, W) or (N, H, W, 3) of the checkpoint's image shape, int64 labels (N,) naming its classes.
    None when the folder has no such file."""
    file = Path(folder) / REAL_SAMPLES_FILE
    if not file.is_file():
        return None
    size, channels, k = meta["image"]["size"], meta["image"]["channels"], len(meta["class_names"])
    image_shape = (size, size) if channels == 1 else (size, size, 3)
    header = tensor_header(file)
    if set(header) != {"images", "labels"}:
        raise CheckpointError(f"{file}: expected exactly the tensors 'images' and 'labels', found "
                              f"{sorted(header)[:5]}")
    (ishape, idtype), (lshape, ldtype) = header["images"], header["labels"]
    if idtype != torch.uint8 or tuple(ishape[1:]) != image_shape or not 1 <= ishape[0] <= MAX_REAL_SAMPLES:
        raise CheckpointError(f"{file}: 'images' must be uint8 of shape (N, {', '.join(map(str, image_shape))}) "
                              f"with 1 <= N <= {MAX_REAL_SAMPLES:,}, found {ishape} {idtype}")
    if ldtype != torch.int64 or lshape != (ishape[0],):
        raise CheckpointError(f"{file}: 'labels' must be int64 of shape ({ishape[0]},), one per image, found "
                              f"{lshape} {ldtype}")
    t = read_tensors(file)
    labels = t["labels"].numpy()
    if labels.min() < 0 or labels.max() >= k:
        raise CheckpointError(f"{file}: labels must be class indices 0 to {k - 1}, found {labels.min()} to "
                              f"{labels.max()}")
    return t["images"].numpy(), labels


def real_samples_for(checkpoint_folder: str | os.PathLike,
                     meta: dict | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The real images that go with a checkpoint: its own ``real_samples.safetensors`` (an export), else,
    for a run checkpoint RUN/checkpoints/step-N, the run's RUN/real_samples.safetensors, validated the same
    way against the checkpoint's checkpoint.json. None when there is neither. ``meta`` (the checkpoint's
    validated checkpoint.json) is read from the folder when not given."""
    folder = Path(checkpoint_folder)
    meta = read_meta(folder) if meta is None else meta
    if (folder / REAL_SAMPLES_FILE).is_file():
        return read_real_samples(folder, meta)
    if STEP_DIR.match(folder.name) and folder.parent.name == "checkpoints":
        return read_real_samples(folder.parent.parent, meta)
    return None


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Sampler:
    """Load a checkpoint (exported folder, checkpoint folder or run folder) for sampling."""
    return Sampler.load(path, device)
