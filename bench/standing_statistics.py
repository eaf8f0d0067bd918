"""Does the EMA generator serve better with batch-norm statistics measured on itself?
`python bench/standing_statistics.py MODEL OUT [--batches 100] [--batch-size 500] [--seed 12345]`,
then `python -m cgan.evaluate OUT ...` beside the same command on MODEL.

The served generator is the exponential moving average (EMA) of G's weights, and its batch-norm running
statistics are the same average of G's running statistics, which G measured with its own weights, not
the averaged ones. BigGAN (Brock et al. 2019) serves with "standing statistics" instead: the averaged
generator run in training mode over many batches of its own samples, the statistics averaged over them.
This writes a copy of the exported folder MODEL to OUT with the statistics re-measured that way (latents
and uniform labels drawn as training draws them, a cumulative average over the batches), prints how far
each layer's statistics moved, and drops OUT's evaluation.json (it described the old weights). The result
(2026-12-05, the three shipped models: no change beyond evaluation noise) is in bench/QUALITY.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cgan.checkpoints import (GENERATOR_FILE, read_generator, read_meta, resolve_checkpoint,  # noqa: E402
                              write_tensor_file)


@torch.no_grad()
def measure_standing_statistics(g: torch.nn.Module, z_dim: int, num_classes: int, batches: int,
                                batch_size: int, seed: int) -> list[tuple[int, float, float]]:
    """Re-measure every batch norm's running mean and variance on ``g``'s own forward passes; return per
    layer (channels, mean shift in units of the old standard deviation, new / old variance)."""
    bns = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    old = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    gen = torch.Generator().manual_seed(seed)
    g.train()
    for _ in range(batches):
        g(torch.randn(batch_size, z_dim, generator=gen), torch.randint(num_classes, (batch_size,), generator=gen))
    g.eval()
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return [(m.num_features, ((m.running_mean - mean).abs().mean() / var.sqrt().mean()).item(),
             (m.running_var / var).mean().item()) for m, (mean, var) in zip(bns, old)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an exported folder (e.g. checkpoints/emnist)")
    ap.add_argument("out", help="where to write the copy with re-measured statistics")
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args(argv)
    src, out = resolve_checkpoint(args.model), Path(args.out)
    meta = read_meta(src)
    g = read_generator(src, meta)  # as cgan.load reads it, batch norms kept
    for i, (channels, shift, ratio) in enumerate(measure_standing_statistics(
            g, meta["config"]["z_dim"], len(meta["class_names"]), args.batches, args.batch_size, args.seed)):
        print(f"batch norm {i} ({channels} channels): mean moved {shift:.4f} old std, variance x{ratio:.3f}")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    (out / "evaluation.json").unlink(missing_ok=True)
    write_tensor_file(out / GENERATOR_FILE, g.state_dict())
    print(f"wrote {out}; evaluate it beside {src} with the same `python -m cgan.evaluate` command")


if __name__ == "__main__":
    main()
