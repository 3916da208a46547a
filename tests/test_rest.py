"""The REST API's contract: what a seed client sends to /inference and /report, and what it gets back."""
from __future__ import annotations

import base64
import io
import threading

import anyio
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model import lesion_class
from serving.rest import Limits, create_rest_app


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def client(rest_client):
    return rest_client


def test_inference_answers_the_seed_contract(client, tiny_classifier, mel_bytes):
    response = client.post("/inference", json={"image_data": b64(mel_bytes)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert {"predicted_label", "predicted_name", "severity", "classes", "probabilities", "heatmap",
            "model"} <= set(body)

    # Classes come in the checkpoint's own (non-default) order, and probabilities follow that order.
    assert body["classes"] == list(tiny_classifier.labels)
    expected = tiny_classifier.predict(mel_bytes).probabilities
    assert all(isinstance(p, float) for p in body["probabilities"])
    np.testing.assert_allclose(body["probabilities"], expected, rtol=1e-6, atol=1e-7)
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-6)

    top = body["classes"][int(np.argmax(body["probabilities"]))]
    assert body["predicted_label"] == top
    assert body["predicted_name"] == lesion_class(top).name
    assert body["severity"] == lesion_class(top).severity
    assert body["heatmap_label"] == top
    assert decode_png(body["heatmap"]).shape == (450, 600, 3)  # the input's own size
    info = tiny_classifier.info
    assert body["model"] == {"id": info["id"], "revision": info["revision"], "sha256": info["sha256"]}
    assert "not a medical device" in body["disclaimer"]


def test_target_class_picks_the_heatmap(client, tiny_classifier, mel_bytes):
    from explain import analyze

    analysis = analyze(tiny_classifier, mel_bytes)
    other = next(code for code in tiny_classifier.labels if code != analysis.prediction.top_label)
    # A data URL with line breaks, as browsers and some clients send it, is accepted too.
    encoded = b64(mel_bytes)
    data_url = "data:image/jpeg;base64," + "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    body = client.post("/inference", json={"image_data": data_url, "target_class": other}).json()
    assert body["heatmap_label"] == other
    assert body["predicted_label"] == analysis.prediction.top_label  # the prediction does not change
    np.testing.assert_array_equal(decode_png(body["heatmap"]), analysis.overlay(other))
    top = client.post("/inference", json={"image_data": encoded}).json()
    assert not np.array_equal(decode_png(top["heatmap"]), decode_png(body["heatmap"]))


def test_unknown_target_class_is_refused_by_name(client, mel_bytes):
    response = client.post("/inference", json={"image_data": b64(mel_bytes), "target_class": "melanoma"})
    assert response.status_code == 422
    assert "target_class" in response.json()["error"]


def test_report_is_a_pdf_with_the_case_fields(client, mel_bytes):
    from pypdf import PdfReader

    case = {"reference": "CASE-REF-4821", "age": 57, "sex": "female", "body_site": "back",
            "notes": "Changed colour in spring.", "referring_clinician": "Dr Example"}
    response = client.post("/report", json={"image_data": b64(mel_bytes), "page_size": "Letter", **case})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["cache-control"] == "no-store"
    reader = PdfReader(io.BytesIO(response.content))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "CASE-REF-4821" in text and "not a medical device" in text
    width, height = (float(v) for v in reader.pages[0].mediabox[2:])
    assert (round(width), round(height)) == (612, 792)  # Letter, as asked


@pytest.mark.parametrize("fields, named", [
    ({"age": 130}, "age"),
    ({"sex": "yes"}, "sex"),
    ({"body_site": "elbow"}, "body_site"),
    ({"reference": "x" * 65}, "reference"),
    ({"notes": "\n".join(["line"] * 31)}, "notes"),
    ({"page_size": "A3"}, "page_size"),
    ({"patient_name": "someone"}, "patient_name"),
])
def test_report_refuses_invalid_case_fields_by_name(client, mel_bytes, fields, named):
    response = client.post("/report", json={"image_data": b64(mel_bytes), **fields})
    assert response.status_code == 422
    assert named in response.json()["error"]


def test_health_names_the_model_and_readiness(client, tiny_classifier):
    body = client.get("/health").json()
    assert body["ready"] is True and body["status"] == "ok"
    assert body["model"]["id"] == tiny_classifier.info["id"]
    assert body["model"]["sha256"] == tiny_classifier.info["sha256"]
    assert body["classes"] == list(tiny_classifier.labels)
    assert body["max_upload_mb"] == 20


def test_openapi_docs_describe_the_routes(client, tiny_classifier):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/inference", "/report", "/health"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    # The target_class choices are exactly the loaded checkpoint's classes.
    target = schemas["InferenceRequest"]["properties"]["target_class"]
    choices = next(option["enum"] for option in target["anyOf"] if "enum" in option)
    assert sorted(choices) == sorted(tiny_classifier.labels)


class SlowClassifier:
    """The tiny classifier, but each prediction waits until the test lets it finish."""

    def __init__(self, classifier):
        self._classifier = classifier
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._classifier, name)

    def predict(self, source):
        self.started.release()
        assert self.release.wait(60), "the test never released the prediction"
        return self._classifier.predict(source)


def test_excess_requests_wait_in_the_queue_or_get_503_with_retry_after(tiny_classifier, mel_bytes):
    slow = SlowClassifier(tiny_classifier)
    app = create_rest_app(slow, Limits(max_concurrency=1, max_queue=1))
    payload = {"image_data": b64(mel_bytes)}
    statuses = []

    async def send(http):
        statuses.append((await http.post("/inference", json=payload)).status_code)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            async with anyio.create_task_group() as group:
                group.start_soon(send, http)  # runs
                await anyio.to_thread.run_sync(slow.started.acquire)
                group.start_soon(send, http)  # waits for the slot
                while app.state.inference_gate.admitted < 2:
                    await anyio.sleep(0.01)
                busy = await http.post("/inference", json=payload)  # neither slot nor queue place
                assert busy.status_code == 503
                assert int(busy.headers["retry-after"]) > 0
                assert "busy" in busy.json()["error"]
                slow.release.set()
            again = await http.post("/inference", json=payload)
            statuses.append(again.status_code)

    anyio.run(scenario)
    assert statuses == [200, 200, 200]
