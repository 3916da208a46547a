"""Evaluate a checkpoint on labelled images, through the same predictor as the app.

    python -m training.evaluate --model SPEC --metadata CSV --images DIR [--split test] [--out FILE.json] [--plots DIR]

CSV needs image_id and dx columns (others are ignored; lesion_id, when present, makes the bootstrap
resample lesions; split, with --split, selects rows). Images are DIR/<image_id>.jpg or .png.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .data import DataError, Record, read_table
from .metrics import classification_metrics


def score_records(classifier, records: list[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label indices, probabilities, lesion ids) of records, in the checkpoint's own label order."""
    labels = list(classifier.labels)
    unknown = sorted({r.dx for r in records} - set(labels))
    if unknown:
        raise DataError(f"labels {unknown} are not among the model's classes {labels}")
    probs = classifier.predict_probabilities([r.path for r in records])
    return np.array([labels.index(r.dx) for r in records]), probs, np.array([r.lesion_id for r in records])


def evaluate_records(classifier, records: list[Record], n_boot: int = 1000, scores=None) -> dict:
    """Every reported metric of `classifier` on records, with the model's identity."""
    y, probs, groups = scores or score_records(classifier, records)
    metrics = classification_metrics(y, probs, list(classifier.labels), groups=groups, n_boot=n_boot)
    metrics["model"] = classifier.info
    metrics["temperature"] = classifier.temperature
    return metrics


def read_labelled_images(csv_path: Path, images_dir: Path, split: str | None = None) -> list[Record]:
    rows = read_table(csv_path, ("image_id", "dx") + (("split",) if split else ()))
    records, missing = [], []
    for row in rows:
        if split and row["split"] != split:
            continue
        image_id = row["image_id"].strip()
        path = next((images_dir / f"{image_id}{s}" for s in (".jpg", ".png", ".jpeg")
                     if (images_dir / f"{image_id}{s}").is_file()), None)
        if path is None:
            missing.append(image_id)
        else:
            records.append(Record(image_id, (row.get("lesion_id") or image_id).strip(), row["dx"].strip(), path))
    if missing:
        raise DataError(f"{len(missing)} image(s) listed in {csv_path} are not in {images_dir}: "
                        + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if not records:
        raise DataError(f"no images to evaluate in {csv_path}" + (f" with split == {split!r}" if split else ""))
    return records


def draw_plots(metrics: dict, y: np.ndarray, probs: np.ndarray, out_dir: Path) -> list[Path]:
    """Confusion matrix, reliability diagram and one-vs-rest ROC curves as PNG files."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    out_dir.mkdir(parents=True, exist_ok=True)
    labels, written = metrics["labels"], []
    fig, ax = plt.subplots(figsize=(6, 5))
    ConfusionMatrixDisplay(np.array(metrics["confusion_matrix"]), display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix (n={metrics['n']})")
    written.append(out_dir / "confusion_matrix.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    correct = (probs.argmax(1) == y).astype(int)
    frac, conf = calibration_curve(correct, probs.max(1), n_bins=metrics["ece_bins"], strategy="uniform")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(conf, frac, "o-", label=f"model (ECE {metrics['ece']:.3f})")
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", title="Reliability diagram")
    ax.legend()
    written.append(out_dir / "reliability.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(labels):
        if 0 < (y == c).sum() < len(y):
            RocCurveDisplay.from_predictions(y == c, probs[:, c], name=name, ax=ax)
    ax.set_title("One-vs-rest ROC curves")
    written.append(out_dir / "roc.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return written


def format_summary(m: dict) -> str:
    ci = m.get("ci95") or {}
    fmt = lambda iv: f" (95% CI {iv[0]:.3f}–{iv[1]:.3f})" if iv else ""  # noqa: E731
    lines = [f"n = {m['n']}", f"accuracy           {m['accuracy']:.4f}",
             f"balanced accuracy  {m['balanced_accuracy']:.4f}{fmt(ci.get('balanced_accuracy'))}",
             f"macro AUC (OvR)    {m['macro_auc']:.4f}{fmt(ci.get('macro_auc'))}",
             f"ECE ({m['ece_bins']} bins)      {m['ece']:.4f}", "",
             "class   n     sensitivity  specificity  AUC"]
    for name, c in m["per_class"].items():
        f = lambda v: f"{v:.3f}" if v is not None else "  –  "  # noqa: E731
        lines.append(f"{name:<7} {c['n']:<5} {f(c['sensitivity']):<12} {f(c['specificity']):<12} {f(c['auc'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint folder or Hub repo id (default: the bundled model)")
    p.add_argument("--metadata", required=True, type=Path, help="CSV with image_id and dx columns")
    p.add_argument("--images", required=True, type=Path, help="folder holding <image_id>.jpg|.png")
    p.add_argument("--split", help="only rows whose 'split' column equals this (e.g. test)")
    p.add_argument("--out", type=Path, help="write the metrics as JSON here")
    p.add_argument("--plots", type=Path, help="write confusion matrix, reliability and ROC PNGs here")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: no intervals)")
    p.add_argument("--backend", choices=("torch", "onnx"), default=None)
    a = p.parse_args(argv)
    from model import ModelLoadError, get_classifier
    try:
        classifier = get_classifier(a.model, a.backend)
        records = read_labelled_images(a.metadata, a.images, a.split)
        scores = score_records(classifier, records)
        metrics = evaluate_records(classifier, records, a.bootstrap, scores)
    except (DataError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(metrics))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(metrics, indent=2))
    if a.plots:
        for path in draw_plots(metrics, scores[0], scores[1], a.plots):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
