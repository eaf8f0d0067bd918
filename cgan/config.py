"""The training configuration: one dataclass, saved inside every checkpoint, that checks itself."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

from .augment import parse_policy
from .image_folder import FOLDER_DATASET, IMAGE_SIZES
from .losses import LOSSES
from .networks import ARCHITECTURES

MISMATCH_LABELS = ("uniform", "hardest")
FAKE_LABELS = ("uniform", "data")  # the labels G draws for: every class equally often, or the real batch's


@dataclass
class TrainConfig:
    # data
    dataset: str = "mnist"
    split: str = "train"
    emnist_split: str | None = None      # EMNIST only; "balanced" when None
    balanced_classes: bool = False       # real batches draw every class equally often (rare classes too)
    # your own images (dataset "folder"; see image_folder.py): where they are and how they are prepared
    image_folder: str | None = None      # one subfolder per class
    labels_file: str | None = None       # or a CSV of path,label
    image_size: int = 0                  # 28, 32 or 64 (0 for the built-in datasets: their own size)
    channels: int = 0                    # 1 or 3 (0 for the built-in datasets)
    holdout_fraction: float = 0.1        # per class, held out for evaluation (split by a hash of seed and path)
    # model
    arch: str = "sngan"
    loss: str = "hinge"                  # "bce" or "hinge"
    z_dim: int = 128
    g_width: int = 32
    d_width: int = 64
    d_minibatch_std: int = 0             # D's last conv also reads the std of groups of N images (0: off)
    # starting point (--init-from): G and its EMA start as a trained generator; D and the optimisers fresh
    init_from: str | None = None         # the folder (or Hub repo) that generator came from, as given
    init_sha256: str | None = None       # SHA-256 of its weights file: which generator, whatever the path holds now
    init_steps: int = 0                  # the steps that generator had been trained (all its runs together)
    d_warmup: int = 0                    # the first N iterations update D alone: a fresh D learns the trained G
    # optimisation
    steps: int = 10_000                  # total generator updates (each after d_steps discriminator updates)
    batch_size: int = 64                 # per process
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_warmup: int = 0                   # both learning rates rise linearly over the first N iterations
    lr_decay: int = 0                    # and fall linearly towards 0 over the last N (0: constant)
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1
    label_smoothing: float = 0.0         # one-sided: real target 1 - s (bce only)
    mismatch_weight: float = 0.0         # weight of "real image, wrong label" as a fake
    mismatch_labels: str = "uniform"     # which wrong label: "uniform" (any, equally often) or "hardest"
                                         # (the one D scores highest for that image; projection D only)
    mode_seeking: float = 0.0            # weight of MSGAN's diversity term in G's loss (0: off)
    fake_labels: str = "uniform"         # generated images' labels: "uniform", or "data": the real batch's (class mix)
    augment: str = ""                    # DiffAugment policy, e.g. "translation,cutout"
    ema_decay: float = 0.999
    seed: int = 0
    # speed
    amp: bool = False                    # bf16 autocast (CUDA; CPUs with native bf16: --amp)
    channels_last: bool = False          # NHWC convolutions (with bf16 on CPUs with native bf16: 2.13x sngan)
    compile: bool = False                # torch.compile the models
    compile_mode: str = "default"        # torch.compile mode ("default", "reduce-overhead", ...)
    cuda_graph: bool = False             # capture the whole iteration as one CUDA graph (no compile, no DDP)
    loader: str = "device"               # "device": dataset on the device; "dataloader": torch DataLoader
    workers: int = 0                     # DataLoader workers (loader="dataloader")
    # bookkeeping
    log_every: int = 50
    sample_every: int = 0                # extra sample grids every N steps (0: once per epoch only)
    checkpoint_every: int = 1000
    keep: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise ValueError naming the option when a field has the wrong type or an impossible value. A
        resumed run's config comes from checkpoint.json, which may be damaged or hostile, so every field is
        checked before anything uses it; the augmentation policy too, before any run folder exists."""
        self._check_types()
        rules = [
            (self.arch in ARCHITECTURES, f"unknown architecture {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}"),
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}"),
            (self.loader in ("device", "dataloader"), f"unknown loader {self.loader!r}; choose device or dataloader"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.z_dim >= 1, "--z-dim must be at least 1"),
            (self.g_width >= 1 and self.d_width >= 1, "--g-width and --d-width must be at least 1"),
            (self.d_minibatch_std == 0 or self.d_minibatch_std >= 2,
             "--d-minibatch-std is a group size: 0 (off) or at least 2 (4 is ProGAN's)"),
            (self.d_minibatch_std == 0 or self.arch not in ARCHITECTURES  # (unknown arch: reported above)
             or ARCHITECTURES[self.arch].minibatch_std,
             "--d-minibatch-std needs a discriminator that has it: use --arch "
             + ", ".join(k for k, v in ARCHITECTURES.items() if v.minibatch_std) + " or leave it out"),
            (self.d_minibatch_std <= 1 or self.batch_size % self.d_minibatch_std == 0,
             f"--batch-size {self.batch_size} does not divide into groups of --d-minibatch-std "
             f"{self.d_minibatch_std}: choose a batch size divisible by it"),
            (self.lr_g > 0 and self.lr_d > 0, "learning rates must be positive"),
            (self.lr_warmup >= 0, "--lr-warmup must be >= 0"),
            (self.lr_decay >= 0, "--lr-decay must be >= 0"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "Adam betas must be in [0, 1)"),
            (self.d_steps >= 1, "--d-steps must be at least 1"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (self.label_smoothing == 0 or self.loss == "bce", "--label-smoothing applies to the bce loss only"),
            (self.mismatch_weight >= 0, "--mismatch-weight must be >= 0"),
            (self.mode_seeking >= 0, "--mode-seeking must be >= 0"),
            (self.fake_labels in FAKE_LABELS,
             f"unknown --fake-labels {self.fake_labels!r}; choose one of: {', '.join(FAKE_LABELS)}"),
            (self.mismatch_labels in MISMATCH_LABELS,
             f"unknown --mismatch-labels {self.mismatch_labels!r}; choose one of: {', '.join(MISMATCH_LABELS)}"),
            (self.mismatch_labels != "hardest" or self.mismatch_weight > 0,
             "--mismatch-labels hardest picks the wrong labels of the matching-aware term: give it a weight too "
             "(--mismatch-weight 0.5)"),
            (self.mismatch_labels != "hardest" or self.arch not in ARCHITECTURES  # (unknown arch: reported above)
             or ARCHITECTURES[self.arch].scores_more_labels,
             "--mismatch-labels hardest needs a discriminator that scores every label at once: use --arch "
             + ", ".join(k for k, v in ARCHITECTURES.items() if v.scores_more_labels) + " or --mismatch-labels uniform"),
            (0 <= self.ema_decay < 1, "--ema-decay must be in [0, 1)"),
            (self.init_steps >= 0, "init_steps must be >= 0"),
            (self.d_warmup >= 0, "--d-warmup must be >= 0"),
            (self.d_warmup == 0 or self.init_from is not None,
             "--d-warmup trains a fresh discriminator against a trained generator: give --init-from too"),
            ((self.init_from is None) == (self.init_sha256 is None), "init_from and init_sha256 go together"),
            (self.init_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", self.init_sha256) is not None,
             "init_sha256 must be 64 hexadecimal digits"),
            (self.log_every >= 1 and self.checkpoint_every >= 1, "--log-every and --checkpoint-every must be >= 1"),
            (self.sample_every >= 0, "--sample-every must be >= 0"),
            (self.keep >= 1, "--keep must be at least 1"),
            (self.workers >= 0, "--workers must be >= 0"),
            (0 <= self.holdout_fraction < 1, "--holdout-fraction must be in [0, 1)"),
            (not (self.cuda_graph and self.compile), "--cuda-graph and --compile are two ways to the same end; "
                                                     "choose one (--no-compile --cuda-graph)"),
            (not self.cuda_graph or self.loader == "device", "--cuda-graph needs --loader device"),
        ]
        if self.dataset == FOLDER_DATASET:
            rules += [
                (bool(self.image_folder or self.labels_file), "a folder dataset needs --image-folder or --labels"),
                (self.image_size in IMAGE_SIZES, f"--image-size must be one of {', '.join(map(str, IMAGE_SIZES))}"),
                (self.channels in (1, 3), "--channels must be 1 or 3"),
            ]
        else:
            rules.append((not (self.image_folder or self.labels_file or self.image_size or self.channels),
                          "--image-folder, --labels, --image-size and --channels are for your own images, not "
                          f"for the built-in dataset {self.dataset!r}"))
        for ok, message in rules:
            if not ok:
                raise ValueError(message)
        try:
            parse_policy(self.augment)
        except ValueError as e:
            raise ValueError(f"--augment: {e}") from None

    def _check_types(self) -> None:
        """Every field has its default's type, and every number is finite."""
        default = TrainConfig()
        for f in fields(TrainConfig):
            v, d = getattr(self, f.name), getattr(default, f.name)
            if d is None:  # the optional strings
                ok, want = v is None or isinstance(v, str), "a string or null"
            elif isinstance(d, bool):
                ok, want = isinstance(v, bool), "true or false"
            elif isinstance(d, int):
                ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
            elif isinstance(d, float):
                ok, want = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                            "a finite number")
            else:
                ok, want = isinstance(v, str), "a string"
            if not ok:
                raise ValueError(f"{f.name} (--{f.name.replace('_', '-')}) must be {want}, got {v!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        return cls(**d)
