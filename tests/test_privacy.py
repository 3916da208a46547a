"""Privacy: requests leave no file behind, and neither logs nor error messages hold image bytes or case
fields, even with every logger at DEBUG."""
from __future__ import annotations

import base64
import logging
import tempfile
from pathlib import Path

import pytest
from conftest import RaisingClassifier
from fastapi.testclient import TestClient

from serving.rest import Limits, create_rest_app

CASE = {"reference": "PRIV-REF-93731", "age": 63, "sex": "male", "body_site": "scalp",
        "notes": "Private note qwerty-5521", "referring_clinician": "Dr Zyxwvut Secretname"}
SECRETS = ["PRIV-REF-93731", "qwerty-5521", "Zyxwvut", "Secretname"]


def quoting_failure(source) -> str:
    """An internal error whose message quotes the caller's data: it must never reach a log or reply."""
    return f"kernel failed on input {bytes(source)[:64]!r} for PRIV-REF-93731"


def files_under(*directories: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for d in directories for p in d.rglob("*") if p.is_file()}


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch, tiny_checkpoint):
    """Temp, Gradio cache and working directories of our own, so any file a request leaves shows up."""
    dirs = [tmp_path / name for name in ("tmp", "gradio", "cwd")]
    for d in dirs:
        d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(dirs[0]))
    monkeypatch.setenv("TMPDIR", str(dirs[0]))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(dirs[1]))
    monkeypatch.chdir(dirs[2])
    return dirs + [tiny_checkpoint]


def test_requests_leave_no_files_and_no_trace_in_logs(tiny_classifier, mel_600x450, isolated_dirs, caplog,
                                                      capfd):
    caplog.set_level(logging.DEBUG)  # the root logger and every library logger that inherits from it
    image = mel_600x450.read_bytes()
    encoded = base64.b64encode(image).decode()
    before = files_under(*isolated_dirs)
    with TestClient(create_rest_app(tiny_classifier, Limits()), raise_server_exceptions=False) as client:
        assert client.post("/inference", json={"image_data": encoded}).status_code == 200
        assert client.post("/inference", json={"image_data": encoded, "target_class": "mel"}).status_code == 200
        report = client.post("/report", json={"image_data": encoded, **CASE})
        assert report.status_code == 200
        refusals = [
            client.post("/report", json={"image_data": encoded, **CASE, "age": 500}),
            client.post("/report", json={"image_data": encoded, **CASE, "sex": "PRIV-REF-93731"}),
            client.post("/report", json={"image_data": encoded, **CASE, "reference": "qwerty-5521" * 10}),
            client.post("/inference", json={"image_data": encoded, "target_class": "Zyxwvut"}),
            client.post("/inference", json={"image_data": base64.b64encode(b"Secretname " * 40).decode()}),
            client.post("/inference", json={"image_data": encoded[: len(encoded) // 2]}),
        ]
    assert files_under(*isolated_dirs) == before

    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "/inference" in messages and "/report" in messages  # the capture did see these requests
    out, err = capfd.readouterr()
    visible = "\n".join([messages, out, err] + [r.text for r in refusals])
    assert all(400 <= r.status_code < 500 for r in refusals)
    for secret in SECRETS + [encoded[:48], encoded[len(encoded) // 2:][:48], encoded[-48:]]:
        assert secret not in visible
    assert repr(image[:32])[2:-1] not in visible  # no raw bytes either


def test_an_internal_failure_logs_only_its_kind(tiny_classifier, mel_600x450, isolated_dirs, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    encoded = base64.b64encode(mel_600x450.read_bytes()).decode()
    with TestClient(create_rest_app(RaisingClassifier(tiny_classifier, quoting_failure), Limits()),
                    raise_server_exceptions=False) as client:
        response = client.post("/report", json={"image_data": encoded, **CASE})
    assert response.status_code == 500
    assert response.json() == {"error": "The analysis failed unexpectedly; please try again."}
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "RuntimeError" in messages
    out, err = capfd.readouterr()
    for secret in SECRETS + ["kernel failed", encoded[:48]]:
        assert secret not in messages + out + err
