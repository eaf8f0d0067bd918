"""Which training recipe fixes EMNIST's look-alike classes (`--balanced-classes`, `--fake-labels`,
`--mismatch-weight`, `--mismatch-labels`)?
`python bench/compare_emnist_recipes.py RUN_OR_CHECKPOINT... --data-dir DIR [--steps 1000,4000] [--json FILE]`.

Each argument is a run folder (every checkpoint in it is scored, oldest first) or one checkpoint /
exported folder (the shipped `checkpoints/emnist`, as the reference); `--steps` keeps only those
checkpoints of a run. Everything is scored in this one
process with the shipped EMNIST evaluator and the full EMNIST protocol of `cgan.evaluate`; GAN-train (4
minutes a checkpoint on 2 cores) only for the last checkpoint of each argument unless `--gan-train all`.

Besides the protocol's numbers it reports, for the classes ByMerge under-represents and the generator
drifts away from (I, L, O, q, and f, whose real images the evaluator takes for F, beside the frequent twins
1, 0, 9), each class's conditional-accuracy ratio, its shortfall in standard errors and Fréchet-distance
ratio; the classes measurably under target (the protocol's rule) beside every class whose ratio is under;
and the risk that oversampling brings: the fraction of that class's generated images that are near copies
of a training image (closer than the protocol's memorization threshold), beside the same fraction for that
class's held-out real images; and what the evaluator takes each watched class's generated images for when
not for themselves (the twin a class collapsed onto).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cgan.checkpoints import is_checkpoint_folder, list_checkpoints, read_meta
from cgan.evaluate import CLASS_TARGET, evaluate_sampler, load_real_data, protocol_for, protocol_subsets
from cgan.evaluator import load_evaluator
from cgan.metrics import nearest_distances, pixels
from cgan.sampler import load

WATCHED = ("I", "L", "O", "q", "f", "1", "0", "9")   # rare look-alikes, then the twins they collapse onto


def checkpoints_of(path: Path) -> list[Path]:
    """One folder for a checkpoint or an export, every checkpoint (oldest first) for a run folder."""
    if is_checkpoint_folder(path):
        return [path]
    found = list_checkpoints(path)
    if not found:
        raise SystemExit(f"{path}: neither a checkpoint folder nor a run folder with checkpoints")
    return found


class WatchedClasses:
    """Per watched class: what the evaluator takes its generated images for when not for the class itself
    (``taken_for``: the two commonest wrong classes, as fractions of all its images), and the fraction of
    its generated images (the protocol's per-class count) that are near copies of a GAN-training image,
    beside the same fraction for the class's held-out real images. "Near" is the protocol's memorization
    threshold (`cgan.evaluate` reports it as ``copy_threshold``), the same for every class: simple shapes
    (1, I, L) sit close to a training image even when unseen, so the per-class real fraction, not 1%, is
    the reference. The real side is computed once per process."""

    def __init__(self, evaluator, real, protocol):
        names = evaluator.class_names
        self.evaluator, self.names = evaluator, names
        self.protocol, self.train = protocol, pixels(real.gan_train_images)
        self.classes = {name: names.index(name) for name in WATCHED}
        held = protocol_subsets(real, protocol).heldout
        self.heldout = {name: nearest_distances(pixels(real.heldout_images[held[real.heldout_labels[held] == k]]),
                                                self.train) for name, k in self.classes.items()}

    def __call__(self, sampler, threshold: float) -> dict:
        out = {}
        for name, k in self.classes.items():
            images, _ = sampler.sample([k], self.protocol.per_class, seed=self.protocol.seed)
            pred = np.asarray(self.evaluator.predict(images))
            wrong = Counter(int(p) for p in pred if p != k).most_common(2)
            gen_d = nearest_distances(pixels(torch.as_tensor(images)), self.train)
            held_d = self.heldout[name]
            out[name] = {"generated": float((gen_d <= threshold).float().mean()),
                         "heldout": float((held_d <= threshold).float().mean()), "num_heldout": len(held_d),
                         "taken_for": {self.names[c]: n / len(pred) for c, n in wrong}}
        return out


def recipe(config: dict) -> str:
    """The knobs this comparison is about, in words: "plain", "balanced", "mismatch 0.5", ..."""
    parts = (["balanced"] if config.get("balanced_classes") else []) + (
        ["fake labels data"] if config.get("fake_labels") == "data" else []) + (
        [f"mismatch {config['mismatch_weight']:g}" + (" hardest" if config.get("mismatch_labels") == "hardest" else "")]
        if config.get("mismatch_weight") else [])
    return " + ".join(parts) or "plain"


def score(folder: Path, evaluator, real, protocol, watched: WatchedClasses) -> dict:
    sampler = load(folder)
    r = evaluate_sampler(sampler, evaluator, real, protocol)
    cond, fd = r["conditional_accuracy"], r["frechet"]
    config = sampler.meta["config"]
    return {
        "checkpoint": str(folder), "step": sampler.meta["step"], "recipe": recipe(config),
        "balanced_classes": bool(config.get("balanced_classes", False)),
        "mismatch_weight": float(config.get("mismatch_weight", 0.0)),
        "mismatch_labels": config.get("mismatch_labels", "uniform"),
        "fake_labels": config.get("fake_labels", "uniform"),
        "batch": config["batch_size"], "seed": config["seed"],
        "cond": cond["ratio"], "worst_class": cond["worst_class"],
        "cond_class": {k: cond["per_class_ratio"][k] for k in WATCHED},
        "cond_all": cond["per_class_ratio"],  # every class: a fix for one look-alike may break another
        # measurably under (cgan.evaluate's rule: the shortfall beyond 3 standard errors), and every ratio
        # under the target, noise included (f's ceiling is 3 of 85 real images: its ratio is mostly noise)
        "classes_under_target": cond["classes_under_target"],
        "classes_under_ratio": sorted((k for k, v in cond["per_class_ratio"].items()
                                       if v is not None and v < CLASS_TARGET), key=cond["per_class_ratio"].get),
        "shortfall_se_class": {k: cond["per_class_shortfall_se"][k] for k in WATCHED},
        "fd": fd["generated"], "fd_floor": fd["floor"], "fd_ratio": fd["ratio"],
        "fd_class_max": fd["per_class_max_ratio"],
        "fd_class": {k: fd["per_class"][k]["ratio"] for k in WATCHED},
        "precision": r["precision_recall"]["generated"]["precision"],
        "recall": r["precision_recall"]["generated"]["recall"],
        "near_copies": r["memorization"]["generated_near_copy_fraction"],
        "near_copies_heldout": r["memorization"]["heldout_near_copy_fraction"],
        "near_copies_class": watched(sampler, r["memorization"]["copy_threshold"]),
        "gan_train": r["gan_train"]["accuracy"] if r.get("gan_train") else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--evaluator", default="checkpoints/emnist")
    p.add_argument("--gan-train", choices=("last", "all", "none"), default="last")
    p.add_argument("--steps", default=None, help="comma-separated steps: score only these checkpoints of a run")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    evaluator = load_evaluator(args.evaluator)
    real = load_real_data(evaluator, args.data_dir, gan_split="test")
    full = protocol_for("emnist")
    watched = WatchedClasses(evaluator, real, full)
    steps = None if args.steps is None else {int(s) for s in args.steps.split(",")}
    rows = []
    for run in args.runs:
        folders = checkpoints_of(run)
        if steps is not None and len(folders) > 1:
            folders = [f for f in folders if read_meta(f)["step"] in steps]
        for i, folder in enumerate(folders):
            with_gt = args.gan_train == "all" or (args.gan_train == "last" and i == len(folders) - 1)
            protocol = full if with_gt else replace(full, gan_train_epochs=0)
            rows.append({"run": str(run), **score(folder, evaluator, real, protocol, watched)})
            print(json.dumps(rows[-1]), flush=True)
            if args.json:  # after every row: a long comparison keeps what it measured if it is stopped
                Path(args.json).write_text(json.dumps({"protocol": asdict(full), "watched": WATCHED,
                                                       "rows": rows}, indent=2))

    head = ", ".join(WATCHED)
    print(f"\n| run | step | recipe | cond. ratio | worst class | {head} (cond. ratio) | FD / floor | "
          f"worst class FD | I, L, O, q FD / floor | precision | recall | near copies: all (I, L, O, q generated / held-out) | q taken for | f taken for | "
          f"classes measurably under {CLASS_TARGET:.2f} of ceiling (all under) | GAN-train |")
    print("|---" * 16 + "|")
    for r in rows:
        cls = ", ".join(f"{r['cond_class'][k]:.2f}" for k in WATCHED)
        fdc = ", ".join(f"{r['fd_class'][k]:.1f}" for k in ("I", "L", "O", "q"))
        nc = ", ".join(f"{r['near_copies_class'][k]['generated']:.2f}/{r['near_copies_class'][k]['heldout']:.2f}"
                       for k in ("I", "L", "O", "q"))
        gt = f"{r['gan_train']:.4f}" if r["gan_train"] is not None else ""
        under = (f"{len(r['classes_under_target'])}: " + ", ".join(
            f"{c} {r['cond_all'][c]:.2f}" for c in r["classes_under_target"][:4])
            + f" ({len(r['classes_under_ratio'])})")
        q_as, f_as = (", ".join(f"{c} {v:.2f}" for c, v in r["near_copies_class"][k]["taken_for"].items())
                      for k in ("q", "f"))
        print(f"| {Path(r['run']).name} | {r['step']:,} | {r['recipe']} | "
              f"{r['cond']:.3f} | {r['worst_class']['class']} {r['worst_class']['ratio']:.2f} | {cls} | "
              f"{r['fd_ratio']:.1f}x | {r['fd_class_max']:.1f}x | {fdc} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['near_copies']:.3f} ({nc}) | {q_as} | {f_as} | {under} | {gt} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
