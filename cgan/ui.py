"""The Gradio studio: layout and event wiring. The work itself is in `cgan/studio.py`.

    from cgan.ui import build, launch
    demo = build("checkpoints")
    launch(demo)                      # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are respected

Public API endpoints (gradio_client): /generate, /interpolate, /morph, /real_vs_generated, /nearest,
/model_card, /datasets. They take the dataset folder name ("mnist") and a class name ("7", "Sneaker",
"g" or "All classes"). Every other listener only drives the page and is private.
"""
from __future__ import annotations

import functools
import html
import logging
import random

import gradio as gr

from .checkpoints import CheckpointError
from .studio import (MAX_FRAMES, MAX_GRID, MAX_INDEX, MAX_SCALE, MAX_SEED, METHODS, MIN_FRAMES,
                     MAX_COMPARE, SEED_SLIDER_MAX, InputError, Studio)

log = logging.getLogger("cgan.ui")

MODEL = "model"            # concurrency group shared by every listener that runs a generator
MODEL_CONCURRENCY = 1      # one generator call at a time: each already uses every core
QUEUE_MAX_SIZE = 32
DELETE_CACHE = (600, 1800)  # every 10 minutes, delete served files older than 30 minutes
MAX_UPLOAD_BYTES = 0       # the app takes no files, but Gradio's /upload route is open to anyone: no disk filling

CSS = """
.pixels img { image-rendering: pixelated; }
"""


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
        except Exception as e:  # a bug: log it, tell the user without leaking internals
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"internal error ({type(e).__name__}); the server logged the details") from None

    return wrapper


def build(checkpoints, studio: Studio | None = None, preload: bool = True) -> gr.Blocks:
    """The Blocks app for the checkpoints in ``checkpoints``."""
    studio = studio or Studio(checkpoints)
    if preload:
        studio.preload()
    names = studio.names
    with gr.Blocks(title="cgan-studio", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# cgan-studio\nClass-conditional GANs trained on small image datasets: pick a dataset "
                    "and a class, steer the seed. Image *j* of class *k* for seed *S* is the same here, in the "
                    "API and in `cgan.load(...).sample(...)`.")
        if not names:
            gr.Markdown(f"**No checkpoints found in `{studio.root}`.** Train one with `python train.py` and "
                        "export it with `python -m cgan.export RUN checkpoints/NAME`.")

            def no_datasets() -> dict:
                """No checkpoints: nothing to list."""
                return {}

            gr.api(no_datasets, api_name="datasets", queue=False)
            return demo
        first = names[0]
        first_classes = studio.class_names(first)

        # ------------------------------------------------------------------ shared controls
        with gr.Row():
            dataset = gr.Dropdown(choices=studio.choices(), value=first, label="Dataset", elem_id="dataset")
            cls = gr.Dropdown(choices=studio.class_choices(first), value=studio.class_choices(first)[0], label="Class",
                              elem_id="class", info="\"All classes\": one row per class")
        with gr.Row(equal_height=True):
            seed = gr.Number(value=0, label="Seed", minimum=0, maximum=MAX_SEED, precision=0, step=1,
                             elem_id="seed", info=f"0 to {MAX_SEED}; press Enter")
            seed_slider = gr.Slider(0, SEED_SLIDER_MAX, value=0, step=1, label="Seed slider",
                                    elem_id="seed-slider", info=f"seeds 0 to {SEED_SLIDER_MAX}")
            dice = gr.Button("🎲 Random seed", elem_id="dice", scale=0, min_width=140)
        with gr.Row():
            truncation = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Truncation ψ", elem_id="truncation",
                                   info="z is multiplied by ψ: lower ψ gives more typical images, less variety")
            scale = gr.Slider(1, MAX_SCALE, value=3, step=1, label="Display scale", elem_id="scale",
                              info="each pixel shown as scale x scale (PNG and GIF too)")

        # ------------------------------------------------------------------ tabs
        with gr.Tabs():
            with gr.Tab("Grid", id="grid-tab"):
                with gr.Row():
                    rows = gr.Slider(1, MAX_GRID, value=4, step=1, label="Rows", elem_id="rows",
                                     info="ignored for All classes")
                    cols = gr.Slider(1, MAX_GRID, value=8, step=1, label="Columns", elem_id="cols")
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="generate", scale=0, min_width=140)
                grid = gr.Image(format="png", label="Samples (PNG)", elem_id="grid", interactive=False,
                                buttons=["download", "fullscreen"], elem_classes="pixels")
                grid_caption = gr.Markdown(label="Caption", elem_id="grid-caption")
            with gr.Tab("Latent interpolation", id="interp-tab"):
                gr.Markdown("From image 0 of seed A (the seed above) to image 0 of seed B, same class.")
                with gr.Row():
                    seed_b = gr.Number(value=1, label="Seed B", minimum=0, maximum=MAX_SEED, precision=0, step=1,
                                       elem_id="seed-b")
                    frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=16, step=1, label="Frames", elem_id="frames")
                    method = gr.Radio(list(METHODS), value=METHODS[0], label="Interpolation", elem_id="method")
                    interp_btn = gr.Button("Interpolate", variant="primary", elem_id="interpolate", scale=0,
                                           min_width=140)
                interp_strip = gr.Image(format="png", label="Frames (PNG)", elem_id="interp-strip",
                                        interactive=False, buttons=["download", "fullscreen"], elem_classes="pixels")
                interp_gif = gr.Image(type="filepath", label="Animation (GIF)", elem_id="interp-gif",
                                      interactive=False, buttons=["download"], elem_classes="pixels")
                interp_caption = gr.Markdown(label="Caption", elem_id="interp-caption")
            with gr.Tab("Class morph", id="morph-tab"):
                gr.Markdown("One latent (image 0 of the seed above); the class conditioning moves from class A to "
                            "class B by interpolating the class weights.")
                with gr.Row():
                    class_a = gr.Dropdown(choices=first_classes, value=first_classes[0], label="Class A",
                                          elem_id="class-a")
                    class_b = gr.Dropdown(choices=first_classes, value=first_classes[-1], label="Class B",
                                          elem_id="class-b")
                    morph_frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=16, step=1, label="Frames",
                                             elem_id="morph-frames")
                    morph_btn = gr.Button("Morph", variant="primary", elem_id="morph", scale=0, min_width=140)
                morph_strip = gr.Image(format="png", label="Frames (PNG)", elem_id="morph-strip", interactive=False,
                                       buttons=["download", "fullscreen"], elem_classes="pixels")
                morph_gif = gr.Image(type="filepath", label="Animation (GIF)", elem_id="morph-gif",
                                     interactive=False, buttons=["download"], elem_classes="pixels")
                morph_caption = gr.Markdown(label="Caption", elem_id="morph-caption")
            with gr.Tab("Real vs generated", id="real-tab"):
                with gr.Row():
                    count = gr.Slider(1, MAX_COMPARE, value=8, step=1, label="Images per side", elem_id="count")
                    real_btn = gr.Button("Compare", variant="primary", elem_id="compare", scale=0, min_width=140)
                real_image = gr.Image(format="png", label="Real (left) vs generated (right)", elem_id="real",
                                      interactive=False, buttons=["download", "fullscreen"], elem_classes="pixels")
                real_caption = gr.Markdown(label="Caption", elem_id="real-caption")
            with gr.Tab("Nearest real neighbour", id="nn-tab"):
                gr.Markdown("A generated image of the chosen class (not All classes) beside its nearest real "
                            "images in the bundled sample, so you can see it is not a copy.")
                with gr.Row():
                    index = gr.Number(value=0, label="Image index j", minimum=0, maximum=MAX_INDEX, precision=0,
                                      step=1, elem_id="index")
                    nn_btn = gr.Button("Find nearest", variant="primary", elem_id="nearest", scale=0, min_width=140)
                nn_image = gr.Image(format="png", label="Generated (left) and nearest real images", elem_id="nn",
                                    interactive=False, buttons=["download"], elem_classes="pixels")
                nn_text = gr.Markdown(label="Distances", elem_id="nn-text")
            with gr.Tab("Model card", id="card-tab"):
                card = gr.Markdown(studio.model_card(first), elem_id="card")

        # ------------------------------------------------------------------ handlers
        generate = user_errors(studio.generate)
        interpolate = user_errors(studio.interpolate)
        morph = user_errors(studio.morph)
        real_vs_generated = user_errors(studio.real_vs_generated)
        nearest = user_errors(studio.nearest)
        model_card = user_errors(studio.model_card)

        @user_errors
        def on_dataset(name):
            classes, choices = studio.class_names(name), studio.class_choices(name)
            return (gr.update(choices=choices, value=choices[0]),
                    gr.update(choices=classes, value=classes[0]),
                    gr.update(choices=classes, value=classes[-1]),
                    studio.model_card(name))

        def seed_from_slider(value):
            return value

        def slider_from_seed(value):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= SEED_SLIDER_MAX
            return gr.update(value=int(value)) if ok else gr.update()

        def random_seed():
            s = random.randint(0, MAX_SEED)
            return s, (s if s <= SEED_SLIDER_MAX else gr.update())

        grid_in = [dataset, cls, seed, rows, cols, truncation, scale]
        grid_out = [grid, grid_caption]
        # preprocess=False: handlers get the raw values and cgan.studio checks every one (type, integer,
        # range) with a message naming the field, for the page and API clients alike.
        model_kw = dict(concurrency_id=MODEL, concurrency_limit=MODEL_CONCURRENCY, trigger_mode="always_last",
                        preprocess=False)
        private = dict(api_visibility="private")
        auto = dict(show_progress="minimal", **model_kw, **private)  # grid refreshes after a control settles

        # public endpoints: the buttons
        gen_btn.click(generate, grid_in, grid_out, api_name="generate", **model_kw)
        interp_in = [dataset, cls, seed, seed_b, frames, method, truncation, scale]
        interp_out = [interp_strip, interp_gif, interp_caption]
        interp_btn.click(interpolate, interp_in, interp_out, api_name="interpolate", **model_kw)
        morph_in = [dataset, class_a, class_b, seed, morph_frames, truncation, scale]
        morph_out = [morph_strip, morph_gif, morph_caption]
        morph_btn.click(morph, morph_in, morph_out, api_name="morph", **model_kw)
        real_btn.click(real_vs_generated, [dataset, cls, seed, count, truncation, scale], [real_image, real_caption],
                       api_name="real_vs_generated", **model_kw)
        nn_btn.click(nearest, [dataset, cls, seed, index, truncation, scale], [nn_image, nn_text],
                     api_name="nearest", **model_kw)

        def card_api(dataset: str) -> str:
            """The model card (Markdown) of a dataset's checkpoint."""
            return model_card(dataset)

        def datasets_api() -> dict:
            """Checkpoint folder name -> title, class names, image size and channels."""
            return studio.describe()

        gr.api(card_api, api_name="model_card", queue=False)
        gr.api(datasets_api, api_name="datasets", queue=False)

        # page-only listeners: regenerate the grid when a control settles (never on every drag step)
        gr.on([cls.input, seed.submit, seed.blur, rows.release, cols.release, truncation.release, scale.release],
              generate, grid_in, grid_out, **auto)
        gr.on([seed.submit, seed.blur], slider_from_seed, seed, seed_slider, queue=False, preprocess=False,
              **private)
        seed_slider.release(seed_from_slider, seed_slider, seed, queue=False, **private).then(
            generate, grid_in, grid_out, **auto)
        dice.click(random_seed, None, [seed, seed_slider], queue=False, **private).then(
            generate, grid_in, grid_out, **auto)
        dataset.input(on_dataset, dataset, [cls, class_a, class_b, card], queue=False, preprocess=False,
                      **private).then(generate, grid_in, grid_out, **auto)
        demo.load(generate, grid_in, grid_out, **auto)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """Queue limits, then launch. Server name and port come from kwargs or GRADIO_SERVER_NAME /
    GRADIO_SERVER_PORT (Gradio reads them when they are not given); never a public share link."""
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=MODEL_CONCURRENCY)
    options = dict(share=False, ssr_mode=False, css=CSS, footer_links=["api", "settings"],
                   max_file_size=MAX_UPLOAD_BYTES)
    options.update(kwargs)
    if options.get("share"):
        raise ValueError("cgan-studio never opens a public share link")
    return demo.launch(**options)
