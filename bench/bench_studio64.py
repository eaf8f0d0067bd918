"""Benchmark the studio's grid at 28, 32 and 64 px (a script, not a test).

    python bench/bench_studio64.py [--runs 30] [--rounds 3] [--json bench/results/studio-grid-64px-cpu-2core.json]

Builds default-architecture (sngan, g_width 32 unless --g-width) checkpoints with one training step on
random images, grey and colour, at each size, saves them as exported checkpoint folders in a temporary
checkpoints folder, and times the studio's grid handler (``Studio.generate``, display scale 3 as the page
starts) in this process: each round times every case ``--runs`` times after a warm-up, cases interleaved
so a neighbour's load hits all of them alike; the report gives each case's p95 per round and the median
of those p95s. Cases: the 10x10 grid at every size (at 64 px with the studio's grid cap lifted, to show
what it would cost), the grids of --grids at 64 px, and the "All classes" overview of the 10 classes
with 8 columns (the page's first view) and with 4 (the sampler runs the generator on blocks of 10
latents per class, so both generate 100 images). Target on 2 CPU cores: 10x10 handler p95 <= 150 ms
(at 64 px: the largest grid the studio allows).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py sets it, before torch loads

from bench_app import percentiles, timed  # noqa: E402

IMAGES = {"28-grey": (28, 1, "mnist"), "32-rgb": (32, 3, "cifar10"), "64-grey": (64, 1, "mnist"),
          "64-rgb": (64, 3, "cifar10")}


def make_checkpoint(root: Path, name: str, size: int, channels: int, dataset: str, g_width: int) -> Path:
    """An exported checkpoint of the default architecture after one training step on random images."""
    import dataclasses

    import torch

    from cgan.checkpoints import GENERATOR_FILE, write_folder
    from cgan.config import TrainConfig
    from cgan.data import DATASETS, Dataset
    from cgan.networks import recipe
    from cgan.training import Trainer

    classes = DATASETS[dataset].classes
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, channels, size, size), dtype=torch.uint8, generator=g)
    data = Dataset(dataset, "train", images, torch.arange(64) % len(classes), tuple(classes))
    cfg = dataclasses.replace(TrainConfig(dataset=dataset), **{**recipe("sngan", len(data)), "g_width": g_width},
                              batch_size=16, steps=1)
    trainer = Trainer(cfg, data, torch.device("cpu"))
    trainer.iteration()
    return write_folder(root / name, trainer.meta("export"), {GENERATOR_FILE: trainer.G_ema.state_dict()})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=30, help="timed requests per case and round (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the report gives the median p95 (default 3)")
    p.add_argument("--g-width", type=int, default=32, help="generator width (default 32, as shipped)")
    p.add_argument("--images", default=",".join(IMAGES), help=f"image kinds (default {','.join(IMAGES)})")
    p.add_argument("--grids", default="8x8,7x7,5x10,6x6",
                   help="also time these grids at 64 px with the cap lifted (default %(default)s)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    import torch

    import cgan.studio as studio_mod
    from cgan.distributed import configure_torch
    from cgan.studio import ALL_CLASSES, Studio

    configure_torch()  # as app.py does: every core this process may use
    kinds = args.images.split(",")
    extra = [tuple(int(v) for v in g.split("x")) for g in args.grids.split(",") if g]
    with tempfile.TemporaryDirectory(prefix="cgan-bench64-") as tmp:
        root = Path(tmp)
        for kind in kinds:
            size, channels, dataset = IMAGES[kind]
            make_checkpoint(root, kind, size, channels, dataset, args.g_width)
        studio = Studio(root)
        studio.preload()
        cap = studio_mod.grid_limit(64)

        def grid(kind, rows, cols, cls=None, lifted=False):
            first = studio.class_names(kind)[0]

            def run(i):
                if lifted:  # what the grid would cost without the studio's cap
                    saved, studio_mod.MAX_GRID_PIXELS = studio_mod.MAX_GRID_PIXELS, 10**9
                    try:
                        return studio.generate(kind, cls or first, i, rows, cols, 1.0, 3)
                    finally:
                        studio_mod.MAX_GRID_PIXELS = saved
                return studio.generate(kind, cls or first, i, rows, cols, 1.0, 3)
            return run

        cases = {}
        for kind in kinds:
            size = IMAGES[kind][0]
            over = studio_mod.grid_limit(size) < 100
            cases[f"{kind} 10x10" + (" (cap lifted)" if over else "")] = grid(kind, 10, 10, lifted=over)
            if size == 64:
                for r, c in extra:
                    if r * c <= cap:
                        cases[f"{kind} {r}x{c}"] = grid(kind, r, c)
                    else:
                        cases[f"{kind} {r}x{c} (cap lifted)"] = grid(kind, r, c, lifted=True)
                for cols in (8, 4):  # the page's first view has 8 columns
                    cases[f"{kind} All classes x {cols}"] = grid(kind, 4, cols, ALL_CLASSES)
        rounds = {name: [] for name in cases}
        for r in range(args.rounds):
            for name, fn in cases.items():
                rounds[name].append(percentiles(timed(fn, args.runs)))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        n_params = {k: studio.entries[k].parameters for k in kinds}

    print(f"cgan-studio grid benchmark, {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} usable cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads; sngan g_width {args.g_width}, display scale 3, {args.rounds} rounds of {args.runs} runs; "
          f"grid cap at 64 px: {cap} images")
    print(f"{'case':<34}{'p50 (median)':>14}{'p95 (median)':>14}   p95 per round")
    report = {}
    for name, res in rounds.items():
        p50 = statistics.median(r[0] for r in res)
        p95 = statistics.median(r[1] for r in res)
        report[name] = {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                        "p95_per_round_ms": [round(r[1], 1) for r in res]}
        print(f"{name:<34}{p50:>12.1f}ms{p95:>12.1f}ms   {', '.join(f'{r[1]:.0f}' for r in res)}")
    if args.json:
        out = {"date": time.strftime("%Y-%m-%d"), "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "arch": "sngan", "g_width": args.g_width, "scale": 3,
               "runs": args.runs, "rounds": args.rounds, "generator_parameters": n_params,
               "grid_cap_64px_images": cap, "max_grid_pixels": studio_mod.MAX_GRID_PIXELS, "handler_ms": report}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
