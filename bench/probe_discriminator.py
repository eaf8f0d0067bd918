"""What does a training run's discriminator look at: the images, or only the labels?
`python bench/probe_discriminator.py CHECKPOINT... --data-dir DIR [--per-class 100] [--json FILE]`.

Each CHECKPOINT is a run's checkpoint folder (it holds the D in training_state.safetensors; an exported
folder has no D). For every class, D scores up to ``--per-class`` real images of the run's data and as
many images of the run's G (not the EMA: the G that D trains against) under that label. Printed per
checkpoint:

* the mean logit on real and on generated images, and its gap (how far D separates them now);
* the spread of D's logits inside one class (real images of the most frequent class): near zero means
  D's score does not depend on the image;
* the correlation, over classes, between a class's mean logit and the log of its share of the data.

Why: the training loop draws the generated images' labels uniformly, while the real batches follow the
data's class mix. On imbalanced data (EMNIST ByMerge: digits 5% each, q 0.5%) a conditional D can then
lower its loss by scoring labels alone (a frequent label is more often real), and a hinge loss stops
teaching D about any image it already scores beyond its margin. A large correlation with a spread near
zero is that shortcut.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cgan.checkpoints import TRAINING_FILE, read_meta
from cgan.config import TrainConfig
from cgan.data import load_dataset
from cgan.images import from_uint8
from cgan.training import Trainer


def probe(folder: Path, data_dir: str, per_class: int, seed: int = 0) -> dict:
    meta = read_meta(folder)
    cfg = meta["config"]
    state = folder / TRAINING_FILE
    if not state.is_file():
        raise SystemExit(f"{folder}: no {TRAINING_FILE} (an exported folder has no discriminator); "
                         "give a checkpoint folder of a run")
    ds = load_dataset(cfg["dataset"], cfg["split"], data_dir=data_dir, emnist_split=cfg.get("emnist_split"))
    k = ds.num_classes
    trainer = Trainer(TrainConfig.from_dict(cfg), ds, torch.device("cpu"))
    trainer.load(folder)  # the run's own G and D, read the way --resume reads them
    D, G = trainer.D.eval(), trainer.G.eval()
    gen = torch.Generator().manual_seed(seed)
    share = torch.bincount(ds.labels, minlength=k).double() / len(ds.labels)
    real_mean, fake_mean = torch.zeros(k), torch.zeros(k)
    with torch.no_grad():
        for label in range(k):
            idx = (ds.labels == label).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
            y = torch.full((len(idx),), label)
            real_mean[label] = D(from_uint8(ds.images[idx]), y).mean()
            z = torch.randn(len(idx), cfg["z_dim"], generator=gen)
            fake_mean[label] = D(G(z, y), y).mean()
        top = int(share.argmax())
        idx = (ds.labels == top).nonzero().flatten()[:per_class]
        spread = D(from_uint8(ds.images[idx]), torch.full((len(idx),), top)).std().item()
    log_share = share.log().float()
    varies = k > 1 and (share.max() - share.min()).item() > 1e-9  # on balanced data there is no share to follow
    corr = lambda a: torch.corrcoef(torch.stack([log_share, a]))[0, 1].item() if varies else None
    return {"checkpoint": str(folder), "step": meta.get("step"), "balanced_classes": cfg.get("balanced_classes"),
            "init_from": cfg.get("init_from"), "d_warmup": cfg.get("d_warmup"),
            "real_logit": real_mean.mean().item(), "fake_logit": fake_mean.mean().item(),
            "gap": (real_mean - fake_mean).mean().item(), "spread_in_class": spread,
            "spread_class": ds.class_names[top], "corr_log_share_real": corr(real_mean),
            "corr_log_share_fake": corr(fake_mean),
            "per_class": {name: {"share": round(share[i].item(), 5), "real": round(real_mean[i].item(), 4),
                                 "fake": round(fake_mean[i].item(), 4)} for i, name in enumerate(ds.class_names)}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print("| checkpoint | step | real logit | generated logit | gap | spread in one class | corr(log class share, real / generated logit) |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.checkpoints:
        r = probe(folder, args.data_dir, args.per_class)
        rows.append(r)
        correlation = ("balanced data" if r["corr_log_share_real"] is None else
                       f"{r['corr_log_share_real']:+.2f} / {r['corr_log_share_fake']:+.2f}")
        print(f"| {folder} | {r['step']} | {r['real_logit']:+.3f} | {r['fake_logit']:+.3f} | {r['gap']:+.3f} | "
              f"{r['spread_in_class']:.4f} ({r['spread_class']}) | {correlation} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"what": __doc__.split("\n")[0], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
