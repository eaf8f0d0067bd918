"""The studio's sampling in fp32 vs bf16 autocast (and channels_last) on the CPU: time and pixels.

    python bench/bench_studio_precision.py [--checkpoint checkpoints/mnist] [--runs 30] [--json FILE]

What a 10x10 grid costs the generator (100 images, one batch, as the grid handler asks for them), for the
shipped checkpoint and for the default architecture at generator width 64 (untrained weights, same code
path: the width the bigger shipped models would use), interleaved so that a busy moment hits every variant
alike; p50 / p95 over --runs calls. And how far bf16 moves the shipped model's pixels from fp32's (uint8:
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
from cgan.images import to_uint8  # noqa: E402
from cgan.networks import build_generator  # noqa: E402
from cgan.sampler import latents, load  # noqa: E402

VARIANTS = (("fp32", False, False), ("bf16", True, False), ("bf16+channels_last", True, True))


def grid(generator: torch.nn.Module, z: torch.Tensor, y: torch.Tensor, amp: bool) -> np.ndarray:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        return to_uint8(generator(z, y).float())


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
    meta = sampler.meta
    cfg = meta["config"]
    c, s = meta["image"]["channels"], meta["image"]["size"]
    z = latents(0, range(10), sampler.z_dim).repeat(sampler.num_classes, 1)[:100]
    y = torch.arange(sampler.num_classes).repeat_interleave(10)[:100]
    wide = build_generator(cfg["arch"], cfg["z_dim"], sampler.num_classes, c, s, 64).eval()
    models = {f"shipped (g_width {cfg['g_width']})": sampler.generator, "g_width 64 (untrained)": wide}
    results = []
    for label, model in models.items():
        copies = {name: (model if not cl else _channels_last_copy(model), amp) for name, amp, cl in VARIANTS}
        times = {name: [] for name in copies}
        for name, (m, amp) in copies.items():  # warm-up
            grid(m, z, y, amp)
        for _ in range(args.runs):
            for name, (m, amp) in copies.items():
                t0 = time.perf_counter()
                grid(m, z, y, amp)
                times[name].append((time.perf_counter() - t0) * 1000)
        base = grid(model, z, y, False)
        for name, (m, amp) in copies.items():
            diff = np.abs(grid(m, z, y, amp).astype(np.int16) - base.astype(np.int16))
            r = {"model": label, "variant": name, "p50_ms": round(statistics.median(times[name]), 1),
                 "p95_ms": round(percentile(times[name], 0.95), 1), "max_pixel_diff": int(diff.max()),
                 "pixels_changed": round(float((diff > 0).mean()), 4)}
            results.append(r)
            print(f"{label:26s} {name:20s} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                  f"max |diff| {r['max_pixel_diff']:3d}  pixels changed {100 * r['pixels_changed']:.1f}%", flush=True)
    if args.json:
        out = {"benchmark": "studio sampling precision (100 images, one batch)", "device": "cpu",
               "threads": torch.get_num_threads(), "native_bf16": native_bf16(torch.device("cpu")),
               "torch": torch.__version__, "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "runs": args.runs, "results": results}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _channels_last_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


if __name__ == "__main__":
    sys.exit(main())
