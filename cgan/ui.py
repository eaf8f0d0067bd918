"""The Gradio page: layout and event wiring, one function per part of the page. The work itself is in
`cgan/studio.py` (exploring a checkpoint), `cgan/run_view.py` (reading training runs),
`cgan/launcher.py` (starting one) and `cgan/page_state.py` (the page as a link).

    from cgan.ui import build, launch
    demo = build("checkpoints", runs_root="runs")
    launch(demo)                      # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are respected

Public API endpoints (gradio_client): /generate, /interpolate, /morph, /real_vs_generated, /nearest,
/model_card, /datasets. They take the dataset folder name ("mnist") and a class name ("7", "Sneaker",
"g" or "All classes"). Every other listener only drives the page and is private.

How the page stays honest: the shared controls (dataset, class, seed, truncation, scale) and each tab's
own controls apply on Enter, on leaving a box, on a slider's keyboard or pointer input, and a tab shows
the current controls whenever it is opened, so no tab shows a result that its controls no longer
describe. The link under the controls always reproduces what is on screen.
"""
from __future__ import annotations

import functools
import html
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from .checkpoints import CheckpointError
from .data import DATASETS, EMNIST_SPLITS, SPLITS
from .image_folder import FOLDER_DATASET
from .launcher import DEVICES, Launcher
from .networks import ARCHITECTURES
from .page_state import TAB_NAMES, TABS, defaults, parse, query
from .run_view import RunView
from .sampler import Sampler
from . import synthetic
from .studio import (MAX_COMPARE, MAX_FRAMES, MAX_GRID, MAX_INDEX, MAX_SCALE, MAX_SEED, METHODS, MIN_FRAMES,
                     InputError, Studio, check_choice, check_int, check_view, md)

log = logging.getLogger("cgan.ui")

MODEL = "model"            # concurrency group of the interactive generator calls
ANIMATION = "animation"    # interpolations and morphs: the heavy requests get their own lane
RUNS = "runs"              # reading training runs: cheap file reads, never behind a generator call
MODEL_CONCURRENCY = 1      # one generator call per lane at a time: each already uses every core
QUEUE_MAX_SIZE = 32
DELETE_CACHE = (600, 1800)  # every 10 minutes, delete served files older than 30 minutes
MAX_UPLOAD_BYTES = 0       # the app takes no files, but Gradio's /upload route is open to anyone: no disk filling
RUNS_REFRESH_S = 3.0

CSS = """
.pixels img { image-rendering: pixelated; }
/* hint text at WCAG AA contrast (4.5:1) on the light and the dark theme */
.info-text, .min_value, .max_value, .empty.unpadded_box { color: var(--body-text-color) !important; opacity: 1 !important; }
/* Gradio's orange buttons and tab text fall short of 4.5:1; the darker shades meet it (5.2:1 and more) */
button.primary, .primary.lg, .primary.sm { background: #c2410c !important; border-color: #c2410c !important; color: #fff !important; }
button.stop { background: #b91c1c !important; border-color: #b91c1c !important; color: #fff !important; }
[role=tab] { color: var(--body-text-color) !important; }
[role=tab].selected { color: #c2410c !important; }
footer a, footer button, .show-api, .settings, .built-with { color: var(--body-text-color) !important; opacity: 1 !important; }
#pick-info, #seed-error, #notice { min-height: 0; }
"""

# Images get alt text from their caption (Gradio's Image has no alt parameter).
HEAD = """<script>
(() => {
  const pairs = [["grid", "grid-caption"], ["interp-strip", "interp-caption"], ["interp-gif", "interp-caption"],
                 ["morph-strip", "morph-caption"], ["morph-gif", "morph-caption"], ["real", "real-caption"],
                 ["nn", "nn-text"], ["run-grid", "run-grid-caption"]];
  function label() {
    // Gradio's empty-state boxes carry an aria-label without a role, which ARIA forbids: they are pictures.
    document.querySelectorAll(".empty[aria-label]:not([role])").forEach((e) => e.setAttribute("role", "img"));
    for (const [img, cap] of pairs) {
      const c = document.getElementById(cap);
      const text = (c && c.innerText.trim()) || "generated images";
      document.querySelectorAll(`#${img} img`).forEach((i) => {
        const alt = (img.endsWith("gif") ? "Animation: " : "") + text.slice(0, 300);
        if (i.getAttribute("alt") !== alt) i.setAttribute("alt", alt);
      });
    }
  }
  new MutationObserver(label).observe(document.documentElement,
    {subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["src", "class"]});
})();
</script>"""


def integer_box(value, *, label=None, info=None, elem_id=None, minimum: int = 0, maximum: int = MAX_SEED):
    """A text box for a whole number: the app receives exactly what was typed (no browser number parsing:
    "1e3" is refused with a message, not read as 3), and the API page documents an integer. (The schema is
    set on the instance: a Textbox subclass would make Gradio write a .pyi stub next to this module.)"""
    box = gr.Textbox(value=str(value), label=label, info=info, elem_id=elem_id, max_lines=1)
    box.api_info = lambda: {"type": "integer", "description": f"whole number from {minimum} to {maximum}"}
    return box


def class_dropdown(choices, value, label, elem_id, info=None):
    """A class menu. Its choices follow the chosen dataset, so the API page must not list the first
    dataset's classes as the only valid values: it documents a class name of the dataset instead."""
    menu = gr.Dropdown(choices=choices, value=value, label=label, elem_id=elem_id, info=info)
    menu.api_info = lambda: {"type": "string", "description": "a class name of the chosen dataset (see /datasets), "
                                                              "\"All classes\", or a page such as \"Classes 17-32\""}
    return menu


def user_errors(fn):
    """Turn refused input into a gr.Error with its message; the server keeps serving either way."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, CheckpointError) as e:
            # Gradio renders an error's message as HTML, and it may quote text from a checkpoint.
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:  # a bug: log it, tell the user without leaking internals
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error("internal error; the server logged the details") from None

    return wrapper


def gpu_function(fn, duration):
    """``fn`` decorated with @spaces.GPU when the `spaces` package is importable (a ZeroGPU Space needs an
    event bound to such a function at start-up, and gives it a GPU for ``duration(*args)`` seconds); ``fn``
    itself elsewhere. Off ZeroGPU the decorator returns ``fn`` unchanged."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def gpu_seconds(dataset, classes, per_class, *rest) -> int:
    """GPU time to ask ZeroGPU for a dataset download: a few seconds of set-up, then ~2,000 images/s."""
    try:
        n = max(1, len(classes or [1]) * int(per_class))
    except (TypeError, ValueError):
        n = 1
    return int(min(120, 10 + n / 2000))


def png_file(studio: Studio, image: np.ndarray, name: str) -> str:
    """Save a PNG under a name that says what it shows, so downloads never clash ("image.png")."""
    path = studio.temp.new(".png", name)
    Image.fromarray(image).save(path, format="PNG")
    return str(path)


# ---------------------------------------------------------------------------------------------- handlers

class Handlers:
    """The page's handlers: each calls the studio and names its outputs."""

    def __init__(self, studio: Studio, runs: RunView | None, launcher: Launcher | None):
        self.studio, self.runs, self.launcher = studio, runs, launcher

    # public endpoints (API and buttons): raw values in, files and captions out
    def generate(self, dataset, class_name, seed, rows=4, cols=8, truncation=1.0, scale=3):
        image, caption = self.studio.generate(dataset, class_name, seed, rows, cols, truncation, scale)
        name = f"{dataset}_{class_name}_seed{check_int(seed, 'seed', 0, MAX_SEED)}_psi{truncation:g}_{rows}x{cols}"
        return png_file(self.studio, image, name), caption

    def interpolate(self, dataset, class_name, seed_a, seed_b, frames=16, method="spherical", truncation=1.0,
                    scale=3, index_a=0):
        strip, gif, caption = self.studio.interpolate(dataset, class_name, seed_a, seed_b, frames, method,
                                                      truncation, scale, index_a)
        return png_file(self.studio, strip, Path(gif).stem + "_strip"), gif, caption

    def morph(self, dataset, class_a, class_b, seed, frames=16, truncation=1.0, scale=3):
        strip, gif, caption = self.studio.morph(dataset, class_a, class_b, seed, frames, truncation, scale)
        return png_file(self.studio, strip, Path(gif).stem + "_strip"), gif, caption

    def real_vs_generated(self, dataset, class_name, seed, count=8, truncation=1.0, scale=3):
        image, caption = self.studio.real_vs_generated(dataset, class_name, seed, count, truncation, scale)
        name = f"{dataset}_{class_name}_real-vs-generated_seed{check_int(seed, 'seed', 0, MAX_SEED)}_psi{truncation:g}"
        return png_file(self.studio, image, name), caption

    def nearest(self, dataset, class_name, seed, index=0, truncation=1.0, scale=3):
        image, text = self.studio.nearest(dataset, class_name, seed, index, truncation, scale)
        name = f"{dataset}_{class_name}_nearest_seed{check_int(seed, 'seed', 0, MAX_SEED)}_image{index}"
        return png_file(self.studio, image, name), text

    def make_dataset(self, dataset, classes, per_class, seed, truncation, fmt):
        """A generated, labelled dataset as a file to download (cgan/synthetic.py). Runs on CUDA when there
        is a GPU (on ZeroGPU this is the @spaces.GPU function), else on the CPU."""
        entry = self.studio.entry(dataset)
        names = entry.meta["class_names"]
        chosen = classes if classes else list(names)  # nothing chosen: every class
        if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
            raise InputError("classes must be a list of class names")
        ks = [names.index(check_choice(c, "class", names, f" for {entry.title}")) for c in dict.fromkeys(chosen)]
        per_class = check_int(per_class, "images per class", 1, synthetic.MAX_PER_CLASS)
        seed = check_int(seed, "seed", 0, MAX_SEED)
        psi, _ = check_view(truncation, 1)
        fmt = check_choice(fmt, "format", synthetic.FORMATS)
        try:
            synthetic.plan(len(ks), per_class)
        except ValueError as e:
            raise InputError(str(e)) from None
        device = synthetic.device_for_download()
        # the CPU model is the studio's, already loaded; a GPU copy exists only inside this call (ZeroGPU)
        sampler = self.studio.sampler(dataset) if device == "cpu" else Sampler.load(entry.folder, device)
        images, labels = synthetic.generate(sampler, ks, per_class, seed, psi)
        what = f"{len(ks)}-classes" if len(ks) > 1 else names[ks[0]]
        path = self.studio.temp.new(f".{'npz' if fmt == 'npz' else 'zip'}",
                                    f"{entry.name}_{what}_{per_class}-per-class_seed{seed}_psi{psi:g}_{fmt}")
        synthetic.write(path, fmt, images, labels, sampler)
        return str(path), (f"{len(images):,} generated images of {len(ks)} class(es) of {md(entry.title)} "
                           f"({per_class} per class, seed {seed}, truncation {psi:g}, made on {device}), as {fmt}.")

    # the page: one call shows the current tab for the current controls
    def refresh(self, tab, dataset, cls, seed, psi, scale, rows, cols, seed_b, frames, method, index_a, class_a,
                class_b, morph_frames, count, nn_index):
        out = [gr.skip()] * 13
        if tab == "grid-tab":
            out[0:2] = self.generate(dataset, cls, seed, rows, cols, psi, scale)
        elif tab == "interp-tab":
            out[2:5] = self.interpolate(dataset, cls, seed, seed_b, frames, method, psi, scale, index_a)
        elif tab == "morph-tab":
            out[5:8] = self.morph(dataset, class_a, class_b, seed, morph_frames, psi, scale)
        elif tab == "real-tab":
            out[8:10] = self.real_vs_generated(dataset, cls, seed, count, psi, scale)
        elif tab == "nn-tab":
            out[10:12] = self.nearest(dataset, cls, seed, nn_index, psi, scale)
        elif tab == "card-tab":
            out[12] = self.studio.model_card(dataset)
        state = {"dataset": dataset, "class": cls, "seed": seed, "truncation": psi, "scale": scale, "rows": rows,
                 "cols": cols, "tab": TAB_NAMES.get(tab, "grid"), "seed_b": seed_b, "frames": frames,
                 "method": method, "class_a": class_a, "class_b": class_b, "morph_frames": morph_frames,
                 "count": count, "index": nn_index}
        return (*out, f"[Link to this view]({query(state)})")

    def dataset_changed(self, name):
        choices, classes = self.studio.class_choices(name), self.studio.class_names(name)
        return (gr.update(choices=choices, value=choices[0]), gr.update(choices=classes, value=classes[0]),
                gr.update(choices=classes, value=classes[-1]), self.studio.model_card(name))


@dataclass
class NumberField:
    """A whole-number text box, the validated value the page uses, and a line for its error: Enter and
    leaving the box apply it once, and a bad value is explained under the box (not as a popup, once per
    trigger)."""

    box: gr.Textbox
    value: gr.State
    last: gr.State
    error: gr.Markdown
    name: str
    lo: int
    hi: int

    def apply(self, text, last):
        if text == last:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            v = check_int(text, self.name, self.lo, self.hi)
        except InputError as e:
            return gr.skip(), text, f"⚠ {md(str(e))}"
        return v, text, ""

    def events(self):
        return [self.box.submit, self.box.blur]

    def wire(self):
        """The listener that validates; chain .then(...) on what it returns to use the value."""
        return gr.on(self.events(), self.apply, [self.box, self.last], [self.value, self.last, self.error],
                     queue=False, api_visibility="private", show_progress="hidden")


def number_field(label, value, name, lo, hi, elem_id, info=None) -> NumberField:
    box = integer_box(value, label=label, elem_id=elem_id, info=info, minimum=lo, maximum=hi)
    error = gr.Markdown("", elem_id=f"{elem_id}-error")
    return NumberField(box, gr.State(value), gr.State(str(value)), error, name, lo, hi)


# ---------------------------------------------------------------------------------------------- the page

def build(checkpoints, studio: Studio | None = None, preload: bool = True, runs_root=None,
          launcher: Launcher | None = None, training_note: str = "") -> gr.Blocks:
    """The Blocks app for the checkpoints in ``checkpoints``; with ``runs_root`` a Training runs tab, and
    with ``launcher`` a Train tab."""
    studio = studio or Studio(checkpoints)
    if preload:
        studio.preload()
    runs = RunView(runs_root) if runs_root is not None else None
    h = Handlers(studio, runs, launcher)
    with gr.Blocks(title="cgan-studio", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# cgan-studio\nClass-conditional GANs: pick a dataset and a class, steer the seed.")
        if not studio.names:
            gr.Markdown(f"**No checkpoints found in `{studio.root}`.** Train one with `python train.py` and "
                        "export it with `python -m cgan.export RUN checkpoints/NAME`.")

            def no_datasets() -> dict:
                """No checkpoints: nothing to list."""
                return {}

            gr.api(no_datasets, api_name="datasets", queue=False)
            if runs is None and launcher is None:
                return demo
        ui = _page(demo, studio, h, runs, launcher, training_note) if studio.names else None
        if ui is None and (runs is not None or launcher is not None):
            gr.Markdown("Training runs are shown once a checkpoint is served.")
    return demo


def _page(demo, studio: Studio, h: Handlers, runs: RunView | None, launcher: Launcher | None, training_note: str):
    first = studio.names[0]
    start = defaults(studio)
    notice = gr.Markdown("", elem_id="notice")
    current_tab = gr.State("grid-tab")
    index_a = gr.State(0)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=330):
            with gr.Tabs(selected="grid-tab") as tabs:
                grid_tab, g = _grid_tab(start)
                interp_tab, it = _interp_tab(start)
                morph_tab, mo = _morph_tab(studio.class_names(first), start)
                real_tab, rv = _real_tab(start)
                nn_tab, nn = _nn_tab(start)
                data_tab, dl = _data_tab(studio.class_names(first))
                with gr.Tab("Model card", id="card-tab") as card_tab:
                    card = gr.Markdown(studio.model_card(first), elem_id="card")
                run_tab = _runs_tab(runs) if runs is not None else None
                train_tab = _train_tab(launcher, training_note) if launcher is not None else None
        with gr.Column(scale=2, min_width=280):
            sc = _shared_controls(studio, first, start)
            link = gr.Markdown(f"[Link to this view]({query(start)})", elem_id="share-link")
            examples, example_rows = _examples(studio)

    seed, seed_b, nn_index = sc["seed"], it["seed_b"], nn["index"]
    inputs = [current_tab, sc["dataset"], sc["cls"], seed.value, sc["truncation"], sc["scale"], g["rows"], g["cols"],
              seed_b.value, it["frames"], it["method"], index_a, mo["class_a"], mo["class_b"], mo["frames"],
              rv["count"], nn_index.value]
    outputs = [g["image"], g["caption"], it["strip"], it["gif"], it["caption"], mo["strip"], mo["gif"], mo["caption"],
               rv["image"], rv["caption"], nn["image"], nn["text"], card, link]
    private = dict(api_visibility="private")
    model_kw = dict(concurrency_id=MODEL, concurrency_limit=MODEL_CONCURRENCY, trigger_mode="always_last",
                    preprocess=False)
    refresh_kw = dict(show_progress="minimal", **model_kw, **private)
    refresh = user_errors(h.refresh)

    def redraw(trigger):
        """Run ``trigger`` (an event or a .then chain), then show the current tab for the current controls."""
        return trigger.then(refresh, inputs, outputs, **refresh_kw)

    # ---------------------------------------------------------------- public endpoints: the buttons
    anim_kw = dict(model_kw, concurrency_id=ANIMATION)
    g["button"].click(user_errors(h.generate), [sc["dataset"], sc["cls"], seed.box, g["rows"], g["cols"],
                                                 sc["truncation"], sc["scale"]], [g["image"], g["caption"]],
                      api_name="generate", **model_kw)
    it["button"].click(user_errors(h.interpolate), [sc["dataset"], sc["cls"], seed.box, seed_b.box, it["frames"],
                                                     it["method"], sc["truncation"], sc["scale"]],
                       [it["strip"], it["gif"], it["caption"]], api_name="interpolate", **anim_kw)
    mo["button"].click(user_errors(h.morph), [sc["dataset"], mo["class_a"], mo["class_b"], seed.box, mo["frames"],
                                               sc["truncation"], sc["scale"]], [mo["strip"], mo["gif"], mo["caption"]],
                       api_name="morph", **anim_kw)
    rv["button"].click(user_errors(h.real_vs_generated), [sc["dataset"], sc["cls"], seed.box, rv["count"],
                                                           sc["truncation"], sc["scale"]], [rv["image"], rv["caption"]],
                       api_name="real_vs_generated", **model_kw)
    nn["button"].click(user_errors(h.nearest), [sc["dataset"], sc["cls"], seed.box, nn_index.box, sc["truncation"],
                                                 sc["scale"]], [nn["image"], nn["text"]], api_name="nearest", **model_kw)

    make_dataset = gpu_function(user_errors(h.make_dataset), gpu_seconds)
    dl["button"].click(make_dataset, [sc["dataset"], dl["classes"], dl["per_class"], seed.box, sc["truncation"],
                                      dl["format"]], [dl["file"], dl["caption"]], api_name="dataset",
                       concurrency_id=ANIMATION, concurrency_limit=MODEL_CONCURRENCY, preprocess=False)
    sc["dataset"].change(lambda ds: gr.update(choices=studio.class_names(ds), value=[]), sc["dataset"],
                         dl["classes"], queue=False, preprocess=False, **private)

    def card_api(dataset: str) -> str:
        """The model card (Markdown) of a dataset's checkpoint."""
        return user_errors(studio.model_card)(dataset)

    def datasets_api() -> dict:
        """Checkpoint folder name -> title, class names, image size and channels."""
        return studio.describe()

    gr.api(card_api, api_name="model_card", queue=False)
    gr.api(datasets_api, api_name="datasets", queue=False)

    # ---------------------------------------------------------------- the page follows its controls
    redraw(sc["dataset"].input(user_errors(h.dataset_changed), sc["dataset"],
                               [sc["cls"], mo["class_a"], mo["class_b"], card], queue=False, preprocess=False, **private))
    for control in (sc["cls"], g["rows"], g["cols"], it["frames"], it["method"], mo["class_a"], mo["class_b"],
                    mo["frames"], rv["count"], sc["truncation"], sc["scale"]):
        control.input(refresh, inputs, outputs, **refresh_kw)
    for field in (seed_b, nn_index):
        field.wire().success(refresh, inputs, outputs, **refresh_kw)
    # a seed typed, stepped or rolled starts interpolations at image 0 again
    seed.wire().success(lambda: 0, None, index_a, queue=False, **private).success(refresh, inputs, outputs,
                                                                                  **refresh_kw)

    def step_seed(value, delta):
        v = (int(value) + delta) % (MAX_SEED + 1)
        return str(v), v, str(v), "", 0

    seed_out = [seed.box, seed.value, seed.last, seed.error, index_a]
    redraw(sc["dice"].click(lambda: step_seed(random.randint(0, MAX_SEED), 0), None, seed_out, queue=False, **private))
    redraw(sc["prev"].click(lambda v: step_seed(v, -1), seed.value, seed_out, queue=False, **private))
    redraw(sc["next"].click(lambda v: step_seed(v, 1), seed.value, seed_out, queue=False, **private))

    # a tab shows the current controls whenever it is opened: never a stale or a blank result
    for tab, tab_id in ((grid_tab, "grid-tab"), (interp_tab, "interp-tab"), (morph_tab, "morph-tab"),
                        (real_tab, "real-tab"), (nn_tab, "nn-tab"), (data_tab, "data-tab"), (card_tab, "card-tab")):
        redraw(tab.select(lambda t=tab_id: t, None, current_tab, queue=False, **private))

    # ---------------------------------------------------------------- clicking an image of the grid
    pick = gr.State(None)

    def on_select(evt: gr.SelectData, dataset, cls, seed_v, rows, cols, psi, scale):
        x, y = (evt.index if isinstance(evt.index, (list, tuple)) and len(evt.index) == 2 else (None, None))
        if x is None:
            return None, "", gr.update(visible=False)
        found = studio.cell_at(dataset, cls, seed_v, rows, cols, psi, scale, x, y)
        if found is None:
            return None, "*Between images: click an image to see which it is.*", gr.update(visible=False)
        found["dataset"] = dataset
        return (found, f"Image **{found['index']}** of class **{md(found['class'])}**, seed {found['seed']}, "
                       f"truncation {found['truncation']:g}", gr.update(visible=True))

    g["image"].select(user_errors(on_select), [sc["dataset"], sc["cls"], seed.value, g["rows"], g["cols"],
                                               sc["truncation"], sc["scale"]], [pick, g["pick_info"], g["pick_row"]],
                      queue=False, **private)

    def from_here(p):
        if not p:
            raise gr.Error("click an image of the grid first")
        return (p["class"], str(p["seed"]), p["seed"], str(p["seed"]), p["index"], gr.Tabs(selected="interp-tab"),
                "interp-tab")

    def nearest_of(p):
        if not p:
            raise gr.Error("click an image of the grid first")
        return (p["class"], str(p["seed"]), p["seed"], str(p["seed"]), str(p["index"]), p["index"], str(p["index"]),
                gr.Tabs(selected="nn-tab"), "nn-tab")

    redraw(g["interp_here"].click(from_here, pick, [sc["cls"], seed.box, seed.value, seed.last, index_a, tabs,
                                                    current_tab], queue=False, **private))
    redraw(g["nearest_here"].click(nearest_of, pick, [sc["cls"], seed.box, seed.value, seed.last, nn_index.box,
                                                      nn_index.value, nn_index.last, tabs, current_tab],
                                   queue=False, **private))

    # ---------------------------------------------------------------- examples and deep links
    state_out = [sc["dataset"], sc["cls"], mo["class_a"], mo["class_b"], seed.box, seed.value, seed.last,
                 sc["truncation"], sc["scale"], g["rows"], g["cols"], seed_b.box, seed_b.value, seed_b.last,
                 it["frames"], it["method"], mo["frames"], rv["count"], nn_index.box, nn_index.value, nn_index.last,
                 tabs, current_tab, notice, card, index_a]

    def show_state(state: dict, notes: list[str]):
        ds = state["dataset"]
        choices, classes = studio.class_choices(ds), studio.class_names(ds)
        tab = TABS[state["tab"]]
        if tab in ("runs-tab", "train-tab") and ((tab == "runs-tab" and runs is None) or
                                                 (tab == "train-tab" and launcher is None)):
            notes.append(f"tab {state['tab']!r} is not part of this studio")
            tab = "grid-tab"
        note = ("Some link parameters were ignored: " + "; ".join(md(n) for n in notes)) if notes else ""
        return (gr.update(value=ds), gr.update(choices=choices, value=state["class"]),
                gr.update(choices=classes, value=state["class_a"]), gr.update(choices=classes, value=state["class_b"]),
                str(state["seed"]), state["seed"], str(state["seed"]), state["truncation"], state["scale"],
                state["rows"], state["cols"], str(state["seed_b"]), state["seed_b"], str(state["seed_b"]),
                state["frames"], state["method"], state["morph_frames"], state["count"], str(state["index"]),
                state["index"], str(state["index"]), gr.Tabs(selected=tab), tab, note, studio.model_card(ds), 0)

    def on_load(request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        state, notes = parse(params, studio)
        return show_state(state, notes)

    redraw(demo.load(on_load, None, state_out, queue=False, **private))

    def apply_example(index: int):
        ds, cls, seed_v, psi = example_rows[index]
        state = defaults(studio, ds) | {"class": cls, "seed": seed_v, "truncation": psi}
        return show_state(state, [])

    for i, button in enumerate(examples):
        redraw(button.click(lambda i=i: apply_example(i), None, state_out, queue=False, **private))

    # ---------------------------------------------------------------- training runs and the Train form
    if run_tab is not None:
        others = [grid_tab, interp_tab, morph_tab, real_tab, nn_tab, data_tab, card_tab] + ([train_tab["tab"]] if train_tab else [])
        _wire_runs(run_tab, runs, studio, others, tabs, current_tab, sc, mo, card, redraw, private)
    if train_tab is not None:
        _wire_train(train_tab, launcher, runs, run_tab, private)
    return True


# ---------------------------------------------------------------------------------------------- parts

def slider(*args, **kwargs) -> gr.Slider:
    """A slider without the reset button (seven identical "Reset to default value" buttons in the tab
    order helped nobody)."""
    return gr.Slider(*args, buttons=[], **kwargs)


def _shared_controls(studio: Studio, first: str, start: dict) -> dict:
    c = {}
    c["dataset"] = gr.Dropdown(choices=studio.choices(), value=first, label="Dataset", elem_id="dataset")
    c["cls"] = class_dropdown(studio.class_choices(first), start["class"], "Class", "class",
                              info="\"All classes\": one labelled row per class")
    c["seed"] = number_field("Seed", start["seed"], "seed", 0, MAX_SEED, "seed",
                             info=f"a whole number from 0 to {MAX_SEED:,}; Enter applies")
    with gr.Row():
        c["prev"] = gr.Button("Previous seed", elem_id="seed-prev", size="sm")
        c["next"] = gr.Button("Next seed", elem_id="seed-next", size="sm")
        c["dice"] = gr.Button("Random seed", elem_id="dice", size="sm")
    c["truncation"] = slider(0.05, 1.0, value=start["truncation"], step=0.05, label="Truncation ψ (psi)", elem_id="truncation",
                                info="z is multiplied by ψ: lower ψ gives more typical images, less variety")
    c["scale"] = slider(1, MAX_SCALE, value=start["scale"], step=1, precision=0, label="Display scale", elem_id="scale",
                           info="each pixel shown as scale x scale (PNG and GIF too)")
    return c


def _image(label, elem_id, gif=False, buttons=("download", "fullscreen")):
    return gr.Image(type="filepath", label=label, elem_id=elem_id, interactive=False, buttons=list(buttons),
                    elem_classes="pixels", format="gif" if gif else "png")


def _grid_tab(start: dict):
    g = {}
    with gr.Tab("Grid", id="grid-tab") as tab:
        g["image"] = _image("Samples (PNG); click an image to see which it is", "grid")
        g["caption"] = gr.Markdown(elem_id="grid-caption")
        g["pick_info"] = gr.Markdown("", elem_id="pick-info")
        with gr.Row(visible=False) as g["pick_row"]:
            g["interp_here"] = gr.Button("Interpolate from here", size="sm", elem_id="interp-here")
            g["nearest_here"] = gr.Button("Nearest real images of this one", size="sm", elem_id="nearest-here")
        with gr.Row():
            g["rows"] = slider(1, MAX_GRID, value=start["rows"], step=1, precision=0, label="Rows", elem_id="rows",
                                  info="one class; All classes shows one row per class")
            g["cols"] = slider(1, MAX_GRID, value=start["cols"], step=1, precision=0, label="Columns", elem_id="cols")
        g["button"] = gr.Button("Generate", variant="primary", elem_id="generate")
    return tab, g


def _animation_outputs(prefix: str, explanation: str) -> dict:
    """The outputs of an animation tab: the GIF first (the fun part), the strip of frames, a caption."""
    out = {"gif": _image("Animation (GIF)", f"{prefix}-gif", gif=True, buttons=("download",)),
           "strip": _image("Frames (PNG)", f"{prefix}-strip"),
           "caption": gr.Markdown(elem_id=f"{prefix}-caption")}
    gr.Markdown(explanation)
    return out


def _interp_tab(start: dict):
    with gr.Tab("Interpolation", id="interp-tab") as tab:
        it = _animation_outputs("interp", "From seed A (the seed control) to seed B, same class.")
        with gr.Row():
            it["seed_b"] = number_field("Seed B", start["seed_b"], "seed B", 0, MAX_SEED, "seed-b", info="Enter applies")
            it["frames"] = slider(MIN_FRAMES, MAX_FRAMES, value=start["frames"], step=1, precision=0, label="Frames",
                                     elem_id="frames")
        it["method"] = gr.Radio(list(METHODS), value=start["method"], label="Interpolation", elem_id="method")
        it["button"] = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
    return tab, it


def _morph_tab(classes, start: dict):
    with gr.Tab("Class morph", id="morph-tab") as tab:
        mo = _animation_outputs("morph", "One latent (image 0 of the seed); the class moves from A to B by "
                                         "blending the class weights.")
        with gr.Row():
            mo["class_a"] = class_dropdown(classes, classes[0], "Class A", "class-a")
            mo["class_b"] = class_dropdown(classes, classes[-1], "Class B", "class-b")
        mo["frames"] = slider(MIN_FRAMES, MAX_FRAMES, value=start["morph_frames"], step=1, precision=0, label="Frames",
                                 elem_id="morph-frames")
        mo["button"] = gr.Button("Morph", variant="primary", elem_id="morph")
    return tab, mo


def _real_tab(start: dict):
    rv = {}
    with gr.Tab("Real vs generated", id="real-tab") as tab:
        rv["image"] = _image("Real (left) vs generated (right)", "real")
        rv["caption"] = gr.Markdown(elem_id="real-caption")
        rv["count"] = slider(1, MAX_COMPARE, value=start["count"], step=1, precision=0, label="Images per side", elem_id="count")
        rv["button"] = gr.Button("Compare", variant="primary", elem_id="compare")
    return tab, rv


def _nn_tab(start: dict):
    nn = {}
    with gr.Tab("Nearest real", id="nn-tab") as tab:
        nn["image"] = _image("Generated (left) and its nearest real images", "nn", buttons=("download",))
        nn["text"] = gr.Markdown(elem_id="nn-text")
        nn["index"] = number_field("Image index j", start["index"], "image index", 0, MAX_INDEX, "index", info="Enter applies")
        nn["button"] = gr.Button("Find nearest", variant="primary", elem_id="nearest")
    return tab, nn


def _data_tab(classes):
    dl = {}
    with gr.Tab("Dataset", id="data-tab") as tab:
        gr.Markdown(f"Download a generated, labelled dataset (the seed and ψ above): a zip of PNGs with "
                    f"labels.csv, an .npz, or IDX files that `train.py --data-dir` reads back. At most "
                    f"{synthetic.MAX_IMAGES:,} images per download.")
        dl["classes"] = gr.Dropdown(choices=classes, value=[], multiselect=True, label="Classes (none chosen: all)",
                                    elem_id="data-classes")
        dl["per_class"] = integer_box(100, label="Images per class", elem_id="data-per-class", minimum=1,
                                      maximum=synthetic.MAX_PER_CLASS)
        dl["format"] = gr.Radio(list(synthetic.FORMATS), value="zip", label="Format", elem_id="data-format")
        dl["button"] = gr.Button("Make the dataset", variant="primary", elem_id="make-dataset")
        dl["file"] = gr.File(label="Dataset", elem_id="data-file", interactive=False)
        dl["caption"] = gr.Markdown(elem_id="data-caption")
    return tab, dl


def _examples(studio: Studio):
    """Clickable examples: for each dataset its best and its worst class by the bundled evaluation."""
    rows = []
    for name in studio.names[:6]:
        e = studio.entries[name]
        best, worst = _best_and_worst(e)
        rows.append((name, best, 42, 1.0))
        if worst != best:
            rows.append((name, worst, 42, 1.0))
    if not rows:
        return [], rows
    # Buttons, not a gr.Dataset table: its rows cannot be reached or pressed by keyboard.
    gr.Markdown("**Examples**: each model's best and worst class", elem_id="examples-title")
    with gr.Row(elem_id="examples"):
        buttons = [gr.Button(f"{studio.entries[d].title}: {c}", size="sm", elem_classes="example")
                   for d, c, _, _ in rows]
    return buttons, rows


def _best_and_worst(entry) -> tuple[str, str]:
    """The class the model draws best and the one it draws worst, by its bundled evaluation. Best: the highest
    share of generated images the evaluator recognises (ties: the class the evaluator knows best among real
    ones). Worst: the class furthest under its target in standard errors where the evaluation records them,
    else the lowest ratio to its ceiling. Not the top ratio for best: a class the evaluator rarely recognises
    even among real images (EMNIST's f: 3 of 85) has a ratio that is mostly noise."""
    names = entry.meta["class_names"]

    def numbers(values) -> dict:  # the classes of this model with a finite number (None: no images)
        values = values if isinstance(values, dict) else {}
        return {k: float(values[k]) for k in names if isinstance(values.get(k), (int, float))
                and math.isfinite(values[k])}
    try:
        ev = json.loads((entry.folder / "evaluation.json").read_text())
        acc = next(ev[p]["conditional_accuracy"] for p in ("full", "quick") if p in ev)
        generated, ceiling = numbers(acc["generated"]["per_class"]), numbers(acc["real_heldout"]["per_class"])
        best = max((generated[k], ceiling.get(k, 0.0), k) for k in generated)[-1]
        shortfall = numbers(acc.get("per_class_shortfall_se"))
        if shortfall:
            worst = max((v, k) for k, v in shortfall.items())[-1]
        else:
            worst = min((v, k) for k, v in numbers(acc["per_class_ratio"]).items())[-1]
        return best, worst
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError, IndexError, RecursionError):
        return names[0], names[-1]


# ---------------------------------------------------------------------------------------------- runs

def _runs_tab(runs: RunView):
    r = {}
    with gr.Tab("Runs", id="runs-tab") as tab:
        r["tab"] = tab
        r["timer"] = gr.Timer(RUNS_REFRESH_S, active=False)
        r["table"] = gr.Dataframe(headers=["run", "dataset", "arch", "step", "state", "images/s", "last checkpoint"],
                                  value=runs.table(), interactive=False, elem_id="runs-table", label="Runs")
        names = runs.run_names()
        r["run"] = gr.Dropdown(choices=names, value=names[0] if names else None, label="Run", elem_id="run",
                               allow_custom_value=False)
        r["progress"] = gr.Markdown("", elem_id="run-progress")
        with gr.Row():
            r["loss_plot"] = gr.LinePlot(x="step", y="value", color="series", title="Losses", elem_id="loss-plot",
                                         height=260)
            r["logit_plot"] = gr.LinePlot(x="step", y="value", color="series", title="Mean logits of D",
                                          elem_id="logit-plot", height=260)
        r["grid"] = gr.Image(type="numpy", label="Sample grid (fixed latents, one row per class)", elem_id="run-grid",
                             interactive=False, buttons=["download", "fullscreen"], elem_classes="pixels",
                             format="png")
        r["grid_caption"] = gr.Markdown("", elem_id="run-grid-caption")
        r["grid_step"] = slider(0, 1, value=0, step=1, precision=0, label="Saved grid (newest at the right)",
                                   elem_id="grid-step")
        r["follow"] = gr.Checkbox(True, label="Follow the newest grid", elem_id="follow")
        with gr.Row():
            r["checkpoint"] = gr.Dropdown(choices=[], label="Checkpoint", elem_id="run-checkpoint")
            r["explore"] = gr.Button("Explore this checkpoint", variant="primary", elem_id="explore")
    return r


def _run_outputs(runs: RunView, name, index, follow, chosen=None):
    """Everything the runs tab shows for run ``name`` (or the newest run)."""
    import pandas as pd

    summaries = runs.summaries()  # one listing and one look at each run per refresh
    table = runs.table(summaries)
    names = [s.name for s in summaries]
    if name not in names:
        name = names[0] if names else None
    if name is None:
        empty = pd.DataFrame({"step": [], "value": [], "series": []})
        return (table, gr.update(choices=[], value=None), f"No runs in `{runs.root}` yet.", empty, empty, None, "",
                gr.update(maximum=0, value=0), gr.update(choices=[], value=None))
    loss, logits = runs.losses(name)
    loss_df = pd.DataFrame(loss, columns=["step", "value", "series"])
    logit_df = pd.DataFrame(logits, columns=["step", "value", "series"])
    grids = runs.sample_grids(name)
    last = max(len(grids) - 1, 0)
    i = last if follow or not isinstance(index, (int, float)) else int(min(max(index, 0), last))
    image, caption = None, "No sample grid yet."
    if grids:
        label, path = grids[i]
        image = runs.grid_image(path)
        caption = f"{md(name)}: {label} (grid {i + 1} of {len(grids)})"
    ckpts = runs.checkpoints(name)
    keep = chosen if chosen in ckpts else (ckpts[0] if ckpts else None)  # a refresh never moves the user's choice
    progress = runs.progress_text(next(s for s in summaries if s.name == name))
    return (table, gr.update(choices=names, value=name), progress, loss_df, logit_df, image, caption,
            gr.update(maximum=max(last, 1), value=i), gr.update(choices=ckpts, value=keep))


def _wire_runs(r, runs: RunView, studio: Studio, other_tabs, tabs, current_tab, sc, mo, card, redraw, private):
    outs = [r["table"], r["run"], r["progress"], r["loss_plot"], r["logit_plot"], r["grid"], r["grid_caption"],
            r["grid_step"], r["checkpoint"]]
    kw = dict(concurrency_id=RUNS, concurrency_limit=2, show_progress="hidden", **private)

    def show(name, index, follow, chosen=None):
        return _run_outputs(runs, name, index, follow, chosen)

    ins = [r["run"], r["grid_step"], r["follow"], r["checkpoint"]]
    r["timer"].tick(show, ins, outs, **kw)
    r["run"].input(lambda n, i: show(n, i, True), [r["run"], r["grid_step"]], outs, **kw)
    r["grid_step"].input(lambda n, i, c: show(n, i, False, c), [r["run"], r["grid_step"], r["checkpoint"]], outs,
                         **kw).then(lambda: False, None, r["follow"], queue=False, **private)
    r["follow"].input(show, ins, outs, **kw)
    # the timer runs only while someone looks at the runs tab
    r["tab"].select(lambda: ("runs-tab", gr.Timer(active=True)), None, [current_tab, r["timer"]], queue=False,
                    **private).then(show, ins, outs, **kw)
    for other in other_tabs:
        other.select(lambda: gr.Timer(active=False), None, r["timer"], queue=False, **private)

    def explore(name, step):
        if not step:
            raise gr.Error("this run has no complete checkpoint yet; wait for the first one")
        key = studio.add_run_checkpoint(runs.root, name, step)
        choices, classes = studio.class_choices(key), studio.class_names(key)
        return (gr.update(choices=studio.choices(), value=key), gr.update(choices=choices, value=choices[0]),
                gr.update(choices=classes, value=classes[0]), gr.update(choices=classes, value=classes[-1]),
                studio.model_card(key), gr.Tabs(selected="grid-tab"), "grid-tab", gr.Timer(active=False))

    redraw(r["explore"].click(user_errors(explore), [r["run"], r["checkpoint"]],
                              [sc["dataset"], sc["cls"], mo["class_a"], mo["class_b"], card, tabs, current_tab,
                               r["timer"]], queue=False, **private))


def _train_tab(launcher: Launcher, note: str):
    t = {}
    with gr.Tab("Train", id="train-tab") as tab:
        t["tab"] = tab
        gr.Markdown("Start a training run on this machine (one at a time). It appears under Training runs at "
                    "once; Stop writes a checkpoint first, so the run can be resumed exactly." + (f"\n\n{note}" if note else ""))
        with gr.Row():
            t["dataset"] = gr.Dropdown([(k, k) for k in DATASETS] + [("your own images", FOLDER_DATASET)],
                                       value="mnist", label="Dataset", elem_id="train-dataset")
            t["split"] = gr.Dropdown(list(SPLITS), value="train", label="Split", elem_id="train-split")
            t["emnist_split"] = gr.Dropdown(list(EMNIST_SPLITS), value="balanced", label="EMNIST split",
                                            elem_id="train-emnist-split")
        t["data_dir"] = gr.Textbox("", label="Data folder (official files; empty: download; for your own images: "
                                   "their folder, one subfolder per class)", elem_id="train-data-dir", max_lines=1)
        with gr.Row():
            t["arch"] = gr.Dropdown(list(ARCHITECTURES), value="sngan", label="Architecture", elem_id="train-arch")
            t["device"] = gr.Dropdown(list(DEVICES), value="auto", label="Device", elem_id="train-device")
        with gr.Row():
            t["steps"] = integer_box(2000, label="Steps", elem_id="train-steps", minimum=1, maximum=10_000_000)
            t["batch"] = integer_box(64, label="Batch size", elem_id="train-batch", minimum=1, maximum=4096)
            t["seed"] = integer_box(0, label="Seed", elem_id="train-seed")
        t["name"] = gr.Textbox("", label="Run name (empty: dataset-arch-time)", elem_id="train-name", max_lines=1)
        with gr.Row():
            t["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
            t["stop"] = gr.Button("Stop", variant="stop", elem_id="train-stop")
        t["status"] = gr.Markdown("", elem_id="train-status")
        t["log"] = gr.Textbox("", label="Training log (last lines)", lines=8, interactive=False, elem_id="train-log")
    return t


def _wire_train(t, launcher: Launcher, runs: RunView | None, r, private):
    kw = dict(concurrency_id=RUNS, concurrency_limit=2, show_progress="minimal", **private)

    def start(*fields):
        name = launcher.start(*fields)
        return f"Started **{md(name)}**: see it under Training runs.", launcher.log_tail()

    def stop():
        return md(launcher.stop()), launcher.log_tail()

    fields = [t[k] for k in ("dataset", "data_dir", "split", "emnist_split", "arch", "steps", "batch", "device",
                             "seed", "name")]
    t["start"].click(user_errors(start), fields, [t["status"], t["log"]], preprocess=False, **kw)
    t["stop"].click(user_errors(stop), None, [t["status"], t["log"]], **kw)
    timer = gr.Timer(RUNS_REFRESH_S, active=False)
    timer.tick(lambda: launcher.log_tail(), None, t["log"], **kw)
    t["tab"].select(lambda: gr.Timer(active=True), None, timer, queue=False, **private)


# ---------------------------------------------------------------------------------------------- launch

def launch(demo: gr.Blocks, **kwargs):
    """Queue limits, then launch. Server name and port come from kwargs or GRADIO_SERVER_NAME /
    GRADIO_SERVER_PORT (Gradio reads them when they are not given); never a public share link, and no
    start-up text suggesting one."""
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=MODEL_CONCURRENCY)
    options = dict(share=False, ssr_mode=False, css=CSS, head=HEAD, footer_links=["api", "settings"],
                   max_file_size=MAX_UPLOAD_BYTES)
    options.update(kwargs)
    if options.get("share"):
        raise ValueError("cgan-studio never opens a public share link")
    return demo.launch(**options)
