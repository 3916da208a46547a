"""The measured evidence behind a checkpoint: test metrics from its model card, temperature from config."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

DATA_SOURCE = ("HAM10000 (Tschandl P., Rosendahl C., Kittler H., Sci Data 5, 180161, 2018; "
               "doi:10.1038/sdata.2018.161), licensed CC BY-NC 4.0")
LIMITATIONS = (
    "Dermoscopic images only: clinical (non-dermoscopic) photographs are outside what the model learned.",
    "Darker skin types are under-represented in HAM10000; performance on them is unknown.",
    "No clinical context (history, age, site, evolution) is used: the result rests on the image alone.",
    "Grad-CAM shows where the evidence for a class lies; it is not a segmentation and does not prove "
    "the model's reasoning is clinically sound.",
)
NO_EVALUATION = "No measured evaluation available for this model."

# Model-card metric types (written by training/card.py) in print order, with reader-facing names.
METRIC_NAMES = {"balanced_accuracy": "balanced accuracy", "roc_auc": "macro AUC (one-vs-rest)",
                "accuracy": "accuracy", "recall": "melanoma sensitivity",
                "ece": "expected calibration error (15 bins)"}


@dataclass(frozen=True)
class Metric:
    name: str
    value: float


@dataclass(frozen=True)
class Evidence:
    metrics: tuple[Metric, ...]  # empty when the checkpoint has no model card with results
    dataset: str                 # the evaluation data the card names, "" if none
    temperature: float | None    # None when config.json records none (probabilities are raw softmax)
    note: str = ""               # why no metrics are shown, when that is the case


def load_evidence(checkpoint_dir: Path | None) -> Evidence:
    if checkpoint_dir is None:
        return Evidence((), "", None, NO_EVALUATION)
    directory = Path(checkpoint_dir)
    card, config = directory / "README.md", directory / "config.json"
    metrics, dataset, note = _card_metrics(str(card), *_stamp(card))
    return Evidence(metrics, dataset, _temperature(str(config), *_stamp(config)), note)


def _stamp(path: Path) -> tuple[int, int]:
    """(mtime, size): part of the cache key, so a replaced file is read again."""
    try:
        stat = path.stat()
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _card_metrics(path: str, mtime: int, size: int) -> tuple[tuple[Metric, ...], str, str]:
    if size < 0:
        return (), "", NO_EVALUATION
    from huggingface_hub import ModelCard

    try:  # a local file path only: ModelCard.load would treat anything else as a Hub repo id
        results = ModelCard.load(Path(path)).data.eval_results or []
    except Exception as exc:  # a malformed card must not stop the report; say what happened
        return (), "", f"{NO_EVALUATION[:-1]} (the model card could not be read: {exc.__class__.__name__})."
    known = sorted((r for r in results if r.metric_type in METRIC_NAMES and r.metric_value is not None),
                   key=lambda r: list(METRIC_NAMES).index(r.metric_type))
    metrics = tuple(Metric(METRIC_NAMES[r.metric_type], float(r.metric_value)) for r in known)
    if not metrics:
        return (), "", NO_EVALUATION
    return metrics, known[0].dataset_name or "", ""


@functools.lru_cache(maxsize=16)
def _temperature(path: str, mtime: int, size: int) -> float | None:
    try:
        value = json.loads(Path(path).read_text()).get("temperature")
    except (OSError, ValueError):
        return None
    return float(value) if value else None
