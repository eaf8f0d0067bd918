"""The studio page's state as URL query parameters: open a link, see exactly what its sender saw.

    ?dataset=fashion-mnist&class=Sneaker&seed=42&truncation=0.8&tab=interpolation&seed_b=7

Every parameter is optional and validated with the studio's own checks; a bad one falls back to its
default and adds a note for the page ("seed 'abc' ignored: ..."), never an error page.
"""
from __future__ import annotations

from urllib.parse import urlencode

from .studio import (MAX_COMPARE, MAX_FRAMES, MAX_GRID, MAX_INDEX, MAX_SCALE, MAX_SEED, METHODS, MIN_FRAMES,
                     InputError, Studio, check_choice, check_float, check_int, show)

# URL name -> tab id in the page
TABS = {"grid": "grid-tab", "interpolation": "interp-tab", "morph": "morph-tab", "real": "real-tab",
        "nearest": "nn-tab", "data": "data-tab", "card": "card-tab", "runs": "runs-tab", "train": "train-tab"}
TAB_NAMES = {v: k for k, v in TABS.items()}
MAX_PARAM_CHARS = 200


# The page's defaults that do not depend on the dataset (the page's controls start at these values).
FIXED_DEFAULTS = {"seed": 0, "truncation": 1.0, "scale": 3, "rows": 4, "cols": 8, "tab": "grid", "seed_b": 1,
                  "frames": 16, "method": METHODS[0], "morph_frames": 16, "count": 8, "index": 0}


def defaults(studio: Studio, dataset: str | None = None) -> dict:
    dataset = dataset or studio.names[0]
    classes = studio.class_names(dataset)
    return {"dataset": dataset, "class": studio.class_choices(dataset)[0], **FIXED_DEFAULTS,
            "class_a": classes[0], "class_b": classes[-1]}  # this order is the order of a link's parameters


def parse(query, studio: Studio) -> tuple[dict, list[str]]:
    """(state, notes) from a mapping of query parameters (unknown ones are noted and ignored)."""
    q = {k: v for k, v in dict(query).items()}
    notes = []
    dataset = q.pop("dataset", None)
    if dataset is not None and dataset not in studio.entries:
        notes.append(f"dataset {show(dataset, 40)} is not served here; showing {studio.names[0]}")
        dataset = None
    state = defaults(studio, dataset)
    names = studio.class_names(state["dataset"])
    checks = {
        "class": lambda v: check_choice(v, "class", studio.class_choices(state["dataset"])),
        "class_a": lambda v: check_choice(v, "class A", names),
        "class_b": lambda v: check_choice(v, "class B", names),
        "seed": lambda v: check_int(v, "seed", 0, MAX_SEED),
        "seed_b": lambda v: check_int(v, "seed B", 0, MAX_SEED),
        "truncation": lambda v: _float(v, "truncation"),
        "scale": lambda v: check_int(v, "display scale", 1, MAX_SCALE),
        "rows": lambda v: check_int(v, "rows", 1, MAX_GRID),
        "cols": lambda v: check_int(v, "columns", 1, MAX_GRID),
        "frames": lambda v: check_int(v, "frames", MIN_FRAMES, MAX_FRAMES),
        "morph_frames": lambda v: check_int(v, "morph frames", MIN_FRAMES, MAX_FRAMES),
        "method": lambda v: check_choice(v, "interpolation method", METHODS),
        "count": lambda v: check_int(v, "images per side", 1, MAX_COMPARE),
        "index": lambda v: check_int(v, "image index", 0, MAX_INDEX),
        "tab": lambda v: check_choice(v, "tab", TABS),
    }
    for key, value in q.items():
        if key not in checks:
            if key not in ("__theme", "view"):  # Gradio's own
                notes.append(f"unknown parameter {show(key, 30)} ignored")
            continue
        if not isinstance(value, str) or len(value) > MAX_PARAM_CHARS:
            notes.append(f"{key} ignored: too long")
            continue
        try:
            state[key] = checks[key](value)
        except InputError as e:
            notes.append(f"{key} {show(value, 40)} ignored: {e}")
    return state, notes


def _float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} must be a number in (0, 1]") from None
    return check_float(number, name, 0.0, 1.0, lo_open=True)


def query(state: dict) -> str:
    """The query string ("?dataset=...") for a state; parameters equal to their defaults are left out,
    except dataset, class and seed, which say what the link is about."""
    keep = ("dataset", "class", "seed")
    return "?" + urlencode({k: v for k, v in state.items()
                            if v is not None and (k in keep or k not in FIXED_DEFAULTS or v != FIXED_DEFAULTS[k])})
