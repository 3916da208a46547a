"""`python -m training.evaluate`: every metric the issue lists, computed through the app's own predictor,
its plots, and clear errors for unusable input."""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

from conftest import TINY_LABELS, TINY_TEMPERATURE
from data_factory import write_ham_dataset
from training.evaluate import main
from training.metrics import expected_calibration_error

PER_CLASS = 4


def assert_complete_metrics(m: dict, labels: list[str]) -> None:
    """Every field issue 3 asks of an evaluation, with sane values."""
    assert m["labels"] == labels
    assert m["n"] > 0
    for key in ("accuracy", "balanced_accuracy"):
        assert 0.0 <= m[key] <= 1.0, key
    assert np.isnan(m["macro_auc"]) or 0.0 <= m["macro_auc"] <= 1.0
    assert set(m["per_class"]) == set(labels)
    for name, c in m["per_class"].items():
        assert set(c) >= {"n", "sensitivity", "specificity", "auc"}, name
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (len(labels), len(labels)) and cm.sum() == m["n"]
    assert [int(r) for r in cm.sum(axis=1)] == [m["per_class"][name]["n"] for name in labels]
    assert m["ece_bins"] == 15 and 0.0 <= m["ece"] <= 1.0
    assert set(m["ci95"]) >= {"balanced_accuracy", "macro_auc"}
    assert m["model"]["sha256"] and m["temperature"] > 0


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> tuple[Path, Path]:
    """28 labelled images in one folder (a few as PNG) and a CSV with only image_id, dx and a stray column."""
    root = tmp_path_factory.mktemp("eval")
    rows = write_ham_dataset(root, per_class=PER_CLASS, seed=3, folders=("images",))
    for row in rows[::5]:
        jpg = root / "images" / f"{row['image_id']}.jpg"
        with Image.open(jpg) as image:
            image.save(jpg.with_suffix(".png"))
        jpg.unlink()
    metadata = root / "labels.csv"
    with open(metadata, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "dx", "notes"])
        writer.writerows([row["image_id"], row["dx"], "ignored"] for row in rows)
    return metadata, root / "images"


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, eval_set, tmp_path_factory):
    metadata, images = eval_set
    out = tmp_path_factory.mktemp("evaluated")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--model", str(tiny_checkpoint), "--metadata", str(metadata), "--images", str(images),
                     "--out", str(out / "metrics.json"), "--plots", str(out / "plots"), "--bootstrap", "200"])
    assert code == 0
    return json.loads((out / "metrics.json").read_text()), out / "plots", stdout.getvalue()


def test_json_has_every_field(evaluated):
    metrics, _, _ = evaluated
    assert_complete_metrics(metrics, TINY_LABELS)  # the checkpoint's own label order
    assert metrics["n"] == 7 * PER_CLASS
    for key in ("balanced_accuracy", "macro_auc"):
        low, high = metrics["ci95"][key]
        assert 0.0 <= low <= high <= 1.0, key
    assert metrics["ci95"]["resampled"] == "images"  # no lesion_id column: images are the unit
    assert metrics["temperature"] == TINY_TEMPERATURE
    assert metrics["model"]["architecture"] == "test_resnet"


def test_metrics_are_those_of_the_apps_predictions(evaluated, eval_set, tiny_classifier):
    """Scoring each image with the app's predict() (same preprocessing, temperature) gives the same numbers."""
    metrics, _, _ = evaluated
    metadata, images = eval_set
    with open(metadata, newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([TINY_LABELS.index(r["dx"]) for r in rows])
    probs = np.stack([tiny_classifier.predict(next(images.glob(f"{r['image_id']}.*"))).probabilities
                      for r in rows])
    predicted = probs.argmax(1)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert metrics["confusion_matrix"] == confusion_matrix(y, predicted, labels=range(7)).tolist()
    aucs = [roc_auc_score(y == c, probs[:, c]) for c in range(7)]
    assert metrics["macro_auc"] == pytest.approx(np.mean(aucs), abs=1e-6)
    for c, name in enumerate(TINY_LABELS):
        assert metrics["per_class"][name]["auc"] == pytest.approx(aucs[c], abs=1e-6)
        sensitivity = (predicted[y == c] == c).mean()
        specificity = (predicted[y != c] != c).mean()
        assert metrics["per_class"][name]["sensitivity"] == pytest.approx(sensitivity)
        assert metrics["per_class"][name]["specificity"] == pytest.approx(specificity)
    assert metrics["ece"] == pytest.approx(expected_calibration_error(probs, y), abs=1e-6)


def test_plots_are_drawn(evaluated):
    _, plots, stdout = evaluated
    for name in ("confusion_matrix.png", "reliability.png", "roc.png"):
        with Image.open(plots / name) as image:
            assert image.format == "PNG" and min(image.size) > 200, name
        assert f"wrote {plots / name}" in stdout
    assert "balanced accuracy" in stdout and "macro AUC" in stdout


def test_expected_calibration_error_on_known_cases():
    y = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, y) == pytest.approx(0.0)
    # Always 90% sure, right half the time: ECE is the 0.4 gap.
    overconfident = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    assert expected_calibration_error(overconfident, y) == pytest.approx(0.4)


def run_main(args, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_missing_images_are_listed(tiny_checkpoint, eval_set, tmp_path, capsys):
    metadata, images = eval_set
    extra = tmp_path / "labels.csv"
    extra.write_text(metadata.read_text() + "ISIC_0000001,mel,x\nISIC_0000002,nv,x\n")
    code, err = run_main(["--model", tiny_checkpoint, "--metadata", extra, "--images", images, "--bootstrap", 0],
                         capsys)
    assert code == 2
    assert "2 image(s) listed" in err and "ISIC_0000001, ISIC_0000002" in err


def test_csv_without_dx_or_with_unknown_labels(tiny_checkpoint, eval_set, tmp_path, capsys):
    _, images = eval_set
    first = next(images.iterdir()).stem
    no_dx = tmp_path / "no_dx.csv"
    no_dx.write_text(f"image_id,diagnosis\n{first},mel\n")
    code, err = run_main(["--model", tiny_checkpoint, "--metadata", no_dx, "--images", images], capsys)
    assert code == 2 and "missing column(s) dx" in err
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"image_id,dx\n{first},melanoma\n")
    code, err = run_main(["--model", tiny_checkpoint, "--metadata", unknown, "--images", images], capsys)
    assert code == 2 and "['melanoma'] are not among the model's classes" in err


def test_unloadable_model_is_a_clear_error(eval_set, tmp_path, capsys):
    metadata, images = eval_set
    code, err = run_main(["--model", tmp_path / "nothing", "--metadata", metadata, "--images", images], capsys)
    assert code == 2 and err.startswith("error: Could not load the model") and "Traceback" not in err
