"""The Gradio UI's event handlers: plain functions from what a user gives to what the page shows.

Nothing here keeps an image between events. An analysis leaves only its small Grad-CAM maps and
probabilities (`Explanation`) in the session; re-drawing the overlay for another class or opacity
re-reads the upload the browser sends again and never re-runs the model.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from gradio import processing_utils, utils

from explain import Analysis, analyze, overlay_heatmap
from model import CODES, ImageError, lesion_class, load_rgb
from report import CaseFields, assess_confidence, build_report, recommendation

TOP_CLASS = "top"  # heatmap selector value meaning "whichever class the model predicts"
DEFAULT_OPACITY = 0.45
PAGE_SIZES = ("A4", "Letter")
REPORT_FILENAME = "skin-lesion-report.pdf"
NO_UPLOAD = "Upload an image first."
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
SEVERITY_WORDS = {"high": "High", "medium": "Medium", "low": "Low", "unknown": "Unknown"}


@dataclass(frozen=True)
class Explanation:
    """What one analysis leaves in the session: kilobytes of maps, never the image."""
    image_sha256: str
    labels: tuple[str, ...]
    probabilities: np.ndarray
    cams: np.ndarray                       # C×h×w in [0, 1]
    crop_box: tuple[int, int, int, int]

    @classmethod
    def of(cls, analysis: Analysis, image_sha256: str) -> "Explanation":
        return cls(image_sha256, analysis.labels, analysis.probabilities, analysis.cams,
                   analysis.prediction.crop_box)


def upload_input(**kwargs) -> gr.Image:
    """A gr.Image input (type="filepath") whose handlers get the uploaded file untouched.

    gr.Image's own preprocessing opens the file with Pillow first, so a corrupt upload would fail with
    Pillow's message (hidden by Gradio as a bare "Error") instead of ours; passing the file on also keeps
    its original bytes (hashed by the report) and EXIF orientation (applied by model.load_image). The
    override is per instance because a gr.Image subclass makes Gradio write a .pyi stub next to this file.
    """
    image = gr.Image(type="filepath", **kwargs)
    image.preprocess = functools.partial(_uploaded_path, image)
    return image


def _uploaded_path(image: gr.Image, payload):
    if payload is None or payload.path is None:  # nothing, or a base64 data URL: Gradio's own handling
        return gr.Image.preprocess(image, payload)
    return payload.path


def class_key(code: str) -> str:
    """How a class is named on screen and in the API's label dict: "Melanoma (mel)"."""
    return f"{lesion_class(code).name} ({code})"


def example_images() -> list[tuple[str, str]]:
    """(true class code, path) of each bundled example, in the class table's order."""
    with open(EXAMPLES_DIR / "examples.csv", newline="") as f:
        rows = [(row["dx"], str(EXAMPLES_DIR / f"{row['image_id']}.jpg")) for row in csv.DictReader(f)]
    order = {code: i for i, code in enumerate(CODES)}
    return sorted(rows, key=lambda row: order.get(row[0], len(order)))


def heatmap_choices(labels) -> list[tuple[str, str]]:
    """The heatmap selector's (shown, value) pairs: the predicted class, then every class."""
    return [("Predicted class", TOP_CLASS)] + [(class_key(code), code) for code in labels]


def analyze_image(classifier, image: str | None, heatmap_class: str = TOP_CLASS,
                  opacity: float = DEFAULT_OPACITY):
    """Analyse an upload → (probabilities by class, overlay, session Explanation).

    The first two are what the /analyze API returns; the page shows `summary_html` of the Explanation.
    """
    data = read_upload(image)
    analysis = _analyze(classifier, data)
    explanation = Explanation.of(analysis, hashlib.sha256(data).hexdigest())
    return (probabilities_by_class(analysis.labels, analysis.probabilities),
            analysis.overlay(_label(heatmap_class, explanation), opacity), explanation)


def redraw_overlay(image: str | None, explanation: Explanation | None, heatmap_class: str = TOP_CLASS,
                   opacity: float = DEFAULT_OPACITY):
    """The overlay for another class or opacity, from the kept maps; None when there is nothing to draw."""
    if not image or explanation is None:
        return None
    data = read_upload(image)
    if hashlib.sha256(data).hexdigest() != explanation.image_sha256:
        return None  # a new image that has not been analysed yet
    index = explanation.labels.index(_label(heatmap_class, explanation))
    return overlay_heatmap(load_rgb(data), explanation.cams[index], explanation.crop_box,
                           opacity)


def make_report(classifier, image: str | None, reference: str = "", age: float | None = None, sex: str = "",
                body_site: str = "", notes: str = "", referring_clinician: str = "",
                page_size: str = "A4") -> str:
    """The PDF report of an upload with the optional case details; returns the file's path.

    The PDF goes straight into Gradio's cache (where it would be copied anyway to be served), so the
    scheduled cache cleanup deletes it along with the upload; nothing is written elsewhere.
    """
    data = read_upload(image)
    try:
        case = CaseFields(reference=reference or "", age=age, sex=sex or "", body_site=body_site or "",
                          notes=notes or "", referring_clinician=referring_clinician or "")
    except ValueError as exc:
        raise user_error(str(exc), title="Check the case details") from None
    if page_size not in PAGE_SIZES:
        raise user_error(f"Page size must be one of {', '.join(PAGE_SIZES)}, not {page_size!r}.")
    pdf = build_report(_analyze(classifier, data), classifier.info, case, page_size,
                       checkpoint_dir=classifier.checkpoint.directory, image_bytes=data)
    return processing_utils.save_bytes_to_cache(pdf, REPORT_FILENAME, utils.get_upload_folder())


def user_error(message: str, title: str = "Error") -> gr.Error:
    """An error shown to the user; the server log gets no traceback for what was the input's fault."""
    return gr.Error(message, title=title, print_exception=False)


def read_upload(image: str | None) -> bytes:
    if not image:
        raise user_error(NO_UPLOAD, title="No image")
    try:
        return Path(image).read_bytes()
    except FileNotFoundError:
        raise user_error("The uploaded image is no longer on the server (uploads are deleted after a few "
                       "minutes). Upload it again.", title="Upload expired") from None


def _analyze(classifier, data: bytes) -> Analysis:
    try:
        return analyze(classifier, data)
    except ImageError as exc:
        raise user_error(str(exc), title="Unusable image") from None


def _label(heatmap_class: str | None, explanation: Explanation) -> str:
    if not heatmap_class or heatmap_class == TOP_CLASS:
        return explanation.labels[int(np.argmax(explanation.probabilities))]
    if heatmap_class not in explanation.labels:
        raise user_error(f"Unknown class {heatmap_class!r}: choose one of {', '.join(explanation.labels)} "
                       f"or '{TOP_CLASS}'.")
    return heatmap_class


def probabilities_by_class(labels, probabilities) -> dict[str, float]:
    return {class_key(code): float(p) for code, p in zip(labels, probabilities)}


def summary_html(explanation: Explanation | None) -> str:
    """The predicted class with its severity (colour-coded), description, confidence and advice."""
    if explanation is None:
        return ""
    order = np.argsort(-explanation.probabilities, kind="stable")
    ranked = [(lesion_class(explanation.labels[i]), float(explanation.probabilities[i])) for i in order]
    top, p = ranked[0]
    confidence = assess_confidence(ranked)
    advice = recommendation(top.severity, confidence.low)
    e = html.escape
    caveat = f"<p class='caveat'>{e(advice.caveat)}</p>" if advice.caveat else ""
    return (f"<div class='verdict severity-{e(top.severity)}'>"
            f"<div class='verdict-head'><span class='verdict-name'>{e(top.name)}</span> "
            f"<span class='verdict-code'>({e(top.code)})</span> <span class='verdict-p'>{p:.1%}</span></div>"
            f"<span class='severity-badge'>Severity: {SEVERITY_WORDS.get(top.severity, top.severity)}</span>"
            f"<p>{e(top.description)}</p>"
            f"<p class='confidence'>{e(confidence.statement)}</p>"
            f"<p class='advice'><b>{e(advice.headline)}</b> {e(advice.detail)}</p>{caveat}"
            "<p class='not-diagnosis'>A model's estimate from one photo, not a diagnosis.</p></div>")
