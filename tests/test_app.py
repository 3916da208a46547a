"""The web app over real HTTP, called with gradio_client exactly as the README shows: the server
`python app.py` runs, in-process on a free port (one per module), and once as a real process to check
what it logs and leaves behind; plus the command line's help and its missing-model message."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from conftest import EXAMPLES, TINY_LABELS
from live_server import free_port, live_server
from model import checkpoint as checkpoint_module
from model import lesion_class
from serving.ui import class_key

REPO = Path(app.__file__).resolve().parent
SECRET_NAME = "patient-jane-doe-7731"  # an upload's file name and case reference that must stay private


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    """One app server for the module, with a Gradio cache directory of its own."""
    with live_server(str(tiny_checkpoint), tmp_path_factory.mktemp("gradio-cache")) as server:
        yield server


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    client = Client(served.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client
    client.close()


def confidences(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


def test_analyze_returns_all_class_probabilities_and_an_overlay_at_the_upload_size(
        client, tiny_classifier, mel_600x450):
    label, overlay = client.predict(handle_file(mel_600x450), api_name="/analyze")

    probabilities = confidences(label)
    expected = tiny_classifier.predict(mel_600x450)
    assert probabilities == pytest.approx(
        {class_key(code): float(p) for code, p in zip(expected.labels, expected.probabilities)}, abs=1e-5)
    assert set(probabilities) == {class_key(code) for code in TINY_LABELS}
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert label["label"] == class_key(expected.top_label)
    with Image.open(overlay) as shown, Image.open(mel_600x450) as uploaded:
        assert shown.size == uploaded.size == (600, 450)


def test_analyze_draws_the_heatmap_of_the_class_asked_for(client, tiny_classifier, example_paths):
    path = example_paths["bcc"]
    top = tiny_classifier.predict(path).top_label
    other = next(code for code in TINY_LABELS if code != top)

    _, default_overlay = client.predict(handle_file(path), api_name="/analyze")
    _, top_overlay = client.predict(handle_file(path), top, 0.45, api_name="/analyze")
    _, other_overlay = client.predict(handle_file(path), other, 0.45, api_name="/analyze")

    default, top_map, other_map = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
                                   for p in (default_overlay, top_overlay, other_overlay))
    assert np.array_equal(default, top_map)  # the default heatmap is the predicted class's
    assert np.abs(default - other_map).mean() > 1.0


def test_report_with_only_the_image_is_a_pdf_naming_the_predicted_class(client, tiny_classifier,
                                                                         mel_600x450):
    from pypdf import PdfReader

    pdf_path = client.predict(handle_file(mel_600x450), api_name="/report")

    with open(pdf_path, "rb") as f:
        data = f.read()
    assert data.startswith(b"%PDF")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    top = tiny_classifier.predict(mel_600x450).top_label
    assert lesion_class(top).name in " ".join(text.split())


@pytest.mark.parametrize("content, message", [
    (lambda jpeg: jpeg[:len(jpeg) // 3], "truncated or corrupt"),
    (lambda jpeg: b"", "empty"),
    (lambda jpeg: b"name,age\nnot,an image\n", "not an image"),
], ids=["truncated-jpeg", "empty", "csv-named-jpg"])
def test_a_bad_upload_gets_a_clear_error_and_the_app_keeps_serving(client, tmp_path, mel_600x450, content,
                                                                    message):
    bad = tmp_path / "lesion.jpg"
    bad.write_bytes(content(mel_600x450.read_bytes()))

    with pytest.raises(AppError, match=message):
        client.predict(handle_file(bad), api_name="/analyze")

    label, _ = client.predict(handle_file(mel_600x450), api_name="/analyze")
    assert len(label["confidences"]) == 7


def test_the_running_app_logs_nothing_of_an_upload_and_deletes_it_on_exit(tiny_checkpoint, tmp_path,
                                                                         mel_600x450):
    """`python app.py` as users run it: its whole output and Gradio's cache, checked after Ctrl+C."""
    cache, temp = tmp_path / "gradio-cache", tmp_path / "tmp"
    temp.mkdir()
    upload = tmp_path / f"{SECRET_NAME}.jpg"
    with Image.open(mel_600x450) as image:  # not a bundled example: examples stay cached on purpose
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(upload, quality=90)
    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(cache), TMPDIR=str(temp), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--model", str(tiny_checkpoint),
                                "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process)
        # What the page does: upload, then show the upload by its URL (which holds the file name).
        with open(upload, "rb") as f:
            [served_path] = httpx.post(f"{url}/gradio_api/upload", files={"files": (upload.name, f)}).json()
        assert httpx.get(f"{url}/gradio_api/file={served_path}").content == upload.read_bytes()
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        client.predict(handle_file(upload), api_name="/analyze")
        client.predict(handle_file(upload), SECRET_NAME, 54, "female", "back", f"notes {SECRET_NAME}",
                       f"Dr {SECRET_NAME}", "A4", api_name="/report")
        corrupt = tmp_path / f"{SECRET_NAME}-corrupt.jpg"
        corrupt.write_bytes(upload.read_bytes()[:500])
        with pytest.raises(AppError):
            client.predict(handle_file(corrupt), api_name="/analyze")
        client.close()
        assert any(cache.rglob(upload.name))  # it was there while the server ran
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C
        try:
            output, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise

    assert process.returncode == 0, output
    assert "Serving on" in output and "Traceback" not in output and SECRET_NAME not in output
    left = [p for p in cache.rglob("*") if p.is_file()]
    examples = {p.read_bytes() for p in EXAMPLES.glob("*.jpg")}
    assert [p for p in left if p.read_bytes() not in examples] == []  # only the page's example images
    assert [p for p in temp.rglob("*") if p.is_file()] == []  # nor anything in the system temp folder


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"app.py exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("app.py did not start serving in time")


def test_help_documents_host_port_and_model(capsys):
    with pytest.raises(SystemExit) as exit_:
        app.parse_args(["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--host", "--port", "--model"):
        assert option in help_text
    assert "org/name" in help_text and "default_model" in help_text


def test_a_missing_default_model_is_one_line_saying_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SKIN_MODEL", raising=False)
    monkeypatch.setattr(checkpoint_module, "DEFAULT_MODEL_DIR", tmp_path / "default_model")

    with pytest.raises(SystemExit) as exit_:
        app.main([])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert str(tmp_path / "default_model") in message and "--model" in message and "SKIN_MODEL" in message
