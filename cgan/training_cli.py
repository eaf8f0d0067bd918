"""The `train.py` command line: options, per-architecture defaults, run folders and --resume."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

from . import distributed
from .checkpoints import (MAX_PARAMETERS, REAL_SAMPLES_FILE, CheckpointError, allocation_error, file_sha256,
                          generator_file, latest_checkpoint, read_meta, resolve_checkpoint, tensor_header)
from .config import FAKE_LABELS, MISMATCH_LABELS, TrainConfig
from .data import DATASETS, EMNIST_SPLITS, SPLITS, DatasetError, data_fingerprint, load_dataset
from .files import atomic_write_text
from .image_folder import (DEFAULT_HOLDOUT_FRACTION, FOLDER_DATASET, IMAGE_SIZES, MIN_CLASS_IMAGES, FolderSource,
                           display_name, folder_title, format_report, load_config_data, load_folder_dataset)
from .losses import LOSSES
from .networks import (ARCHITECTURES, AUTO_AUGMENT_MAX_IMAGES, cuda_graph_possible, parameter_count, recipe,
                       speed_defaults)
from .runs import (lock_run, newest_intact_checkpoint, original_command, recorded_data_dir,
                   reset_run_without_checkpoint, reusable_without_checkpoint, write_real_samples, write_status)
from .training import RunControl, TrainingDiverged, fit, write_run_info

# What --resume lets a user change; everything else is the run's own config.
RESUME_OPTIONS = {"steps", "epochs", "device", "threads", "data_dir", "image_folder", "labels", "sample_every",
                  "checkpoint_every", "log_every", "resume", "progress"}
DATA_REPORT = "data_report.txt"   # RUN/data_report.txt (and .json): what was read from your own images
MIN_FREE_BYTES = 200 * 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a class-conditional GAN. Writes a run folder with checkpoints, sample grids, "
                    "losses.csv, losses.png and run.json (command lines, config, code version).",
        epilog="Examples:\n  python train.py --dataset fashion-mnist --epochs 20\n"
               "  python train.py --dataset mnist --data-dir ../shared/data/mnist --split test --steps 5000\n"
               "  python train.py --image-folder my-images/ --epochs 50     (one subfolder per class)\n"
               "  python train.py --resume runs/mnist-sngan-... --steps 20000\n"
               "  torchrun --nproc_per_node=2 train.py --dataset mnist ...")
    p.formatter_class = lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=d.dataset, help=f"one of: {', '.join(DATASETS)} (default %(default)s)")
    g.add_argument("--data-dir", default=None,
                   help="folder with the official dataset files (IDX for the MNIST family, gzipped or not; "
                        "CIFAR-10 binary batches); nothing is downloaded. Without it, torchvision downloads "
                        "into ~/.cache/cgan-studio/data (or $CGAN_DATA_CACHE)")
    g.add_argument("--split", default=d.split, choices=SPLITS, help="which split to train on (default %(default)s)")
    g.add_argument("--emnist-split", default=None, choices=EMNIST_SPLITS,
                   help="EMNIST split (default balanced); splits hold different images")
    g = p.add_argument_group(
        "your own images",
        textwrap.fill(width=96, break_on_hyphens=False, text=(
        "Train on a folder with one subfolder per class (class names from the folder names), or on a CSV of "
        "path,label rows. Every file is decoded once, in parallel, into a cache (~/.cache/cgan-studio/data/"
        "image-folders, or $CGAN_DATA_CACHE) keyed by the files and these options; later runs and --resume "
        "start from it. Rules: EXIF orientation applied; transparency composited onto white; 16-bit grey "
        "scaled to 8 bits; CMYK and other colour modes converted to RGB; the shorter side scaled to the image "
        "size (Lanczos), then the centre square cropped. Skipped and reported (RUN/data_report.txt): files that "
        "are not images, truncated or corrupt images, images over Pillow's decompression-bomb pixel limit, "
        "hidden files, symbolic links leading out of the folder. Classes with fewer than "
        f"{MIN_CLASS_IMAGES} images are warned about; an empty folder or a single class is refused.")))
    g.add_argument("--image-folder", default=None, metavar="DIR",
                   help="folder of class subfolders (with --labels: the folder the CSV's paths are relative to)")
    g.add_argument("--labels", default=None, metavar="FILE.csv",
                   help="CSV rows path,label (header optional); paths relative to --image-folder, else to the CSV")
    g.add_argument("--image-size", type=int, default=None, choices=IMAGE_SIZES,
                   help="side in pixels (default: the one nearest to the images' median shorter side)")
    g.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="1 grey or 3 RGB (default: 1 when every file is stored as greyscale)")
    g.add_argument("--holdout-fraction", type=float, default=DEFAULT_HOLDOUT_FRACTION,
                   help="per class, held out for evaluation; chosen by a hash of --seed and the file's path, so "
                        "deterministic (default %(default)s)")
    g.add_argument("--balanced-classes", action="store_true",
                   help="draw every class equally often in the real batches, however rare it is in the data "
                        "(EMNIST ByMerge: q, L, I and O are a fraction of their look-alikes); deterministic and "
                        "resumable like the plain order")
    g = p.add_argument_group("model")
    g.add_argument("--arch", default=d.arch, choices=list(ARCHITECTURES),
                   help="; ".join(f"{k}: {v.description}" for k, v in ARCHITECTURES.items()) + " (default %(default)s)")
    g.add_argument("--loss", default=None, choices=LOSSES, help="default per arch: " + ", ".join(f"{k} {v.loss}" for k, v in ARCHITECTURES.items()))
    g.add_argument("--z-dim", type=int, default=d.z_dim, help="latent size (default %(default)s)")
    g.add_argument("--g-width", type=int, default=None, help="generator width (default per arch: " +
                   ", ".join(f"{k} {v.g_width}" for k, v in ARCHITECTURES.items()) + ")")
    g.add_argument("--d-width", type=int, default=None, help="discriminator width (default per arch: " +
                   ", ".join(f"{k} {v.d_width}" for k, v in ARCHITECTURES.items()) + ")")
    g.add_argument("--d-minibatch-std", type=int, default=d.d_minibatch_std, metavar="N",
                   help="D's last conv also reads the standard deviation across groups of N images (ProGAN's "
                        "minibatch standard deviation; 4 is its size): a G that draws too few kinds of image "
                        "is easier to tell from real data. sngan only; the batch size must divide by N "
                        "(default %(default)s: off)")
    g = p.add_argument_group(
        "starting point", "Continue from a trained generator instead of random weights: the shipped models, "
        "a run of yours, a Hub repo. D and the optimisers start fresh, so let D learn the trained G first.")
    g.add_argument("--init-from", default=None, metavar="MODEL",
                   help="an exported folder (checkpoints/emnist), a checkpoint or run folder, or a Hub repo "
                        "(USER/NAME): G and its EMA start as its generator. --arch, --loss, --z-dim, --g-width, "
                        "--d-width, --d-minibatch-std and --dataset default to its own; the data must have its "
                        "number of classes and image size")
    g.add_argument("--d-warmup", type=int, default=d.d_warmup, metavar="N",
                   help="with --init-from: the first N iterations train D alone, so G is not steered by a D "
                        "that has not seen it yet (default %(default)s; the README's measurements use 300)")
    g = p.add_argument_group("optimisation")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="total iterations (G updates) to reach")
    length.add_argument("--epochs", type=float, default=None,
                        help="total passes over the data to reach (converted to steps); default 10 when "
                             "neither is given")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="per process (default %(default)s)")
    g.add_argument("--lr-g", type=float, default=d.lr_g, help="generator learning rate (default %(default)s)")
    g.add_argument("--lr-d", type=float, default=d.lr_d, help="discriminator learning rate (default %(default)s)")
    g.add_argument("--lr-warmup", type=int, default=d.lr_warmup, metavar="N",
                   help="both learning rates rise linearly from 1/N of their value to all of it over the first "
                        "N iterations: for large batches with raised rates (default %(default)s: off)")
    g.add_argument("--lr-decay", type=int, default=d.lr_decay, metavar="N",
                   help="both learning rates fall linearly over the last N iterations, to 1/N of their value "
                        "at the last one (the SNGAN recipe's annealing): anneals a run, or a continuation "
                        "(--init-from) after its --d-warmup (default %(default)s: off)")
    g.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (default %(default)s)")
    g.add_argument("--beta2", type=float, default=d.beta2, help="Adam beta2 (default %(default)s)")
    g.add_argument("--d-steps", type=int, default=d.d_steps, help="D updates per G update (default %(default)s)")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                   help="one-sided label smoothing for bce: real target 1-s (default %(default)s)")
    g.add_argument("--mismatch-weight", type=float, default=d.mismatch_weight,
                   help="weight of the matching-aware term: D also rejects real images paired with a wrong "
                        "label (default %(default)s)")
    g.add_argument("--mismatch-labels", choices=MISMATCH_LABELS, default=d.mismatch_labels,
                   help="the wrong label of the matching-aware term: uniform (any, equally often) or hardest "
                        "(the one D scores highest for that image: the class it confuses the image with; "
                        "sngan only) (default %(default)s)")
    g.add_argument("--fake-labels", choices=FAKE_LABELS, default=d.fake_labels,
                   help="the labels of the generated images in training: uniform (every class equally often) or "
                        "data (the real batch's labels, so both sides follow the data's class mix). On imbalanced "
                        "data with uniform labels, a label alone says 'more often generated' for a rare class, and "
                        "D can score labels instead of images (bench/probe_discriminator.py shows it) "
                        "(default %(default)s)")
    g.add_argument("--mode-seeking", type=float, default=d.mode_seeking, metavar="W",
                   help="weight of MSGAN's diversity term: two latents of the same class must give images as far "
                        "apart as the latents are (against a class drawn as a few images; default %(default)s: off)")
    g.add_argument("--augment", default="auto",
                   help="DiffAugment policy: comma-separated from translation,cutout; 'none'; or 'auto' "
                        "(translation,cutout for " + ", ".join(k for k, v in ARCHITECTURES.items() if v.auto_augment) +
                        f" on datasets under {AUTO_AUGMENT_MAX_IMAGES:,} images)")
    g.add_argument("--ema-decay", type=float, default=d.ema_decay, help="generator EMA decay (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    g = p.add_argument_group("speed")
    g.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the cores this process may use). On a busy machine use "
                        "fewer: with 2 threads on 2 cores, one other busy process cut training to a third of its "
                        "speed, while 1 thread kept its own speed")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA, and for " +
                        ", ".join(k for k, v in ARCHITECTURES.items() if v.cpu_bf16) + " on CPUs that compute bf16 "
                        "natively (AVX-512 BF16, AMX): there sngan trains 2.13x as fast as in fp32 with the same "
                        "quality; --no-amp for fp32)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC convolutions (default: on where --amp is on by default on the CPU)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the models (default: on for CUDA where --cuda-graph is not: torchrun, "
                        "--loader dataloader)")
    g.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA: capture the whole iteration (D and G steps, both Adam updates, EMA, random draws) "
                        "as one CUDA graph replayed every step, without torch.compile's wait (default: on for one "
                        "CUDA GPU with --loader device, unless --compile or --compile-mode is given: on an H200 "
                        "1.2x compile's images/s, 0.3 s to start instead of 31 s); --no-cuda-graph for compile")
    g.add_argument("--compile-mode", default=None,
                   help="torch.compile mode; giving one means torch.compile (default: reduce-overhead on CUDA, i.e. "
                        "CUDA graphs: measured 3x faster than the default mode on an H100)")
    g.add_argument("--loader", default=d.loader, choices=["device", "dataloader"],
                   help="device: dataset kept on the device, batches gathered there; dataloader: a torch "
                        "DataLoader (default %(default)s)")
    g.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers (default %(default)s)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="run folder (default runs/DATASET-ARCH-TIME); must be new or empty")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its latest checkpoint; only --steps/--epochs, "
                        "--device, --data-dir and the --*-every options may be given again (without --data-dir: the "
                        "folder the run last read)")
    g.add_argument("--log-every", type=int, default=d.log_every, help="loss log interval in steps (default %(default)s)")
    g.add_argument("--sample-every", type=int, default=d.sample_every,
                   help="also write a sample grid every N steps (0: once per epoch only) (default %(default)s)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="checkpoint interval in steps (default %(default)s)")
    g.add_argument("--keep", type=int, default=d.keep, help="how many checkpoints to keep (default %(default)s)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options written on the command line (to police --resume)."""
    given = set()
    for token in argv:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                given.add(action.dest)
    return given


def config_from_args(args: argparse.Namespace, num_images: int, folder: FolderSource | None = None) -> TrainConfig:
    defaults = recipe(args.arch, num_images)
    augment = {"auto": defaults["augment"], "none": ""}.get(args.augment, args.augment)
    graph_possible = cuda_graph_possible(args.loader, args.compile, args.compile_mode, args.distributed)
    speed = speed_defaults(args.arch, args.device_type, args.native_bf16, args.cuda_graph, graph_possible)
    amp = speed["amp"] if args.amp is None else args.amp
    own = {} if folder is None else {
        "image_folder": folder.image_folder, "labels_file": folder.labels_file, "image_size": folder.image_size,
        "channels": folder.channels, "holdout_fraction": folder.holdout_fraction}
    return TrainConfig(
        dataset=args.dataset, split=args.split, emnist_split=args.emnist_split if args.dataset == "emnist" else None,
        balanced_classes=args.balanced_classes, **own,
        arch=args.arch, loss=args.loss or defaults["loss"], z_dim=args.z_dim,
        g_width=args.g_width or defaults["g_width"], d_width=args.d_width or defaults["d_width"],
        d_minibatch_std=args.d_minibatch_std,
        steps=0, batch_size=args.batch_size, lr_g=args.lr_g, lr_d=args.lr_d, lr_warmup=args.lr_warmup,
        lr_decay=args.lr_decay,
        beta1=args.beta1, beta2=args.beta2,
        d_steps=args.d_steps, label_smoothing=args.label_smoothing, mismatch_weight=args.mismatch_weight,
        mismatch_labels=args.mismatch_labels, mode_seeking=args.mode_seeking, fake_labels=args.fake_labels,
        augment=augment, ema_decay=args.ema_decay, seed=args.seed,
        amp=amp,  # --no-amp means the plain fp32 path: channels_last then only when asked for
        channels_last=speed["channels_last"] and amp if args.channels_last is None else args.channels_last,
        compile=speed["compile"] if args.compile is None else args.compile,
        cuda_graph=speed["cuda_graph"],
        compile_mode=args.compile_mode or speed["compile_mode"],
        loader=args.loader, workers=args.workers, log_every=args.log_every, sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every, keep=args.keep, d_warmup=args.d_warmup)


INIT_MODEL_OPTIONS = ("arch", "loss", "z_dim", "g_width")  # taken from the --init-from model
INIT_FRESH_OPTIONS = ("d_width", "d_minibatch_std")  # the model's unless given: its D is new, so it may differ


def read_init_model(args, given: set[str]) -> dict:
    """--init-from: find the model (resolve_checkpoint: folder, run or Hub repo), read and check its metadata
    and weights' SHA-256, and make its model options the run's (a different one given is an error).
    Returns what the config and the data check need."""
    folder = resolve_checkpoint(args.init_from)
    meta = read_meta(folder)
    try:
        own = TrainConfig.from_dict(meta["config"])
        own.validate()
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"--init-from {args.init_from}: its config cannot be used ({one_line(e)})") from e
    for name in INIT_MODEL_OPTIONS:
        mine = getattr(own, name)
        if name in given and getattr(args, name) != mine:
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{option} {getattr(args, name)} differs from the model in {args.init_from} "
                             f"({option} {mine}): leave {option} out to continue from that model")
        setattr(args, name, mine)
    for name in INIT_FRESH_OPTIONS:
        if name not in given:
            setattr(args, name, getattr(own, name))
    steps = int(meta["step"]) + own.init_steps  # a continued model counts all its runs' steps
    file = generator_file(folder)
    tensor_header(file)  # truncated or corrupt weights are refused now, before a run folder exists
    return {"folder": folder, "meta": meta, "steps": steps, "sha256": file_sha256(file)}


def check_init_data(init: dict, dataset, main_process: bool) -> None:
    """The --init-from generator draws its own classes and image size: the data must have as many classes
    (matched by position) and the same image size and channels."""
    meta, source = init["meta"], init["folder"]
    names, image = meta["class_names"], meta["image"]
    c, s, _ = dataset.image_shape
    if len(names) != dataset.num_classes or (image["channels"], image["size"]) != (c, s):
        raise ValueError(f"--init-from {source}: its generator draws {len(names)} classes of {image['channels']}x"
                         f"{image['size']}x{image['size']} images, this data has {dataset.num_classes} classes of "
                         f"{c}x{s}x{s}: train on data of that shape, or leave out --init-from")
    if main_process and list(names) != list(dataset.class_names):
        print(f"note: the classes are matched by position: {source}'s class {names[0]!r} becomes "
              f"{dataset.class_names[0]!r}, and so on", file=sys.stderr)


def load_own_images(args, main_process: bool):
    """--image-folder / --labels: scan, decode (or read the cache), print the report. Returns the training
    Dataset and (FolderSource with the sizes chosen, report)."""
    if args.emnist_split or args.data_dir:
        raise ValueError("--data-dir and --emnist-split are for the built-in datasets; your own images are "
                         "named by --image-folder or --labels")
    folder = FolderSource(
        os.path.abspath(args.image_folder) if args.image_folder else None,
        os.path.abspath(args.labels) if args.labels else None,
        args.image_size or 0, args.channels or 0, args.holdout_fraction, args.seed)
    if not 0 <= folder.holdout_fraction < 1:
        raise ValueError("--holdout-fraction must be in [0, 1)")
    dataset, data = load_folder_dataset(folder, args.split, progress=args.progress and main_process)
    dataset.about = {"title": folder_title(folder), "license": "the images' own (not recorded)",
                     "fingerprint": data.fingerprint, "sha256": data_fingerprint(dataset.images, dataset.labels)}
    if main_process:
        print(format_report(data.report), file=sys.stderr)
        held = len(data.split("test", folder.holdout_fraction, folder.seed))
        print(f"  training on {len(dataset):,} images (--split {args.split}); {held:,} held out for evaluation "
              f"(--holdout-fraction {folder.holdout_fraction})", file=sys.stderr)
    return dataset, (folder, data.report)


def run_name_part(folder: FolderSource) -> str:
    """The default run folder's name for your own images: the folder's (or CSV's) name, made safe."""
    base = Path(folder.image_folder or folder.labels_file or "images").stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", display_name(base, 40)).strip("-.") or "images"


def write_data_report(run_dir: Path, report: dict) -> None:
    """RUN/data_report.txt and .json: what was read from your own images, and what was skipped and why."""
    atomic_write_text(run_dir / DATA_REPORT, format_report(report) + "\n")
    atomic_write_text(run_dir / Path(DATA_REPORT).with_suffix(".json"), json.dumps(report, indent=2))


def check_size(cfg: TrainConfig, dataset) -> None:
    """Refuse networks larger than the product is built for before allocating them."""
    c, s, _ = dataset.image_shape
    g, d = parameter_count(cfg.arch, cfg.z_dim, dataset.num_classes, c, s, cfg.g_width, cfg.d_width,
                           cfg.d_minibatch_std)
    if max(g, d) > MAX_PARAMETERS:
        raise ValueError(f"this configuration gives a generator of {g:,} and a discriminator of {d:,} parameters; "
                         f"the limit is {MAX_PARAMETERS:,} each: lower --g-width/--d-width or --z-dim")


def check_writable(folder: Path) -> None:
    """Fail now, not after hours of training, when the run folder cannot take checkpoints."""
    probe = folder / ".write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write into {folder} ({e}); choose another --out") from e
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise OSError(f"only {free / 2**20:.0f} MiB free on the disk holding {folder}; checkpoints need "
                           f"room: free some space or choose another --out")


def resolve_steps(args, cfg: TrainConfig, num_images: int, world: int) -> int:
    per_epoch = (num_images // world) // cfg.batch_size // cfg.d_steps
    if args.steps is not None:
        return args.steps
    if args.epochs is not None:
        return max(1, round(args.epochs * per_epoch))
    return None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(control: RunControl):
    """While training: the first SIGTERM or SIGINT (Ctrl-C) asks the loop to stop cleanly after the current
    iteration (the handler only sets a flag), and puts the previous handlers back, so a second one acts as
    before (Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process). The previous handlers are restored
    on the way out in any case. Outside the main thread signals cannot be caught; nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def handler(signum, frame):
        control.request_stop(signal.Signals(signum).name)
        restore()

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        restore()


def one_line(e: BaseException) -> str:
    """An exception as the one line a user (or status.json) is shown."""
    lines = str(e).strip().splitlines()
    text = lines[0][:1000] if lines else ""
    if isinstance(e, (DatasetError, CheckpointError, ValueError, OSError, TrainingDiverged)):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def final_status(run_dir: Path, state: str, step: int, message: str = "") -> None:
    """The run's last status; a failure to write it is a warning (it must not hide how training ended)."""
    try:
        write_status(run_dir, state, step, message)
    except OSError as e:
        print(f"warning: could not write {run_dir / 'status.json'} ({e})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with contextlib.ExitStack() as cleanup:  # releases the run folder's lock however run() ends
            return run(parser, args, argv, cleanup)
    except (DatasetError, CheckpointError, ValueError, OSError, TrainingDiverged) as e:
        # Expected failures get one clear line, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        if not allocation_error(e):
            raise
        print(f"error: out of memory ({str(e).splitlines()[0][:200]}); lower --batch-size or the model's widths, "
              f"or use another --device", file=sys.stderr)
        return 2


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str],
        cleanup: contextlib.ExitStack) -> int:
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    if args.threads is not None or not os.environ.get("WORLD_SIZE"):  # torchrun sets one thread per process
        distributed.configure_torch(args.threads)
    dist_info, device = distributed.init(args.device)
    args.device_type = device.type
    args.native_bf16 = distributed.native_bf16(device)
    args.distributed = dist_info.enabled
    if args.cuda_graph and (device.type != "cuda" or dist_info.enabled):
        raise ValueError("--cuda-graph needs one CUDA GPU (not another device, not torchrun); leave it out here")
    resume_from = None
    given = given_options(parser, argv)
    init = read_init_model(args, given) if args.init_from and not args.resume else None
    if init is not None and not (args.image_folder or args.labels) and "dataset" not in given \
            and init["meta"]["dataset"].get("name") in DATASETS:  # the model's own dataset, unless told otherwise
        args.dataset = init["meta"]["dataset"]["name"]
        if args.dataset == "emnist" and "emnist_split" not in given:
            args.emnist_split = init["meta"]["config"].get("emnist_split")
    if not args.resume and (args.image_folder or args.labels):
        if "dataset" in given:
            raise ValueError("--dataset names a built-in dataset; to train on your own images give only "
                             "--image-folder or --labels")
        args.dataset = FOLDER_DATASET
    elif not args.resume and given & {"image_size", "channels", "holdout_fraction"}:
        raise ValueError("--image-size, --channels and --holdout-fraction are for your own images: name them "
                         "with --image-folder DIR or --labels FILE.csv")
    if args.resume:
        not_allowed = sorted(given - RESUME_OPTIONS)
        if not_allowed:
            names = ", ".join("--" + n.replace("_", "-") for n in not_allowed)
            raise ValueError(f"{names} cannot be changed when resuming: the run's config comes from its "
                             f"checkpoint. Only --steps/--epochs, --device, --data-dir and the --*-every "
                             f"options may be given with --resume")
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise CheckpointError(f"--resume {run_dir}: no such run folder")
        if dist_info.is_main:
            cleanup.callback(lock_run(run_dir).close)  # before touching anything in the folder
        resume_from = newest_intact_checkpoint(run_dir, move_damaged=dist_info.is_main,
                                               warn=lambda m: print(m, file=sys.stderr))
        if resume_from is None:
            command = original_command(run_dir)
            again = (f"start it again with its first command, which reuses a run folder that holds no "
                     f"checkpoint: {command}" if command else f"start a new run with --out {run_dir}")
            raise CheckpointError(f"{run_dir} holds no complete checkpoint to resume from (expected "
                                  f"{run_dir}/checkpoints/step-*/; the run stopped before its first one): {again}")
        meta = read_meta(resume_from)
        cfg = TrainConfig.from_dict(meta["config"])
        cfg.validate()  # the config comes from checkpoint.json: check it before anything uses it
        for name in ("sample_every", "checkpoint_every", "log_every"):
            if name in given:
                setattr(cfg, name, getattr(args, name))
        args.dataset, args.split, args.emnist_split = cfg.dataset, cfg.split, cfg.emnist_split
        if args.data_dir is None and cfg.dataset != FOLDER_DATASET:
            args.data_dir = recorded_data_dir(run_dir)
            if args.data_dir and dist_info.is_main:
                print(f"data from {args.data_dir} (the run's --data-dir; give --data-dir to read another copy)",
                      file=sys.stderr)
    folder = None
    if args.resume and cfg.dataset == FOLDER_DATASET:
        if args.labels or args.image_folder:  # the images moved: the config records where they are now
            cfg.labels_file = os.path.abspath(args.labels) if args.labels else cfg.labels_file
            cfg.image_folder = os.path.abspath(args.image_folder) if args.image_folder else cfg.image_folder
        dataset = load_config_data(cfg.to_dict(), cfg.split, progress=args.progress and dist_info.is_main,
                                   expect=meta["dataset"])
    elif args.dataset == FOLDER_DATASET:
        dataset, folder = load_own_images(args, dist_info.is_main)
    else:
        dataset = load_dataset(args.dataset, args.split, args.data_dir, args.emnist_split)
    if args.resume:
        if meta["dataset"].get("num_images") != len(dataset):
            raise ValueError(f"the checkpoint was trained on {meta['dataset'].get('num_images')} images of "
                             f"{cfg.dataset} ({cfg.split}) but --data-dir gives {len(dataset)}; point --data-dir "
                             f"at the same data")
        steps = resolve_steps(args, cfg, len(dataset), dist_info.world_size)
        cfg.steps = steps if steps is not None else cfg.steps
    else:
        if init is not None:
            check_init_data(init, dataset, dist_info.is_main)
        cfg = config_from_args(args, len(dataset), folder[0] if folder else None)
        if init is not None:
            cfg.init_from, cfg.init_sha256, cfg.init_steps = str(args.init_from), init["sha256"], init["steps"]
        steps = resolve_steps(args, cfg, len(dataset), dist_info.world_size)
        cfg.steps = steps if steps is not None else resolve_steps(
            argparse.Namespace(steps=None, epochs=10), cfg, len(dataset), dist_info.world_size)
        name = cfg.dataset if folder is None else run_name_part(folder[0])
        run_dir = Path(args.out or f"runs/{name}-{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg.validate()
    check_size(cfg, dataset)
    if dist_info.is_main:
        check_writable(run_dir)
        if not args.resume:
            cleanup.callback(lock_run(run_dir).close)  # held until this process ends: one writer per run folder
        if not args.resume and any(p.name != ".lock" for p in run_dir.iterdir()):
            if not reusable_without_checkpoint(run_dir):
                raise ValueError(f"--out {run_dir} exists and is not empty; choose a new folder, or continue that "
                                 f"run with --resume {run_dir}")
            print(f"reusing {run_dir}: an earlier run there stopped before its first checkpoint", file=sys.stderr)
            reset_run_without_checkpoint(run_dir)
        write_run_info(run_dir, ["train.py", *argv], cfg, dataset, device, resumed=resume_from is not None,
                       data_dir=args.data_dir if cfg.dataset != FOLDER_DATASET else None)
        if folder is not None:
            write_data_report(run_dir, folder[1])
        print(f"cgan-studio: {cfg.arch} on {cfg.dataset} ({cfg.split}, {len(dataset):,} images, "
              f"{dataset.num_classes} classes) | device {device} x{dist_info.world_size} | "
              f"{cfg.steps:,} steps of batch {cfg.batch_size} | run folder {run_dir}"
              + (f" | resuming from {resume_from.name}" if resume_from else "")
              + (f" | starting from the generator in {cfg.init_from} ({cfg.init_steps:,} steps trained)"
                 if cfg.init_from and not resume_from else "")
              + (f", D alone for the first {cfg.d_warmup:,} steps" if cfg.d_warmup and not resume_from else ""),
              file=sys.stderr)
        if device.type == "cpu" and not args.resume:
            native = args.native_bf16
            if native and cfg.amp and args.amp is None:
                print("bf16 autocast" + (" + channels_last" if cfg.channels_last else "") + ": this CPU computes "
                      "bf16 natively (--no-amp for fp32)", file=sys.stderr)
            elif cfg.amp and not native:
                print("warning: this CPU has no native bf16 (AVX-512 BF16 or AMX): --amp emulates it, which is "
                      "usually slower than fp32", file=sys.stderr)
    control = RunControl(step=meta["step"] if resume_from is not None else 0)
    main_process = dist_info.is_main
    if main_process:  # from here on this process owns the run folder's status
        write_status(run_dir, "running", control.step)
    try:
        if main_process and not (run_dir / REAL_SAMPLES_FILE).is_file():
            write_real_samples(run_dir, dataset, cfg.seed)  # once per run; older runs gain it on --resume
        distributed.barrier(dist_info)
        with stop_on_signals(control):
            trainer = fit(cfg, dataset, run_dir, device, dist_info, resume_from, progress_bar=args.progress,
                          control=control)
        # Every rank past its last collective before any rank tears its process group down: a gloo peer
        # that closes its sockets while another is still in flight aborts that process (seen under load).
        distributed.barrier(dist_info)
    except TrainingDiverged as e:
        if main_process:
            final_status(run_dir, "diverged", control.step, one_line(e))
        raise
    except OSError as e:  # a full disk or a vanished folder mid-run: say what survived and how to go on
        latest = latest_checkpoint(run_dir)
        then = (f"the latest complete checkpoint, {latest}, is intact: free some space (or fix the folder) and "
                f"continue with: python train.py --resume {run_dir}") if latest else \
            "no checkpoint was written yet: free some space and start again with the same command (a run folder " \
            "that holds no checkpoint is reused)"
        error = OSError(f"training stopped: {e}; {then}")
        if main_process:
            final_status(run_dir, "failed", control.step, one_line(error))
        raise error from e
    except KeyboardInterrupt:  # a second Ctrl-C while stopping, or one outside the loop
        if main_process:
            final_status(run_dir, "stopped", control.step, "interrupted (KeyboardInterrupt)")
        raise
    except BaseException as e:
        if main_process:
            final_status(run_dir, "failed", control.step, one_line(e))
        raise
    finally:
        distributed.shutdown(dist_info)
    if main_process:
        p = trainer.progress
        if control.stopped:
            again = f"python train.py --resume {shlex.quote(str(run_dir))}"
            for option in ("data_dir", "image_folder", "labels"):
                if getattr(args, option, None):
                    again += f" --{option.replace('_', '-')} {shlex.quote(getattr(args, option))}"
            final_status(run_dir, "stopped", p.step, f"stopped on {control.stop_reason}; continue with: {again}")
            print(f"stopped at step {p.step} on {control.stop_reason}; continue with: {again}", file=sys.stderr)
        else:
            final_status(run_dir, "finished", p.step)
            print(f"done: step {p.step:,}, {p.images_seen:,} images in {p.seconds:.1f} s of training; "
                  f"latest checkpoint {latest_checkpoint(run_dir)}", file=sys.stderr)
    return 0

