"""Export a run (or one checkpoint) into a slim, servable folder.

    python -m cgan.export RUN_DIR checkpoints/NAME [--data-dir DIR] [--real-per-class 64]

The folder holds checkpoint.json (kind "export"), generator.safetensors (the EMA generator only),
real_samples.safetensors (a few real uint8 images per class, for the app's real-vs-generated view and
nearest-neighbour check) and, when the target already has one, keeps its evaluator.safetensors and
MODEL_CARD.md. Only the generator is needed to sample; exported folders cannot be resumed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoints import (EVALUATOR_FILE, GENERATOR_FILE, REAL_SAMPLES_FILE, CheckpointError, read_meta,
                          read_tensors, real_sample, resolve_checkpoint, write_folder)
from .data import DatasetError, load_dataset

KEEP_FILES = (EVALUATOR_FILE, "MODEL_CARD.md", "evaluation.json")


def export(source: str | Path, target: str | Path, data_dir: str | None = None, real_per_class: int = 64) -> Path:
    folder = resolve_checkpoint(source)
    meta = read_meta(folder)
    generator = read_tensors(folder / GENERATOR_FILE)
    tensors = {GENERATOR_FILE: generator}
    cfg = meta["config"]
    if real_per_class > 0:
        ds = load_dataset(cfg["dataset"], cfg["split"], data_dir, cfg.get("emnist_split"))
        images, labels = real_sample(ds.images, ds.labels, ds.num_classes, real_per_class, seed=cfg["seed"])
        tensors[REAL_SAMPLES_FILE] = {"images": images, "labels": labels}
    out_meta = {k: v for k, v in meta.items() if k not in ("optimizers", "progress")}
    out_meta["kind"] = "export"
    out_meta["exported_from"] = {"step": meta["step"], "checkpoint": folder.name}
    target = Path(target)
    keep = {name: (target / name).read_bytes() for name in KEEP_FILES if (target / name).is_file()}
    write_folder(target, out_meta, tensors)
    for name, data in keep.items():  # files added to the served folder later (evaluator, model card) survive
        (target / name).write_bytes(data)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="run folder (its latest checkpoint) or checkpoint folder")
    p.add_argument("target", help="folder to write, e.g. checkpoints/mnist")
    p.add_argument("--data-dir", default=None, help="offline dataset folder for the real sample images")
    p.add_argument("--real-per-class", type=int, default=64, help="real images bundled per class (default 64; 0: none)")
    args = p.parse_args(argv)
    try:
        out = export(args.source, args.target, args.data_dir, args.real_per_class)
    except (CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"exported {args.source} -> {out} ({size:.1f} MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
