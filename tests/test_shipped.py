"""The shipped checkpoints: they load, and a quick evaluation reproduces the quick numbers stored beside
the full ones in evaluation.json (within tolerance: thread counts change float sums slightly)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cgan
from cgan.evaluate import evaluate
from conftest import REPO, SHARED_DATA, needs_shared_data

SHIPPED = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "emnist": "emnist"}  # folder -> data folder


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_folder_is_complete(name):
    folder = REPO / "checkpoints" / name
    for f in ("checkpoint.json", "generator.safetensors", "real_samples.safetensors", "evaluator.safetensors",
              "evaluation.json", "MODEL_CARD.md"):
        assert (folder / f).is_file(), f"checkpoints/{name}/{f} is missing"
    s = cgan.load(folder)
    assert s.meta["kind"] == "export" and s.dataset == name
    images, labels = s.sample(list(range(s.num_classes)), 2, seed=0)
    assert images.shape == (2 * s.num_classes, 28, 28) and images.dtype == np.uint8
    real_images, real_labels = s.real_samples()
    assert np.bincount(real_labels).min() >= 1 and real_images.dtype == np.uint8
    # slim enough to ship with the app: the width-64 MNIST generator alone is 10.4 MB in fp32 (width 32: 4.2)
    assert sum(f.stat().st_size for f in folder.iterdir()) < 16 * 2**20
    stored = json.loads((folder / "evaluation.json").read_text())
    assert {"full", "quick"} <= stored.keys()


@needs_shared_data(*SHIPPED.values())
@pytest.mark.parametrize("name", list(SHIPPED))
def test_quick_evaluation_reproduces_stored_numbers(name):
    torch.set_num_threads(1)  # the stored quick numbers were measured with one thread
    folder = REPO / "checkpoints" / name
    stored = json.loads((folder / "evaluation.json").read_text())["quick"]
    r = evaluate(folder, data_dir=SHARED_DATA / SHIPPED[name], quick=True)
    assert r["conditional_accuracy"]["ratio"] == pytest.approx(stored["conditional_accuracy"]["ratio"], abs=0.01)
    assert r["gan_train"]["accuracy"] == pytest.approx(stored["gan_train"]["accuracy"], abs=0.02)
    assert r["frechet"]["generated"] == pytest.approx(stored["frechet"]["generated"], rel=0.05)
    assert r["frechet"]["floor"] == pytest.approx(stored["frechet"]["floor"], rel=1e-6)  # real side is fixed
    p, q = r["precision_recall"]["generated"], stored["precision_recall"]["generated"]
    assert p["precision"] == pytest.approx(q["precision"], abs=0.02)
    assert p["recall"] == pytest.approx(q["recall"], abs=0.02)
    # and the stored full results say what the README says about the targets: conditional accuracy over
    # 0.99 of the ceiling for every shipped model (README, Quality)
    full = json.loads((folder / "evaluation.json").read_text())["full"]
    assert full["conditional_accuracy"]["ratio"] >= 0.99
    assert full["targets"]["conditional_ratio>=0.99"]["met"] is True


@pytest.mark.parametrize("name", list(SHIPPED))
def test_model_card_opens_with_a_plain_summary_written_from_the_numbers(name):
    import re

    from cgan.model_card import render

    folder = REPO / "checkpoints" / name
    card = (folder / "MODEL_CARD.md").read_text()
    notes = re.search(r"## Notes\n\n(.*?)\n\n## Intended", card, re.S)
    assert card == render(folder, notes.group(1) if notes else None)  # every word of it from the files
    short = card[card.index("## In short"):card.index("## Data")]
    assert card.index("## In short") < card.index("## Metrics")
    targets = json.loads((folder / "evaluation.json").read_text())["full"]["targets"]
    assert short.count("- Weak:") >= sum(t["met"] is False for t in targets.values()) - 1
    memo = json.loads((folder / "evaluation.json").read_text())["full"]["memorization"]
    held, limit = memo["heldout_near_copy_fraction"], targets["memorization<=heldout"]["limit"]
    assert f"against {held:.2%} for held-out real images (allowed: up to {limit:.2%}" in short  # not the limit as the rate
    if name == "emnist":
        # the width-64 model's third round (2026-12-04): q, L and O not measurably under their targets, I is;
        # FD within 3x, recall still short
        assert "- Weak: some classes are often drawn as a look-alike class: I (50.27%) of their real rate" in short
        assert "- Good: images close to real data in the evaluator's features: Fréchet distance 2.8x" in short
        assert "- Weak: recall (how much of real data's variety the generated images cover) 0.738" in short
    if name == "mnist":  # every target met (the width-64 model, 2026-12-02)
        assert short.count("- Weak:") == 0 and "scores 98.90% on real test images (target 98.50%)" in short
        assert "- Good: recall (how much of real data's variety the generated images cover) 0.833" in short
