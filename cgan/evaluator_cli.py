"""`python -m cgan.evaluator train | info`: train a dataset's evaluator classifier and store it, with the
real-data references of the evaluation protocol, in evaluator.safetensors; or print an evaluator's header.
The classifier is cgan/evaluator.py; the protocol and the metrics are cgan/evaluate.py."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .checkpoints import META_FILE, CheckpointError, read_meta
from .data import DATASETS, EMNIST_SPLITS, DatasetError, data_fingerprint
from .image_folder import FOLDER_DATASET
from .evaluate import load_real_data, protocol_for, real_train_reference
from .evaluator import (DEFAULT_EPOCHS, DEFAULT_FEATURE_DIM, DEFAULT_HELDOUT_FRACTION, DEFAULT_SPLIT_SEED,
                        DEFAULT_WIDTH, Evaluator, evaluator_splits, folder_spec, heldout_report, load_evaluator,
                        make_header, resolve_device, save_evaluator, train_evaluator)


def train_command(args) -> int:
    from . import __version__

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out)
    meta = read_meta(out) if (out / META_FILE).is_file() else None  # the folder is a checkpoint
    ck = meta["dataset"] if meta is not None else {}
    args.dataset = args.dataset or ck.get("name")
    if args.dataset is None:
        raise DatasetError("name the dataset with --dataset, or give --out a checkpoint folder (its dataset is used)")
    if ck.get("name") not in (None, args.dataset):
        raise DatasetError(f"{out / META_FILE} is a {ck.get('name')} checkpoint; this evaluator is for {args.dataset}")
    folder = None
    if args.dataset == FOLDER_DATASET:
        if meta is None:
            raise DatasetError("an evaluator for your own images is trained for a checkpoint: give --out the "
                               "checkpoint folder of a run trained with --image-folder or --labels")
        folder = folder_spec(meta["config"])
        if args.data_dir:  # the images moved since training: record where they are now
            given = Path(args.data_dir).resolve()
            key = "labels_file" if given.is_file() else "image_folder"
            folder[key] = str(given)
    emnist_split = args.emnist_split if args.dataset == "emnist" else None
    if args.dataset == "emnist" and emnist_split is None:
        emnist_split = "balanced"
    x_tr, y_tr, x_ho, y_ho, protocol, held_idx, class_names = evaluator_splits(
        args.dataset, args.split, args.data_dir, emnist_split, args.heldout_fraction, args.split_seed, folder)
    if folder is not None and ck.get("sha256") and ck.get("split") == "train" and \
            data_fingerprint(x_tr, y_tr) != ck["sha256"]:
        raise DatasetError(f"the images in {folder['labels_file'] or folder['image_folder']} are not the ones the "
                           f"checkpoint was trained on (files added, removed or changed since)")
    epochs = args.epochs or DEFAULT_EPOCHS.get(args.dataset, 10)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log(f"evaluator for {args.dataset}: {protocol['description']}; {epochs} epochs on {device}")
    t0 = time.time()
    net = train_evaluator(x_tr, y_tr, len(class_names), device, epochs, args.seed, args.batch_size, args.lr,
                          args.width, DEFAULT_FEATURE_DIM, log=log)
    seconds = time.time() - t0
    header = make_header(net, class_names, args.dataset, emnist_split, protocol, folder=folder, training={
        "epochs": epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "optimizer": "AdamW (weight decay 5e-4), one-cycle LR", "augment": "random shifts of up to 2 px",
        "device": str(device), "seconds": round(seconds, 1), "torch": torch.__version__,
        "cgan_studio": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    ev = Evaluator(net.eval(), header, out, held_idx, device)
    header["heldout"] = heldout_report(ev, x_ho, y_ho)
    file = save_evaluator(net, header, out, held_idx)
    h = header["heldout"]
    log(f"{file}: held-out accuracy {h['accuracy']:.4f} (class-balanced {h['balanced_accuracy']:.4f})")
    if args.reference:
        # GAN-train's real-data counterpart for each protocol of cgan.evaluate, computed once here.
        ev = load_evaluator(file, device)
        real = load_real_data(ev, args.data_dir)
        header["reference"] = {}
        for quick in (False, True):
            proto = protocol_for(args.dataset, quick)
            t1 = time.time()
            header["reference"][proto.name] = real_train_reference(ev, real, proto)
            log(f"real-train reference ({proto.name} protocol): accuracy "
                f"{header['reference'][proto.name]['accuracy']:.4f} ({time.time() - t1:.0f} s)")
        file = save_evaluator(net, header, out, held_idx)
    load_evaluator(file)  # what was written reads back
    print(f"{file}: held-out accuracy {h['accuracy']:.4f} (class-balanced {h['balanced_accuracy']:.4f}) on "
          f"{h['num_images']} images; trained in {seconds:.0f} s; {file.stat().st_size / 2**20:.2f} MiB")
    return 0


def info_command(args) -> int:
    ev = load_evaluator(args.path)
    print(json.dumps({"file": str(ev.file), **ev.header}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.evaluator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train an evaluator on real data and write evaluator.safetensors")
    t.add_argument("--dataset", default=None, choices=[*DATASETS, FOLDER_DATASET],
                   help="default: the dataset of the checkpoint in --out; 'folder' (your own images) needs a "
                        "checkpoint: its training part trains the evaluator, its held-out part is held out")
    t.add_argument("--data-dir", default=None,
                   help="folder with the official files (default: download); for your own images, where the "
                        "images (or the labels CSV) are now, if they moved since training")
    t.add_argument("--split", default="train", choices=["train", "test"],
                   help="train: train split trains, test split held out; test: seeded split of the test split")
    t.add_argument("--emnist-split", default=None, choices=list(EMNIST_SPLITS))
    t.add_argument("--out", required=True, help="checkpoint folder (writes OUT/evaluator.safetensors) or a file path")
    t.add_argument("--epochs", type=int, default=None, help=f"default per dataset: {DEFAULT_EPOCHS}")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    t.add_argument("--heldout-fraction", type=float, default=DEFAULT_HELDOUT_FRACTION,
                   help="--split test: fraction held out per class (default 0.2)")
    t.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED, help="--split test: seed of the split")
    t.add_argument("--seed", type=int, default=0, help="training seed")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    t.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the real-train references of GAN-train (one extra classifier per protocol)")
    i = sub.add_parser("info", help="print an evaluator's header")
    i.add_argument("path", help="evaluator.safetensors or the folder holding it")
    args = p.parse_args(argv)
    try:
        return train_command(args) if args.command == "train" else info_command(args)
    except (CheckpointError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
