"""The training loop: a plain PyTorch loop over (D step, G step) iterations.

Data path: the whole dataset sits on the training device as uint8 and each batch is gathered there by
index (``loader="device"``); normalisation and DiffAugment run on the device too. ``loader="dataloader"``
feeds the very same batches through a torch DataLoader instead (the naive path, kept for comparison).

Determinism: batch order comes from a permutation seeded by (seed, epoch), and every random draw of an
iteration (latents, fake labels, wrong labels, augmentation, dropout) from generators re-seeded with
(seed, rank, step). The step number therefore *is* the RNG state: a run resumed from a checkpoint
follows the same trajectory as one that never stopped, on one process or many.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel as DDP

from . import __version__
from .augment import diff_augment, parse_policy
from .checkpoints import (FORMAT, FORMAT_VERSION, GENERATOR_FILE, META_FILE, TRAINING_FILE, CheckpointError,
                          check_header, expected_tensors, file_sha256, generator_file, load_module, load_optimizer,
                          optimizer_tensors, prune_checkpoints, read_meta, read_tensors, resolve_checkpoint,
                          step_dir_name, write_folder)
from .config import TrainConfig
from .data import DATASETS, Dataset
from .distributed import DistInfo, all_reduce_mean, cpu_name, native_bf16
from .files import atomic_write_text
from .images import from_uint8, make_grid, save_png, to_uint8
from .losses import discriminator_loss, generator_loss, mode_seeking_loss
from .networks import ARCHITECTURES, build_discriminator, build_generator
from .plots import plot_losses
from .runs import LOSS_FILE, create_loss_log, repair_loss_log
from .sampler import latents


class TrainingDiverged(RuntimeError):
    """Losses became NaN or infinite; training stops before any bad checkpoint is written."""


class RunControl:
    """What the world outside the loop asks of it and sees of it. ``request_stop`` only sets a flag, so it
    is safe in a signal handler; ``fit`` reads the flag after each iteration (under DDP, at --log-every
    steps, where the processes agree on it) and then stops cleanly. ``step`` follows the loop."""

    def __init__(self, step: int = 0):
        self.stop_reason: str | None = None  # e.g. "SIGTERM"; set once, by the first request
        self.step = step                     # completed iterations so far
        self.stopped = False                 # fit ended early because a stop was requested

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix64-style mixing), for per-step random streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class EpochBatches:
    """Which images make up each batch. Epoch e shuffles with seed (seed, e); rank r of w takes every
    w-th image of that permutation; the incomplete last batch is dropped."""

    def __init__(self, num_images: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = num_images, batch_size, seed, rank, world_size
        self.per_epoch = (num_images // world_size) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the dataset has {num_images} images, fewer than one batch of {batch_size} "
                             f"per process ({world_size} processes); lower --batch-size")

    def epoch(self, epoch: int) -> torch.Tensor:
        """(per_epoch, batch_size) int64 image indices for this rank in ``epoch``."""
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        perm = torch.randperm(self.n, generator=g)
        shard = perm[self.rank::self.world][: self.per_epoch * self.batch_size]
        return shard.view(self.per_epoch, self.batch_size)


class BalancedBatches(EpochBatches):
    """Class-balanced batches (``--balanced-classes``): every class is drawn equally often, whatever its
    share of the data, so a rare class (EMNIST's q beside g) gets as many real examples per step as the
    common ones. An epoch keeps the plain epoch's number of batches. Epoch e, seeded by (seed, e): the slots
    of all processes' batches get an equal share of labels each (the remainder to classes picked by the same
    seed), shuffled; class c's slots take its images in shuffled passes over them (a rare class repeats
    within an epoch, a common one is subsampled); rank r takes every w-th slot. A pure function of
    (seed, epoch) like the plain order, so --resume continues it exactly."""

    STREAM = 0xBA1A  # keeps this order's random stream apart from the plain order's

    def __init__(self, labels: torch.Tensor, num_classes: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        super().__init__(len(labels), batch_size, seed, rank, world_size)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=num_classes).tolist()
        starts = np.cumsum([0] + counts[:-1]).tolist()
        # classes without images (none in the built-in datasets) are never drawn
        self.by_class = [order[s:s + n] for s, n in zip(starts, counts) if n > 0]

    def epoch(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, self.STREAM))
        k, total = len(self.by_class), self.per_epoch * self.batch_size * self.world
        share = torch.full((k,), total // k, dtype=torch.int64)
        share[torch.randperm(k, generator=g)[: total % k]] += 1
        slot_class = torch.repeat_interleave(torch.arange(k), share)[torch.randperm(total, generator=g)]
        picks = torch.empty(total, dtype=torch.int64)
        for c, images in enumerate(self.by_class):
            need, n = int(share[c]), len(images)
            passes = [images[torch.randperm(n, generator=g)] for _ in range(-(-need // n))]
            picks[slot_class == c] = torch.cat(passes)[:need]
        shard = picks[self.rank::self.world][: self.per_epoch * self.batch_size]
        return shard.view(self.per_epoch, self.batch_size)


@dataclass
class Progress:
    step: int = 0              # completed iterations (generator updates)
    epoch: int = 0             # current epoch
    batch: int = 0             # next batch within the epoch
    images_seen: int = 0       # real images consumed, all processes together
    seconds: float = 0.0       # training wall-clock, checkpoints and samples excluded


def ema_decay(decay: float, step: int, warm_up: bool = True) -> float:
    """The EMA's decay at training step ``step`` (0, 1, ...): a short warm-up in which the average follows G
    closely, min(decay, (1 + step) / (10 + step)), i.e. 1 - 9 / (step + 10) until that reaches ``decay``;
    none from a trained generator (``warm_up`` off), whose EMA already averages."""
    return min(decay, (1 + step) / (10 + step)) if warm_up else decay


def ema_update(ema: nn.Module, model: nn.Module, weight: float | torch.Tensor) -> None:
    """Exponential moving average of weights and of batch-norm statistics (integer counters copied):
    ema += weight * (model - ema), weight = 1 - decay (a number, or a 0-d tensor inside a CUDA graph)."""
    with torch.no_grad():
        floats = [(e, m) for e, m in zip([*ema.parameters(), *ema.buffers()], [*model.parameters(), *model.buffers()])
                  if e.dtype.is_floating_point]
        if isinstance(weight, torch.Tensor):
            # one lerp per tensor: the foreach form reads a tensor weight back to the host (.item()), which a
            # CUDA graph capture refuses (cudaErrorStreamCaptureUnsupported, seen on an H200, torch 2.11)
            for e, m in floats:
                e.lerp_(m, weight)
        else:
            torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], weight)
        for eb, mb in zip(ema.buffers(), model.buffers()):
            if not eb.dtype.is_floating_point:
                eb.copy_(mb)


def dataset_meta(dataset: Dataset) -> dict:
    """checkpoint.json's "dataset" entry: a built-in dataset's facts come from its registry entry, your own
    images' (title, licence, fingerprint of the files) from the Dataset itself."""
    info = DATASETS.get(dataset.name)
    about = dataset.about or {"title": info.title, "license": info.license}
    return {"name": dataset.name, "title": about.get("title"), "split": dataset.split,
            "emnist_split": dataset.emnist_split, "num_images": len(dataset), "license": about.get("license"),
            **{k: v for k, v in about.items() if k not in ("title", "license")}}


def git_commit() -> str | None:
    """The code version (git hash, "+dirty" when uncommitted changes) or None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    return {"cgan_studio": __version__, "torch": torch.__version__, "python": platform.python_version()}


class Trainer:
    """Models, optimisers and one training iteration. ``fit`` below runs the loop around it."""

    def __init__(self, cfg: TrainConfig, dataset: Dataset, device: torch.device, dist: DistInfo = DistInfo()):
        self.cfg, self.dataset, self.device, self.dist = cfg, dataset, device, dist
        # the code this process runs: read once, since commits made while it trains do not change it
        self.code_version = git_commit()
        c, s, _ = dataset.image_shape
        self.num_classes = dataset.num_classes
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        # channels_last: NHWC convolutions, the layout oneDNN's bf16 kernels (and tensor cores) want
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.G = build_generator(cfg.arch, cfg.z_dim, self.num_classes, c, s, cfg.g_width).to(
            device, memory_format=self.memory_format)
        self.D = build_discriminator(cfg.arch, self.num_classes, c, s, cfg.d_width, cfg.d_minibatch_std).to(
            device, memory_format=self.memory_format)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        fused = device.type in ("cuda", "cpu")  # one pass over the weights (CPU: mlp trains 1.4x faster)
        betas = (cfg.beta1, cfg.beta2)
        # capturable: the step count lives on the device, so a CUDA graph can replay the update (same numbers)
        adam = {"betas": betas, "fused": fused, "capturable": cfg.cuda_graph and fused}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, **adam)
        self.policy = parse_policy(cfg.augment)
        # D without batch statistics scores real and fake in one forward pass (same result, half the launches).
        self.d_joint = not any(isinstance(m, _BatchNorm) for m in self.D.modules())
        # A projection D scores the matching-aware term's wrong labels from the real images' features.
        self.d_scores_more_labels = ARCHITECTURES[cfg.arch].scores_more_labels
        self.rng = torch.Generator(device=device)
        self.progress = Progress()
        if cfg.balanced_classes:
            self.batches = BalancedBatches(dataset.labels, self.num_classes, cfg.batch_size, cfg.seed, dist.rank,
                                           dist.world_size)
        else:
            self.batches = EpochBatches(len(dataset), cfg.batch_size, cfg.seed, dist.rank, dist.world_size)
        if dist.enabled:
            self.G_train, self.D_train = DDP(self.G), DDP(self.D)
        else:
            self.G_train, self.D_train = self.G, self.D
        self.G_fwd, self.D_fwd, self.D_frozen = self.G_train, self.D_train, self.D
        if cfg.compile:
            mode = cfg.compile_mode
            self.G_fwd, self.D_fwd = torch.compile(self.G_train, mode=mode), torch.compile(self.D_train, mode=mode)
            self.D_frozen = torch.compile(self.D, mode=mode)
        # (autocast's weight cache would hand a CUDA graph casts made before its capture)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp,
                                       cache_enabled=False if cfg.cuda_graph else None)
        self._images_dev = self._labels_dev = self._epoch_source = None
        self._epoch_idx, self._epoch_idx_of = None, -1  # this epoch's batch indices (CPU), and its number
        # --cuda-graph: the iteration reads its batches and EMA weight from these fixed buffers (see iteration)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_warmup = 0                # eager iterations run so far before the capture
        if cfg.cuda_graph:
            self.static_idx = torch.zeros(cfg.d_steps, cfg.batch_size, dtype=torch.int64, device=device)
            self.static_ema_weight = torch.zeros((), device=device)
            self.static_out = torch.zeros(4, device=device)

    # ------------------------------------------------------------------ data
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch (uint8 images, labels) on the device; advances the position in the epoch."""
        if self.cfg.loader == "device":
            idx = self.next_indices()
            return self._images_dev[idx], self._labels_dev[idx]
        p = self.progress
        self._start_epoch()
        if self._epoch_source is None:
            self._epoch_source = iter(self._make_loader(p.epoch, p.batch))
        x, y = next(self._epoch_source)
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        self._advance()
        return x, y

    def next_indices(self) -> torch.Tensor:
        """The next batch's image indices, on the device, with the whole dataset there (loader "device")."""
        self._start_epoch()
        if self._images_dev is None:
            self._images_dev = self.dataset.images.to(self.device)
            self._labels_dev = self.dataset.labels.to(self.device)
        if self._epoch_source is None:  # one host-to-device copy of the indices per epoch
            self._epoch_source = self._epoch_idx.to(self.device)
        idx = self._epoch_source[self.progress.batch]
        self._advance()
        return idx

    def _start_epoch(self) -> None:
        p = self.progress
        if self._epoch_idx_of != p.epoch:
            self._epoch_idx, self._epoch_idx_of = self.batches.epoch(p.epoch), p.epoch
            self._epoch_source = None

    def _advance(self) -> None:
        p = self.progress
        p.batch += 1
        if p.batch == self.batches.per_epoch:
            p.epoch, p.batch = p.epoch + 1, 0

    def _make_loader(self, epoch: int, start: int):
        ds = torch.utils.data.TensorDataset(self.dataset.images, self.dataset.labels)
        order = self.batches.epoch(epoch)[start:].tolist()
        return torch.utils.data.DataLoader(ds, batch_sampler=order, num_workers=self.cfg.workers,
                                           pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------ one iteration
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy, self.rng) if self.policy else x

    def d_step(self, x_u8: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg, b = self.cfg, len(y)
        z = torch.randn(b, cfg.z_dim, device=self.device, generator=self.rng)
        # --fake-labels data: the generated images take the real batch's labels, so a label alone never tells
        # real from generated (with uniform labels on imbalanced data it does: a rare label is more often fake)
        y_fake = y if cfg.fake_labels == "data" else torch.randint(self.num_classes, (b,), device=self.device,
                                                                   generator=self.rng)
        self.last_real_labels = y
        # A wrong label for each real image: add 1..K-1 modulo K, so it is never the right one.
        y_wrong = (y + torch.randint(1, max(self.num_classes, 2), (b,), device=self.device,
                                     generator=self.rng)) % self.num_classes
        with self.autocast:
            with torch.no_grad():
                fake = self.G_fwd(z, y_fake)
            real = self._augment(from_uint8(x_u8).contiguous(memory_format=self.memory_format))
            fake = self._augment(fake.float())
            wrong_logits = None
            if self.d_joint and cfg.mismatch_weight > 0 and self.d_scores_more_labels:
                wrong = {"hardest_wrong": b} if cfg.mismatch_labels == "hardest" else {"y_more": y_wrong}
                logits, wrong_logits = self.D_fwd(torch.cat([real, fake]), torch.cat([y, y_fake]), **wrong)
                real_logits, fake_logits = logits[:b], logits[b:]
            elif self.d_joint:
                logits = self.D_fwd(torch.cat([real, fake]), torch.cat([y, y_fake]))
                real_logits, fake_logits = logits[:b], logits[b:]
            else:
                real_logits, fake_logits = self.D_fwd(real, y), self.D_fwd(fake, y_fake)
            if cfg.mismatch_weight > 0 and wrong_logits is None:
                wrong_logits = self.D_fwd(real, y_wrong)
            loss = discriminator_loss(cfg.loss, real_logits.float(), fake_logits.float(),
                                      None if wrong_logits is None else wrong_logits.float(),
                                      cfg.mismatch_weight, cfg.label_smoothing)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.last_fake_logits = fake_logits.detach()
        return loss.detach(), real_logits.detach().float().mean(), fake_logits.detach().float().mean()

    def g_step(self, batch_size: int) -> torch.Tensor:
        cfg = self.cfg
        z = torch.randn(batch_size, cfg.z_dim, device=self.device, generator=self.rng)
        if cfg.fake_labels == "data":  # G trains on the data's class mix too: the last real batch's labels
            y = self.last_real_labels[:batch_size]
        else:
            y = torch.randint(self.num_classes, (batch_size,), device=self.device, generator=self.rng)
        if cfg.mode_seeking > 0:  # the two halves of the batch pair up: same labels, different latents
            half = batch_size // 2
            y = torch.cat([y[:half], y[:half], y[2 * half:]])
        self.D.requires_grad_(False)  # no D gradients in the G step (and no DDP reduction for D)
        with self.autocast:
            images = self.G_fwd(z, y).float()
            fake = self._augment(images)
            # The unwrapped D: its parameters are frozen here, so DDP must not wait for their gradients.
            loss = generator_loss(cfg.loss, self.D_frozen(fake, y).float())
            if cfg.mode_seeking > 0:
                loss = loss + cfg.mode_seeking * mode_seeking_loss(images, z)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        return loss.detach()

    def iteration(self) -> torch.Tensor:
        """One training iteration: d_steps D updates on real batches, one G update, one EMA update.
        Returns (d_loss, g_loss, d_real, d_fake) as one tensor on the device (no host sync)."""
        cfg, p = self.cfg, self.progress
        step_seed = mix_seed(cfg.seed, self.dist.rank, p.step)
        self.rng.manual_seed(step_seed)
        torch.manual_seed(step_seed)  # dropout (mlp D) draws from the global generator
        rate = self.learning_rate_factor(p.step)
        if rate is not None:
            self.scale_learning_rates(rate)
        decay = ema_decay(cfg.ema_decay, p.step, warm_up=not cfg.init_from)
        # (a captured graph keeps the rates it was captured with: it runs between the warm-ups and the decay)
        if cfg.cuda_graph and max(cfg.d_warmup, cfg.lr_warmup) <= p.step < cfg.steps - cfg.lr_decay:
            out = self._static_iteration(1.0 - decay)
        else:
            for _ in range(cfg.d_steps):
                x, y = self.next_batch()
                d_loss, d_real, d_fake = self.d_step(x, y)
            if p.step < cfg.d_warmup:  # --d-warmup: D alone; G and its EMA stay as they are
                g_loss = generator_loss(cfg.loss, self.last_fake_logits.float())  # logged, not trained on
            else:
                g_loss = self.g_step(cfg.batch_size)
                ema_update(self.G_ema, self.G, 1.0 - decay)
            out = torch.stack([d_loss, g_loss, d_real, d_fake])
        p.step += 1
        p.images_seen += cfg.d_steps * cfg.batch_size * self.dist.world_size
        return out

    def learning_rate_factor(self, step: int) -> float | None:
        """The share of the configured rates that iteration ``step`` (0-based) trains with under --lr-warmup
        and --lr-decay; None where neither is on (the rates are never touched). A function of the step and
        the config alone, so a resumed run follows the straight run's schedule bit for bit."""
        cfg = self.cfg
        if not (cfg.lr_warmup or cfg.lr_decay):
            return None
        factor = (step + 1) / cfg.lr_warmup if step < cfg.lr_warmup else 1.0  # 1.0 at the warm-up's last
        if cfg.lr_decay:  # the last N iterations: N/N, ..., 1/N (the last one still learns)
            factor = min(factor, max(cfg.steps - step, 1) / cfg.lr_decay)
        return factor

    def scale_learning_rates(self, factor: float) -> None:
        """Set both optimisers' rates to ``factor`` times the configured ones (1.0 restores them exactly)."""
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    # ------------------------------------------------------------------ --cuda-graph
    GRAPH_WARMUP = 3  # eager iterations before the capture (lazy initialisation, as CUDA graphs require)

    def _static_body(self) -> torch.Tensor:
        """The whole iteration as a function of fixed buffers (batch indices, EMA weight) and the per-step
        reseeded generators: what a CUDA graph captures once and replays every step. The same kernels in
        the same order as the plain path, so run eagerly it gives the plain path's numbers bit for bit."""
        for i in range(self.cfg.d_steps):
            idx = self.static_idx[i]
            d_loss, d_real, d_fake = self.d_step(self._images_dev[idx], self._labels_dev[idx])
        g_loss = self.g_step(self.cfg.batch_size)
        ema_update(self.G_ema, self.G, self.static_ema_weight)
        return torch.stack([d_loss, g_loss, d_real, d_fake])

    def _static_iteration(self, ema_weight: float) -> torch.Tensor:
        """Fill the buffers (device-side copies: no host sync), then replay the captured graph; before the
        capture, and on devices without CUDA graphs, run the same body eagerly. Reseeding a generator
        registered with the graph makes the replay draw exactly what an eager step would."""
        for i in range(self.cfg.d_steps):
            self.static_idx[i].copy_(self.next_indices())
        self.static_ema_weight.fill_(ema_weight)
        if self.device.type != "cuda":
            return self._static_body()
        if self.graph is None and self.graph_warmup < self.GRAPH_WARMUP:
            side = torch.cuda.Stream(self.device)  # warm-up on a side stream, as capture requires
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.static_out.copy_(self._static_body())
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.graph_warmup += 1
            return self.static_out.clone()
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.rng)
            with torch.cuda.graph(graph):  # records, runs nothing: the replay below does this step's work
                self.static_out.copy_(self._static_body())
            self.graph = graph
        self.graph.replay()
        return self.static_out.clone()

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def sample_grid(self, per_class: int = 10) -> np.ndarray:
        """Fixed-noise grid from the EMA generator: one row per class, ``per_class`` columns."""
        z = latents(self.cfg.seed, range(per_class), self.cfg.z_dim).repeat(self.num_classes, 1).to(self.device)
        y = torch.arange(self.num_classes, device=self.device).repeat_interleave(per_class)
        images = to_uint8(torch.cat([self.G_ema(z[i:i + 500], y[i:i + 500]) for i in range(0, len(z), 500)]))
        return make_grid(images, self.num_classes, per_class)

    # ------------------------------------------------------------------ checkpoints
    def meta(self, kind: str = "train") -> dict:
        c, s, _ = self.dataset.image_shape
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
            "config": self.cfg.to_dict(),
            "dataset": dataset_meta(self.dataset),
            "class_names": list(self.dataset.class_names),
            "image": {"channels": c, "size": s, "dtype": "uint8", "layout": "NCHW",
                      "normalization": "x / 127.5 - 1 maps uint8 0..255 to [-1, 1]; 0 is black"},
            "step": self.progress.step, "epoch": self.progress.epoch,
            "progress": self.progress.__dict__.copy(),
            "training": {"device": device_name(self.device), "processes": self.dist.world_size,
                         "seconds": round(self.progress.seconds, 2)},
            "versions": versions(), "git_commit": self.code_version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save(self, run_dir: Path) -> Path:
        g_opt, g_groups = optimizer_tensors("opt_g", self.opt_g)
        d_opt, d_groups = optimizer_tensors("opt_d", self.opt_d)
        training = {**{f"g.{k}": v for k, v in self.G.state_dict().items()},
                    **{f"d.{k}": v for k, v in self.D.state_dict().items()}, **g_opt, **d_opt}
        meta = self.meta()
        meta["optimizers"] = {"opt_g": g_groups, "opt_d": d_groups}
        ema = self.G_ema.state_dict()
        for name, t in [*training.items(), *((f"g_ema.{k}", v) for k, v in ema.items())]:
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise TrainingDiverged(f"training diverged: {name} holds NaN or infinite values at step "
                                       f"{self.progress.step}; not writing a checkpoint. The checkpoints already "
                                       f"in {Path(run_dir) / 'checkpoints'} are intact. Learning rates cannot "
                                       f"change on --resume: start a new run with lower --lr-g/--lr-d (or "
                                       f"another --loss).")
        final = Path(run_dir) / "checkpoints" / step_dir_name(self.progress.step)
        return write_folder(final, meta, {GENERATOR_FILE: ema, TRAINING_FILE: training})

    def start_from(self, folder: Path) -> None:
        """--init-from: G and its EMA start as the (EMA) generator in ``folder``, checked against the SHA-256
        the run recorded; D and both optimisers start fresh."""
        file = generator_file(folder)
        digest = file_sha256(file)
        if digest != self.cfg.init_sha256:
            raise CheckpointError(f"{file} has changed since this run was started from it (SHA-256 {digest[:12]}, "
                                  f"recorded {str(self.cfg.init_sha256)[:12]}); start the run again")
        check_header(file, expected_tensors(self.G))  # a file that does not fit is refused before it is read
        tensors = read_tensors(file)
        load_module(self.G, tensors, file)
        load_module(self.G_ema, tensors, file)

    def load(self, folder: Path) -> None:
        meta = read_meta(folder)
        if meta["kind"] != "train":
            raise CheckpointError(f"{folder / META_FILE}: an exported checkpoint holds only the EMA generator "
                                  f"and cannot be resumed; resume from a run folder")
        tensors = read_tensors(folder / TRAINING_FILE)
        load_module(self.G, tensors, folder / TRAINING_FILE, "g.")
        load_module(self.D, tensors, folder / TRAINING_FILE, "d.")
        load_module(self.G_ema, read_tensors(folder / GENERATOR_FILE), folder / GENERATOR_FILE)
        groups = meta.get("optimizers", {})
        load_optimizer(self.opt_g, "opt_g", tensors, groups.get("opt_g"), folder / TRAINING_FILE)
        load_optimizer(self.opt_d, "opt_d", tensors, groups.get("opt_d"), folder / TRAINING_FILE)
        prog = meta.get("progress", {})
        try:
            self.progress = Progress(**prog)
        except TypeError as e:
            raise CheckpointError(f"{folder / META_FILE}: 'progress' is malformed ({e})") from e


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        bf16 = "native bf16" if native_bf16(device) else "no native bf16"
        return (f"CPU: {cpu_name()} ({os.cpu_count()} logical cores, {threads} thread{'s' if threads != 1 else ''}, "
                f"{bf16})")
    return device.type


# ---------------------------------------------------------------------------------------------- the loop

def fit(cfg: TrainConfig, dataset: Dataset, run_dir: Path, device: torch.device, dist: DistInfo = DistInfo(),
        resume_from: Path | None = None, progress_bar: bool = True, control: RunControl | None = None) -> Trainer:
    """Train until ``cfg.steps`` iterations, writing samples, losses and checkpoints into ``run_dir``.

    A stop asked for through ``control`` ends the loop after the current iteration: the pending loss row
    and a checkpoint at that step (unless it already has one) are written first, and ``control.stopped``
    is set. Under DDP the processes agree on a stop at --log-every steps (where they already synchronise),
    so every process stops at the same step."""
    from tqdm import tqdm

    control = control if control is not None else RunControl()
    trainer = Trainer(cfg, dataset, device, dist)
    if resume_from is not None:
        trainer.load(resume_from)
    elif cfg.init_from:
        trainer.start_from(resolve_checkpoint(cfg.init_from))
    control.step = trainer.progress.step
    run_dir = Path(run_dir)
    main = dist.is_main
    csv_path = run_dir / LOSS_FILE
    if main:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            repair_loss_log(csv_path, trainer.progress.step)  # rows after the checkpoint are re-done
        else:
            create_loss_log(csv_path)
        csv_file = open(csv_path, "a", newline="")
        writer = csv.writer(csv_file)
    p = trainer.progress
    bar = tqdm(total=cfg.steps, initial=p.step, disable=not (main and progress_bar), dynamic_ncols=True,
               file=sys.stderr, unit="it")
    acc = torch.zeros(4, device=device)
    acc_n, window_start, window_images = 0, time.perf_counter(), 0

    def write_loss_row(step: int, iteration_start: float | None) -> None:
        """The mean losses since the last row, one csv row (main process); raises before anything is saved
        when they are not finite. The iteration that started at ``iteration_start`` is counted in the row's
        seconds with the wait for its losses (on CUDA, the queued kernels)."""
        nonlocal acc_n, window_start, window_images
        means = all_reduce_mean(acc / acc_n, dist).tolist()
        if not all(map(finite, means)):
            raise TrainingDiverged(
                f"losses became non-finite at step {step} (d_loss={means[0]}, g_loss={means[1]}); "
                f"stopping without writing a checkpoint. The last checkpoint in {run_dir}/checkpoints is "
                f"intact: start a new run from scratch with lower --lr-g/--lr-d, or another --loss.")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if iteration_start is not None:
            p.seconds += time.perf_counter() - iteration_start
        rate = window_images / max(time.perf_counter() - window_start, 1e-9)
        if main:
            writer.writerow([step, f"{p.epoch + p.batch / trainer.batches.per_epoch:.4f}", p.images_seen,
                             f"{p.seconds:.2f}"] + [f"{m:.5f}" for m in means] + [f"{rate:.1f}"])
            csv_file.flush()
        bar.set_postfix_str(f"ep {p.epoch} D {means[0]:.3f} G {means[1]:.3f} {rate:,.0f} img/s")
        acc.zero_()
        acc_n, window_start, window_images = 0, time.perf_counter(), 0

    def save_checkpoint() -> None:
        if main:
            trainer.save(run_dir)
            prune_checkpoints(run_dir, cfg.keep)
            draw_loss_plot(csv_path, run_dir / "losses.png")

    saved_step = trainer.progress.step if resume_from is not None else None  # the step of the newest checkpoint
    stopping = False
    try:
        while p.step < cfg.steps:
            if control.stop_reason is not None and not dist.enabled:  # asked between two iterations' checks
                stopping = True
                break
            t0 = time.perf_counter()
            epoch_before = p.epoch
            acc += trainer.iteration()
            acc_n += 1
            window_images += cfg.d_steps * cfg.batch_size * dist.world_size
            step = control.step = p.step
            log_now = step % cfg.log_every == 0 or step == cfg.steps
            if dist.enabled:  # one decision for all processes, taken where they synchronise anyway
                if log_now:
                    asked = torch.tensor([float(control.stop_reason is not None)], device=device)
                    stopping = all_reduce_mean(asked, dist).item() > 0
            else:
                stopping = control.stop_reason is not None
            log_now = log_now or stopping  # the pending loss row
            if log_now:
                write_loss_row(step, iteration_start=t0)
            else:
                p.seconds += time.perf_counter() - t0
            bar.update(1)
            if main:
                if p.epoch != epoch_before:
                    save_png(trainer.sample_grid(), run_dir / "samples" / f"epoch-{epoch_before + 1:04d}.png")
                if cfg.sample_every and step % cfg.sample_every == 0:
                    save_png(trainer.sample_grid(), run_dir / "samples" / f"step-{step:07d}.png")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                save_checkpoint()
                saved_step = step
            if stopping:
                break
        if stopping and acc_n:  # stopped at the top of the loop: the steps since the last row still get theirs
            write_loss_row(p.step, iteration_start=None)
        if stopping and saved_step != p.step:  # stopped at the top of the loop, after steps not yet saved
            save_checkpoint()
        if main:
            save_png(trainer.sample_grid(), run_dir / "samples" / f"step-{p.step:07d}.png")
        control.stopped = stopping
    finally:
        bar.close()
        if main:
            csv_file.close()
    return trainer


def finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def draw_loss_plot(csv_path: Path, png_path: Path) -> None:
    """losses.png, best effort: a picture must never stop training."""
    try:
        plot_losses(csv_path, png_path)
    except Exception as e:  # noqa: BLE001 - any failure here only costs the picture
        print(f"warning: could not draw {png_path} from {csv_path} ({type(e).__name__}: {e}); training goes on",
              file=sys.stderr)


def write_run_info(run_dir: Path, argv: list[str], cfg: TrainConfig, dataset: Dataset, device: torch.device,
                   resumed: bool, data_dir: str | None = None) -> None:
    """run.json: every command line that worked on this run, the config, and the code version; with the data
    folder as an absolute path, so a later --resume without --data-dir reads the same files (from any folder)."""
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    info["config"] = cfg.to_dict()
    info["dataset"] = dataset_meta(dataset)
    info["invocations"].append({"argv": argv, "resumed": resumed, "git_commit": git_commit(),
                                "versions": versions(), "device": device_name(device),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                **({"data_dir": os.path.abspath(data_dir)} if data_dir else {})})
    atomic_write_text(path, json.dumps(info, indent=2))
