"""`python -m explain`: the command-line route to the same analysis as the app and the APIs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from explain.__main__ import main


def test_json_lines_match_the_classifier_and_overlays_keep_the_image_size(tiny_checkpoint, tiny_classifier,
                                                                          example_paths, tmp_path, capsys):
    images = [example_paths["nv"], example_paths["vasc"]]  # 600×450 and 200×150
    assert main([*map(str, images), "--model", str(tiny_checkpoint), "--json",
                 "--overlay-dir", str(tmp_path / "maps")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    for line, path in zip(lines, images):
        expected = tiny_classifier.predict(path)
        assert line["predicted_label"] == expected.top_label
        assert line["probabilities"] == pytest.approx(
            dict(zip(expected.labels, map(float, expected.probabilities))), abs=1e-5)
        with Image.open(line["overlay"]) as overlay, Image.open(path) as original:
            assert overlay.size == original.size


def test_table_names_every_class_and_says_it_is_not_a_diagnosis(tiny_checkpoint, mel_600x450, capsys):
    assert main([str(mel_600x450), "--model", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    for name in ("Melanoma", "Melanocytic nevi", "Basal cell carcinoma", "Dermatofibroma"):
        assert name in out
    assert "not a medical device and not a diagnosis" in out


def test_chosen_class_changes_the_overlay(tiny_checkpoint, tiny_classifier, mel_600x450, tmp_path, capsys):
    top = tiny_classifier.predict(mel_600x450).top_label
    other = next(code for code in tiny_classifier.labels if code != top)
    maps = {}
    for code in (top, other):
        out_dir = tmp_path / code
        assert main([str(mel_600x450), "--model", str(tiny_checkpoint), "--class", code, "--json",
                     "--overlay-dir", str(out_dir)]) == 0
        maps[code] = np.asarray(Image.open(json.loads(capsys.readouterr().out)["overlay"]))
    assert not np.array_equal(maps[top], maps[other])


def test_bad_inputs_are_reported_and_the_rest_still_analysed(tiny_checkpoint, mel_600x450, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(mel_600x450.read_bytes()[:300])
    assert main([str(broken), str(mel_600x450), "--model", str(tiny_checkpoint), "--json"]) == 1
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "corrupt" in captured.err and "Traceback" not in captured.err
    assert json.loads(captured.out)["image"] == str(mel_600x450)
    assert main([str(mel_600x450), "--model", str(tiny_checkpoint), "--class", "xyz"]) == 2
    assert "unknown class 'xyz'" in capsys.readouterr().err
    assert main([str(mel_600x450), "--model", str(tmp_path / "missing")]) == 2
    assert "Could not load the model" in capsys.readouterr().err
