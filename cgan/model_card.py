"""Write MODEL_CARD.md for a served checkpoint folder from its checkpoint.json and evaluation.json.

    python -m cgan.model_card checkpoints/mnist [--notes "free text"]

Every number in the card is read from those two files: nothing is typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from .checkpoints import CheckpointError, generator_file, read_meta, resolve_checkpoint, tensor_header
from .evaluate import CLASS_TARGET, METRICS

RESULTS_FILE = "evaluation.json"
CARD_FILE = "MODEL_CARD.md"
MAX_RESULTS_BYTES = 1 << 20
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]|~])")  # every text placed with md() is mid-line


def md(text) -> str:
    """Text from a checkpoint (class names, titles, licences) as literal Markdown text: HTML and Markdown
    syntax are escaped and addresses do not become links, so a class name like ``<img src=http://...>``
    is shown as typed, never fetched."""
    text = " ".join(str(text).split())
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    text = MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"(?i)(://|www\.)", lambda m: m.group(1).replace("/", "\\/").replace(".", "\\."), text)


def _count(v) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else "n/a"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _num(x, fmt="{:.3f}") -> str:
    return "n/a" if x is None else fmt.format(x)


# The table rows of the metrics that show more than generated / real / ratio, by their key in METRICS
# (cgan/evaluate.py). Each gets the metric's stored dict, or None when it is missing: the optional ones
# then show nothing, the others fail and the card says the results are not in cgan.evaluate's format.
def _conditional_rows(cond) -> list[str]:
    return [f"| conditional accuracy (class-balanced) | {_pct(cond['generated']['balanced_accuracy'])} | "
            f"{_pct(cond['real_heldout']['balanced_accuracy'])} (evaluator on held-out real) | "
            f"ratio {_num(cond['ratio'])} |",
            f"| worst class ratio | {_num(cond['worst_class']['ratio'])} (class {cond['worst_class']['class']}) | | |"]


def _gan_train_rows(gt) -> list[str]:
    if not gt:
        return []
    ref = gt.get("real_train_reference") or {}
    return [f"| GAN-train accuracy (classifier trained on generated, tested on real) | "
            f"{_pct(gt['accuracy'])} | {_pct(ref.get('accuracy'))} (same recipe on real) | |"]


def _frechet_rows(fd) -> list[str]:
    return [f"| Fréchet distance (evaluator features) | {_num(fd['generated'], '{:.2f}')} | "
            f"{_num(fd['floor'], '{:.2f}')} (real vs real floor) | ratio {_num(fd['ratio'], '{:.2f}')}; "
            f"worst class ratio {_num(fd.get('per_class_max_ratio'), '{:.2f}')} |"]


def _precision_recall_rows(pr) -> list[str]:
    return [f"| precision / recall (k-NN) | {_num(pr['generated']['precision'])} / "
            f"{_num(pr['generated']['recall'])} | {_num(pr['real']['precision'])} / "
            f"{_num(pr['real']['recall'])} | |"]


def _memorization_rows(memo) -> list[str]:
    if not memo:
        return []
    return [f"| memorization: near copies of training images | {_pct(memo['generated_near_copy_fraction'])} | "
            f"{_pct(memo['heldout_near_copy_fraction'])} (held-out real) | |"]


CARD_ROWS = {"conditional_accuracy": _conditional_rows, "gan_train": _gan_train_rows, "frechet": _frechet_rows,
             "precision_recall": _precision_recall_rows, "memorization": _memorization_rows}


def metric_rows(key: str, metric, entry) -> list[str]:
    """A metric's rows in the card's table: its own (CARD_ROWS), else the simple row of its registry entry
    (label, generated, real, ratio), or nothing when these results do not hold it (measured before it
    was added, or not measured this time)."""
    if key in CARD_ROWS:
        return CARD_ROWS[key](entry)
    if not isinstance(entry, dict):
        return []
    return [f"| {metric.label} | {_num(entry.get('generated'), metric.fmt)} | "
            f"{_num(entry.get('real'), metric.fmt)} | ratio {_num(entry.get('ratio'))} |"]


def metrics_section(results: dict) -> list[str]:
    lines = []
    for name in ("full", "quick"):
        r = results.get(name)
        if not r:
            continue
        lines += [f"### Evaluation, {name} protocol (`python -m cgan.evaluate`{' --quick' if name == 'quick' else ''})",
                  "", "| metric | generated | real data | |", "|---|---|---|---|"]
        for key, metric in METRICS.items():
            lines += metric_rows(key, metric, r.get(key))
        lines += ["", "Targets: " + "; ".join(
            f"{k} {'met' if t['met'] else ('not met' if t['met'] is False else 'not measured')} "
            f"({_num(t['value'], '{:.4f}')})" for k, t in r["targets"].items()), ""]
        protocol = r.get("protocol", {})
        notes = [protocol.get("evaluator_protocol"), *(protocol.get("notes") or [])]
        notes = [n for n in notes if n]
        if notes:
            lines += ["Protocol:", ""] + [f"- {n}" for n in notes] + [
                f"- samples: {protocol.get('per_class')} per class for conditional accuracy, "
                f"{protocol.get('gan_train_images')} for GAN-train ({protocol.get('gan_train_epochs')} epochs), "
                f"sampler seed {protocol.get('sampler_seed')}", ""]
    return lines or ["No evaluation stored yet: run `python -m cgan.evaluate FOLDER --write`.", ""]


def summary_section(results: dict) -> list[str]:
    """The card's first section: what is good and what is weak, in plain words, from the measured targets
    of the full protocol (the quick one when that is all there is)."""
    r = results.get("full") or results.get("quick")
    if not r or not isinstance(r.get("targets"), dict):
        return []
    t, good, weak = r["targets"], [], []
    cond = r.get("conditional_accuracy", {})
    worst = cond.get("worst_class", {})
    c, e = _target(t, "conditional_ratio>=")[1], _target(t, "every_class_ratio>=")[1]
    if c.get("met") is not None:
        (good if c["met"] else weak).append(
            f"asking for a class gives that class: recognised {_pct(c['value'])} as often as real images of it")
    if e.get("met") is not None:
        per_class = cond.get("per_class_ratio") or {}
        under = e.get("under")  # measurably under target (results written before it existed: every ratio under target)
        low = sorted((v, k) for k, v in per_class.items() if isinstance(v, (int, float))
                     and (k in under if isinstance(under, list) else v < CLASS_TARGET))
        if e["met"]:
            w = worst.get("ratio")
            good.append(f"every class holds up: the weakest, {md(worst.get('class'))}, at {_pct(w)}" + (
                " of its real rate, within the noise of a rate measured on few, rarely recognised real images"
                if isinstance(w, (int, float)) and w < CLASS_TARGET else ""))
        else:
            names = ", ".join(f"{md(k)} ({_pct(v)})" for v, k in low[:6]) or md(worst.get("class"))
            weak.append(f"some classes are often drawn as a look-alike class: {names} of their real rate")
    key, f = _target(t, "fd<=")
    if f.get("met") is not None:
        line = f"Fréchet distance {_num(f['value'], '{:.1f}')}x the real-vs-real floor{_target_text(key, 'x')}"
        (good.append(f"images close to real data in the evaluator's features: {line}") if f["met"] else
         weak.append(f"images still differ from real data in the evaluator's features: {line}"))
    key, f = _target(t, "every_class_fd<=")
    if f.get("met") is not None:
        bound = _bound(key)
        per = (r.get("frechet") or {}).get("per_class")
        far = sorted(((v["ratio"], k) for k, v in per.items() if isinstance(v, dict) and bound is not None
                      and isinstance(v.get("ratio"), (int, float)) and v["ratio"] > bound),
                     reverse=True) if isinstance(per, dict) else []
        if f["met"]:
            good.append(f"every class is close: the farthest at {_num(f['value'], '{:.1f}')}x its own floor"
                        + _target_text(key, "x"))
        else:
            weak.append("some classes are far from their real images: " + (", ".join(
                f"{md(k)} {v:.1f}x" for v, k in far[:6]) or "the farthest at " + _num(f["value"], "{:.1f}x"))
                + " their own floor" + _target_text(key, "x"))
    key, g = _target(t, "gan_train>=")
    if g.get("met") is not None:
        line = (f"a classifier trained only on generated images scores {_pct(g['value'])} on real test images"
                + (f" (target {_pct(_bound(key))})" if _bound(key) is not None else ""))
        (good.append(line + ": the generated data covers the classes well") if g["met"] else
         weak.append(line + ": some of the variety of real data is missing"))
    for field, meaning in (("precision", "how many generated images look like real ones"),
                           ("recall", "how much of real data's variety the generated images cover")):
        key, p = _target(t, f"{field}_within_")
        if p.get("met") is not None:
            tolerance = re.fullmatch(rf"{field}_within_([0-9]*\.?[0-9]+)_of_real", key)
            line = (f"{field} ({meaning}) {_num(p['value'], '{:.3f}')} against {_num(p.get('real'), '{:.3f}')} "
                    f"for real images" + (f" (target: within {tolerance.group(1)})" if tolerance else ""))
            (good if p["met"] else weak).append(line)
    m = t.get("memorization<=heldout", {})
    if m.get("met") is not None:
        held = (r.get("memorization") or {}).get("heldout_near_copy_fraction")
        line = (f"near copies of training images: {_pct(m['value'])} of generated images, against "
                + (f"{_pct(held)} for held-out real images (allowed: up to {_pct(m.get('limit'))}, 3 standard "
                   "errors above)" if isinstance(held, (int, float)) else
                   f"an allowed {_pct(m.get('limit'))} (held-out real images' rate, 3 standard errors above)"))
        (good if m["met"] else weak).append(line)
    for key, metric in METRICS.items():  # the target of a registered metric (the built-in ones are above)
        v = t.get(metric.target_name(key)) if metric.target else None
        if isinstance(v, dict) and v.get("met") is not None:
            field, op, bound = metric.target
            (good if v["met"] else weak).append(
                f"{metric.label}: {field} {_num(v['value'])} (target {op} {bound:g})")
    return (["## In short", ""] + [f"- Good: {x}" for x in good] + [f"- Weak: {x}" for x in weak] + [""])


def _target(targets: dict, prefix: str) -> tuple[str, dict]:
    """The target whose name starts with ``prefix`` (its bound is in the name, and results written under
    older bounds keep theirs), as (name, entry); ("", {}) when there is none."""
    return next(((k, v) for k, v in targets.items() if k.startswith(prefix) and isinstance(v, dict)), ("", {}))


def _bound(name: str) -> float | None:
    """The number in a target's name: 3.0 for "fd<=3x_floor", 0.862 for "gan_train>=0.862" (None: none)."""
    m = re.search(r"[<>]=([0-9]*\.?[0-9]+)", name)
    return float(m.group(1)) if m else None


def _target_text(name: str, unit: str) -> str:
    bound = _bound(name)
    return "" if bound is None else f" (target {bound:g}{unit})"


def read_results(folder: Path) -> tuple[dict, str]:
    """evaluation.json of a folder, and a note when it exists but cannot be used (it is optional)."""
    file = Path(folder) / RESULTS_FILE
    if not file.is_file():
        return {}, ""
    if file.stat().st_size > MAX_RESULTS_BYTES:
        return {}, f"{RESULTS_FILE} is larger than {MAX_RESULTS_BYTES:,} bytes and was not read."
    try:
        results = json.loads(file.read_text())
    except (ValueError, RecursionError, UnicodeDecodeError):
        return {}, f"{RESULTS_FILE} is not valid JSON (or is nested too deeply) and was not read."
    return (results, "") if isinstance(results, dict) else ({}, f"{RESULTS_FILE} is not a JSON object.")


def tolerant(section, results: dict) -> list[str]:
    """A section built from evaluation.json, or one line saying it could not be (another tool's file)."""
    try:
        return section(results)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return [f"The results in {RESULTS_FILE} are not in the format of `python -m cgan.evaluate`.", ""]


def data_line(ds: dict, cfg: dict, split: str) -> str:
    """Which data: a built-in dataset and split, or your own images (folder name, preprocessing, what was
    held out; never the full local path, which says more about the trainer's machine than the data)."""
    if ds.get("name") != "folder":
        return f"{md(ds['name'])} ({split} split)"
    part = {"train": "the training part", "test": "the held-out part", "all": "all"}.get(split, md(split))
    held = cfg.get("holdout_fraction")
    held = f"; {held:.0%} per class held out for evaluation" if isinstance(held, (int, float)) and split == "train" else ""
    size, channels = cfg.get("image_size"), cfg.get("channels")
    return (f"your own images, {md(ds.get('title') or 'a folder')} ({part}{held}; resized and centre-cropped to "
            f"{md(size)} px, {'grey' if channels == 1 else 'RGB'}; see the run's data_report.txt)")


def continued_line(cfg: dict) -> list[str]:
    """For a run started from a trained generator (--init-from): which one (its folder's or repo's name, not a
    local path, and its weights' SHA-256) and how long it had been trained."""
    source, digest, before = cfg.get("init_from"), cfg.get("init_sha256"), cfg.get("init_steps")
    if not isinstance(source, str) or not source:
        return []
    name = source.rstrip("/\\").replace("\\", "/").split("/")[-1] or source
    warmup = cfg.get("d_warmup")
    return [f"- Continued from a generator trained for {_count(before)} steps ({md(name)}, weights SHA-256 "
            f"{md(str(digest)[:16])}...): the steps above are this run's, with a fresh discriminator"
            + (f" that trained alone for the first {_count(warmup)}" if isinstance(warmup, int) and warmup > 0 else "")]


def render(folder: Path, notes: str | None = None) -> str:
    """The model card of a checkpoint folder, written from checkpoint.json, the generator file's header and
    evaluation.json; every text taken from them is escaped (md). The studio shows it for folders that have
    no MODEL_CARD.md, so it copes with any checkpoint that passes read_meta."""
    folder = Path(folder)
    meta = read_meta(folder)
    cfg, ds = meta["config"], meta["dataset"]
    train = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    get = lambda d, k: md(d.get(k, "n/a")) if isinstance(d, dict) else "n/a"  # noqa: E731
    params = sum(math.prod(shape) for name, (shape, _) in tensor_header(generator_file(folder)).items()
                 if "running" not in name and "num_batches" not in name)
    results, problem = read_results(folder)
    split = get(ds, "split")
    if ds.get("emnist_split"):
        split = f"EMNIST {md(ds['emnist_split'])} {split}"
    exported = meta.get("exported_from") if isinstance(meta.get("exported_from"), dict) else {}
    step = exported.get("step", meta["step"])
    seconds = train.get("seconds")
    minutes = f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "n/a"
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    lines = [
        f"# {md(ds.get('title', ds['name']))}: class-conditional GAN (cgan-studio)", "",
        f"A `{cfg['arch']}` generator that draws {len(meta['class_names'])} classes of "
        f"{meta['image']['size']}x{meta['image']['size']} {'grayscale' if meta['image']['channels'] == 1 else 'RGB'} "
        f"images on request. Load it with `cgan.load(\"{folder.name}\")` or explore it with `python app.py`.", "",
        *tolerant(summary_section, results),
        "## Data", "",
        f"- Dataset: {data_line(ds, cfg, split)}, {_count(ds.get('num_images'))} images, "
        f"{len(meta['class_names'])} classes: {', '.join(md(n) for n in meta['class_names'])}",
        f"- Licence of the data: {md(ds.get('license', 'n/a'))}",
        "- The bundled `real_samples.safetensors` holds a few real images per class from the same split.", "",
        "## Model", "",
        f"- Architecture: `{cfg['arch']}`: generator width {cfg['g_width']}, latent size {cfg['z_dim']}, "
        f"{params:,} parameters; discriminator width {cfg['d_width']}"
        + (f", reading the minibatch standard deviation of groups of {cfg['d_minibatch_std']} images"
           if type(cfg.get("d_minibatch_std")) is int and cfg["d_minibatch_std"] > 0 else ""),
        f"- Loss: {get(cfg, 'loss')}; DiffAugment: {md(cfg.get('augment') or 'none')}; mismatch weight "
        f"{get(cfg, 'mismatch_weight')}" + (" (hardest wrong labels)" if cfg.get("mismatch_labels") == "hardest" else "")
        + (f"; mode-seeking weight {get(cfg, 'mode_seeking')}" if cfg.get("mode_seeking") else "")
        + f"; EMA of generator weights (decay {get(cfg, 'ema_decay')}) is what is served",
        f"- Optimiser: Adam, lr G {get(cfg, 'lr_g')}, lr D {get(cfg, 'lr_d')}, betas ({get(cfg, 'beta1')}, "
        f"{get(cfg, 'beta2')}), batch {get(cfg, 'batch_size')}, {get(cfg, 'd_steps')} D step(s) per G step"
        + (f"; both rates warmed up linearly over the first {_count(cfg['lr_warmup'])} iterations"
           if type(cfg.get("lr_warmup")) is int and cfg["lr_warmup"] > 0 else "")
        + (f"; both rates decayed linearly over the last {_count(cfg['lr_decay'])} iterations"
           if type(cfg.get("lr_decay")) is int and cfg["lr_decay"] > 0 else "")
        + ("; real batches balanced over classes" if cfg.get("balanced_classes") is True else "")
        + ("; generated images take the real batch's labels" if cfg.get("fake_labels") == "data" else ""), "",
        "## Training", "",
        f"- Checkpoint served: step {_count(step)} (chosen by periodic evaluation, see below)",
        *continued_line(cfg),
        f"- Device: {get(train, 'device')} x{md(train.get('processes', 1))}; training time to this step "
        f"{minutes} (loop only; checkpoints and samples excluded)",
        f"- Seed {get(cfg, 'seed')}; code version {md(meta.get('git_commit') or 'n/a')}; torch {get(versions, 'torch')}",
        "",
        "## Metrics", "",
        *([problem, ""] if problem else []),
        *tolerant(metrics_section, results),
    ]
    if notes:
        lines += ["## Notes", "", notes, ""]
    lines += ["## Intended use and limits", "",
              "Exploring what a small conditional GAN learns: class-conditional samples, seed and class "
              "interpolation. The images are synthetic and may be wrong in ways the metrics do not capture; "
              "they are not data about real people or objects.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgan.model_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="exported checkpoint folder, e.g. checkpoints/mnist")
    p.add_argument("--notes", default=None, help="an extra paragraph (e.g. how the checkpoint was selected)")
    args = p.parse_args(argv)
    try:
        folder = resolve_checkpoint(args.folder)
        text = render(folder, args.notes)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (folder / CARD_FILE).write_text(text)
    print(f"wrote {folder / CARD_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
