"""cgan.sweep: several real train.py runs side by side against a deadline, exported, evaluated, packed within
size limits, unpacked into folders that load and sample exactly like the exports they came from."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from cgan import sweep
from cgan.data import load_dataset
from cgan.evaluator import data_fingerprint, make_header, save_evaluator, stratified_split, train_evaluator
from cgan.sampler import load
from conftest import REPO, TINY, write_mnist_like


def write_plan(path, runs, parallel=None, **pack):
    path.write_text(json.dumps({"runs": runs, **({"pack": pack} if pack else {}),
                                **({"parallel": parallel} if parallel else {})}))
    return path


@pytest.mark.parametrize("runs,words", [
    ([{"name": "a/b", "train": []}], "name must be"),
    ([{"name": "a", "train": []}, {"name": "a", "train": []}], "used twice"),
    ([{"name": "a", "train": ["--out", "x"]}], "leave out --out"),
    ([{"name": "a", "train": ["--resume=x"]}], "leave out --resume"),
    ([{"name": "a", "train": "--steps 3"}], "train must be a list"),
    ([{"name": "a", "train": [], "evaluate": [1]}], "evaluate must be a list"),
    ([{"name": "a", "train": [], "gpu": 1}], "optional \"evaluate\""),
    ([], '"runs"'),
])
def test_bad_plans_say_what_to_change(tmp_path, runs, words):
    with pytest.raises(sweep.PlanError, match=words):
        sweep.load_plan(write_plan(tmp_path / "plan.json", runs))


def test_tar_size_matches_tarfile(tmp_path):
    sizes = [0, 1, 511, 512, 513, 70_000]
    files = []
    for i, n in enumerate(sizes):
        (tmp_path / f"f{i}").write_bytes(b"x" * n)
        files.append(tmp_path / f"f{i}")
    with tarfile.open(tmp_path / "t.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for f in files:
            tar.add(f, arcname=f.name)
    assert (tmp_path / "t.tar").stat().st_size == sweep.tar_size(sizes)


def test_unpack_refuses_members_outside_the_target(tmp_path):
    src = tmp_path / "out"
    src.mkdir()
    with tarfile.open(src / "sweep-1.tar", "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="refusing member '../escape.txt'"):
        sweep.unpack(src, tmp_path / "to")
    assert not (tmp_path / "escape.txt").exists()


@pytest.fixture()
def evaluated_data(tmp_path):
    """600 synthetic test images and an evaluator that holds a third of them out (as shipped folders do)."""
    import torch

    data = write_mnist_like(tmp_path / "data", n_train=8, n_test=600)
    ds = load_dataset("mnist", "test", data)
    train_idx, held_idx = stratified_split(ds.labels, 1 / 3, seed=0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = train_evaluator(ds.images[train_idx], ds.labels[train_idx], 10, "cpu", epochs=1, seed=0, batch_size=64)
    finally:
        torch.set_num_threads(before)
    header = make_header(net, ds.class_names, "mnist", None,
                         {"kind": "seeded-split", "split": "test", "num_images": len(ds),
                          "sha256": {"test": data_fingerprint(ds.images, ds.labels)},
                          "description": "test fixture: 400 synthetic images train it, 200 held out"},
                         {"epochs": 1, "batch_size": 64})
    save_evaluator(net, header, tmp_path / "evaluator", held_idx)
    return data, tmp_path / "evaluator"


def test_a_sweep_trains_stops_exports_evaluates_packs_and_unpacks(tmp_path, evaluated_data):
    data, evaluator = evaluated_data
    common = ["--dataset", "mnist", "--data-dir", str(data), "--split", "test", "--threads", "1", *TINY]
    plan = write_plan(tmp_path / "plan.json", [
        # finishes well inside the deadline, two checkpoints, both evaluated (quick protocol)
        {"name": "short", "train": [*common, "--steps", "4", "--checkpoint-every", "2"],
         "evaluate": ["--evaluator", str(evaluator), "--data-dir", str(data), "--quick", "--threads", "1"]},
        # would run for hours: stopped at the deadline, and checkpoints where it stopped
        {"name": "long", "train": [*common, "--steps", "1000000", "--checkpoint-every", "100000"]},
    ], max_files=2, max_file_mib=0.75, max_total_mib=0.95)  # room for the runs' files and two of three exports
    runs, out = tmp_path / "runs", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "cgan.sweep", "run", str(plan), "--runs-dir", str(runs),
                           "--train-minutes", "0.4", "--eval-minutes", "3", "--pack", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((runs / "summary.json").read_text())
    short, long = summary["runs"]["short"], summary["runs"]["long"]
    assert short["state"] == "finished" and short["exit_code"] == 0 and short["step"] == 4
    assert long["state"] == "stopped" and long["exit_code"] == 0 and 0 < long["step"] < 1_000_000
    assert [e["step"] for e in short["exports"]] == [2, 4]
    assert [e["step"] for e in long["exports"]] == [long["step"]]  # the checkpoint written on SIGTERM
    for e in short["exports"]:
        ev = e["evaluation"]
        assert ev["protocol"] == "quick" and ev["fd_ratio"] > 0 and 0 <= ev["gan_train"] <= 1
    assert long["exports"][0]["evaluation"] is None  # no evaluate list: not scored
    assert "short" in proc.stdout and "stopped" in proc.stdout  # the printed table

    # packing: within the limits, most useful first, the rest marked as left behind
    archives = sorted(out.glob("sweep-*.tar"))
    assert 1 <= len(archives) <= 2
    assert all(a.stat().st_size <= 0.75 * 2**20 for a in archives)
    assert sum(a.stat().st_size for a in archives) <= 0.95 * 2**20
    packed = {e["folder"]: e["packed"] for r in summary["runs"].values() for e in r["exports"]}
    assert any(packed.values()) and not all(packed.values()), packed
    first = sweep.priority(summary)[0]
    assert packed[first[1]] is True

    got = sweep.unpack(out, tmp_path / "back")
    for folder, was_packed in packed.items():
        here = tmp_path / "back" / folder
        assert here.is_dir() == was_packed
        if was_packed:  # loads and samples exactly like the export on the training machine
            a, b = load(here), load(runs / folder)
            xa, _ = a.sample([1, 3], 4, seed=7)
            xb, _ = b.sample([1, 3], 4, seed=7)
            assert np.array_equal(xa, xb)
            assert (here / "real_samples.safetensors").is_file()
    assert got["runs"]["short"]["step"] == 4
    # the two runs share data and seed, so their real samples travel once and are put back for both
    names = [m for a in archives for m in tarfile.open(a).getnames()]
    assert sum(n.endswith("real_samples.safetensors") for n in names) == 1
    assert (tmp_path / "back" / "long" / "real_samples.safetensors").read_bytes() == \
        (runs / "long" / "real_samples.safetensors").read_bytes()
    assert (tmp_path / "back" / "long" / "losses.csv").is_file()


def test_a_sweep_where_no_run_trains_says_why_and_exits_1(tmp_path):
    # on a lent GPU a plan whose every run fails at start is a spent call: the exit status and the table say
    # so, with train.py's own message, instead of a table of "None" states and exit 0
    missing = tmp_path / "no-such-data"
    plan = write_plan(tmp_path / "plan.json", [
        {"name": "bad", "train": ["--dataset", "mnist", "--data-dir", str(missing), *TINY, "--threads", "1"]}])
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "cgan.sweep", "run", str(plan), "--runs-dir", str(runs),
                           "--train-minutes", "2", "--eval-minutes", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no run wrote a checkpoint" in proc.stderr
    bad = json.loads((runs / "summary.json").read_text())["runs"]["bad"]
    assert bad["exit_code"] == 2 and bad["state"] is None and bad["exports"] == []
    assert str(missing) in bad["log_tail"] and "does not exist" in bad["log_tail"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("bad "))
    assert "exit 2" in row and "(no checkpoint)" in row and "does not exist" in row


def test_priority_lets_datasets_take_turns_and_no_single_metric_decide():
    def e(run, step, fd=None, cond=None, under=None, gan=None):
        ev = None if fd is None else {"fd_ratio": fd, "conditional_ratio": cond, "classes_under_target": under,
                                      "gan_train": gan}
        return {"folder": f"exports/{run}/step-{step:07d}", "step": step, "evaluation": ev}

    summary = {"runs": {
        "fa": {"dataset": "fashion-mnist", "exports": [
            e("fa", 1, fd=2.0, cond=0.99, under=0, gan=0.86),   # best on three of four
            e("fa", 2, fd=1.9, cond=0.90, under=3, gan=0.70)]},  # lowest FD only
        "fb": {"dataset": "fashion-mnist", "exports": [e("fb", 3), e("fb", 4)]},  # not evaluated
        "em": {"dataset": "emnist/bymerge", "exports": [e("em", 5, fd=3.0, cond=0.99, under=1, gan=0.8)]},
    }}
    order = [folder for _, folder in sweep.priority(summary)]
    assert order == ["exports/fa/step-0000001", "exports/em/step-0000005",  # each dataset's best first
                     "exports/fa/step-0000002", "exports/fb/step-0000004", "exports/fb/step-0000003"]


def test_priority_ranks_a_missing_metric_last():
    summary = {"runs": {"r": {"dataset": "mnist", "exports": [
        {"folder": "exports/r/step-0000001", "step": 1,
         "evaluation": {"fd_ratio": None, "conditional_ratio": 1.0, "classes_under_target": 0, "gan_train": None}},
        {"folder": "exports/r/step-0000002", "step": 2,
         "evaluation": {"fd_ratio": 2.0, "conditional_ratio": 1.0, "classes_under_target": 0, "gan_train": 0.9}}]}}}
    assert [f for _, f in sweep.priority(summary)] == ["exports/r/step-0000002", "exports/r/step-0000001"]


def test_priority_counts_classes_measurably_under_target_and_ties_share_a_rank():
    def e(step, fd, under, gan, worst):
        return {"folder": f"exports/em/step-{step:07d}", "step": step, "evaluation": {
            "fd_ratio": fd, "conditional_ratio": 1.0, "classes_under_target": under, "gan_train": gan,
            "worst_class_ratio": worst}}

    # 1: no class measurably under target; its worst ratio, 0.28, is f's noise. 2: a hair lower FD, but two
    # classes drawn as their twins. The count, not the noisy worst ratio, decides (and the equal conditional
    # accuracies give neither a rank ahead).
    summary = {"runs": {"em": {"dataset": "emnist/bymerge", "exports": [
        e(2, fd=2.0, under=2, gan=0.79, worst=0.50), e(1, fd=2.1, under=0, gan=0.80, worst=0.28)]}}}
    assert [f for _, f in sweep.priority(summary)] == ["exports/em/step-0000001", "exports/em/step-0000002"]


@pytest.mark.parametrize("extra,words", [({"parallel": 0}, "parallel must be"), ({"parallel": "2"}, "parallel must be"),
                                         ({"paralel": 2}, '"runs"')])
def test_a_bad_parallel_says_what_to_change(tmp_path, extra, words):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"runs": [{"name": "a", "train": []}], **extra}))
    with pytest.raises(sweep.PlanError, match=words):
        sweep.load_plan(path)


def test_spread_samples_the_whole_curve_first():
    assert sweep.spread([]) == [] and sweep.spread([1]) == [1] and sweep.spread([1, 2]) == [2, 1]
    assert sweep.spread(list(range(9))) == [8, 0, 4, 2, 6, 1, 3, 5, 7]
    assert sorted(sweep.spread(list(range(13)))) == list(range(13))


def test_a_queued_continuation_skips_the_generators_it_did_not_train(tmp_path, evaluated_data):
    # One place: the runs train one after the other. The continuation trains D alone for its first 2 steps,
    # so its checkpoints at steps 1 and 2 hold the --init-from generator byte for byte: neither evaluated nor
    # packed (on a GPU lease they cost evaluation minutes and archive room for nothing), while steps 3 and 4
    # are; the evaluation order lets every run's newest export go first.
    data, evaluator = evaluated_data
    common = ["--dataset", "mnist", "--data-dir", str(data), "--split", "test", "--threads", "1", *TINY]
    base = tmp_path / "base"
    subprocess.run([sys.executable, "train.py", *common, "--steps", "2", "--out", str(base)], cwd=REPO, check=True,
                   capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "cgan.export", str(base / "checkpoints" / "step-0000002"),
                    str(tmp_path / "start")], cwd=REPO, check=True, capture_output=True, timeout=300)
    quick = ["--evaluator", str(evaluator), "--data-dir", str(data), "--quick", "--threads", "1"]
    plan = write_plan(tmp_path / "plan.json", [
        {"name": "first", "train": [*common, "--steps", "2", "--checkpoint-every", "2"], "evaluate": quick},
        {"name": "again", "train": ["--init-from", str(tmp_path / "start"), "--data-dir", str(data), "--split", "test",
                                    "--threads", "1", "--d-width", "8", "--batch-size", "16", "--no-progress",
                                    "--d-warmup", "2", "--steps", "4", "--checkpoint-every", "1", "--keep", "9"],
         "evaluate": quick},
    ], parallel=1)
    runs, out = tmp_path / "runs", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "cgan.sweep", "run", str(plan), "--runs-dir", str(runs),
                           "--train-minutes", "4", "--eval-minutes", "4", "--pack", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 runs, 1 side by side" in proc.stdout
    summary = json.loads((runs / "summary.json").read_text())
    first, again = summary["runs"]["first"], summary["runs"]["again"]
    assert first["state"] == again["state"] == "finished" and again["step"] == 4
    by_step = {e["step"]: e for e in again["exports"]}
    assert sorted(by_step) == [1, 2, 3, 4]
    for step in (1, 2):
        assert by_step[step]["same_as"] == "the --init-from generator"
        assert by_step[step]["evaluation"] is None and "packed" not in by_step[step]
        assert not (runs / by_step[step]["folder"] / "evaluation.json").exists()
    for step in (3, 4):
        assert "same_as" not in by_step[step] and by_step[step]["evaluation"]["protocol"] == "quick"
        assert by_step[step]["packed"] is True
    assert "same generator as the --init-from generator" in proc.stdout
    back = sweep.unpack(out, tmp_path / "back")
    assert not (tmp_path / "back" / by_step[1]["folder"]).exists()
    assert (tmp_path / "back" / by_step[4]["folder"] / "generator.safetensors").is_file()
    assert back["runs"]["again"]["exports"][0]["same_as"] == "the --init-from generator"
