"""Calibrate and evaluate an exported checkpoint, then write evaluation.json and the model card.

train.py ends with this; run it alone to redo those steps for a checkpoint in a training folder:

    python -m training.finalize --out runs/NAME --data-dir DATA

It reads the folder's split.csv (test images are used here, once, and never for a choice) and
train_args.json, fits the temperature on validation and evaluates through the app's own predictor.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from model.checkpoint import resolve
from model.inference import Classifier, softmax

from .card import render_card
from .data import Record, load_records, read_split
from .evaluate import draw_plots, evaluate_records, score_records
from .export import update_config
from .metrics import classification_metrics, fit_temperature


def finalize(out: Path, parts: dict[str, list[Record]], train_args: dict, device: str = "cpu",
             n_boot: int = 1000, log=print) -> dict:
    classifier = Classifier(resolve(out), device=device)
    labels = list(classifier.labels)
    val_y = np.array([labels.index(r.dx) for r in parts["val"]])
    val_logits = classifier.logits([r.path for r in parts["val"]])
    temperature = fit_temperature(val_logits, val_y)
    update_config(out, temperature=temperature)
    classifier = Classifier(resolve(out), device=device)  # reload: the temperature is part of the model
    results = {"temperature": temperature,
               "ece_val_before": classification_metrics(val_y, softmax(val_logits), labels, n_boot=0)["ece"]}
    val_groups = np.array([r.lesion_id for r in parts["val"]])
    for part in ("val", "test"):
        # Validation logits are already known: only the fitted temperature changes its probabilities.
        scores = (val_y, softmax(val_logits, classifier.temperature), val_groups) if part == "val" \
            else score_records(classifier, parts[part])
        results[part] = evaluate_records(classifier, parts[part], n_boot=n_boot, scores=scores)
        ci = results[part]["ci95"]["balanced_accuracy"]
        log(f"{part}: balanced accuracy {results[part]['balanced_accuracy']:.4f} (95% CI {ci}), "
            f"macro AUC {results[part]['macro_auc']:.4f}, ECE {results[part]['ece']:.4f}")
    (out / "evaluation.json").write_text(json.dumps(results, indent=2))
    plots = draw_plots(results["test"], scores[0], scores[1], out / "plots")  # `scores` are the test split's
    arch = classifier.checkpoint.config["architecture"]
    sizes = {k: len(v) for k, v in parts.items()}
    training = classifier.checkpoint.config.get("training")  # best epoch, written by train.py's export
    (out / "README.md").write_text(render_card(results, train_args, arch, sizes, training,
                                                   [p.relative_to(out).as_posix() for p in plots]))
    log(f"calibrated (T = {temperature:.3f}) and evaluated; model card written to {out / 'README.md'}")
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="training output folder (checkpoint + split.csv)")
    p.add_argument("--data-dir", required=True, help="the data folder the split refers to")
    p.add_argument("--bootstrap", type=int, default=1000)
    a = p.parse_args(argv)
    split = read_split(a.out / "split.csv")
    records = [r for r in load_records(a.data_dir) if r.image_id in split]
    parts = {name: [r for r in records if split[r.image_id] == name] for name in ("train", "val", "test")}
    train_args = json.loads((a.out / "train_args.json").read_text())
    finalize(a.out, parts, train_args, n_boot=a.bootstrap)


if __name__ == "__main__":
    main()
