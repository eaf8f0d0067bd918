"""The studio's sampling in fp32 vs bf16 autocast (and channels_last) on the CPU: time and pixels.

    python bench/bench_studio_precision.py [--checkpoint checkpoints/mnist] [--runs 30] [--json FILE]

What a one-class 10x10 grid costs the sampler (``Sampler.sample``: 100 images in the fixed blocks of 10
that keep samples reproducible, channels_last as the studio loads it on the CPU), in fp32 and in bf16
autocast, for the shipped checkpoint and for the default architecture at generator width 64 (untrained
weights, same code path: the width the bigger shipped models would use), interleaved so that a busy moment
hits both alike; p50 / p95 over --runs calls. And how far bf16 moves the shipped model's pixels from fp32's (uint8:
the largest difference and the share of pixels that change), which is what bitwise reproducibility of
"image j of class k for seed S" would lose.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from cgan.distributed import native_bf16  # noqa: E402
from cgan.networks import build_generator  # noqa: E402
from cgan.sampler import Sampler, load  # noqa: E402

VARIANTS = (("fp32", False), ("bf16", True))


def grid(sampler: Sampler, amp: bool) -> np.ndarray:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        return sampler.sample([0], 100, seed=0)[0]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/mnist")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sampler = load(args.checkpoint)
    meta, cfg = sampler.meta, sampler.meta["config"]
    c, size = meta["image"]["channels"], meta["image"]["size"]
    wide = build_generator(cfg["arch"], cfg["z_dim"], sampler.num_classes, c, size, 64).eval().requires_grad_(False)
    wide_meta = {**meta, "config": {**cfg, "g_width": 64}}
    samplers = {f"shipped (g_width {cfg['g_width']})": sampler,
                "g_width 64 (untrained)": Sampler(wide.to(memory_format=torch.channels_last), wide_meta,
                                                  sampler.folder, sampler.device)}
    results = []
    for label, smp in samplers.items():
        times = {name: [] for name, _ in VARIANTS}
        for _, amp in VARIANTS:  # warm-up
            grid(smp, amp)
        for _ in range(args.runs):
            for name, amp in VARIANTS:
                t0 = time.perf_counter()
                grid(smp, amp)
                times[name].append((time.perf_counter() - t0) * 1000)
        base = grid(smp, False)
        for name, amp in VARIANTS:
            diff = np.abs(grid(smp, amp).astype(np.int16) - base.astype(np.int16))
            r = {"model": label, "variant": name, "p50_ms": round(statistics.median(times[name]), 1),
                 "p95_ms": round(percentile(times[name], 0.95), 1), "max_pixel_diff": int(diff.max()),
                 "pixels_changed": round(float((diff > 0).mean()), 4)}
            results.append(r)
            print(f"{label:26s} {name:6s} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                  f"max |diff| {r['max_pixel_diff']:3d}  pixels changed {100 * r['pixels_changed']:.1f}%", flush=True)
    if args.json:
        out = {"benchmark": "studio sampling precision (one-class 10x10 grid via Sampler.sample)", "device": "cpu",
               "threads": torch.get_num_threads(), "native_bf16": native_bf16(torch.device("cpu")),
               "torch": torch.__version__, "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "runs": args.runs, "results": results}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
