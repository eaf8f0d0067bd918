"""Training-speed benchmark: `python -m cgan.bench` prints a table and writes JSON.

For each architecture it times the real training iteration (``Trainer.iteration``) with the dataset kept
on the device ("device" loader) and with a torch DataLoader feeding the same batches ("dataloader"),
in the same process, after a warm-up that includes compilation (reported separately). On CPU it also
times a straightforward eager implementation of the tutorial MLP CGAN (same sizes, batch 64), the
baseline the `mlp` architecture must match.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import CheckpointError
from .config import TrainConfig
from .data import Dataset, DatasetError, load_dataset
from .distributed import native_bf16, pick_device
from .networks import ARCHITECTURES, cuda_graph_possible, recipe, speed_defaults
from .training import Trainer, device_name


def synthetic_dataset(n: int = 60_000, classes: int = 10, size: int = 28) -> Dataset:
    """Random uint8 images: throughput does not depend on image content."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return Dataset("mnist", "train", images, labels, tuple(str(i) for i in range(classes)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iteration_gflop(cfg: TrainConfig, dataset: Dataset, batch_size: int | None = None) -> float:
    """Floating-point operations of one training iteration (both networks, forward and backward, the Adam
    and EMA updates excluded) at ``batch_size`` (default cfg's), in GFLOP, as torch's FlopCounterMode counts
    them. Counted on the CPU in fp32 at batches 4 and 8 and extended linearly: every counted operation is
    per image or (spectral norm's power iteration) fixed, so the count is exact at any batch without
    running a large one. The same numbers whatever the device or precision, which is the point: images/s
    times this is the arithmetic rate the hardware sustained."""
    from torch.utils.flop_counter import FlopCounterMode

    def count(b: int) -> int:
        small = replace(cfg, batch_size=b, amp=False, channels_last=False, compile=False, cuda_graph=False,
                        loader="device", workers=0)
        trainer = Trainer(small, dataset, torch.device("cpu"))
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.iteration()
        return counter.get_total_flops()

    a, b = count(4), count(8)
    return (a + (b - a) / 4 * ((batch_size or cfg.batch_size) - 4)) / 1e9


def run_iterations(trainer: Trainer, n: int) -> float:
    """Seconds for ``n`` training iterations, the device's queue drained."""
    t0 = time.perf_counter()
    for _ in range(n):
        trainer.iteration()
    sync(trainer.device)
    return time.perf_counter() - t0


def time_trainer(cfg: TrainConfig, dataset: Dataset, device: torch.device, steps: int, warmup: int,
                 gflop: float | None = None) -> dict:
    """Images/s of ``steps`` iterations after ``warmup``; ``gflop`` (``iteration_gflop``, which is the same for
    every loader, precision and layout) adds the arithmetic rate sustained."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg, dataset, device)
    warm_s = run_iterations(trainer, warmup)
    seconds = run_iterations(trainer, steps)
    images = steps * cfg.batch_size * cfg.d_steps
    return {"arch": cfg.arch, "loader": cfg.loader, "workers": cfg.workers, "compile": cfg.compile,
            "compile_mode": cfg.compile_mode if cfg.compile else None, "cuda_graph": cfg.cuda_graph,
            "amp": cfg.amp, "channels_last": cfg.channels_last, "batch_size": cfg.batch_size, "steps": steps,
            "seconds": round(seconds, 4),
            "images_per_s": round(images / seconds, 1), "warmup_s": round(warm_s, 2),
            "gflop_per_iteration": round(gflop, 2) if gflop else None,
            "tflop_per_s": round(gflop * steps / seconds / 1e3, 3) if gflop else None,
            "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None}


def check_syncs(cfg: TrainConfig, dataset: Dataset, device: torch.device) -> None:
    """Run a few iterations with CUDA sync debugging on: every hidden host-device sync is reported."""
    import warnings

    trainer = Trainer(replace(cfg, compile=False), dataset, device)
    trainer.iteration()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            trainer.iteration()
    torch.cuda.set_sync_debug_mode("default")
    print(f"{cfg.arch}: {len(caught)} host-device syncs in 2 iterations", flush=True)
    for w in caught[:5]:
        print("   ", str(w.message)[:200], flush=True)


# Operators that only make views or allocate: no kernel of their own (the CPU stand-in for a kernel count).
VIEW_OPS = {"empty", "empty_strided", "empty_like", "as_strided", "as_strided_", "view", "_unsafe_view",
            "_reshape_alias", "reshape", "resolve_conj", "resolve_neg", "detach", "alias", "resize_", "flatten", "t",
            "transpose", "expand", "expand_as", "unsqueeze", "unsqueeze_", "squeeze", "squeeze_", "permute", "select",
            "slice", "narrow", "unbind", "split", "chunk", "contiguous", "lift_fresh", "to", "_to_copy", "item",
            "_local_scalar_dense", "is_nonzero", "matrix_H", "numpy_T"}
MATMUL_MARKS = ("conv", "gemm", "cutlass", "xmma", "cudnn", "wgrad", "dgrad", "fprop", "aten::mm", "addmm",
                "addmv", "bmm", "matmul")


def kernel_profile(cfg: TrainConfig, dataset: Dataset, device: torch.device, iterations: int = 5) -> dict:
    """Where an iteration's time goes: ``iterations`` eager iterations (no graph, no compile, after three
    unprofiled ones) under torch.profiler. On CUDA the kernels and copies the GPU ran, on the CPU the
    operators that compute (views and allocations left out): how many per iteration, their summed time per
    iteration beside the wall time, split into convolutions and matrix products against everything else,
    and the costliest by name. Beside the captured graph's time per iteration (the throughput rows): when
    the kernels' sum comes close to it the GPU never waits, and only fewer or faster kernels help."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    eager = replace(cfg, compile=False, cuda_graph=False)
    trainer = Trainer(eager, dataset, device)
    run_iterations(trainer, 3)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        wall = run_iterations(trainer, iterations)
    events = prof.events()
    if cuda:
        work = [(e.name, e.time_range.elapsed_us()) for e in events if e.device_type == DeviceType.CUDA]
    else:
        def computes(e) -> bool:
            return e.name.startswith("aten::") and e.name[6:] not in VIEW_OPS
        work = [(e.name, e.self_cpu_time_total) for e in events
                if computes(e) and not any(computes(c) for c in e.cpu_children)]
    by_name: dict[str, list[float]] = {}
    for name, us in work:
        by_name.setdefault(name, []).append(us)
    matmul = [us for name, us in work if any(m in name.lower() for m in MATMUL_MARKS)]
    total_us = sum(us for _, us in work)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:15]
    return {"arch": cfg.arch, "batch_size": cfg.batch_size, "amp": cfg.amp, "channels_last": cfg.channels_last,
            "unit": "CUDA kernels and copies" if cuda else "CPU operators that compute", "iterations": iterations,
            "per_iteration": round(len(work) / iterations, 1),
            "ms_per_iteration": round(total_us / iterations / 1e3, 3),
            "wall_ms_per_iteration": round(wall / iterations * 1e3, 3),
            "matmul_conv": {"per_iteration": round(len(matmul) / iterations, 1),
                            "ms_per_iteration": round(sum(matmul) / iterations / 1e3, 3)},
            "top": [{"name": name[:120], "per_iteration": round(len(us) / iterations, 1),
                     "ms_per_iteration": round(sum(us) / iterations / 1e3, 3)} for name, us in top]}


def print_kernel_profile(k: dict) -> None:
    mm = k["matmul_conv"]
    print(f"kernel profile, {k['arch']} batch {k['batch_size']} (eager; {k['unit']}): {k['per_iteration']:,.0f} per "
          f"iteration, {k['ms_per_iteration']} ms summed against {k['wall_ms_per_iteration']} ms of wall time; "
          f"convolutions and matrix products {mm['per_iteration']:,.0f} of them, {mm['ms_per_iteration']} ms", flush=True)
    for t in k["top"]:
        print(f"  {t['ms_per_iteration']:9.3f} ms  {t['per_iteration']:6.1f}x  {t['name'][:90]}", flush=True)


def quality_inputs(data_dir: str, evaluator_path: str, device: torch.device, quick: bool = False) -> dict:
    """What time_to_quality reads once for every batch it tries: the MNIST test split, the evaluator, its
    real-data features and the protocol."""
    from .evaluate import load_real_data, protocol_for
    from .evaluator import load_evaluator

    evaluator = load_evaluator(evaluator_path, device)
    return {"dataset": load_dataset("mnist", "test", data_dir), "evaluator": evaluator,
            "real": load_real_data(evaluator, data_dir, gan_split="test"), "protocol": protocol_for("mnist", quick=quick)}


def time_to_quality(inputs: dict, device: torch.device, cfg: TrainConfig, eval_every: int, max_steps: int,
                    cond_target: float = 0.97, gan_train_target: float = 0.95) -> dict:
    """Train the default architecture on MNIST until the evaluator's conditional accuracy reaches
    ``cond_target`` of its real-data ceiling and GAN-train accuracy reaches ``gan_train_target``, checked
    every ``eval_every`` steps with the dataset's full evaluation protocol (fixed seed). Training
    wall-clock excludes evaluation; the first ``eval_every`` steps include compilation, reported too.
    ``inputs``: quality_inputs()."""
    from pathlib import Path

    from .evaluate import evaluate_sampler
    from .sampler import Sampler

    dataset, evaluator, real, protocol = (inputs[k] for k in ("dataset", "evaluator", "real", "protocol"))
    trainer = Trainer(cfg, dataset, device)
    t0 = time.perf_counter()
    trainer.iteration()
    sync(device)
    first_iteration_s = time.perf_counter() - t0
    train_s, checks = first_iteration_s, []
    while trainer.progress.step < max_steps:
        t0 = time.perf_counter()
        for _ in range(eval_every - trainer.progress.step % eval_every):
            trainer.iteration()
        sync(device)
        train_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        sampler = Sampler(trainer.G_ema.eval(), trainer.meta(), Path("."), device)
        r = evaluate_sampler(sampler, evaluator, real, protocol, device)
        eval_s = time.perf_counter() - t0
        cond, gan_train = r["conditional_accuracy"]["ratio"], r["gan_train"]["accuracy"]
        checks.append({"step": trainer.progress.step, "train_s": round(train_s, 2), "cond_ratio": round(cond, 4),
                       "gan_train": round(gan_train, 4), "fd_ratio": r["frechet"]["ratio"], "eval_s": round(eval_s, 1)})
        print(f"  step {trainer.progress.step:6d}  train {train_s:7.1f} s  conditional {cond:.4f} of ceiling  "
              f"GAN-train {gan_train:.4f}  (eval {eval_s:.1f} s)", flush=True)
        if cond >= cond_target and gan_train >= gan_train_target:
            break
    reached = bool(checks) and checks[-1]["cond_ratio"] >= cond_target and checks[-1]["gan_train"] >= gan_train_target
    return {"reached": reached, "seconds": round(train_s, 2) if reached else None, "steps": trainer.progress.step,
            "first_iteration_s": round(first_iteration_s, 2), "batch_size": cfg.batch_size, "lr_g": cfg.lr_g,
            "lr_d": cfg.lr_d, "lr_warmup": cfg.lr_warmup, "compile": cfg.compile, "cuda_graph": cfg.cuda_graph,
            "amp": cfg.amp, "protocol": protocol.name, "cond_target": cond_target, "gan_train_target": gan_train_target, "checks": checks}


def time_loop(loader, one_step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``one_step(x, y)`` on batches from ``loader`` (cycled, moved to
    ``device``), after ``warmup`` untimed ones: how a hand-written training loop is timed."""
    def run(n: int) -> None:
        done = 0
        while done < n:
            for x, y in loader:
                one_step(x.to(device), y.to(device))
                done += 1
                if done == n:
                    return

    run(warmup)
    sync(device)
    t0 = time.perf_counter()
    run(steps)
    sync(device)
    return time.perf_counter() - t0


def eager_tutorial_mlp(dataset: Dataset, device: torch.device, steps: int, batch_size: int = 64,
                       z_dim: int = 128, width: int = 256) -> dict:
    """The tutorial MLP CGAN written the straightforward way: embedding-free one-hot concat, sigmoid +
    nn.BCELoss, Adam, a shuffling DataLoader yielding float images. Same layer sizes as `--arch mlp`."""
    k, px = dataset.num_classes, dataset.images[0].numel()
    G = nn.Sequential(nn.Linear(z_dim + k, width), nn.LeakyReLU(0.2), nn.Linear(width, 2 * width), nn.LeakyReLU(0.2),
                      nn.Linear(2 * width, 4 * width), nn.LeakyReLU(0.2), nn.Linear(4 * width, px), nn.Tanh()).to(device)
    D = nn.Sequential(nn.Linear(px + k, 4 * width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                      nn.Linear(4 * width, 2 * width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                      nn.Linear(2 * width, width), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                      nn.Linear(width, 1), nn.Sigmoid()).to(device)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    ds = torch.utils.data.TensorDataset(dataset.images.float().div(127.5).sub(1).flatten(1), dataset.labels)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True)
    eye = torch.eye(k, device=device)

    def one_step(x, y):
        ones, zeros = torch.ones(len(x), 1, device=device), torch.zeros(len(x), 1, device=device)
        z = torch.randn(len(x), z_dim, device=device)
        fake = G(torch.cat([z, eye[y]], 1))
        d_loss = bce(D(torch.cat([x, eye[y]], 1)), ones) + bce(D(torch.cat([fake.detach(), eye[y]], 1)), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(D(torch.cat([fake, eye[y]], 1)), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()

    seconds = time_loop(loader, one_step, steps, 10, device)
    return {"arch": "tutorial-mlp-eager", "loader": "dataloader", "workers": 0, "compile": False, "amp": False,
            "batch_size": batch_size, "steps": steps, "seconds": round(seconds, 4),
            "images_per_s": round(steps * batch_size / seconds, 1), "warmup_s": None, "peak_mem_mb": None}


class TutorialDataset(torch.utils.data.Dataset):
    """What a tutorial trains from: a torchvision-style dataset that turns each stored image into a PIL
    image and runs per-image transforms (ToTensor, Normalize) in __getitem__, one Python call per image."""

    def __init__(self, dataset: Dataset):
        from torchvision import transforms

        self.images, self.labels = dataset.images.numpy(), dataset.labels.numpy()
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        x = self.images[i]
        img = Image.fromarray(x[0], "L") if x.shape[0] == 1 else Image.fromarray(x.transpose(1, 2, 0), "RGB")
        return self.transform(img), int(self.labels[i])


def tutorial_loop(arch: str, dataset: Dataset, device: torch.device, steps: int, batch_size: int,
                  workers: int = 0) -> dict:
    """The naive baseline: the loop a user would write from the tutorials, with this project's networks
    of ``arch`` (same widths): a TutorialDataset and a shuffling DataLoader, eager fp32, default Adam,
    separate D passes over real and fake, D gradients computed in the G step, no EMA, no augmentation."""
    from .losses import discriminator_loss, generator_loss
    from .networks import build_discriminator, build_generator

    a = ARCHITECTURES[arch]
    c, s, _ = dataset.image_shape
    k = dataset.num_classes
    torch.manual_seed(0)
    G = build_generator(arch, 128, k, c, s, a.g_width).to(device)
    D = build_discriminator(arch, k, c, s, a.d_width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(TutorialDataset(dataset), batch_size=batch_size, shuffle=True,
                                         drop_last=True, num_workers=workers)

    def one_step(x, y):
        z = torch.randn(len(x), 128, device=device)
        y_fake = torch.randint(k, (len(x),), device=device)
        fake = G(z, y_fake)
        d_loss = discriminator_loss(a.loss, D(x, y), D(fake.detach(), y_fake))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = generator_loss(a.loss, D(fake, y_fake))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()

    seconds = time_loop(loader, one_step, steps, 3, device)
    return {"arch": f"tutorial-{arch}", "loader": "dataloader", "workers": workers, "compile": False, "amp": False,
            "channels_last": False, "batch_size": batch_size, "steps": steps, "seconds": round(seconds, 4),
            "images_per_s": round(steps * batch_size / seconds, 1), "warmup_s": None, "peak_mem_mb": None}


def precision_variants(archs: list[str], dataset: Dataset, device: torch.device, batch: int, steps: int,
                       rounds: int) -> list[dict]:
    """fp32, bf16 autocast, channels_last and both, per architecture, timed in interleaved rounds (so a
    neighbour's load hits every variant alike); each variant's median images/s over the rounds."""
    import statistics

    variants = [("fp32", False, False), ("bf16", True, False), ("channels_last", False, True),
                ("bf16+channels_last", True, True)]
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for arch in archs:
            for name, amp, cl in variants:
                cfg = replace(TrainConfig(), **recipe(arch, len(dataset)), batch_size=batch, amp=amp, channels_last=cl)
                r = time_trainer(cfg, dataset, device, steps, warmup=3)
                times.setdefault((arch, name), []).append(r["images_per_s"])
    out = []
    for arch in archs:
        base = statistics.median(times[(arch, "fp32")])
        for name, amp, cl in variants:
            v = statistics.median(times[(arch, name)])
            out.append({"arch": arch, "variant": name, "amp": amp, "channels_last": cl, "batch_size": batch,
                        "images_per_s": round(v, 1), "vs_fp32": round(v / base, 3), "rounds": times[(arch, name)]})
            print(f"{arch:6s} {name:20s} {v:8.1f} img/s  {v / base:5.2f}x fp32", flush=True)
    return out


def compile_start(arch: str, device: str, batch: int, data_dir: str | None, runs: int = 2) -> dict:
    """Time to the first trained steps with torch.compile, cold and warm: ``runs`` fresh processes, one
    after another, sharing one new, empty inductor cache folder (PyTorch's FX-graph and AOTAutograd caches,
    on by default). The first process compiles from nothing; later ones find the compiled kernels there,
    as a second train.py on the same machine does (default cache: /tmp/torchinductor_USER, or
    $TORCHINDUCTOR_CACHE_DIR)."""
    import subprocess
    import sys
    import tempfile

    starts = []
    with tempfile.TemporaryDirectory(prefix="cgan-inductor-") as cache:
        for _ in range(runs):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                cmd = [sys.executable, "-m", "cgan.bench", "--device", device, "--archs", arch, "--loaders", "device",
                       "--steps", "3", "--warmup", "2", "--batch-size", str(batch), "--compile", "--no-tutorial",
                       "--json", out.name, *(["--data-dir", data_dir] if data_dir else [])]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
                process_s = time.perf_counter() - t0
                r = json.loads(Path(out.name).read_text())["results"][0]
            starts.append({"warmup_s": r["warmup_s"], "process_s": round(process_s, 1)})
    return {"arch": arch, "batch_size": batch, "compile_mode": r["compile_mode"], "cold": starts[0], "warm": starts[1:]}


TTQ_BASE_BATCH = 128  # the time-to-quality batch the default learning rates are used at unchanged
LR_SCALING = {"sqrt": math.sqrt, "linear": lambda k: k, "none": lambda k: 1.0}


def batch_list(text: str) -> list[int]:
    """``--ttq-batch-size 128,512,2048``: positive integers, comma-separated."""
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 128 or 128,512,2048, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be at least 1, got {text!r}")
    return sizes


def scaled_rates(cfg: TrainConfig, batch: int, rule: str) -> dict:
    """The learning rates for ``batch`` by ``rule`` (LR_SCALING), from ``cfg``'s rates at TTQ_BASE_BATCH."""
    k = LR_SCALING[rule](batch / TTQ_BASE_BATCH)
    return {"lr_g": cfg.lr_g * k, "lr_d": cfg.lr_d * k}


def summarize(folder: str) -> None:
    """One table from the JSON files this benchmark wrote into ``folder`` (bench/gpu_speed.sh's rows)."""
    for f in sorted(Path(folder).glob("*.json")):
        r = json.loads(f.read_text())
        for row in r.get("results") or []:
            print(f"{f.stem:20s} {row['arch']:16s} {row['loader']:10s} batch {row['batch_size']:5d} "
                  f"{row['images_per_s']:>12,.0f} img/s  {row.get('tflop_per_s') or '-'} TFLOP/s  "
                  f"warm-up {row.get('warmup_s')} s  peak {row.get('peak_mem_mb')} MB")
        for t in r.get("time_to_quality_by_batch") or ([r["time_to_quality"]] if r.get("time_to_quality") else []):
            print(f"{f.stem:20s} time to quality, batch {t['batch_size']}: "
                  f"{'reached' if t['reached'] else 'NOT reached'} at step {t['steps']}, "
                  f"{t['seconds']} s (first iteration, compile included, {t['first_iteration_s']} s)")
        if r.get("compile_start"):
            print(f"{f.stem:20s} compile start: {json.dumps(r['compile_start'])}")
        if r.get("kernel_profile"):
            print_kernel_profile(r["kernel_profile"])


def speed_fields(args: argparse.Namespace, arch: str, device: torch.device, loader: str = "device") -> dict:
    """amp / channels_last / compile / compile_mode / cuda_graph: what the command line says, else train.py's
    defaults (one process here, so a CUDA graph wherever the loader and the compile options allow one)."""
    graph_possible = cuda_graph_possible(loader, args.compile, args.compile_mode)
    defaults = speed_defaults(arch, device.type, native_bf16(device), args.cuda_graph, graph_possible)
    return {k: v if getattr(args, k) is None else getattr(args, k) for k, v in defaults.items()}


def bench_config(args: argparse.Namespace, arch: str, num_images: int, device: torch.device, batch: int,
                 loader: str = "device") -> TrainConfig:
    """The config train.py would run: the recipe for this architecture and dataset size (sngan: DiffAugment on
    small data) at ``batch``, with the command line's speed fields or train.py's defaults."""
    return replace(TrainConfig(), **recipe(arch, num_images), batch_size=batch, loader=loader,
                   workers=args.workers if loader == "dataloader" else 0, **speed_fields(args, arch, device, loader))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--archs", default=",".join(ARCHITECTURES))
    p.add_argument("--loaders", default="device,dataloader")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers for the dataloader path")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 on CUDA, 64 on CPU")
    p.add_argument("--steps", type=int, default=None, help="timed iterations (default 300 CUDA, 30 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 30 CUDA, 5 CPU)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="default: train.py's (CUDA without --cuda-graph)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode (default: train.py's, reduce-overhead on CUDA; or default, max-autotune, ...)")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="capture the whole iteration as one CUDA graph instead of compiling (default: train.py's, "
                        "on for CUDA with the device loader unless --compile or --compile-mode is given)")
    p.add_argument("--check-syncs", action="store_true", help="report host-device syncs inside an iteration (CUDA)")
    p.add_argument("--kernel-profile", action="store_true",
                   help="profile eager iterations of the first of --archs (device path, the rows' precision and "
                        "layout): kernels per iteration, their summed time, convolutions and matrix products "
                        "against the rest, the costliest kernels (CPU: the operators)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="default: train.py's (CUDA; conv archs on CPUs with native bf16)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC convolutions (default: train.py's)")
    p.add_argument("--tutorial", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the naive baseline, the tutorial loop (torchvision-style dataset with per-image "
                        "transforms, DataLoader, eager fp32), for each architecture")
    p.add_argument("--precision-variants", action="store_true",
                   help="time fp32, bf16, channels_last and both for sngan and dcgan, interleaved (CPU speed)")
    p.add_argument("--rounds", type=int, default=3, help="--precision-variants: interleaved rounds")
    p.add_argument("--data-dir", default=None, help="real MNIST-format data (default: synthetic images)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--split", default="test")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--time-to-quality", action="store_true",
                   help="also measure time-to-quality of the default arch on MNIST (needs --data-dir and --evaluator)")
    p.add_argument("--evaluator", default="checkpoints/mnist", help="MNIST evaluator (folder or file)")
    p.add_argument("--ttq-batch-size", type=batch_list, default=[TTQ_BASE_BATCH], metavar="B[,B...]",
                   help=f"one batch size, or several to find the one that reaches quality soonest (default "
                        f"{TTQ_BASE_BATCH}, the batch the default rates are for)")
    p.add_argument("--ttq-lr-scaling", choices=list(LR_SCALING), default="sqrt",
                   help=f"the rates at a batch B other than {TTQ_BASE_BATCH}: times sqrt(B/{TTQ_BASE_BATCH}) "
                        f"(default, the usual rule for Adam), B/{TTQ_BASE_BATCH}, or unchanged")
    p.add_argument("--ttq-lr-warmup", type=int, default=0, metavar="N",
                   help="train.py's --lr-warmup for the batches above the base one (raised rates)")
    p.add_argument("--ttq-eval-every", type=int, default=500,
                   help=f"steps between evaluations at batch {TTQ_BASE_BATCH}; other batches evaluate after the "
                        f"same number of images")
    p.add_argument("--ttq-max-steps", type=int, default=20_000, help=f"at batch {TTQ_BASE_BATCH}, as above")
    p.add_argument("--ttq-quick", action="store_true", help="quick evaluation protocol (smoke tests on CPU)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--compile-start", action="store_true",
                   help="time to the first steps with torch.compile, cold (empty inductor cache) and warm (a second "
                        "process finding the first one's cache), for the first of --archs")
    p.add_argument("--summarize", default=None, metavar="DIR", help="print one table from the JSON files in DIR")
    args = p.parse_args(argv)
    if args.summarize:
        summarize(args.summarize)
        return 0
    try:
        return run(args)
    except (DatasetError, CheckpointError) as e:  # a missing data folder or evaluator: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """The rows main's arguments ask for, printed as they finish and written to --json at the end."""
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (256 if cuda else 64)
    steps, warmup = args.steps or (300 if cuda else 30), args.warmup or (30 if cuda else 5)
    dataset = load_dataset(args.dataset, args.split, args.data_dir) if args.data_dir else synthetic_dataset()
    results = []
    for arch in ([] if args.skip_throughput else args.archs.split(",")):
        gflop = iteration_gflop(bench_config(args, arch, len(dataset), device, batch), dataset)  # once per arch
        for loader in args.loaders.split(","):
            cfg = bench_config(args, arch, len(dataset), device, batch, loader)
            if args.check_syncs and cuda:
                check_syncs(cfg, dataset, device)
            r = time_trainer(cfg, dataset, device, steps, warmup, gflop)
            results.append(r)
            print(f"{arch:6s} {loader:10s} {r['images_per_s']:>12,.0f} img/s = {r['tflop_per_s']:.3g} TFLOP/s  "
                  f"(warm-up incl. compile {r['warmup_s']:.1f} s, peak {r['peak_mem_mb']} MB)", flush=True)
    if not cuda and "mlp" in args.archs and not args.skip_throughput:
        r = eager_tutorial_mlp(dataset, device, steps * 4)
        results.append(r)
        print(f"tutorial MLP CGAN, eager reference: {r['images_per_s']:,.0f} img/s", flush=True)
    for arch in ([] if args.skip_throughput or not args.tutorial else args.archs.split(",")):
        r = tutorial_loop(arch, dataset, device, steps, batch, workers=args.workers if cuda else 0)
        results.append(r)
        print(f"{r['arch']:14s} naive baseline {r['images_per_s']:>9,.0f} img/s", flush=True)
    variants = precision_variants([a for a in ("sngan", "dcgan") if a in args.archs.split(",")], dataset, device,
                                  batch, steps, args.rounds) if args.precision_variants else None
    print()
    print(f"{'arch':20s} {'loader':11s} {'batch':>5s} {'img/s':>12s} {'TFLOP/s':>8s} {'warm-up s':>9s} {'peak MB':>8s}")
    for r in results:
        print(f"{r['arch']:20s} {r['loader']:11s} {r['batch_size']:>5d} {r['images_per_s']:>12,.0f} "
              f"{r.get('tflop_per_s') or '-':>8} {r['warmup_s'] if r['warmup_s'] is not None else '-':>9} "
              f"{r['peak_mem_mb'] or '-':>8}")
    ttq, ttq_by_batch = None, None
    if args.time_to_quality:
        ttq_by_batch, inputs = [], quality_inputs(args.data_dir, args.evaluator, device, quick=args.ttq_quick)
        for b in args.ttq_batch_size:
            base = bench_config(args, "sngan", 10_000, device, b)  # MNIST test: 10k images
            cfg = replace(base, **scaled_rates(base, b, args.ttq_lr_scaling),
                          lr_warmup=args.ttq_lr_warmup if b > TTQ_BASE_BATCH else 0)
            every, most = (max(1, round(n * TTQ_BASE_BATCH / b)) for n in (args.ttq_eval_every, args.ttq_max_steps))
            print(f"time-to-quality: sngan, MNIST test split, batch {b}, lr_g {cfg.lr_g:.3g} lr_d {cfg.lr_d:.3g} "
                  f"(warm-up {cfg.lr_warmup} steps), evaluation every {every} steps", flush=True)
            r = time_to_quality(inputs, device, cfg, every, most)
            print(f"time-to-quality: {'reached' if r['reached'] else 'NOT reached'} at step {r['steps']}, "
                  f"{r['seconds']} s of training (first iteration incl. compile {r['first_iteration_s']} s)", flush=True)
            ttq_by_batch.append(r)
        reached = [r for r in ttq_by_batch if r["reached"]]
        ttq = min(reached, key=lambda r: r["seconds"]) if reached else ttq_by_batch[0]
        if len(ttq_by_batch) > 1:
            print(f"time-to-quality: soonest at batch {ttq['batch_size']}" if reached else
                  "time-to-quality: no batch reached quality", flush=True)
    profiled = None
    if args.kernel_profile:
        arch = args.archs.split(",")[0]
        profiled = kernel_profile(bench_config(args, arch, len(dataset), device, batch), dataset, device)
        print_kernel_profile(profiled)
    start = None
    if args.compile_start:
        start = compile_start(args.archs.split(",")[0], args.device, batch, args.data_dir)
        print(f"torch.compile start ({start['arch']}, {start['compile_mode']}): cold {start['cold']['warmup_s']} s to "
              f"the first 2 steps ({start['cold']['process_s']} s for the process), warm "
              + ", ".join(f"{w['warmup_s']} s ({w['process_s']} s)" for w in start["warm"]), flush=True)
    report = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
              "date": time.strftime("%Y-%m-%d"), "dataset": "synthetic" if not args.data_dir else args.dataset,
              "results": results, "precision_variants": variants, "time_to_quality": ttq,
              "time_to_quality_by_batch": ttq_by_batch if ttq_by_batch and len(ttq_by_batch) > 1 else None,
              "compile_start": start, "kernel_profile": profiled}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
