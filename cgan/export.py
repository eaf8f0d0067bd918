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

import torch

from .checkpoints import (EVALUATOR_FILE, GENERATOR_FILE, HUB_GENERATOR_FILE, HUB_META_FILE, META_FILE,
                          REAL_SAMPLES_FILE, CheckpointError, generator_file, read_meta, read_tensors, real_sample,
                          resolve_checkpoint, write_folder)
from .data import DatasetError
from .image_folder import load_config_data
from .sampler import real_samples_for

KEEP_FILES = (EVALUATOR_FILE, "MODEL_CARD.md", "evaluation.json")


def export(source: str | Path, target: str | Path, data_dir: str | None = None, real_per_class: int = 64,
           hub: bool = False) -> Path:
    """Write the served folder ``target`` from ``source``; with ``hub`` a Hugging Face Hub model repo
    (config.json, model.safetensors, real samples, README.md with metadata; see cgan/hub.py). Without a
    data folder the source's own real samples are kept, when it has them."""
    folder = resolve_checkpoint(source)
    meta = read_meta(folder)
    generator = read_tensors(generator_file(folder))
    tensors = {HUB_GENERATOR_FILE if hub else GENERATOR_FILE: generator}
    cfg = meta["config"]
    own = real_samples_for(folder, meta) if data_dir is None else None
    if own is not None:
        tensors[REAL_SAMPLES_FILE] = {"images": torch.from_numpy(own[0]), "labels": torch.from_numpy(own[1])}
    elif real_per_class > 0:
        ds = load_config_data(cfg, cfg["split"], data_dir, expect=meta["dataset"])
        images, labels = real_sample(ds.images, ds.labels, ds.num_classes, real_per_class, seed=cfg["seed"])
        tensors[REAL_SAMPLES_FILE] = {"images": images, "labels": labels}
    out_meta = {k: v for k, v in meta.items() if k not in ("optimizers", "progress")}
    out_meta["kind"] = "export"
    # A served folder is shared: the path of your own images on the trainer's machine stays there (the
    # folder's name is kept, which is what the studio's --data-dir looks for).
    out_meta["config"] = {k: Path(v).name if k in ("image_folder", "labels_file") and isinstance(v, str) else v
                          for k, v in meta["config"].items()}
    out_meta["exported_from"] = meta.get("exported_from") or {"step": meta["step"], "checkpoint": folder.name}
    target = Path(target)
    sources = (folder, target) if hub else (target,)  # a Hub folder takes the source's evaluation along
    keep = {name: (src / name).read_bytes() for src in sources for name in KEEP_FILES if (src / name).is_file()}
    write_folder(target, out_meta, tensors, meta_name=HUB_META_FILE if hub else META_FILE)
    for name, data in keep.items():  # files added to the served folder later (evaluator, model card) survive
        if not (hub and name == "MODEL_CARD.md"):  # a Hub repo's card is its README.md
            (target / name).write_bytes(data)
    if hub:
        from .hub import write_card

        write_card(target, f"cgan-studio {meta['dataset']['name']} ({cfg['arch']})")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="run folder (its latest checkpoint) or checkpoint folder")
    p.add_argument("target", help="folder to write, e.g. checkpoints/mnist")
    p.add_argument("--data-dir", default=None, help="offline dataset folder for the real sample images")
    p.add_argument("--real-per-class", type=int, default=64, help="real images bundled per class (default 64; 0: none)")
    p.add_argument("--hub", action="store_true",
                   help="write a Hugging Face Hub model repo: config.json, model.safetensors, real samples, README.md "
                        "(the model card with its YAML metadata)")
    p.add_argument("--push-to-hub", metavar="USER/NAME", default=None,
                   help="with --hub: upload the folder to this Hub repo (created if needed; the token comes from "
                        "huggingface-cli login or HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    args = p.parse_args(argv)
    if args.push_to_hub and not args.hub:
        p.error("--push-to-hub needs --hub")
    try:
        out = export(args.source, args.target, args.data_dir, args.real_per_class, hub=args.hub)
    except (CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"exported {args.source} -> {out} ({size:.1f} MiB)", file=sys.stderr)
    if args.push_to_hub:
        from .hub import push

        try:
            print(f"pushed to {push(out, args.push_to_hub, args.private)}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - network, auth and Hub errors: one clear line
            print(f"error: could not push to {args.push_to_hub}: {type(e).__name__}: {str(e).splitlines()[0][:300]} "
                  f"(log in with huggingface-cli login or set HF_TOKEN)", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
