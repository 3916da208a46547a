"""The REST API: classify an image, explain it with a Grad-CAM heatmap, or build the PDF report.

`create_rest_app(classifier)` returns a FastAPI app; the Gradio UI is mounted onto it at "/". Every
error answers `{"error": "<message for a person>"}` with a 4xx status (503 when busy), never a
traceback. Uploads live in memory for the length of one request: nothing of a request body is
written to disk or to the logs.
"""
# No `from __future__ import annotations`: FastAPI must see the real (per-app) body classes.
import base64
import binascii
import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import Literal, Optional

import anyio
import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from model import ImageError
from model.image_input import MAX_ASPECT, MAX_PIXELS, MIN_SIDE
from report.case import AGE_RANGE, BODY_SITES, MAX_CHARS, SEXES

log = logging.getLogger(__name__)

DISCLAIMER = ("Research and education software: not a medical device and not a diagnosis. The result "
              "is a statistical estimate from one photograph and can be wrong; any skin lesion that "
              "worries you needs an examination by a clinician.")
DESCRIPTION = f"""Classifies a dermoscopic photo of a skin lesion into the 7 HAM10000 classes and
explains the result with Grad-CAM heatmaps and a PDF report.

**{DISCLAIMER}**

Images and case details are processed in memory for one request only: they are never stored, logged
or sent anywhere. Every error answers `{{"error": "<message>"}}`.

Images: JPEG, PNG, WebP, GIF, TIFF (first frame) or BMP; at most {MAX_PIXELS:,} pixels, each side at
least {MIN_SIDE} pixels, aspect ratio at most {MAX_ASPECT:g}:1. See docs/API.md for limits and examples."""
MB = 1_000_000
BUSY_RETRY_AFTER_S = 2
REPORT_FILENAME = "skin-lesion-report.pdf"


@dataclass(frozen=True)
class Limits:
    """How much one request may send and how much work the server takes on at once."""
    max_upload_bytes: int = 20 * MB  # the decoded image
    max_concurrency: int = 2         # analyses running at once
    max_queue: int = 32              # analyses waiting for a slot; beyond that: 503

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(max_upload_bytes=round(_env_number("SKIN_MAX_UPLOAD_MB", 20, float) * MB),
                   max_concurrency=_env_number("SKIN_MAX_CONCURRENCY", 2, int),
                   max_queue=_env_number("SKIN_MAX_QUEUE", 32, int, minimum=0))

    @property
    def max_body_bytes(self) -> int:
        """Base64 makes the image 4/3 larger; 1 MB more covers line breaks, JSON and case fields."""
        return self.max_upload_bytes * 4 // 3 + MB


def _env_number(name: str, default, kind, minimum=1):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number.") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {raw}.")
    return value


class RequestError(Exception):
    """A request the API refuses; `message` is shown to the caller as {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def decode_image_data(text: str, max_bytes: int) -> bytes:
    """The bytes of `image_data`: plain or URL-safe base64, or a base64 data URL; line breaks allowed."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    text = _WHITESPACE.sub("", text).replace("-", "+").replace("_", "/")
    if not text:
        raise RequestError(422, "image_data is empty: send the image file's bytes in base64.")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, "image_data is not valid base64 (or a base64 data URL).") from None
    if len(data) > max_bytes:
        raise RequestError(413, f"The image is {len(data) / MB:.1f} MB; at most "
                                f"{max_bytes / MB:g} MB are accepted.")
    return data


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` on `paths` with 413, before parsing.

    The declared Content-Length is checked first, then the bytes actually received, so a chunked or
    lying client cannot get more than the limit into memory.
    """

    def __init__(self, app, max_bytes: int, paths: frozenset[str]):
        self.app, self.max_bytes, self.paths = app, max_bytes, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route_path(scope) not in self.paths:
            return await self.app(scope, receive, send)
        too_large = f"The request body is larger than the {self.max_bytes / MB:g} MB this API accepts."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _send_error(send, 400, "The Content-Length header is not a number.")
            if int(declared) > self.max_bytes:
                return await _send_error(send, 413, too_large)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_error(send, 413, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _route_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _send_error(send, status: int, message: str) -> None:
    response = JSONResponse({"error": message}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class InferenceGate:
    """Runs the CPU/GPU-heavy work in worker threads: `slots` at once, `queue` more waiting, the rest
    refused with 503 + Retry-After, so a burst can neither exhaust memory nor block the event loop."""

    def __init__(self, slots: int, queue: int):
        self.slots, self.queue = slots, queue
        self._admitted = 0  # running + waiting; only touched on the event loop, so no lock
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def admitted(self) -> int:
        """Analyses running or waiting right now."""
        return self._admitted

    async def run(self, fn, *args):
        if self._admitted >= self.slots + self.queue:
            raise RequestError(503, "The server is busy analysing other images; please retry in a few "
                                    "seconds.", {"Retry-After": str(BUSY_RETRY_AFTER_S)})
        if self._limiter is None:  # created on first use, inside the serving event loop
            self._limiter = anyio.CapacityLimiter(self.slots)
        self._admitted += 1
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)
        finally:
            self._admitted -= 1


# --- Request and response bodies -----------------------------------------------------------------

class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in words meant for a person.")


class ModelInfo(BaseModel):
    id: str = Field(description="Model id: a Hugging Face Hub repo id, or a local folder's name.")
    revision: str = Field(description="Hub commit of the loaded snapshot, or 'local'.")
    sha256: str = Field(description="SHA-256 of the loaded model.safetensors.")


class HealthModelInfo(ModelInfo):
    architecture: str
    backend: str = Field(description="'torch' or an ONNX Runtime backend.")


class Health(BaseModel):
    status: Literal["ok"]
    ready: bool = Field(description="True when the model is loaded and requests are served.")
    model: HealthModelInfo
    classes: list[str] = Field(description="Class codes in the model's output order.")
    max_upload_mb: float
    disclaimer: str


class InferenceResult(BaseModel):
    predicted_label: str = Field(description="Code of the most probable class.")
    predicted_name: str
    severity: Literal["high", "medium", "low", "unknown"] = Field(
        description="How urgently a lesion of the predicted class needs a clinician.")
    classes: list[str] = Field(description="All class codes, in the model's output order.")
    probabilities: list[float] = Field(description="Calibrated probabilities, same order as classes.")
    heatmap_label: str = Field(description="The class the heatmap explains.")
    heatmap: str = Field(description="Base64 PNG: the Grad-CAM heatmap over the image, at the image's "
                                     "size after EXIF rotation.")
    model: ModelInfo
    disclaimer: str


IMAGE_DATA_HELP = ("The image file (JPEG, PNG, WebP, GIF, TIFF or BMP) in base64, or as a data URL "
                   "'data:image/jpeg;base64,...'.")
COMMON_ERRORS = {
    400: {"model": ErrorBody, "description": "The body is not JSON, or has a bad Content-Length."},
    413: {"model": ErrorBody, "description": "The body or the image is over the size limit."},
    415: {"model": ErrorBody, "description": "The body was not sent as application/json."},
    422: {"model": ErrorBody, "description": "A field is missing or invalid, or the image cannot be "
                                             "analysed (not an image, corrupt, too large, too small)."},
    503: {"model": ErrorBody, "description": "Busy: retry after the Retry-After header's seconds."},
}


def _request_models(labels: tuple[str, ...], limits: Limits):
    """Pydantic bodies whose schema names exactly this checkpoint's classes and these limits."""
    Code = Literal[labels]  # type: ignore[valid-type]

    def image_field():
        # The size limit is enforced on the raw body (BodySizeLimit), not as a schema maxLength that
        # would make validators and fuzzers build 27-million-character strings.
        return Field(min_length=1, description=f"{IMAGE_DATA_HELP} At most "
                                               f"{limits.max_upload_bytes / MB:g} MB once decoded.")

    class InferenceRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        image_data: str = image_field()
        target_class: Optional[Code] = Field(  # type: ignore[valid-type]
            None, description="Class code whose heatmap to return; default: the predicted class.")

    class ReportRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        image_data: str = image_field()
        reference: Optional[str] = Field(None, max_length=MAX_CHARS["reference"],
                                         description="Case reference (no names: keep it pseudonymous).")
        age: Optional[int] = Field(None, ge=AGE_RANGE[0], le=AGE_RANGE[1], description="Age in years.")
        sex: Optional[Literal[SEXES]] = None  # type: ignore[valid-type]
        body_site: Optional[Literal[BODY_SITES]] = None  # type: ignore[valid-type]
        notes: Optional[str] = Field(None, max_length=MAX_CHARS["notes"],
                                     description="Free-text notes, at most 30 lines.")
        referring_clinician: Optional[str] = Field(None, max_length=MAX_CHARS["referring_clinician"])
        page_size: Literal["A4", "Letter"] = "A4"

    return InferenceRequest, ReportRequest


# --- The app -------------------------------------------------------------------------------------

def create_rest_app(classifier, limits: Limits | None = None) -> FastAPI:
    """The REST API for one loaded classifier. Limits default to the SKIN_MAX_* environment."""
    limits = limits or Limits.from_env()
    gate = InferenceGate(limits.max_concurrency, limits.max_queue)
    InferenceRequest, ReportRequest = _request_models(tuple(classifier.labels), limits)
    model_info = {k: str(classifier.info[k]) for k in ("id", "revision", "sha256")}

    # strict_content_type=False: a JSON body without any Content-Type (seed clients) is still parsed.
    app = FastAPI(title="Skin lesion classifier (research use only)", description=DESCRIPTION,
                  version="1.0", strict_content_type=False)
    app.state.inference_gate = gate
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes,
                       paths=frozenset({"/inference", "/report"}))

    def infer(image_data: str, target: str | None) -> dict:
        from explain import analyze

        analysis = analyze(classifier, decode_image_data(image_data, limits.max_upload_bytes))
        label = target or analysis.prediction.top_label
        top = analysis.top
        return {"predicted_label": top.code, "predicted_name": top.name, "severity": top.severity,
                "classes": list(analysis.labels),
                "probabilities": [float(p) for p in analysis.probabilities],
                "heatmap_label": label, "heatmap": encode_png_base64(analysis.overlay(label)),
                "model": model_info, "disclaimer": DISCLAIMER}

    def report(image_data: str, case, page_size: str) -> bytes:
        from explain import analyze
        from report import build_report

        raw = decode_image_data(image_data, limits.max_upload_bytes)
        return build_report(analyze(classifier, raw), classifier.info, case, page_size,
                            checkpoint_dir=classifier.checkpoint.directory, image_bytes=raw)

    @app.post("/inference", response_model=InferenceResult, responses=COMMON_ERRORS,
              summary="Classify an image and explain it with a Grad-CAM heatmap")
    async def inference(body: InferenceRequest):  # type: ignore[valid-type]
        result = await _guarded(gate, infer, body.image_data, body.target_class)
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.post("/report", response_class=Response, responses={
        200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The PDF report, as an attachment."}, **COMMON_ERRORS},
        summary="Build the PDF report for an image and optional case details")
    async def make_report(body: ReportRequest):  # type: ignore[valid-type]
        from report import CaseFields

        fields = body.model_dump(exclude={"image_data", "page_size"}, exclude_none=True)
        try:
            case = CaseFields(**fields)
        except ValueError as exc:
            raise RequestError(422, str(exc)) from None
        pdf = await _guarded(gate, report, body.image_data, case, body.page_size)
        return Response(pdf, media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="{REPORT_FILENAME}"', "Cache-Control": "no-store"})

    @app.get("/health", response_model=Health, summary="Which model is loaded, and whether it is ready")
    async def health():
        info = classifier.info
        return {"status": "ok", "ready": True, "classes": list(classifier.labels),
                "model": {k: str(info[k]) for k in ("id", "revision", "sha256", "architecture", "backend")},
                "max_upload_mb": limits.max_upload_bytes / MB, "disclaimer": DISCLAIMER}

    return app


async def _guarded(gate: InferenceGate, fn, *args):
    """Run `fn` through the gate; an unusable image becomes a 422, anything unexpected a bare 500."""
    try:
        return await gate.run(fn, *args)
    except RequestError:
        raise
    except ImageError as exc:
        raise RequestError(422, str(exc)) from None
    except MemoryError:
        raise RequestError(413, "The image is too large to analyse on this server.") from None
    except Exception as exc:
        # Only the type is logged: messages and tracebacks can quote the caller's data.
        log.error("analysis failed with %s", exc.__class__.__name__)
        raise RequestError(500, "The analysis failed unexpectedly; please try again.") from None


def encode_png_base64(rgb: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(png.tobytes()).decode("ascii")


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, FastAPI's own included, answers {"error": "..."} and never echoes the input."""

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        if not _is_json(request.headers.get("content-type")):
            # FastAPI hands a non-JSON body over as raw bytes; say what to send instead.
            return JSONResponse({"error": "Send the request body as JSON with the header "
                                          "'Content-Type: application/json'."}, status_code=415)
        status, message = validation_message(exc.errors())
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


def _is_json(content_type: str | None) -> bool:
    """FastAPI parses a body as JSON when there is no Content-Type or it is application/(*+)json."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def validation_message(errors) -> tuple[int, str]:
    """(status, message) for pydantic's errors, naming the fields and never quoting their values."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "The request body is not valid JSON."
    problems = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if not where and error.get("type") == "missing":
            return 422, "The request body is empty: send a JSON object with image_data."
        if not where and error.get("type") in ("model_attributes_type", "dict_type", "model_type"):
            return 422, 'The request body must be a JSON object such as {"image_data": "<base64 image>"}.'
        if error.get("type") == "extra_forbidden":
            problems.append(f"{where}: unknown field")
        else:
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
    extra = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return 422, "Invalid request: " + "; ".join(problems[:3]) + extra + "."


def create_app_from_env() -> FastAPI:
    """The REST API alone for the model named by SKIN_MODEL (`uvicorn --factory serving.rest:create_app_from_env`)."""
    from model import get_classifier
    return create_rest_app(get_classifier())

