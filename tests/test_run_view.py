"""The studio's runs view, links and Train form, below the browser: damaged runs are listed as damaged,
half-written checkpoints are never offered, bad link parameters fall back with a note, and the Train form
builds a validated argument list (never a shell) and is refused on a hosted Space."""
from __future__ import annotations

import json
import shutil
import sys

import pytest

from cgan.checkpoints import META_FILE
from cgan.launcher import Launcher, training_allowed
from cgan.page_state import parse, query
from cgan.run_view import RunView
from cgan.studio import ALL_CLASSES, InputError, Studio


@pytest.fixture
def runs(tiny_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "good")
    return root


def test_a_finished_run_is_summarised(runs):
    view = RunView(runs)
    assert view.run_names() == ["good"]
    row = view.table()[0]
    assert row[:5] == ["good", "mnist", "sngan", "4 / 4", "finished"]
    assert view.checkpoints("good") == ["step-0000004", "step-0000002"]
    loss, logits = view.losses("good")
    assert {s for _, _, s in loss} == {"D loss", "G loss"} and len(loss) == 8 and len(logits) == 8
    grids = view.sample_grids("good")
    assert grids and view.grid_image(grids[-1][1]).ndim in (2, 3)
    assert "state **finished**" in view.progress_text("good")


def test_damaged_runs_are_listed_as_damaged_never_fatal(runs):
    shutil.copytree(runs / "good", runs / "bad-json")
    (runs / "bad-json" / "run.json").write_text("{not json")
    shutil.copytree(runs / "good", runs / "nul-log")
    (runs / "nul-log" / "losses.csv").write_bytes(b"\0" * 4096)
    shutil.copytree(runs / "good", runs / "bad-grid")
    for png in (runs / "bad-grid" / "samples").glob("*.png"):
        png.write_bytes(b"\x89PNG not really")
    shutil.copytree(runs / "good", runs / "half-written")
    half = runs / "half-written" / "checkpoints"
    (half / ".tmp-step-0000006-99999").mkdir()                   # a write in progress: invisible
    shutil.copytree(half / "step-0000004", half / "step-0000008")
    (half / "step-0000008" / META_FILE).unlink()                  # not complete: never offered
    (runs / "just-a-folder").mkdir()                              # not a run: not listed
    view = RunView(runs)
    assert sorted(view.run_names()) == ["bad-grid", "bad-json", "good", "half-written", "nul-log"]
    rows = {r[0]: r for r in view.table()}
    assert rows["bad-json"][4].startswith("damaged (JSONDecodeError")
    assert rows["nul-log"][3] == "4 / 4"  # the step comes from the checkpoints when the log is unreadable
    assert view.losses("nul-log") == ([], [])
    assert all(view.grid_image(p) is None for _, p in view.sample_grids("bad-grid"))
    assert view.checkpoints("half-written") == ["step-0000004", "step-0000002"]
    with pytest.raises(KeyError):
        view.folder("../good")  # only listed names, never a path


def test_a_run_checkpoint_is_explored_like_an_export(runs, tiny_root):
    studio = Studio(tiny_root)
    key = studio.add_run_checkpoint(runs, "good", "step-0000002")
    assert key == "good/step-0000002" and studio.entries[key].title == "good @ step 2"
    image, caption = studio.generate(key, ALL_CLASSES, 3, 1, 4, 1.0, 1)
    assert caption.startswith("good @ step 2: all 10 classes")
    assert studio.real_vs_generated(key, "3", 0, 2, 1.0, 1)[0].ndim == 2  # the run's real sample
    for run, step in [("../good", "step-0000002"), ("good", "../../x"), ("good", "step-0000003"), ("nope", "step-0000002")]:
        with pytest.raises(InputError):
            studio.add_run_checkpoint(runs, run, step)


def test_link_parameters_are_validated_with_notes(tiny_root):
    studio = Studio(tiny_root)
    state, notes = parse({"dataset": "fashion-mnist", "class": "Bag", "seed": "42", "truncation": "0.5",
                          "tab": "morph", "class_a": "Coat", "class_b": "Sneaker"}, studio)
    assert not notes and state["class"] == "Bag" and state["seed"] == 42 and state["truncation"] == 0.5
    assert parse({k: str(v) for k, v in state.items()}, studio)[0] == state  # a link round-trips
    q = query(state)
    assert q.startswith("?dataset=fashion-mnist&class=Bag&seed=42") and "tab=morph" in q and "rows" not in q
    bad = {"dataset": "../etc", "seed": "1e3", "truncation": "nan", "rows": "99", "tab": "shell", "class": "<b>",
           "frames": "x" * 500, "junk": "1"}
    state, notes = parse(bad, studio)
    assert state == {**parse({}, studio)[0]}  # every bad value fell back to its default
    text = " ".join(notes)
    for word in ("dataset '../etc' is not served", "seed '1e3' ignored", "truncation 'nan' ignored",
                 "rows '99' ignored", "tab 'shell' ignored", "class '<b>' ignored", "frames ignored: too long",
                 "unknown parameter 'junk'"):
        assert word in text, word


def test_train_form_fields_become_a_validated_argument_list(tmp_path, mnist_dir):
    launcher = Launcher(tmp_path / "runs")
    argv, name = launcher.command("mnist", str(mnist_dir), "train", "balanced", "mlp", "30", "16", "cpu", "0", "r1")
    assert argv[:2] == [sys.executable, str(launcher.script)] and name == "r1"
    assert argv[argv.index("--out") + 1] == str(tmp_path / "runs" / "r1") and "--emnist-split" not in argv
    for fields, message in [
        (("mnist; rm -rf /", "", "train", "balanced", "mlp", "30", "16", "cpu", "0", ""), "unknown dataset"),
        (("mnist", "/no/such/folder", "train", "balanced", "mlp", "30", "16", "cpu", "0", ""), "does not exist"),
        (("mnist", "", "train", "balanced", "mlp", "1e3", "16", "cpu", "0", ""), "steps: type a whole number"),
        (("mnist", "", "train", "balanced", "mlp", "30", "0", "cpu", "0", ""), "batch size must be from 1"),
        (("mnist", "", "train", "balanced", "mlp", "30", "16", "cuda:0; ls", "0", ""), "unknown device"),
        (("mnist", "", "train", "balanced", "mlp", "30", "16", "cpu", "0", "../escape"), "run name"),
    ]:
        with pytest.raises(InputError, match=message):
            launcher.command(*fields)


def test_the_train_form_starts_stops_and_refuses_a_second_run(tmp_path, mnist_dir):
    launcher = Launcher(tmp_path / "runs")
    name = launcher.start("mnist", str(mnist_dir), "train", "balanced", "mlp", "100000", "16", "cpu", "0", "r")
    with pytest.raises(InputError, match="still training; stop it first"):
        launcher.start("mnist", str(mnist_dir), "train", "balanced", "mlp", "10", "16", "cpu", "0", "r2")
    run = tmp_path / "runs" / name
    import time
    deadline = time.time() + 120
    while not ((run / "losses.csv").is_file() and len((run / "losses.csv").read_text().splitlines()) > 1):
        assert time.time() < deadline and launcher.running(), launcher.log_tail()
        time.sleep(0.1)
    assert "stopped (exit code 0)" in launcher.stop()
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    assert list((run / "checkpoints").glob("step-*"))
    assert "no run started here is training" in launcher.stop()


def test_training_from_the_page_is_refused_on_a_space(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert training_allowed(True) == (True, "")
    assert not training_allowed(False)[0]
    monkeypatch.setenv("SPACE_ID", "someone/cgan-studio")
    allowed, why = training_allowed(True)
    assert not allowed and "--force-training-on-space" in why
    assert training_allowed(True, force_on_space=True)[0]
