"""Adding a metric is one entry in cgan.evaluate.METRICS: a toy metric registered there (and nowhere else)
is computed by a real quick evaluation, stored in evaluation.json, printed by the report and shown in the
model card; once unregistered, it is gone again.

The evaluation runs on small synthetic IDX data (conftest.write_mnist_like) with an evaluator trained
here for one epoch and an untrained generator, so the test needs no downloaded data (about 10 s)."""
from __future__ import annotations

import json
import re

import pytest
import torch

import cgan.evaluate as E
from cgan.data import load_dataset
from cgan.evaluator import data_fingerprint, make_header, save_evaluator, stratified_split, train_evaluator
from cgan.model_card import render
from conftest import REPO, write_mnist_like
from test_metrics import _random_generator_checkpoint

TOY = "mean_intensity"
LABEL = "mean pixel intensity (vs real)"


def mean_intensity(x: E.MetricInputs) -> dict:
    """Mean pixel value in [0, 1] of the generated FD set and of the real half B."""
    generated = x.generated_images[x.fd_index].float().mean() / 255
    real = x.real.heldout_images[x.splits.half_b].float().mean() / 255
    return E.compared(float(generated), float(real))


TOY_METRIC = E.Metric(mean_intensity, LABEL, "{:.5f}", target=("ratio", ">=", 0.5))


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def checkpoint(tmp_path, one_thread):
    """An untrained mnist-shaped generator trained "on the test split" of 600 synthetic images, with an
    evaluator that holds a third of them out, as a shipped folder has."""
    data = write_mnist_like(tmp_path / "data", n_train=8, n_test=600)
    ds = load_dataset("mnist", "test", data)
    train_idx, held_idx = stratified_split(ds.labels, 1 / 3, seed=0)
    net = train_evaluator(ds.images[train_idx], ds.labels[train_idx], 10, "cpu", epochs=1, seed=0, batch_size=64)
    header = make_header(net, ds.class_names, "mnist", None,
                         {"kind": "seeded-split", "split": "test", "num_images": len(ds),
                          "sha256": {"test": data_fingerprint(ds.images, ds.labels)},
                          "description": "test fixture: 400 synthetic images train it, 200 held out"},
                         {"epochs": 1, "batch_size": 64})
    ck = _random_generator_checkpoint(tmp_path / "ck")
    save_evaluator(net, header, ck, held_idx)
    return ck, data


def test_a_metric_registered_in_one_place_reaches_result_report_and_card(checkpoint, monkeypatch, capsys):
    ck, data = checkpoint
    tiny = E.Protocol("quick", per_class=10, gan_train_images=200, gan_train_epochs=1, heldout_max=0,
                      fd_max=100, memorization_max=50)
    monkeypatch.setitem(E.PROTOCOLS, "mnist", (tiny, tiny))
    builtin = list(E.METRICS)
    out = ck / "r.json"
    with monkeypatch.context() as m:
        m.setitem(E.METRICS, TOY, TOY_METRIC)  # the one place
        assert E.main([str(ck), "--data-dir", str(data), "--quick", "--write", "--json", str(out)]) == 0
        report = capsys.readouterr().out
        result = json.loads(out.read_text())
        card = render(ck)

    # the result dict (and evaluation.json, where the card reads it)
    toy = result[TOY]
    g, r = toy["generated"], toy["real"]
    assert 0 < g < 1 and 0 < r < 1 and toy["ratio"] == pytest.approx(g / r)
    assert json.loads((ck / "evaluation.json").read_text())["quick"][TOY] == toy
    target = result["targets"][f"{TOY}_ratio>=0.5"]
    assert target["value"] == toy["ratio"] and target["met"] is (toy["ratio"] >= 0.5)
    assert all(result[k] is not None for k in ("conditional_accuracy", "gan_train", "frechet", "memorization"))

    # the report: its row after the built-in ones, and its target
    row = f"{LABEL:<34}{g:>12.5f}{r:>12.5f}{toy['ratio']:>9.3f}"
    assert row in report.splitlines()
    assert report.index("near copies") < report.index(LABEL)
    assert re.search(rf"  {re.escape(TOY)}_ratio>=0\.5 +{toy['ratio']:.4f}  (met|NOT met)", report)

    # the model card: a row of the metrics table, the target, and a line of the summary
    assert f"| {LABEL} | {g:.5f} | {r:.5f} | ratio {toy['ratio']:.3f} |" in card
    assert f"{TOY}_ratio>=0.5 " in card
    assert re.search(rf"- (Good|Weak): {re.escape(LABEL)}: ratio {toy['ratio']:.3f} \(target >= 0\.5\)", card)

    # unregistered again: the registry is as it was, and the card no longer shows the row even though
    # evaluation.json still holds the toy's numbers
    assert list(E.METRICS) == builtin and TOY not in E.METRICS
    assert LABEL not in render(ck).split("## Metrics")[1].split("Targets:")[0]


def test_registering_a_metric_leaves_older_results_as_they_were(monkeypatch):
    """The shipped evaluation.json files predate the toy metric: their cards render exactly as shipped."""
    monkeypatch.setitem(E.METRICS, TOY, TOY_METRIC)
    for name in ("mnist", "fashion-mnist", "emnist"):
        folder = REPO / "checkpoints" / name
        card = (folder / "MODEL_CARD.md").read_text()
        notes = re.search(r"## Notes\n\n(.*?)\n\n## Intended", card, re.S)
        assert render(folder, notes.group(1) if notes else None) == card


def test_a_target_must_say_which_way():
    with pytest.raises(ValueError, match="'>=' or '<='"):
        E.Metric(mean_intensity, LABEL, target=("ratio", ">", 1.0))
