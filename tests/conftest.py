"""Shared fixtures: a tiny random-weight checkpoint in timm's Hub format, written by the real exporter."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Deliberately not the class table's order: code must read the order from the checkpoint.
TINY_LABELS = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
TINY_TEMPERATURE = 1.7


def write_tiny_checkpoint(directory: Path, arch: str = "test_resnet", labels=TINY_LABELS,
                          temperature: float | None = TINY_TEMPERATURE, input_size=(3, 64, 80), seed: int = 0) -> Path:
    import timm
    import torch

    from training.export import export_checkpoint

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=len(labels), pretrained_cfg_overlay=dict(
        input_size=input_size, crop_pct=1.0, interpolation="bicubic",
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    with torch.no_grad():  # random weights, but a head spread wide enough that classes differ
        model.get_classifier().weight.mul_(5.0)
    extra = {"temperature": temperature} if temperature else {}
    export_checkpoint(model, directory, list(labels), extra_config=extra)
    return directory


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"))


@pytest.fixture(scope="session")
def tiny_classifier(tiny_checkpoint):
    from model import Classifier, resolve
    return Classifier(resolve(tiny_checkpoint), device="cpu")


@pytest.fixture
def hf_offline_cache(tiny_checkpoint, tmp_path, monkeypatch):
    """A Hugging Face cache holding the tiny checkpoint as repo test-org/tiny-skin, hub offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--test-org--tiny-skin"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_checkpoint / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return {"repo_id": "test-org/tiny-skin", "commit": commit}


@pytest.fixture(scope="session")
def example_paths() -> dict[str, Path]:
    """dx → path of the bundled example image of that class."""
    import csv
    with open(EXAMPLES / "examples.csv") as f:
        return {row["dx"]: EXAMPLES / f"{row['image_id']}.jpg" for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def mel_600x450(example_paths) -> Path:
    return example_paths["mel"]


def read_config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def mel_bytes(mel_600x450) -> bytes:
    """The 600×450 melanoma example as uploaded: the file's bytes."""
    return mel_600x450.read_bytes()


@pytest.fixture(scope="module")
def rest_client(tiny_classifier):
    """The REST API on the tiny checkpoint with default limits, called in-process (no socket)."""
    from fastapi.testclient import TestClient

    from serving.rest import Limits, create_rest_app

    with TestClient(create_rest_app(tiny_classifier, Limits()), raise_server_exceptions=False) as c:
        yield c


class RaisingClassifier:
    """A loaded classifier whose predict raises RuntimeError(message(source)): an internal failure."""

    def __init__(self, classifier, message):
        self._classifier, self._message = classifier, message

    def __getattr__(self, name):
        return getattr(self._classifier, name)

    def predict(self, source):
        raise RuntimeError(self._message(source))
