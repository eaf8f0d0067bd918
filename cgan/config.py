"""The training configuration: one dataclass, saved inside every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    # data
    dataset: str = "mnist"
    split: str = "train"
    emnist_split: str | None = None      # EMNIST only; "balanced" when None
    # model
    arch: str = "sngan"
    loss: str = "hinge"                  # "bce" or "hinge"
    z_dim: int = 128
    g_width: int = 32
    d_width: int = 64
    # optimisation
    steps: int = 10_000                  # total generator updates (each after d_steps discriminator updates)
    batch_size: int = 64                 # per process
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1
    label_smoothing: float = 0.0         # one-sided: real target 1 - s (bce only)
    mismatch_weight: float = 0.0         # weight of "real image, wrong label" as a fake
    augment: str = ""                    # DiffAugment policy, e.g. "translation,cutout"
    ema_decay: float = 0.999
    seed: int = 0
    # speed
    amp: bool = False                    # bf16 autocast (CUDA)
    compile: bool = False                # torch.compile the models
    compile_mode: str = "default"        # torch.compile mode ("default", "reduce-overhead", ...)
    loader: str = "device"               # "device": dataset on the device; "dataloader": torch DataLoader
    workers: int = 0                     # DataLoader workers (loader="dataloader")
    # bookkeeping
    log_every: int = 50
    sample_every: int = 0                # extra sample grids every N steps (0: once per epoch only)
    checkpoint_every: int = 1000
    keep: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        return cls(**d)
