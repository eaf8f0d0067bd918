"""Several training runs side by side on one machine, against a deadline, then exported, evaluated and
packed into a few archives: the shape of a short GPU lease.

    python -m cgan.sweep run PLAN.json --runs-dir DIR [--train-minutes 7] [--eval-minutes 1.5] [--pack OUT]
    python -m cgan.sweep unpack OUT --to DIR

Why side by side: one run of a small model is bound by kernel launches and Python, so the GPU idles between
its kernels; four to eight runs fill those gaps (and the machine's CPU cores are split between them).

PLAN.json::

    {"runs": [{"name": "fashion-g64",
               "train": ["--dataset", "fashion-mnist", "--data-dir", "data/fashion-mnist", "--g-width", "64"],
               "evaluate": ["--evaluator", "checkpoints/fashion-mnist", "--data-dir", "data/fashion-mnist"]}],
     "parallel": 8,
     "pack": {"max_files": 8, "max_file_mib": 15.5, "max_total_mib": 63}}

``train`` is a train.py argument list (never --out or --resume: the sweep names the run folder). ``parallel``
(default: every run at once) caps how many train at a time; the others wait in plan order and start as
places free up, until the training deadline. At that deadline every run still going gets SIGTERM, on which
train.py writes a checkpoint and exits, so nothing trained is lost. Every kept checkpoint is then exported
(``cgan.export``) and, where the run has an ``evaluate`` list, scored by ``cgan.evaluate`` (full protocol
unless the list says ``--quick``), several at once, against the second deadline: the runs take turns, each
giving its newest export, then its oldest, then the ones between, so a deadline leaves every run's curve
sampled. An export whose generator is byte-identical to the one its run started from (``--init-from``;
a ``--d-warmup`` leaves G untouched) or to an earlier export of the run is neither evaluated nor packed.
``run`` ends by writing ``summary.json`` (per run: exit code, state, steps, images/s, a failed run's last
log line; per export: step, metrics, whether it was packed or which generator it repeats) and, with
``--pack``, tar archives within the size limits, most useful first (``priority``: the datasets take turns,
each giving its best export on FD ratio, conditional accuracy, classes under target and GAN-train together,
then its next; unevaluated exports last, newest first). Real samples are packed once
per run and put back into each export by ``unpack``, which also refuses archive members that would land
outside ``--to``. ``run`` exits 1 when no run wrote a checkpoint.
"""
from __future__ import annotations

import argparse
import bisect
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints import REAL_SAMPLES_FILE, file_sha256, generator_file, list_checkpoints, read_meta
from .distributed import real_core_count
from .files import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"
EXPORTS = "exports"
TAR_BLOCK, TAR_RECORD = 512, 10240


class PlanError(ValueError):
    """The plan file is not what ``cgan.sweep`` expects; the message says what to change."""


@dataclass
class PackLimits:
    max_files: int = 8
    max_file_mib: float = 15.5
    max_total_mib: float = 63.0


@dataclass
class RunPlan:
    name: str
    train: list[str]
    evaluate: list[str] | None = None


@dataclass
class Plan:
    runs: list[RunPlan]
    pack: PackLimits = field(default_factory=PackLimits)
    parallel: int | None = None  # runs training at a time (None: all)


def load_plan(path: str | Path) -> Plan:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise PlanError(f"{path}: cannot read the plan ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("runs"), list) or not raw["runs"] \
            or set(raw) - {"runs", "pack", "parallel"}:
        raise PlanError(f'{path}: expected {{"runs": [{{"name": ..., "train": [...]}}, ...]}}')
    runs, names = [], set()
    for i, r in enumerate(raw["runs"]):
        where = f"{path}: runs[{i}]"
        if not isinstance(r, dict) or set(r) - {"name", "train", "evaluate"}:
            raise PlanError(f'{where}: a run is {{"name", "train", optional "evaluate"}}')
        name = r.get("name")
        if not isinstance(name, str) or not NAME.match(name) or name == EXPORTS:
            raise PlanError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-' (got {name!r})")
        if name in names:
            raise PlanError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        for key in ("train", "evaluate"):
            v = r.get(key)
            if (key == "train" or v is not None) and not (isinstance(v, list) and all(isinstance(a, str) for a in v)):
                raise PlanError(f"{where}: {key} must be a list of command-line arguments (strings)")
        banned = {"--out", "--resume"} & {a.split("=")[0] for a in r["train"]}
        if banned:
            raise PlanError(f"{where}: leave out {', '.join(sorted(banned))}; the sweep names each run's folder")
        runs.append(RunPlan(name, list(r["train"]), None if r.get("evaluate") is None else list(r["evaluate"])))
    parallel = raw.get("parallel")
    if parallel is not None and (type(parallel) is not int or parallel < 1):
        raise PlanError(f"{path}: parallel must be a whole number of runs, 1 or more (got {parallel!r})")
    pack = raw.get("pack", {})
    try:
        limits = PackLimits(**pack)
    except TypeError:
        raise PlanError(f"{path}: pack takes max_files, max_file_mib and max_total_mib") from None
    return Plan(runs, limits, parallel)


# ---------------------------------------------------------------------------------------------- processes

def run_side_by_side(commands: dict[str, list[str]], logs: dict[str, Path], deadline: float,
                     env: dict[str, str] | None = None, grace_s: float = 120.0, max_parallel: int | None = None,
                     stop_signal: int = signal.SIGTERM) -> dict[str, int | None]:
    """Run the commands, at most ``max_parallel`` at a time, until they end or ``deadline`` (a
    time.monotonic() value) passes; then send ``stop_signal`` to those still going, wait ``grace_s`` and
    kill what is left. Returns each command's exit code (None: never started, the deadline came first)."""
    pending, running, codes = list(commands), {}, {name: None for name in commands}
    limit = max_parallel or len(commands)
    signalled = False
    while pending or running:
        now = time.monotonic()
        while pending and len(running) < limit and now < deadline:
            name = pending.pop(0)
            with open(logs[name], "ab") as log:
                running[name] = subprocess.Popen(commands[name], stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                codes[name] = proc.returncode
                del running[name]
        if now >= deadline:
            pending.clear()
            if running and not signalled:
                for proc in running.values():
                    proc.send_signal(stop_signal)
                signalled, deadline = True, now + grace_s
            elif running:  # the grace period is over
                for name, proc in running.items():
                    proc.kill()
                    codes[name] = proc.wait()
                running.clear()
        time.sleep(0.2)
    return codes


def train_log(runs_dir: Path, name: str) -> Path:
    """Where run ``name``'s train.py output goes: beside its run folder, so a run that never starts has one too."""
    return runs_dir / f"{name}.train.log"


def threads_each(runs: int) -> int:
    return max(1, real_core_count() // max(runs, 1))


# ---------------------------------------------------------------------------------------------- the sweep

def train_all(plan: Plan, runs_dir: Path, minutes: float, grace_s: float = 120.0) -> dict[str, int | None]:
    at_once = min(plan.parallel or len(plan.runs), len(plan.runs))
    threads = threads_each(at_once)
    commands, logs = {}, {}
    for r in plan.runs:
        extra = [] if any(a.split("=")[0] == "--threads" for a in r.train) else ["--threads", str(threads)]
        commands[r.name] = [sys.executable, str(REPO / "train.py"), *r.train, *extra, "--no-progress",
                            "--out", str(runs_dir / r.name)]
        logs[r.name] = train_log(runs_dir, r.name)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    print(f"sweep: {len(commands)} runs, {at_once} side by side, {threads} CPU thread(s) each, {minutes:g} min",
          flush=True)
    return run_side_by_side(commands, logs, time.monotonic() + 60 * minutes, env, grace_s=grace_s,
                            max_parallel=at_once)


def export_all(plan: Plan, runs_dir: Path) -> dict[str, list[Path]]:
    """Every kept checkpoint of every run, exported to runs_dir/exports/RUN/step-N (the run's own real
    samples go along). A run without a checkpoint has no exports."""
    from .export import export

    out: dict[str, list[Path]] = {}
    for r in plan.runs:
        out[r.name] = []
        run_dir = runs_dir / r.name
        for ckpt in list_checkpoints(run_dir) if run_dir.is_dir() else []:
            target = runs_dir / EXPORTS / r.name / ckpt.name
            try:
                out[r.name].append(export(ckpt, target, data_dir=None, real_per_class=0))
            except Exception as e:  # noqa: BLE001 - one bad checkpoint must not cost the others
                print(f"sweep: could not export {ckpt}: {e}", file=sys.stderr, flush=True)
    return out


def repeats(plan: Plan, exports: dict[str, list[Path]]) -> dict[Path, str]:
    """Exports whose generator file is byte-identical to the one their run started from (the SHA-256 that
    train.py records as ``init_sha256``) or to an earlier export of the run (a --d-warmup trains D alone),
    mapped to what they repeat; these need no evaluation and no room in the archives."""
    same: dict[Path, str] = {}
    for r in plan.runs:
        seen: dict[str, str] = {}
        for folder in exports.get(r.name, []):
            start = read_meta(folder)["config"].get("init_sha256")
            if start:
                seen.setdefault(start, "the --init-from generator")
            digest = file_sha256(generator_file(folder))
            if digest in seen:
                same[folder] = seen[digest]
            else:
                seen[digest] = f"{EXPORTS}/{r.name}/{folder.name}"
    return same


def spread(items: list) -> list:
    """Newest (last) first, then the oldest, then the ones between by halving the gaps: cut off anywhere,
    what came first samples the whole curve."""
    if len(items) <= 2:
        return items[::-1]
    order, gaps = [items[-1], items[0]], [(0, len(items) - 1)]
    while gaps:
        lo, hi = gaps.pop(0)
        if hi - lo > 1:
            mid = (lo + hi) // 2
            order.append(items[mid])
            gaps += [(lo, mid), (mid, hi)]
    return order


def evaluate_all(plan: Plan, exports: dict[str, list[Path]], runs_dir: Path, minutes: float,
                 skip: dict[Path, str] | None = None) -> None:
    """``cgan.evaluate EXPORT ... --write`` for the exports of the runs that have an evaluate list (except
    ``skip``), a few at a time, until the deadline; the runs take turns, each in ``spread`` order."""
    skip = skip or {}
    queues = [[(r, f) for f in spread([f for f in exports[r.name] if f not in skip])]
              for r in plan.runs if r.evaluate is not None]
    commands, logs = {}, {}
    for i in range(max(map(len, queues), default=0)):
        for r, folder in (q[i] for q in queues if i < len(q)):
            key = f"{r.name}/{folder.name}"
            device = [] if "--device" in r.evaluate else ["--device", "auto"]
            commands[key] = [sys.executable, "-m", "cgan.evaluate", str(folder), *r.evaluate, *device, "--write"]
            logs[key] = folder / "evaluate.log"
    if not commands:
        return
    parallel = min(len(commands), 8)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads_each(parallel))}
    print(f"sweep: evaluating {len(commands)} exports, {parallel} at a time, {minutes:g} min", flush=True)
    run_side_by_side(commands, logs, time.monotonic() + 60 * minutes, env, grace_s=5, max_parallel=parallel,
                     stop_signal=signal.SIGKILL)


def evaluation_of(folder: Path) -> dict | None:
    """The headline numbers of an export's evaluation.json (full protocol, else quick), or None."""
    try:
        results = json.loads((folder / "evaluation.json").read_text())
        r = results.get("full") or results["quick"]
        pr = r["precision_recall"]
        numbers = {
            "protocol": "full" if results.get("full") else "quick",
            "fd_ratio": r["frechet"]["ratio"], "fd_class_max_ratio": r["frechet"]["per_class_max_ratio"],
            "conditional_ratio": r["conditional_accuracy"]["ratio"],
            "worst_class_ratio": r["conditional_accuracy"]["worst_class"]["ratio"],
            # how many classes are measurably under target (None: written before cgan.evaluate counted them)
            "classes_under_target": (len(r["conditional_accuracy"]["classes_under_target"])
                                     if "classes_under_target" in r["conditional_accuracy"] else None),
            "gan_train": r["gan_train"]["accuracy"],
            "precision": pr["generated"]["precision"], "recall": pr["generated"]["recall"],
            "real_precision": pr["real"]["precision"], "real_recall": pr["real"]["recall"],
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return numbers


def last_loss_row(run_dir: Path) -> dict:
    try:
        lines = (run_dir / "losses.csv").read_text().strip().splitlines()
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(","), lines[-1].split(",")))


def last_log_line(log: Path) -> str | None:
    """The last non-empty line of a failed run's log: train.py's own error message, said once in the table."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:200] if lines else None


def summarize(plan: Plan, runs_dir: Path, codes: dict[str, int | None],
              exports: dict[str, list[Path]], same: dict[Path, str] | None = None) -> dict:
    runs = {}
    for r in plan.runs:
        run_dir = runs_dir / r.name
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        row = last_loss_row(run_dir)
        try:
            cfg = json.loads((run_dir / "run.json").read_text())["config"]
            dataset = "/".join(str(x) for x in (cfg["dataset"], cfg.get("emnist_split"), cfg.get("image_folder")) if x)
        except (OSError, ValueError, KeyError, TypeError):
            dataset = None
        runs[r.name] = {
            "train": r.train, "dataset": dataset, "exit_code": codes.get(r.name), "state": status.get("state"),
            "log_tail": last_log_line(train_log(runs_dir, r.name)) if codes.get(r.name) else None,
            "step": int(row["step"]) if row.get("step", "").isdigit() else 0,
            "images_per_s": float(row["images_per_s"]) if row.get("images_per_s") else None,
            "train_seconds": float(row["seconds"]) if row.get("seconds") else None,
            "exports": [{"folder": f"{EXPORTS}/{r.name}/{f.name}", "step": int(f.name.split("-")[-1]),
                         "evaluation": evaluation_of(f), **({"same_as": same[f]} if f in (same or {}) else {})}
                        for f in exports.get(r.name, [])],
        }
    return {"runs": runs, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---------------------------------------------------------------------------------------------- packing

# Per class, the count of classes measurably under target, not the worst ratio: the lowest ratio can be noise
# (EMNIST's f: 3 of 85 real images recognised), and noise must not pick the checkpoint.
RANKED = (("fd_ratio", 1), ("conditional_ratio", -1), ("classes_under_target", 1), ("gan_train", -1))


def priority(summary: dict) -> list[tuple[str, str]]:
    """(run, export folder) in the order they are worth bringing back. Exports compete within their dataset:
    the evaluated ones ranked by the sum of their ranks in FD ratio, conditional accuracy, classes under
    target and GAN-train (no single metric decides; equal values share a rank), then the unevaluated ones,
    newest first; the datasets take turns, so each gets its best export before any gets its second."""
    by_dataset: dict[str, list[tuple[str, dict]]] = {}
    for name, run in summary["runs"].items():  # a repeat of another generator never travels
        by_dataset.setdefault(run.get("dataset") or name, []).extend(
            (name, e) for e in run["exports"] if not e.get("same_as"))
    queues = []
    for candidates in by_dataset.values():
        scored = [c for c in candidates if c[1]["evaluation"]]
        score = {id(c): 0 for c in scored}
        def value(c: tuple[str, dict], key: str, sign: int) -> float:  # a missing number ranks last
            v = c[1]["evaluation"].get(key)
            return sign * v if isinstance(v, (int, float)) else float("inf")

        for key, sign in RANKED:
            values = sorted(value(c, key, sign) for c in scored)
            for c in scored:  # rank = how many are strictly better: ties (0 classes under target) share one
                score[id(c)] += bisect.bisect_left(values, value(c, key, sign))
        scored.sort(key=lambda c: (score[id(c)], value(c, "fd_ratio", 1)))
        rest = sorted((c for c in candidates if not c[1]["evaluation"]), key=lambda c: -c[1]["step"])
        queues.append([(name, e["folder"]) for name, e in scored + rest])
    order = []
    for i in range(max(map(len, queues), default=0)):
        order += [q[i] for q in queues if i < len(q)]
    return order


def tar_size(sizes: list[int]) -> int:
    """Bytes of a tar archive holding files of these sizes (a header block each, data padded to blocks)."""
    body = sum(TAR_BLOCK + -(-s // TAR_BLOCK) * TAR_BLOCK for s in sizes) + 2 * TAR_BLOCK
    return -(-body // TAR_RECORD) * TAR_RECORD


def pack(runs_dir: Path, summary: dict, out: Path, limits: PackLimits) -> dict:
    """Write sweep-N.tar into ``out``: the summary, each run's log, losses, status, newest sample grid and
    real samples, then exports in priority order, while they fit. Marks each export packed or not."""
    out.mkdir(parents=True, exist_ok=True)
    max_file, max_total = int(limits.max_file_mib * 2**20), int(limits.max_total_mib * 2**20)
    groups: list[list[Path]] = []  # files that travel together: per run, then per export
    real_from: dict[str, str] = {}  # run -> the run whose identical real samples travel (same data, seed)
    first_of: dict[str, str] = {}
    for name in summary["runs"]:
        run_dir = runs_dir / name
        grids = sorted((run_dir / "samples").glob("step-*.png"))
        files = [train_log(runs_dir, name), run_dir / "losses.csv", run_dir / "status.json",
                 run_dir / "run.json", *grids[-1:]]
        real = run_dir / REAL_SAMPLES_FILE
        if real.is_file():
            digest = file_sha256(real)
            real_from[name] = first_of.setdefault(digest, name)
            if real_from[name] == name:
                files.append(real)
        groups.append([f for f in files if f.is_file()])
    order = priority(summary)
    for _, folder in order:
        groups.append([f for f in sorted((runs_dir / folder).iterdir()) if f.is_file() and f.name != REAL_SAMPLES_FILE])

    def size(files: list[Path]) -> int:
        return tar_size([f.stat().st_size for f in files])

    reserve = 64 * 1024  # the summary and manifest, written last into the first archive
    archives: list[list[Path]] = [[]]
    packed_groups = 0
    for i, group in enumerate(groups):
        placed = False
        for n in range(min(len(archives) + 1, limits.max_files)):  # the archives so far, then a new one
            arch = archives[n] if n < len(archives) else []
            grown = size(arch + group)
            room = max_file - (reserve if n == 0 else 0)
            total = sum(size(a) for a in archives) - size(arch) + grown
            if grown <= room and total + reserve <= max_total:
                if n == len(archives):
                    archives.append(arch)
                arch.extend(group)
                placed = True
                break
        if i >= len(summary["runs"]):  # an export's group: say whether it travels
            folder = order[i - len(summary["runs"])][1]
            for e in summary["runs"][folder.split("/")[1]]["exports"]:
                if e["folder"] == folder:
                    e["packed"] = placed
        packed_groups += placed
    manifest = {"real_samples": {name: f"{src}/{REAL_SAMPLES_FILE}" for name, src in real_from.items()}}
    written = []
    for n, files in enumerate(archives, 1):
        path = out / f"sweep-{n}.tar"
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            if n == 1:
                for name, payload in ((SUMMARY_FILE, summary), (MANIFEST_FILE, manifest)):
                    data = json.dumps(payload, indent=2).encode()
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), int(time.time())
                    tar.addfile(info, io.BytesIO(data))
            for f in files:
                tar.add(f, arcname=str(f.relative_to(runs_dir)), recursive=False)
        written.append(path)
    return {"archives": [str(p) for p in written], "groups_packed": packed_groups, "groups": len(groups)}


def unpack(folder: Path, to: Path) -> dict:
    """Extract every sweep-N.tar in ``folder`` into ``to`` (members leading outside it, links and special
    files refused), then copy each run's real samples into its exports. Returns the summary."""
    to.mkdir(parents=True, exist_ok=True)
    root = to.resolve()
    archives = sorted(folder.glob("sweep-*.tar"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not archives:
        raise FileNotFoundError(f"{folder}: no sweep-N.tar archives here")
    for path in archives:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                dest = (root / member.name).resolve()
                if not member.isfile() or root not in dest.parents:
                    raise ValueError(f"{path}: refusing member {member.name!r} (not a plain file inside the target)")
            tar.extractall(root, filter="data")
    summary = json.loads((root / SUMMARY_FILE).read_text())
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    for name, run in summary["runs"].items():
        source = manifest["real_samples"].get(name)
        real = (root / source).resolve() if isinstance(source, str) else root / "-"
        if root not in real.parents:
            raise ValueError(f"{folder}: {MANIFEST_FILE} points outside the target ({source!r})")
        if real.is_file() and (root / name).is_dir() and not (root / name / REAL_SAMPLES_FILE).exists():
            shutil.copyfile(real, root / name / REAL_SAMPLES_FILE)
        for e in run["exports"]:
            target = (root / e["folder"]).resolve()
            if root not in target.parents:
                raise ValueError(f"{folder}: {SUMMARY_FILE} names a folder outside the target ({e['folder']!r})")
            if real.is_file() and target.is_dir() and not (target / REAL_SAMPLES_FILE).exists():
                shutil.copyfile(real, target / REAL_SAMPLES_FILE)
    return summary


def format_summary(summary: dict) -> str:
    lines = ["run                      state      step   img/s  export          FD ratio  cond   under  GAN-train  packed"]
    for name, run in summary["runs"].items():
        # a run that never wrote its status (bad arguments, a crash at start) shows how it ended instead
        code = run.get("exit_code")
        state = run["state"] or (f"exit {code}" if code is not None else "not run")
        head = f"{name:<24} {state:<9} {run['step']:>6} {run['images_per_s'] or 0:>7.0f}"
        if not run["exports"]:
            lines.append(head + "  (no checkpoint)" + (f" {run['log_tail']}" if run.get("log_tail") else ""))
        for e in run["exports"]:
            ev = e["evaluation"] or {}
            num = lambda k, f: format(ev[k], f) if ev.get(k) is not None else "-"  # noqa: E731
            lines.append(f"{head}  {e['folder'].split('/')[-1]:<14} {num('fd_ratio', '8.2f'):>8}  "
                         f"{num('conditional_ratio', '.3f'):>5}  {num('classes_under_target', 'd'):>5}  "
                         f"{num('gan_train', '.3f'):>9}  "
                         f"{'yes' if e.get('packed') else ('no' if 'packed' in e else '-')}"
                         + (f"  (same generator as {e['same_as']})" if e.get("same_as") else ""))
            head = " " * len(head)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train, export, evaluate and pack the runs of a plan")
    r.add_argument("plan", help="the plan, a JSON file (see python -m cgan.sweep --help)")
    r.add_argument("--runs-dir", required=True, help="folder for the run folders (must be new or empty)")
    r.add_argument("--train-minutes", type=float, default=7.0, help="training deadline (default %(default)s)")
    r.add_argument("--eval-minutes", type=float, default=1.5, help="evaluation deadline (default %(default)s)")
    r.add_argument("--pack", default=None, metavar="OUT", help="write sweep-N.tar archives into OUT")
    r.add_argument("--stop-grace", type=float, default=120.0, metavar="SECONDS",
                   help="after the training deadline's SIGTERM, how long a run may take to write its checkpoint "
                        "before it is killed (default %(default)s; a run caught compiling loses its last steps)")
    u = sub.add_parser("unpack", help="extract the archives of a sweep and rebuild its exported folders")
    u.add_argument("folder", help="the folder holding sweep-N.tar")
    u.add_argument("--to", required=True, help="where to extract")
    args = p.parse_args(argv)
    try:
        if args.command == "unpack":
            print(format_summary(unpack(Path(args.folder), Path(args.to))))
            return 0
        plan = load_plan(args.plan)
        runs_dir = Path(args.runs_dir)
        if runs_dir.exists() and any(runs_dir.iterdir()):
            raise PlanError(f"--runs-dir {runs_dir} is not empty; give a new folder")
        runs_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        codes = train_all(plan, runs_dir, args.train_minutes, args.stop_grace)
        exports = export_all(plan, runs_dir)
        same = repeats(plan, exports)
        evaluate_all(plan, exports, runs_dir, args.eval_minutes, skip=same)
        summary = summarize(plan, runs_dir, codes, exports, same)
        summary["wall_seconds"] = round(time.monotonic() - started, 1)
        if args.pack:
            summary["pack"] = pack(runs_dir, summary, Path(args.pack), plan.pack)
        atomic_write_text(runs_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
        print(format_summary(summary), flush=True)
        if not any(run["exports"] for run in summary["runs"].values()):
            # on a lent GPU this is a spent call: say so by the exit status, not only in the table
            print("error: no run wrote a checkpoint; the train logs in --runs-dir say why", file=sys.stderr)
            return 1
        return 0
    except (PlanError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
