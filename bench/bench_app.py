"""Benchmark the studio (a script, not a test).

    python bench/bench_app.py [--checkpoints checkpoints] [--dataset mnist] [--runs 30]

Prints p50/p95 latency of generate (10x10 grid), interpolate (16 frames + GIF) and morph (16 frames
+ GIF): inside the handler (cgan.studio, in this process) and end to end through gradio_client against
`python app.py` started here, plus the time from starting `python app.py` to the first served page.
Targets on 2 CPU cores: handler p95 < 150 ms (10x10), < 300 ms (16-frame interpolation with GIF);
first page < 15 s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py sets it, before torch loads


def percentiles(times: list[float]) -> tuple[float, float]:
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def timed(fn, runs: int, warmup: int = 2) -> list[float]:
    for i in range(warmup):
        fn(10_000 + i)
    out = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default=os.environ.get("CGAN_CHECKPOINTS") or str(REPO / "checkpoints"))
    p.add_argument("--dataset", default="mnist", help="checkpoint folder name (default mnist)")
    p.add_argument("--class-name", default=None, help="class to draw (default: the dataset's first class)")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--no-server", action="store_true", help="handler timings only")
    p.add_argument("--widths", default=None,
                   help="also time the 10x10 grid for these generator widths, e.g. 16,24,32,48 (same "
                        "architecture and latent size as the checkpoint, untrained weights: latency only)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    from cgan.distributed import configure_torch
    from cgan.studio import Studio

    configure_torch()  # as app.py does: every core this process may use
    studio = Studio(args.checkpoints)
    if args.dataset not in studio.names:
        print(f"error: no checkpoint {args.dataset!r} in {args.checkpoints} (found: {', '.join(studio.names)})",
              file=sys.stderr)
        return 2
    studio.preload()
    ds = args.dataset
    cls = args.class_name or studio.class_names(ds)[0]
    other = studio.class_names(ds)[-1]
    cfg = studio.entries[ds].meta["config"]
    n_params = sum(t.numel() for t in studio.sampler(ds).generator.parameters())

    cases = {
        "generate 10x10": (lambda i: studio.generate(ds, cls, i, 10, 10, 1.0, 3),
                           dict(dataset=ds, class_name=cls, rows=10, cols=10, truncation=1.0, scale=3),
                           "/generate", "seed"),
        "interpolate 16 + GIF": (lambda i: studio.interpolate(ds, cls, i, i + 1, 16, "spherical", 1.0, 3),
                                 dict(dataset=ds, class_name=cls, seed_b=99_999, frames=16, method="spherical",
                                      truncation=1.0, scale=3), "/interpolate", "seed_a"),
        "morph 16 + GIF": (lambda i: studio.morph(ds, cls, other, i, 16, 1.0, 3),
                           dict(dataset=ds, class_a=cls, class_b=other, frames=16, truncation=1.0, scale=3),
                           "/morph", "seed"),
    }
    handler = {name: percentiles(timed(fn, args.runs)) for name, (fn, *_rest) in cases.items()}

    e2e, first_page = {}, None
    if not args.no_server:
        from gradio_client import Client

        port = free_port()
        env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
                   CGAN_CHECKPOINTS=str(args.checkpoints))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                    first_page = time.perf_counter() - t0
                    break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - t0 > 120:
                        raise SystemExit("app.py did not start")
                    time.sleep(0.05)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            for name, (_, kwargs, endpoint, seed_arg) in cases.items():
                e2e[name] = percentiles(timed(lambda i: client.predict(**kwargs, **{seed_arg: i},
                                                                         api_name=endpoint), args.runs))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    import torch

    print(f"cgan-studio app benchmark, {time.strftime('%Y-%m-%d')}: {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} usable cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads; {ds} ({cfg['arch']}, g_width {cfg['g_width']}, {n_params:,} generator parameters), "
          f"class {cls!r}, display scale 3, {args.runs} runs each")
    print(f"{'case':<24}{'handler p50':>13}{'handler p95':>13}{'e2e p50':>11}{'e2e p95':>11}")
    for name in cases:
        h50, h95 = handler[name]
        e = e2e.get(name)
        tail = f"{e[0]:>9.1f}ms{e[1]:>9.1f}ms" if e else f"{'-':>11}{'-':>11}"
        print(f"{name:<24}{h50:>11.1f}ms{h95:>11.1f}ms{tail}")
    if first_page is not None:
        print(f"{'python app.py -> first page':<24} {first_page:.1f} s")
    widths = width_table(studio.sampler(ds), [int(w) for w in args.widths.split(",")], args.runs) if args.widths else []
    if args.json:
        report = {"date": time.strftime("%Y-%m-%d"), "cores": len(os.sched_getaffinity(0)),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "dataset": ds, "class": cls,
                  "arch": cfg["arch"], "g_width": cfg["g_width"], "generator_parameters": n_params, "runs": args.runs,
                  "handler_ms": {k: {"p50": round(v[0], 1), "p95": round(v[1], 1)} for k, v in handler.items()},
                  "end_to_end_ms": {k: {"p50": round(v[0], 1), "p95": round(v[1], 1)} for k, v in e2e.items()},
                  "first_page_s": None if first_page is None else round(first_page, 2), "widths": widths}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def width_table(sampler, widths: list[int], runs: int) -> list[dict]:
    """Grid latency against generator width: the cost side of the size / quality trade-off."""
    import dataclasses

    import torch

    from cgan.networks import build_generator
    from cgan.sampler import Sampler

    meta, cfg = sampler.meta, sampler.meta["config"]
    print(f"\n10x10 grid (sample() of 100 images) by generator width, {cfg['arch']}, z_dim {cfg['z_dim']}:")
    print(f"{'g_width':>8}{'parameters':>12}{'p50':>10}{'p95':>10}")
    rows = []
    for w in widths:
        g = build_generator(cfg["arch"], cfg["z_dim"], sampler.num_classes, meta["image"]["channels"],
                            meta["image"]["size"], w).eval().requires_grad_(False).to(memory_format=torch.channels_last)
        s = dataclasses.replace(sampler, generator=g)
        assert isinstance(s, Sampler)
        p50, p95 = percentiles(timed(lambda i: s.sample([0], 100, seed=i), runs))
        n = sum(t.numel() for t in g.parameters())
        print(f"{w:>8}{n:>12,}{p50:>8.1f}ms{p95:>8.1f}ms")
        rows.append({"g_width": w, "parameters": n, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1)})
    return rows


if __name__ == "__main__":
    sys.exit(main())
