"""Sample a checkpoint from the command line.

    python -m cgan.sample CHECKPOINT --per-class N --seed S --out FILE.npz
    python -m cgan.sample CHECKPOINT --per-class 8 --classes 3,7 --grid FILE.png

The npz holds ``images`` (uint8, (K*N, H, W) grayscale or (K*N, H, W, 3) RGB, upright, 0 = black),
class-major, and ``labels`` (int64 class indices). Image j of class k depends only on (seed, k, j).
CHECKPOINT may be an exported folder, a checkpoint folder, or a run folder (its latest checkpoint).
The EMA generator is used. This interface is how quality is measured from outside: keep it stable.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .checkpoints import CheckpointError, allocation_error
from .files import atomic_write
from .images import make_grid, save_png, upscale
from .sampler import MAX_SEED, Sampler

MAX_IMAGES = 1_000_000
MAX_BYTES = 2 << 30  # of images held in memory at once (and written to the npz)


def parse_classes(text: str | None, sampler: Sampler) -> list[int]:
    """"3,7" or "Sneaker,Bag" (names first, then indices); None means every class."""
    if text is None:
        return list(range(sampler.num_classes))
    out = []
    for part in text.split(","):
        part = part.strip()
        if part in sampler.class_names:
            out.append(sampler.class_names.index(part))
        elif part.lstrip("-").isdigit():
            out.append(sampler.class_index(int(part)))
        else:
            sampler.class_index(part)  # raises the error listing the choices
    return out


def write_npz(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, images=images, labels=labels.astype(np.int64)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="exported folder, checkpoint folder, or run folder")
    p.add_argument("--per-class", type=int, default=10, help="images per class (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed S (default %(default)s)")
    p.add_argument("--classes", default=None, help="comma-separated class indices or names (default: all)")
    p.add_argument("--truncation", type=float, default=1.0, help="latent truncation psi in (0, 1] (default 1)")
    p.add_argument("--out", default=None, help="write images and labels to this .npz")
    p.add_argument("--grid", default=None, help="write a PNG grid (one row per class) to this file")
    p.add_argument("--scale", type=int, default=1, help="enlarge the PNG grid by this factor (default 1)")
    p.add_argument("--device", default="cpu", help="device to sample on (default cpu)")
    args = p.parse_args(argv)
    if not args.out and not args.grid:
        p.error("give --out FILE.npz and/or --grid FILE.png")
    try:
        if not 0 <= args.seed <= MAX_SEED:
            raise ValueError(f"--seed must be in [0, {MAX_SEED}]")
        if args.per_class < 1:
            raise ValueError("--per-class must be at least 1")
        if not 1 <= args.scale <= 16:
            raise ValueError("--scale must be in [1, 16]")
        sampler = Sampler.load(args.checkpoint, args.device)
        classes = parse_classes(args.classes, sampler)
        n = len(classes) * args.per_class
        image = sampler.meta["image"]
        nbytes = n * image["size"] ** 2 * image["channels"]
        if n > MAX_IMAGES or nbytes > MAX_BYTES:
            raise ValueError(f"{n:,} images requested ({nbytes / 2**20:,.0f} MiB); the limits are {MAX_IMAGES:,} "
                             f"images and {MAX_BYTES / 2**20:,.0f} MiB: lower --per-class or name fewer --classes")
        images, labels = sampler.sample(classes, args.per_class, args.seed, args.truncation)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        if not allocation_error(e):
            raise
        print("error: out of memory while sampling; lower --per-class or name fewer --classes", file=sys.stderr)
        return 2
    if args.out:
        write_npz(args.out, images, labels)
        print(f"wrote {len(images)} images of {len(classes)} classes to {args.out}", file=sys.stderr)
    if args.grid:
        save_png(upscale(make_grid(images, len(classes), args.per_class), args.scale), args.grid)
        print(f"wrote grid {len(classes)}x{args.per_class} to {args.grid}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
