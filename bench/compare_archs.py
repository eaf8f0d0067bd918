"""Compare architectures on MNIST: `python bench/compare_archs.py RUN_OR_CHECKPOINT... --data-dir DIR`.

Each argument is either a folder of saved samples or anything `cgan.load` accepts (a checkpoint folder,
a run folder: its latest checkpoint; an exported folder), which is then sampled here. A folder of saved
samples holds ``samples_c.npz`` (or ``samples.npz``), written by
``python -m cgan.sample RUN --per-class 1000 --seed 12345 --out samples.npz`` on the machine that trained
it, and ``run.json`` (arch and seed). All runs are scored in this one process with the shipped MNIST
evaluator and the MNIST evaluation protocol of `cgan.evaluate`, except that GAN-train uses 8,000 generated
images (the saved 1,000 per class cannot cover the data's class mix of 10,000). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

import sys

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cgan.evaluate import evaluate_sampler, load_real_data, protocol_for
from cgan.evaluator import load_evaluator
from cgan.sampler import load


class SavedSamples:
    """Serves ``sample([k], n)`` from a saved class-major sample set: the first n images of class k."""

    def __init__(self, file: Path):
        d = np.load(file)
        self.images, self.labels = d["images"], d["labels"]

    def sample(self, classes, per_class, seed=0, truncation=1.0):
        out_x, out_y = [], []
        for k in classes:
            x = self.images[self.labels == k][:per_class]
            if len(x) < per_class:
                raise ValueError(f"only {len(x)} saved images of class {k}; {per_class} asked for")
            out_x.append(x)
            out_y.append(np.full(per_class, k, dtype=np.int64))
        return np.concatenate(out_x), np.concatenate(out_y)


def open_run(path: Path):
    """(config, trained steps, sampler) for a folder of saved samples or a checkpoint."""
    for name in ("samples_c.npz", "samples.npz"):
        if (path / name).exists():
            cfg = json.loads((path / "run.json").read_text())["config"]
            return cfg, cfg["steps"], SavedSamples(path / name)
    sampler = load(path)
    return sampler.meta["config"], sampler.meta["step"], sampler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--evaluator", default="checkpoints/mnist")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    evaluator = load_evaluator(args.evaluator)
    real = load_real_data(evaluator, args.data_dir, gan_split="test")
    protocol = replace(protocol_for("mnist"), gan_train_images=8000)
    rows = []
    for run in args.runs:
        cfg, steps, sampler = open_run(run)
        r = evaluate_sampler(sampler, evaluator, real, protocol)
        rows.append({"run": str(run), "arch": cfg["arch"], "seed": cfg["seed"], "steps": steps, "batch": cfg["batch_size"],
                     "cond": r["conditional_accuracy"]["ratio"], "gan_train": r["gan_train"]["accuracy"],
                     "fd": r["frechet"]["generated"], "fd_floor": r["frechet"]["floor"],
                     "precision": r["precision_recall"]["generated"]["precision"],
                     "recall": r["precision_recall"]["generated"]["recall"]})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| arch | seed | steps | conditional acc. / ceiling | GAN-train acc. | FD (floor) | precision | recall |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arch']} | {row['seed']} | {row['steps']:,} | {row['cond']:.3f} | {row['gan_train']:.3f} | "
              f"{row['fd']:.2f} ({row['fd_floor']:.2f}) | {row['precision']:.3f} | {row['recall']:.3f} |")
    for arch in dict.fromkeys(r["arch"] for r in rows):
        sel = [r for r in rows if r["arch"] == arch]
        mean = {k: statistics.mean(r[k] for r in sel) for k in ("cond", "gan_train", "fd", "precision", "recall")}
        print(f"| **{arch} mean** | {len(sel)} runs | | {mean['cond']:.3f} | {mean['gan_train']:.3f} | "
              f"{mean['fd']:.2f} | {mean['precision']:.3f} | {mean['recall']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"protocol": protocol.__dict__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
