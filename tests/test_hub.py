"""Models as Hugging Face Hub repos, with no network: a Hub-shaped export loads bit for bit like its source,
its card's metadata parses with huggingface_hub, a repo laid out in huggingface_hub's cache loads offline
by name (in `cgan.sample` and `app.py`), and hostile Hub-shaped folders are refused."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cgan
from cgan.checkpoints import CheckpointError
from cgan.export import main as export_main
from conftest import REPO
from studio_helpers import SHIPPED, free_port, shipped_names, start_app

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", GRADIO_ANALYTICS_ENABLED="False")
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_export(source: Path, target: Path) -> Path:
    assert export_main([str(source), str(target), "--hub"]) == 0
    return target


def into_cache(folder: Path, cache: Path, repo: str) -> Path:
    """Lay ``folder`` out as huggingface_hub caches a download: blobs named by hash, snapshot symlinks."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / REVISION
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        data = f.read_bytes()
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(REVISION)
    return snap


def test_a_hub_folder_loads_bit_for_bit_like_its_source(tiny_export, tmp_path):
    hub = hub_export(tiny_export, tmp_path / "hub")
    names = sorted(p.name for p in hub.iterdir())
    assert {"config.json", "model.safetensors", "real_samples.safetensors", "README.md"} <= set(names)
    assert "checkpoint.json" not in names and "generator.safetensors" not in names
    a, la = cgan.load(tiny_export).sample([0, 3, 9], 12, seed=5, truncation=0.7)
    b, lb = cgan.load(hub).sample([0, 3, 9], 12, seed=5, truncation=0.7)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert np.array_equal(cgan.load(hub).real_samples()[0], cgan.load(tiny_export).real_samples()[0])


@pytest.mark.skipif("mnist" not in shipped_names(), reason="no shipped mnist checkpoint")
def test_the_card_metadata_says_what_the_model_is_and_how_it_was_measured(tmp_path):
    from huggingface_hub import ModelCard

    hub = hub_export(SHIPPED / "mnist", tmp_path / "hub")
    card = ModelCard.load(hub / "README.md")
    d = card.data
    assert d.library_name == "cgan-studio" and d.license == "mit" and d.pipeline_tag == "unconditional-image-generation"
    assert {"gan", "mnist"} <= set(d.tags) and d.datasets == ["ylecun/mnist"]
    full = json.loads((SHIPPED / "mnist" / "evaluation.json").read_text())["full"]
    results = {r.metric_name: r for r in d.eval_results}
    assert results["GAN-train accuracy on real test images"].metric_value == round(full["gan_train"]["accuracy"], 4)
    assert results["Fréchet distance / real-vs-real floor (evaluator features)"].metric_value == \
        round(full["frechet"]["ratio"], 4)
    assert all(r.metric_config == "cgan.evaluate full protocol" for r in d.eval_results)
    assert "## In short" in card.text and "# MNIST digits" in card.text


def test_a_cached_hub_repo_loads_offline_by_name_and_a_missing_one_is_refused(tiny_export, tmp_path):
    hub = hub_export(tiny_export, tmp_path / "hub")
    (hub / "evaluator.safetensors").unlink(missing_ok=True)
    cache = tmp_path / "hf-cache"
    into_cache(hub, cache, "someone/cgan-tiny")
    env = dict(ENV, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "x.npz"
    for name in ("someone/cgan-tiny", "hf:someone/cgan-tiny"):
        r = subprocess.run([sys.executable, "-m", "cgan.sample", name, "--per-class", "4", "--seed", "3", "--out",
                            str(out)], cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        ref, _ = cgan.load(tiny_export).sample(list(range(10)), 4, seed=3)
        assert np.array_equal(np.load(out)["images"], ref)
    r = subprocess.run([sys.executable, "-m", "cgan.sample", "someone/not-cached", "--per-class", "1", "--out",
                        str(out)], cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "not in the local Hugging Face cache while the network is off" in r.stderr
    assert "Traceback" not in r.stderr


def test_app_serves_hub_repos_and_local_folders_together(tiny_export, tiny_root, tmp_path):
    from gradio_client import Client

    hub = hub_export(tiny_export, tmp_path / "hub")
    cache = tmp_path / "hf-cache"
    into_cache(hub, cache, "someone/cgan-tiny")
    port = free_port()
    env = dict(ENV, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port))
    log = tmp_path / "app.log"
    proc, url = start_app([sys.executable, "app.py", "--checkpoints",
                           f"hf:someone/cgan-tiny,{tiny_root},hf:someone/missing"], env, log)
    try:
        c = Client(url, verbose=False, download_files=False)
        assert set(c.predict(api_name="/datasets")) == {"someone/cgan-tiny", "mnist", "fashion-mnist", "emnist"}
        _, caption = c.predict("someone/cgan-tiny", "3", 1, 1, 2, 1.0, 1, api_name="/generate")
        assert "class '3'" in caption
        card = c.predict("someone/cgan-tiny", api_name="/model_card")
        assert card.startswith("# ") and "library_name" not in card  # the Hub metadata is not shown as text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "skipping hf:someone/missing" in log.read_text()


@pytest.mark.parametrize("damage,message", [
    ("pickle instead", "is not a checkpoint"),
    ("wrong shapes", "has shape"),
    ("oversized config", "larger than"),
    ("not a cgan config", "'format' is None"),
])
def test_hostile_hub_shaped_folders_are_refused(tiny_export, tmp_path, damage, message):
    import torch
    from safetensors.torch import load_file, save_file

    hub = hub_export(tiny_export, tmp_path / "hub")
    if damage == "pickle instead":
        (hub / "model.safetensors").unlink()
        torch.save({"w": torch.zeros(2)}, hub / "pytorch_model.bin")
    elif damage == "wrong shapes":
        t = load_file(hub / "model.safetensors")
        k = next(k for k, v in t.items() if v.ndim == 2)
        t[k] = torch.zeros(t[k].shape[0] + 1, t[k].shape[1])
        save_file(t, hub / "model.safetensors")
    elif damage == "oversized config":
        (hub / "config.json").write_text(" " * (2 << 20) + "{}")
    else:
        (hub / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768}))
    with pytest.raises(CheckpointError, match=message):
        cgan.load(hub)


def test_a_repo_without_safetensors_is_not_a_cgan_model(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    cache = tmp_path / "hf-cache"
    into_cache(folder, cache, "someone/pickled")
    r = subprocess.run([sys.executable, "-c", "from cgan.checkpoints import hub_snapshot; hub_snapshot('someone/pickled')"],
                       cwd=REPO, env=dict(ENV, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "is not a cgan-studio model" in r.stderr and "never loaded" in r.stderr


def test_push_uploads_only_the_model_files(tiny_export, tmp_path, monkeypatch):
    """The upload itself is huggingface_hub's; here its client is replaced by a recorder (no network)."""
    import huggingface_hub

    calls = []

    class Recorder:
        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload", kw["repo_id"], kw))

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    assert export_main([str(tiny_export), str(tmp_path / "hub"), "--hub", "--push-to-hub", "someone/cgan-tiny"]) == 0
    (_, rid, create), (_, rid2, upload) = calls
    assert rid == rid2 == "someone/cgan-tiny" and create["exist_ok"] and create["repo_type"] == "model"
    assert upload["folder_path"] == str(tmp_path / "hub")
    assert set(upload["allow_patterns"]) == {"config.json", "model.safetensors", "real_samples.safetensors",
                                              "README.md", "evaluation.json"}
    assert export_main([str(tiny_export), str(tmp_path / "x"), "--hub", "--push-to-hub", "not a repo"]) == 2


def test_space_front_matter_matches_the_pins():
    from huggingface_hub import RepoCard

    card = RepoCard.load(REPO / "README.md")
    d = card.data.to_dict()
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert d["sdk"] == "gradio" and d["sdk_version"] == pins["gradio"] and d["app_file"] == "app.py"
    assert d["python_version"] in ("3.12", "3.12.12", "3.10", "3.10.13")  # what ZeroGPU runs
    assert 0 < len(d["short_description"]) <= 60
