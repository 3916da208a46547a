"""Find and load a classifier checkpoint in timm's Hugging Face Hub format.

A checkpoint is a folder (local, or a snapshot of a Hub repo) holding `config.json` (architecture,
num_classes, label_names, pretrained_cfg, optionally `temperature`) and `model.safetensors`. A model
spec is a local directory or a Hub repo id `org/name[@revision]`. Weights are read from safetensors
only: nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "default_model"
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class ModelLoadError(RuntimeError):
    """A model spec that could not be loaded; the message says what was tried and how to fix it."""


@dataclass(frozen=True)
class Checkpoint:
    directory: Path
    model_id: str
    revision: str
    config: dict = field(repr=False)

    @property
    def label_names(self) -> list[str]:
        return list(self.config["label_names"])

    @property
    def temperature(self) -> float:
        return float(self.config.get("temperature") or 1.0)

    @property
    def weights_path(self) -> Path:
        return self.directory / WEIGHTS_NAME

    @property
    def card_path(self) -> Path:
        return self.directory / CARD_NAME


def default_spec() -> str:
    """`SKIN_MODEL` if set, else the checkpoint bundled in the repository."""
    return os.environ.get("SKIN_MODEL") or str(DEFAULT_MODEL_DIR)


def resolve(spec: str | os.PathLike | None = None) -> Checkpoint:
    """Locate a checkpoint: a local directory, else a Hub repo (downloaded into the HF cache)."""
    spec = str(spec or default_spec())
    tried = []
    path = Path(spec).expanduser()
    if path.is_dir():
        return _checked(path.resolve(), model_id=path.resolve().name, revision="local")
    tried.append(f"local directory {path} (does not exist)")
    if _HUB_ID.match(spec):
        repo_id, _, revision = spec.partition("@")
        try:
            from huggingface_hub import snapshot_download
            directory = Path(snapshot_download(repo_id, revision=revision or None,
                                               allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]))
        except Exception as exc:  # offline, missing repo, no access: all end in the same advice
            tried.append(f"Hugging Face Hub repo '{repo_id}' at revision '{revision or 'main'}' "
                         f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        else:
            # Snapshots live in .../snapshots/<commit>: that commit is the exact revision loaded.
            return _checked(directory, model_id=repo_id, revision=directory.name)
    elif not (path.is_absolute() or spec.startswith((".", "~"))):  # a path was meant: the Hub is noise
        tried.append("Hub repo id (not one: expected 'org/name' or 'org/name@revision')")
    raise ModelLoadError(
        f"Could not load the model '{spec}'. Tried: " + "; ".join(tried) + ". Fix: pass --model "
        "(or set SKIN_MODEL to) a folder holding config.json and model.safetensors, or a Hugging Face "
        "Hub repo id such as 'org/name' or 'org/name@revision' (the Hub needs internet, or a filled "
        "cache with HF_HUB_OFFLINE=1). Train one with `python -m training.train`.")


def _checked(directory: Path, model_id: str, revision: str) -> Checkpoint:
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / n).is_file()]
    if missing:
        hint = " (only safetensors weights are loaded; convert pickled weights first)" \
            if WEIGHTS_NAME in missing and any(directory.glob("*.bin")) else ""
        raise ModelLoadError(f"Could not load the model in {directory}: missing {', '.join(missing)}"
                             f"{hint}. A checkpoint folder needs config.json and model.safetensors "
                             "(timm's Hub format, as written by `python -m training.train`).")
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not read {directory / CONFIG_NAME}: {exc}") from None
    absent = [k for k in ("architecture", "num_classes", "label_names", "pretrained_cfg") if k not in config]
    if absent:
        raise ModelLoadError(f"{directory / CONFIG_NAME} lacks {', '.join(absent)}; it must be timm's "
                             "Hub config with label_names (the class order of the outputs).")
    if len(config["label_names"]) != config["num_classes"]:
        raise ModelLoadError(f"{directory / CONFIG_NAME}: {len(config['label_names'])} label_names for "
                             f"{config['num_classes']} classes.")
    return Checkpoint(directory, model_id, revision, config)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
