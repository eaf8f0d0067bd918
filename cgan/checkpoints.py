"""Checkpoints: safetensors tensors + a JSON description. Nothing is ever unpickled.

A checkpoint is a folder:

    checkpoint.json              format, kind ("train" or "export"), config, dataset, classes, image, step
    generator.safetensors        the EMA generator: all that sampling needs
    training_state.safetensors   (train only) G, D, optimiser state, RNG states
    real_samples.safetensors     (export only) a few real uint8 images per class; a run folder keeps
                                 the same file once, as RUN/real_samples.safetensors
    evaluator.safetensors        (optional) the dataset's evaluator classifier

A run folder keeps its checkpoints in ``RUN/checkpoints/step-0000500/``. Each is written into a hidden
temporary folder and renamed into place, so a crash leaves either the whole checkpoint or nothing;
"latest" is the highest complete step folder.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save, save_file

from .files import atomic_write, fsync_path

FORMAT = "cgan-studio-checkpoint"
FORMAT_VERSION = 1
META_FILE = "checkpoint.json"
GENERATOR_FILE = "generator.safetensors"
TRAINING_FILE = "training_state.safetensors"
REAL_SAMPLES_FILE = "real_samples.safetensors"
EVALUATOR_FILE = "evaluator.safetensors"
# A Hugging Face Hub model repo holds the same two files under the names the Hub expects (cgan/hub.py).
HUB_META_FILE = "config.json"
HUB_GENERATOR_FILE = "model.safetensors"
HUB_CARD_FILE = "README.md"
HUB_FILES = [HUB_META_FILE, HUB_GENERATOR_FILE, REAL_SAMPLES_FILE, HUB_CARD_FILE, "evaluation.json"]
REPO_ID = re.compile(r"^(?:hf:)?([A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})$")
STEP_DIR = re.compile(r"^step-(\d{7,})$")
TMP_DIR = re.compile(r"^\.(?:tmp|old)-.+-(\d+)$")   # a writer's temporary folder; the number is its PID
MAX_META_BYTES = 1 << 20
MAX_HEADER_BYTES = 16 << 20          # a safetensors header (JSON) larger than this is refused unread
MAX_IMAGE_SIZE = 128                 # pixels per side: the product serves 28 to 64 px images
MAX_PARAMETERS = 50_000_000          # per network (200 MB of float32); the shipped generators have ~1 M
MAX_TEXT = 200                       # characters of a dataset title or licence
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------- writing

def contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def write_folder(final: Path, meta: dict, tensor_files: dict[str, dict[str, torch.Tensor]],
                 meta_name: str = META_FILE) -> Path:
    """Write a checkpoint folder atomically: temporary sibling folder, fsync, then rename into place."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, tensors in tensor_files.items():
            try:
                save_file(contiguous(tensors), str(tmp / name))
            except SafetensorError as e:  # safetensors reports I/O errors (a full disk) as its own type
                raise OSError(f"could not write {final / name}: {e}") from e
            fsync_path(tmp / name)
        (tmp / meta_name).write_text(json.dumps(meta, indent=2, sort_keys=True))
        fsync_path(tmp / meta_name)
        # safetensors creates its files owner-only (0600); give them the mode any file written here gets
        # (the umask's, as the JSON just written has), so an app run by another user can read the weights
        mode = (tmp / meta_name).stat().st_mode & 0o777
        for name in tensor_files:
            os.chmod(tmp / name, mode)
        fsync_path(tmp)
        if final.exists():  # re-writing the same step (e.g. after a resume): replace it as a whole
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_tensor_file(file: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write one safetensors file atomically (files.atomic_write). A crash leaves the whole file or none."""
    return atomic_write(file, lambda f: f.write(save(contiguous(tensors), metadata=metadata)))


def real_sample(images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int, seed: int = 0):
    """Up to ``per_class`` random real images of each class, as served to users: uint8 (N, H, W[, 3]) and
    int64 labels (N,). Which images depends only on the data, ``per_class`` and ``seed``."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for k in range(num_classes):
        idx = (labels == k).nonzero().flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    idx = torch.cat(picks)
    x = images[idx]
    x = x[:, 0] if x.shape[1] == 1 else x.permute(0, 2, 3, 1)
    return x.contiguous(), labels[idx].to(torch.int64).contiguous()


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first. Temporary folders and stray files are ignored."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / META_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # exists but belongs to someone else (or an absurd number, then: not ours to judge)
    return True


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints; also sweep temporary folders left by crashed writers. A
    temporary folder of a live process (another writer on the same folder) is never touched."""
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        for p in folder.iterdir():
            m = TMP_DIR.match(p.name)
            if m and p.is_dir() and (int(m.group(1)) == os.getpid() or not pid_alive(int(m.group(1)))):
                shutil.rmtree(p, ignore_errors=True)
    if keep > 0:
        for p in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def meta_file(folder: str | os.PathLike) -> Path:
    """checkpoint.json, or config.json in a Hub-shaped folder."""
    folder = Path(folder)
    return folder / HUB_META_FILE if not (folder / META_FILE).is_file() and (folder / HUB_META_FILE).is_file() \
        else folder / META_FILE


def generator_file(folder: str | os.PathLike) -> Path:
    """generator.safetensors, or model.safetensors in a Hub-shaped folder."""
    folder = Path(folder)
    return folder / HUB_GENERATOR_FILE if meta_file(folder).name == HUB_META_FILE else folder / GENERATOR_FILE


def is_checkpoint_folder(folder: str | os.PathLike) -> bool:
    """A folder holding checkpoint.json, or a Hub-shaped one holding config.json and model.safetensors."""
    folder = Path(folder)
    return (folder / META_FILE).is_file() or ((folder / HUB_META_FILE).is_file() and
                                              (folder / HUB_GENERATOR_FILE).is_file())


def repo_id(text) -> str | None:
    """The Hub repo id in "user/repo" or "hf:user/repo", or None when ``text`` is not one."""
    m = REPO_ID.match(text) if isinstance(text, str) else None
    return m.group(1) if m and ".." not in text else None


def hub_snapshot(spec: str, revision: str | None = None) -> Path:
    """The local folder of Hub repo ``spec`` ("user/repo" or "hf:user/repo"): downloaded into
    huggingface_hub's cache (only the files a cgan model has), or taken from the cache when offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    rid = repo_id(spec)
    if rid is None:
        raise CheckpointError(f"{spec!r} is neither a local folder nor a Hub repo (USER/NAME or hf:USER/NAME)")
    try:
        folder = Path(snapshot_download(rid, revision=revision, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError as e:
        raise CheckpointError(f"{spec}: there is no such local folder, and Hub repo {rid} is not in the local "
                              f"Hugging Face cache while the network is off (HF_HUB_OFFLINE or no connection): "
                              f"connect once to download it, or pass a local folder") from e
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise CheckpointError(f"Hub repo {rid} cannot be read ({type(e).__name__}): check the name and your "
                              f"access (huggingface-cli login or HF_TOKEN for private repos)") from e
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"Hub repo {rid} could not be downloaded ({str(e).splitlines()[0][:200]})") from e
    if not (folder / HUB_META_FILE).is_file() or not (folder / HUB_GENERATOR_FILE).is_file():
        raise CheckpointError(f"Hub repo {rid} is not a cgan-studio model: it has no {HUB_META_FILE} and "
                              f"{HUB_GENERATOR_FILE} (pickled weights such as pytorch_model.bin are never loaded)")
    return folder


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from an exported folder, a checkpoint folder, a run folder (its latest), or a
    Hugging Face Hub repo ("user/repo" or "hf:user/repo", when no local path has that name)."""
    if isinstance(path, str) and repo_id(path) and (path.startswith("hf:") or not Path(path).exists()):
        return hub_snapshot(path)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass an exported checkpoint folder, a checkpoint "
                              f"folder (RUN/checkpoints/step-...), or a run folder")
    if path.is_file() and path.name in (META_FILE, HUB_META_FILE):
        path = path.parent
    if is_checkpoint_folder(path):
        return path
    if (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"run folder {path} holds no complete checkpoint yet")
        return latest
    raise CheckpointError(f"{path} is not a checkpoint: no {META_FILE} in it, and no checkpoints/ folder")


# ----------------------------------------------------------------------------- reading

def _need(cond: bool, file: Path, problem: str) -> None:
    if not cond:
        raise CheckpointError(f"{file}: {problem}")


def read_meta(folder: str | os.PathLike) -> dict:
    """Read and validate checkpoint.json. Every field the loader relies on is checked for type and range,
    so a hostile or damaged file is refused here rather than failing somewhere deep."""
    from .networks import ARCHITECTURES

    file = meta_file(folder)
    _need(file.is_file(), file, "missing; this folder is not a complete checkpoint")
    _need(file.stat().st_size <= MAX_META_BYTES, file, f"larger than {MAX_META_BYTES} bytes; refusing to read it")
    try:
        meta = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e}); the checkpoint is corrupt") from e
    except RecursionError as e:  # "[[[[...]]]]" nested deeper than the parser's recursion limit
        raise CheckpointError(f"{file}: JSON nested too deeply; refusing to read it") from e
    _need(isinstance(meta, dict), file, "top level is not a JSON object")
    _need(meta.get("format") == FORMAT, file, f"'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    _need(type(version) is int and version == FORMAT_VERSION, file,
          f"format_version {version!r} is not supported (this cgan-studio reads {FORMAT_VERSION}); "
          f"upgrade cgan-studio or re-export the checkpoint")
    _need(meta.get("kind") in ("train", "export"), file, f"'kind' must be 'train' or 'export', not {meta.get('kind')!r}")
    cfg = meta.get("config")
    _need(isinstance(cfg, dict), file, "'config' is missing or not an object")
    _need(isinstance(cfg.get("arch"), str) and cfg["arch"] in ARCHITECTURES, file,
          f"unknown architecture {cfg.get('arch')!r}")

    def int_in(d, key, lo, hi, where):
        v = d.get(key)
        _need(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi, file,
              f"{where}.{key} must be an integer in [{lo}, {hi}], got {v!r}")

    int_in(cfg, "z_dim", 1, 4096, "config")
    int_in(cfg, "g_width", 1, 1024, "config")
    int_in(cfg, "d_width", 1, 1024, "config")
    image = meta.get("image")
    _need(isinstance(image, dict), file, "'image' is missing or not an object")
    int_in(image, "channels", 1, 3, "image")
    int_in(image, "size", 8, MAX_IMAGE_SIZE, "image")
    _need(image["channels"] in (1, 3) and image["size"] % 4 == 0, file, "image must have 1 or 3 channels and a size divisible by 4")
    names = meta.get("class_names")
    _need(isinstance(names, list) and 1 <= len(names) <= 1000 and
          all(isinstance(n, str) and 0 < len(n) <= 64 for n in names), file,
          "'class_names' must be a list of 1..1000 non-empty strings of at most 64 characters")
    _need(len(set(names)) == len(names), file, "'class_names' has duplicates")
    dataset = meta.get("dataset")
    _need(isinstance(dataset, dict) and isinstance(dataset.get("name"), str) and 0 < len(dataset["name"]) <= 64,
          file, "'dataset' must name the dataset (a string of 1 to 64 characters)")
    for key in ("title", "license"):  # shown to every visitor of the studio
        v = dataset.get(key)
        _need(v is None or (isinstance(v, str) and len(v) <= MAX_TEXT), file,
              f"dataset.{key} must be a string of at most {MAX_TEXT} characters")
    int_in(meta, "step", 0, 10**12, "checkpoint")
    return meta


def tensor_header(file: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of the tensors in a safetensors file, read from its header alone (no tensor
    data is read or allocated). The header must describe exactly the bytes the file holds, so a truncated
    or padded file is refused here."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    size = file.stat().st_size
    if size < 8:
        raise CheckpointError(f"{file}: truncated ({size} bytes)")
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{file}: truncated or corrupt (a header of {n:,} bytes does not fit in the "
                                  f"file's {size:,} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{file}: truncated or corrupt (its header is not valid JSON)") from e
    _need(isinstance(header, dict), file, "header is not a JSON object; the file is corrupt")
    out, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(entry, dict) and entry.get("dtype") in SAFETENSORS_DTYPES and \
            isinstance(entry.get("shape"), list) and len(entry["shape"]) <= 8 and \
            all(type(d) is int and 0 <= d < 2**40 for d in entry["shape"]) and \
            isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2 and \
            all(type(o) is int and 0 <= o for o in entry["data_offsets"])
        _need(ok, file, f"header entry for {str(name)[:60]!r} is malformed; the file is corrupt")
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        begin, stop = entry["data_offsets"]
        nbytes = math.prod(entry["shape"]) * dtype.itemsize
        _need(stop - begin == nbytes, file, f"tensor {str(name)[:60]!r}: its byte range does not match its shape")
        out[name] = (tuple(entry["shape"]), dtype)
        end = max(end, stop)
    _need(8 + n + end == size, file, f"truncated or corrupt (its header describes {8 + n + end:,} bytes but the "
                                     f"file holds {size:,})")
    return out


def expected_tensors(module: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of a module's state (also for a module on the meta device)."""
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def compare_tensors(file: Path, expected: dict[str, tuple[tuple[int, ...], torch.dtype]],
                    got: dict[str, tuple[tuple[int, ...], torch.dtype]], prefix: str = "") -> None:
    """Names, shapes and dtypes ``got`` must be exactly ``expected`` (both keyed without ``prefix``)."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{file}: tensors do not match the architecture in {META_FILE} "
                              f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})")
    for k, (shape, dtype) in expected.items():
        if got[k] != (shape, dtype):
            raise CheckpointError(f"{file}: tensor {prefix}{k} has shape {got[k][0]} {got[k][1]}, expected "
                                  f"{shape} {dtype}")


def check_header(file: Path, expected: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
    """Compare the file's tensor names, shapes and dtypes with ``expected`` before any tensor is read, so a
    file that does not fit the architecture is refused without allocating it."""
    compare_tensors(file, expected, tensor_header(file))


def generator_on_meta(meta: dict) -> torch.nn.Module:
    """The generator that ``meta`` describes, built on the meta device (shapes only, no memory), after
    checking its size against MAX_PARAMETERS."""
    from .networks import build_generator

    cfg, image = meta["config"], meta["image"]
    with torch.device("meta"):
        g = build_generator(cfg["arch"], cfg["z_dim"], len(meta["class_names"]), image["channels"], image["size"],
                            cfg["g_width"])
    n = sum(p.numel() for p in g.parameters())
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"{META_FILE}: the generator it describes has {n:,} parameters, more than this "
                              f"product serves ({MAX_PARAMETERS:,}); refusing to allocate it")
    return g


def read_generator(folder: Path, meta: dict) -> torch.nn.Module:
    """The generator of checkpoint ``folder`` (described by its ``meta``) on the CPU, as trained (batch norms
    not folded). Shapes first, memory second: the network's size is capped and the file's header must match
    it before a single weight is allocated (a hostile checkpoint.json cannot make us allocate gigabytes)."""
    from .networks import build_generator

    file = generator_file(folder)
    check_header(file, expected_tensors(generator_on_meta(meta)))
    cfg, image = meta["config"], meta["image"]
    g = build_generator(cfg["arch"], cfg["z_dim"], len(meta["class_names"]), image["channels"], image["size"],
                        cfg["g_width"])
    load_module(g, read_tensors(file), file)
    return g


def allocation_error(e: BaseException) -> bool:
    """Whether an exception is a failed memory allocation (CPU or GPU)."""
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e)))


def file_sha256(file: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex): which weights, whatever path they are read from later."""
    h = hashlib.sha256()
    try:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise CheckpointError(f"{file}: cannot be read ({e.strerror or e})") from e
    return h.hexdigest()


def read_tensors(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    if file.stat().st_size < 8:
        raise CheckpointError(f"{file}: truncated ({file.stat().st_size} bytes)")
    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e}); it is truncated or corrupt") from e


def load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], file: Path, prefix: str = "") -> None:
    """Copy ``tensors`` (keys under ``prefix``) into ``module``, checking names, shapes and dtypes first."""
    got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    compare_tensors(file, expected_tensors(module), {k: (tuple(v.shape), v.dtype) for k, v in got.items()}, prefix)
    for k, t in got.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{file}: tensor {prefix}{k} holds NaN or infinite values")
    module.load_state_dict(got, strict=True)


# ----------------------------------------------------------------------------- optimiser state as tensors

def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{index}.{key}"] = value
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor],
                   groups: list, file: Path) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    current = opt.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current) or \
            any(len(g.get("params", [])) != len(c["params"]) for g, c in zip(groups, current)):
        raise CheckpointError(f"{file}: optimiser '{prefix}' does not match the model's parameters")
    # JSON turned tuples (Adam's betas) into lists; give the optimiser back what it saved.
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()} for g in groups]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{file}: optimiser '{prefix}' state is unusable ({e})") from e
    # Files hold contiguous tensors; the moments take their parameter's layout back (channels_last
    # weights): fused Adam walks parameter and moments as one flat buffer each, so layouts must agree.
    for group in opt.param_groups:
        for param in group["params"]:
            for name, value in opt.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    opt.state[param][name] = torch.empty_like(param, dtype=value.dtype).copy_(value)

