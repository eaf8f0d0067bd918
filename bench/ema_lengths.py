"""Which EMA length serves the best generator? `python bench/ema_lengths.py --ema-lengths 0.998,power:4
TRAIN.PY OPTIONS...` trains exactly as `train.py TRAIN.PY OPTIONS...` does (its run folder, checkpoints
and losses, with `--ema-decay` as the served EMA) and keeps one more average of G's weights per item of
`--ema-lengths`, updated after every G step:

* a decay D: the served EMA's rule with D (`cgan.training.ema_decay`); its warm-up alone is about
  1 - 9 / step, so a D above 1 - 9 / steps never takes effect (0.999 does after step 8,991);
* power:G: EDM2's power-function average (Karras et al. 2024), decay (1 - 1 / t) ** (G + 1) at update t,
  which keeps a fixed fraction of training in the average: relative width sqrt((G+1) / ((G+2)^2 (G+3))),
  0.19 for G = 2, 0.14 for 4, 0.09 for 8 (about the warm-up rule alone), 0.05 for 16; a decay-0.999 EMA is an
  exponential of 1,000 steps, 0.057 of a 17,500-step run.

At each checkpoint of the run it writes each extra average as a loadable folder, RUN/ema-ITEM/step-NNNNNNN
(checkpoint.json, generator only), so `python -m cgan.evaluate` scores every length at every checkpoint of
one training run: they differ in nothing else. From random weights only.

Why: the served generator is an average of G's recent weights, and how long an average serves best is a
knob that the quality issue asks to be measured, not guessed (EDM2, Karras et al. 2024, found the best
length to vary by model and training length). Results: bench/QUALITY.md.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cgan import training, training_cli  # noqa: E402
from cgan.checkpoints import GENERATOR_FILE, read_meta, write_folder  # noqa: E402


def lengths(text: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    try:
        ok = out and all(float(t[6:]) >= 0 if t.startswith("power:") else 0 < float(t) < 1 for t in out)
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError("give decays between 0 and 1 or power:G with G >= 0, comma-separated, "
                                         "e.g. 0.998,power:4")
    return out


def decay(length: str, t: int) -> float:
    """The decay of average ``length`` at its update ``t`` (1, 2, ...)."""
    if length.startswith("power:"):
        return (1 - 1 / t) ** (float(length[6:]) + 1)
    return training.ema_decay(float(length), t - 1)  # the served EMA's rule, at step t - 1


class ExtraEMAs:
    """The extra averages, updated beside the served one: training.ema_update and Trainer.save are wrapped
    (the run itself computes exactly what train.py computes; the extra averages only read G)."""

    def __init__(self, lengths: list[str]):
        self.lengths, self.models, self.updates = lengths, None, 0
        self.ema_update, self.save = training.ema_update, training.Trainer.save

    def update(self, ema, model, weight):
        if self.models is None:  # the first update: every average starts, like the served one, as G's start
            self.models = [copy.deepcopy(ema) for _ in self.lengths]
        self.ema_update(ema, model, weight)
        self.updates += 1
        for m, length in zip(self.models, self.lengths):
            self.ema_update(m, model, 1.0 - decay(length, self.updates))

    def save_with_extras(self, trainer, run_dir):
        final = self.save(trainer, run_dir)
        if self.models is not None:
            meta = read_meta(final)
            meta.pop("optimizers", None)
            for m, length in zip(self.models, self.lengths):
                meta["ema_length"] = length
                write_folder(Path(run_dir) / f"ema-{length.replace(':', '')}" / final.name, meta,
                             {GENERATOR_FILE: m.state_dict()})
        return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    ap.add_argument("--ema-lengths", type=lengths, required=True)
    args, rest = ap.parse_known_args(argv)
    if any(a.startswith(("--init-from", "--resume")) for a in rest):
        raise SystemExit("ema_lengths.py trains from random weights only: leave out --init-from and --resume")
    # a captured CUDA graph would replay the served EMA's update without calling Python: eager kernels only
    rest = [*rest, "--no-cuda-graph"] if torch.cuda.is_available() else rest
    extras = ExtraEMAs(args.ema_lengths)
    training.ema_update = extras.update
    training.Trainer.save = lambda trainer, run_dir: extras.save_with_extras(trainer, run_dir)
    try:
        return training_cli.main(rest)
    finally:
        training.ema_update, training.Trainer.save = extras.ema_update, extras.save


if __name__ == "__main__":
    sys.exit(main())
