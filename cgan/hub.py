"""Models as Hugging Face Hub repos: write one, push it, and load one by its name.

    python -m cgan.export checkpoints/mnist hub/mnist --hub                  # a folder that is a Hub model repo
    python -m cgan.export checkpoints/mnist hub/mnist --hub --push-to-hub you/cgan-mnist
    cgan.load("you/cgan-mnist")              # or "hf:you/cgan-mnist"; python -m cgan.sample you/cgan-mnist ...
    python app.py --checkpoints hf:you/cgan-mnist,checkpoints

A Hub-shaped folder holds ``config.json`` (the validated checkpoint.json: the Hub counts downloads of
it), ``model.safetensors`` (the EMA generator), ``real_samples.safetensors`` and ``README.md`` (the model
card with YAML metadata: library, tags, datasets, licence, pipeline and the evaluation results with their
protocol). Loading downloads only those files (``allow_patterns``) into huggingface_hub's cache, works from
the cache alone when offline (HF_HUB_OFFLINE=1), and validates them exactly like a local folder: nothing
is ever unpickled, and a repo that holds a pickle instead of safetensors is refused. The token for
pushing comes from ``huggingface-cli login`` or HF_TOKEN and is never written anywhere by this code.
"""
from __future__ import annotations

import json
from pathlib import Path

from .checkpoints import HUB_CARD_FILE, HUB_FILES, read_meta, repo_id
from .model_card import RESULTS_FILE, render

LIBRARY = "cgan-studio"
HUB_DATASETS = {"mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist",
                "kmnist": "tanganke/kmnist", "cifar10": "uoft-cs/cifar10"}


def card_metadata(meta: dict, results: dict, name: str):
    """The model card's YAML metadata (a huggingface_hub ModelCardData)."""
    from huggingface_hub import EvalResult, ModelCardData

    ds = meta["dataset"]
    dataset_id = HUB_DATASETS.get(ds["name"], ds["name"])
    evals = []
    for protocol in ("full", "quick"):
        r = results.get(protocol) if isinstance(results, dict) else None
        if not isinstance(r, dict):
            continue
        measured = [("conditional accuracy (class-balanced, evaluator)", "accuracy",
                     r.get("conditional_accuracy", {}).get("generated", {}).get("balanced_accuracy")),
                    ("GAN-train accuracy on real test images", "accuracy", (r.get("gan_train") or {}).get("accuracy")),
                    ("Fréchet distance / real-vs-real floor (evaluator features)", "fd_ratio",
                     r.get("frechet", {}).get("ratio")),
                    ("precision (k-NN)", "precision", r.get("precision_recall", {}).get("generated", {}).get("precision")),
                    ("recall (k-NN)", "recall", r.get("precision_recall", {}).get("generated", {}).get("recall"))]
        for label, kind, value in measured:
            if isinstance(value, (int, float)):
                evals.append(EvalResult(task_type="unconditional-image-generation", dataset_type=dataset_id,
                                        dataset_name=str(ds.get("title") or ds["name"]),
                                        dataset_split=str(ds.get("split", "")), metric_type=kind,
                                        metric_value=round(float(value), 4), metric_name=label,
                                        metric_config=f"cgan.evaluate {protocol} protocol"))
        break  # the full protocol when there is one, else the quick one
    return ModelCardData(library_name=LIBRARY, license="mit", pipeline_tag="unconditional-image-generation",
                         tags=["gan", "conditional-gan", "class-conditional", "image-generation", "safetensors",
                               ds["name"]],
                         datasets=[dataset_id], model_name=name, eval_results=evals or None)


def write_card(folder: Path, name: str, notes: str | None = None) -> Path:
    """README.md of a Hub-shaped folder: YAML metadata, then the model card written from its files."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    meta = read_meta(folder)
    results_file = folder / RESULTS_FILE
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    data = card_metadata(meta, results, name)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{render(folder, notes)}")
    card.save(folder / HUB_CARD_FILE)
    return folder / HUB_CARD_FILE


def push(folder: Path, repo: str, private: bool = False) -> str:
    """Upload a Hub-shaped folder to ``repo`` (created if needed); returns the repo's URL."""
    from huggingface_hub import HfApi

    rid = repo_id(repo)
    if rid is None:
        raise ValueError(f"--push-to-hub {repo!r}: give the repo as USER/NAME")
    api = HfApi()  # the token: huggingface-cli login, or HF_TOKEN
    url = api.create_repo(rid, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=rid, repo_type="model", folder_path=str(folder), allow_patterns=HUB_FILES,
                      commit_message="Upload a cgan-studio model")
    return str(url)
