"""The ONNX Runtime backend (same answers as PyTorch, cached graphs, backend choice) and the benchmark."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import random_rgb, write_tiny_checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """Graphs that do not go beside their checkpoint land in a per-test cache, never in ~/.cache."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache / "skin-lesion" / "onnx"


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def load(directory: Path):
    from model import Classifier, resolve
    return Classifier(resolve(directory), device="cpu")


@pytest.fixture(scope="module")
def backends(tiny_checkpoint, tmp_path_factory):
    """(torch classifier, ONNX classifier) of one private copy of the tiny checkpoint."""
    from model.onnx_backend import enable_onnx

    directory = copy_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "ckpt")
    torch_classifier, onnx_classifier = load(directory), load(directory)
    enable_onnx(onnx_classifier, "onnx")
    return torch_classifier, onnx_classifier


def test_onnx_probabilities_match_torch(backends, example_paths):
    torch_classifier, onnx_classifier = backends
    assert onnx_classifier.info["backend"] == "onnx" and torch_classifier.info["backend"] == "torch"
    assert (torch_classifier.checkpoint.directory / "model.onnx").is_file()  # cached beside the checkpoint
    sources = [example_paths[dx] for dx in ("mel", "nv", "bcc")] + [random_rgb(300, 400, seed=3)]
    for source in sources:
        expected, got = torch_classifier.predict(source), onnx_classifier.predict(source)
        assert got.labels == expected.labels  # the checkpoint's own (non-default) order
        np.testing.assert_allclose(got.probabilities, expected.probabilities, rtol=0, atol=1e-4)
        assert got.top_label == expected.top_label
        assert got.features.shape == expected.features.shape
    batch = [example_paths[dx] for dx in ("df", "vasc", "akiec")]
    np.testing.assert_allclose(onnx_classifier.predict_probabilities(batch, batch_size=2),
                               torch_classifier.predict_probabilities(batch), rtol=0, atol=1e-4)


def test_heatmaps_are_the_same_with_either_backend(backends, mel_600x450):
    from explain import analyze

    torch_classifier, onnx_classifier = backends
    expected, got = analyze(torch_classifier, mel_600x450), analyze(onnx_classifier, mel_600x450)
    assert got.cams.shape == expected.cams.shape == (7, *expected.prediction.features.shape[1:])
    np.testing.assert_allclose(got.cams, expected.cams, rtol=0, atol=1e-4)
    for label in expected.labels:
        a, b = got.overlay(label).astype(int), expected.overlay(label).astype(int)
        assert a.shape == b.shape == (450, 600, 3)
        # A map value on a colour-map step may round to the neighbouring level: a one-level change of the
        # colour (≤ 4 per channel, ≤ 2 after blending) on a few pixels, nothing a person could see.
        assert np.abs(a - b).max() <= 2 and (a != b).any(axis=2).mean() < 0.01


def test_graph_is_exported_once_and_reused(tiny_checkpoint, tmp_path):
    from model.onnx_backend import load_session

    directory = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    session, path, exported = load_session(load(directory))
    assert exported and path == directory / "model.onnx"
    stamp = path.stat().st_mtime_ns
    session, again, exported = load_session(load(directory))  # as a second process would
    assert not exported and again == path and path.stat().st_mtime_ns == stamp


def test_retrained_weights_are_never_run_from_a_stale_graph(tiny_checkpoint, tmp_path):
    from model.onnx_backend import enable_onnx, session_metadata

    directory = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    enable_onnx(load(directory), "onnx")
    write_tiny_checkpoint(directory, seed=1)  # retrained in place: same folder, new weights
    retrained = load(directory)
    enable_onnx(retrained, "onnx")
    assert retrained.backend_choice["exported"]
    assert session_metadata(retrained._onnx)["weights_sha256"] == retrained.weights_sha256
    image = random_rgb(200, 250, seed=5)
    np.testing.assert_allclose(retrained.predict(image).probabilities,
                               load(directory).predict(image).probabilities, rtol=0, atol=1e-4)


def test_hub_snapshot_graph_goes_to_the_user_cache(hf_offline_cache, user_cache):
    from model import get_classifier

    get_classifier.cache_clear()
    try:
        classifier = get_classifier(hf_offline_cache["repo_id"], "onnx")
    finally:
        get_classifier.cache_clear()
    assert classifier.info["backend"] == "onnx"
    assert classifier.backend_choice["onnx_path"] == str(user_cache / f"{classifier.weights_sha256}.onnx")
    assert not (classifier.checkpoint.directory / "model.onnx").exists()  # the HF cache is left as it was


def test_auto_takes_onnx_only_when_it_was_measured_faster(tiny_checkpoint, tmp_path):
    from model.onnx_backend import enable_onnx, load_session, machine_fingerprint, store_timing

    directory = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    classifier = load(directory)
    _, graph, _ = load_session(classifier)
    for onnx_ms, torch_ms, expected in ((10.0, 20.0, "onnx"), (20.0, 10.0, "torch"), (15.0, 15.0, "torch")):
        store_timing(graph, machine_fingerprint(), {"onnx_ms": onnx_ms, "torch_ms": torch_ms,
                                                    "weights_sha256": classifier.weights_sha256})
        chosen = load(directory)
        enable_onnx(chosen, "auto")
        assert chosen.backend == expected and chosen.info["backend"] == expected
        assert chosen.backend_choice["chosen"] == expected
        assert (chosen.backend_choice["onnx_ms"], chosen.backend_choice["torch_ms"]) == (onnx_ms, torch_ms)
        assert "stored measurement" in chosen.backend_choice["reason"]


def test_auto_measures_once_then_reuses_the_measurement(tiny_checkpoint, tmp_path):
    from model.onnx_backend import enable_onnx, faster_backend

    directory = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    first = load(directory)
    enable_onnx(first, "auto", runs=2)
    choice = first.backend_choice
    assert "measured now" in choice["reason"] and choice["onnx_ms"] > 0 and choice["torch_ms"] > 0
    assert first.backend == faster_backend(choice["onnx_ms"], choice["torch_ms"])
    assert (directory / "model.onnx.timing.json").is_file()
    second = load(directory)
    enable_onnx(second, "auto")
    assert "stored measurement" in second.backend_choice["reason"]
    assert second.backend == first.backend
    assert second.backend_choice["onnx_ms"] == choice["onnx_ms"]


def test_without_a_writable_cache_auto_keeps_torch_and_onnx_says_why(tiny_checkpoint, tmp_path, monkeypatch):
    import model.onnx_backend as onnx_backend

    monkeypatch.setattr(onnx_backend, "cache_candidates", lambda classifier: [Path("/proc/no-such/model.onnx")])
    classifier = load(tiny_checkpoint)
    onnx_backend.enable_onnx(classifier, "auto")
    assert classifier.backend == "torch" and "ONNX unavailable" in classifier.backend_choice["reason"]
    with pytest.raises(OSError, match="No writable place"):
        onnx_backend.enable_onnx(load(tiny_checkpoint), "onnx")
    with pytest.raises(ValueError, match="Unknown backend"):
        onnx_backend.enable_onnx(classifier, "tensorrt")


def test_export_command_exports_then_reports_current(tiny_checkpoint, tmp_path, capsys):
    from model.onnx_backend import main  # `python -m model.onnx_backend export DIR`, in-process

    directory = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    assert main(["export", str(directory)]) == 0
    assert capsys.readouterr().out.startswith(f"exported: {directory / 'model.onnx'}")
    assert main(["export", str(directory)]) == 0
    assert capsys.readouterr().out.startswith("already current: ")


def test_quick_benchmark_writes_every_measurement(tiny_checkpoint, tmp_path):
    directory = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    out = tmp_path / "bench.json"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "-m", "bench", "--model", str(directory), "--quick", "--runs", "2",
                           "--requests", "1", "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == {}
    assert result["model"]["sha256"] and result["model"]["labels"] == json.loads(
        (directory / "config.json").read_text())["label_names"]
    for backend in ("torch", "onnx"):
        section = result["backends"][backend]
        for step in ("forward", "predict", "analyze"):
            assert section[step]["median_ms"] > 0 and len(section[step]["samples_ms"]) == 2
        server = section["server"]
        assert server["cold_start_s"] > 0 and server["first_request_ms"] > 0 and server["peak_rss_mb"] > 0
        assert server["rest_inference_ms"]["median_ms"] > 0 and server["predicted_label"] in result["model"]["labels"]
    cam = result["pytorch_grad_cam"]
    assert cam["top_class"]["median_ms"] > 0 and cam["all_classes"]["median_ms"] > 0
    assert cam["max_abs_diff_vs_app"] < 1e-4  # the package computes the same maps: the timings compare like work
    assert result["report"]["median_ms"] > 0
    for name, value in result["ratios"].items():
        values = value.values() if isinstance(value, dict) else [value]
        assert all(isinstance(v, float) and v > 0 for v in values), name
    assert {row["name"] for row in result["targets"]} >= {"analyze_over_forward_paired", "pytorch_grad_cam_over_analyze",
                                                          "torch_over_onnx_analyze", "report_ms", "cold_start_s",
                                                          "peak_rss_mb"}
    assert all(row["met"] in (True, False) for row in result["targets"])
    assert "analyze / plain forward" in done.stdout and f"written: {out}" in done.stdout


def test_benchmark_ratio_divides_timings_from_the_same_round():
    """A slow round slows both steps: the per-round ratio stays put where a ratio of medians would not."""
    from bench.summary import _paired

    section = {"forward": {"samples_ms": [10.0, 20.0, 10.0, 20.0, 20.0]},
               "analyze": {"samples_ms": [11.0, 22.0, 11.0, 22.0, 22.0]}}
    assert _paired(section, "analyze", "forward") == pytest.approx(1.1)
    assert _paired({"forward": {"samples_ms": []}}, "analyze", "forward") is None
