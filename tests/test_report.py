"""The PDF report: what a clinician reading the printed page would see, checked in the PDF's own text."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

pypdf = pytest.importorskip("pypdf")

from model.classes import BY_CODE, CLASSES  # noqa: E402
from report import (BODY_SITES, LOW_CONFIDENCE_MARGIN, LOW_CONFIDENCE_TOP, SEXES, CaseFields, __version__,  # noqa: E402
                    assess_confidence, build_report, recommendation)
from report.case import MAX_CHARS, MAX_NOTE_LINES  # noqa: E402

A4_POINTS, LETTER_POINTS = (595.28, 841.89), (612.0, 792.0)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
UTC_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
HOSTILE_NOTES = "Grew <b>2 mm</b> & itches; <font size=40>x</font> a > b, &amp; <br/> </para>"
NAMES = {"referring_clinician": "Dr Ελένη Παπαδοπούλου & Дмитрий Łukasiewicz-Ørsted",
         "reference": "CASE-<i>7</i>&1"}


@pytest.fixture(scope="module")
def upload(mel_600x450) -> bytes:
    return mel_600x450.read_bytes()


@pytest.fixture(scope="module")
def analysis(tiny_classifier, upload):
    from explain import analyze
    return analyze(tiny_classifier, upload)


@pytest.fixture(scope="module")
def carded_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint's config beside a model card written by the training pipeline's own writer."""
    from training.card import render_card

    directory = tmp_path_factory.mktemp("carded")
    shutil.copy(tiny_checkpoint / "config.json", directory / "config.json")
    per_class = {c.code: {"n": 10, "sensitivity": 0.5, "specificity": 0.9, "auc": 0.8} for c in CLASSES}
    per_class["mel"]["sensitivity"] = 0.7012
    test = {"n": 70, "balanced_accuracy": 0.8123, "macro_auc": 0.9345, "accuracy": 0.85, "ece": 0.031,
            "per_class": per_class, "ci95": {"n_boot": 200}}
    results = {"test": test, "val": {"balanced_accuracy": 0.8, "macro_auc": 0.9, "ece": 0.03},
               "temperature": 1.7, "ece_val_before": 0.09}
    card = render_card(results, {"seed": 0, "img_size": [64, 80]}, "test_resnet",
                       {"train": 500, "val": 70, "test": 70})
    (directory / "README.md").write_text(card, encoding="utf-8")
    return directory


def pdf_pages(pdf: bytes) -> list[str]:
    """Each page's text with whitespace runs folded, as a reader sees it (line wraps do not matter)."""
    assert pdf.startswith(b"%PDF-")
    return [" ".join(page.extract_text().split()) for page in pypdf.PdfReader(io.BytesIO(pdf)).pages]


def page_size(pdf: bytes) -> tuple[float, float]:
    box = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].mediabox
    return float(box.width), float(box.height)


def without_id_and_time(text: str) -> str:
    return UTC_TIME.sub("TIME", UUID.sub("ID", text))


def make(analysis, classifier, **kwargs) -> bytes:
    kwargs.setdefault("checkpoint_dir", classifier.checkpoint.directory)
    return build_report(analysis, classifier.info, **kwargs)


def test_one_a4_page_holds_header_result_differential_evidence_and_disclaimer(analysis, tiny_classifier, upload,
                                                                                carded_checkpoint):
    case = CaseFields(reference="HX-2024-0117", age=54, sex="female", body_site="upper extremity",
                      notes="Changed colour over 3 months.", referring_clinician="Dr A. Smith")
    pdf = make(analysis, tiny_classifier, case=case, checkpoint_dir=carded_checkpoint, image_bytes=upload)
    pages = pdf_pages(pdf)
    assert len(pages) == 1 and page_size(pdf) == pytest.approx(A4_POINTS, abs=0.1)
    text = pages[0]
    info = tiny_classifier.info

    # Header: product, version, report id, UTC time, model provenance, image hash.
    assert "Explainable Skin-Lesion AI" in text and f"Software version {__version__}" in text
    assert UUID.search(text) and UTC_TIME.search(text)
    for value in (info["id"], info["revision"], info["sha256"], hashlib.sha256(upload).hexdigest()):
        assert value in text
    assert "of the uploaded file" in text

    # Case fields as typed.
    for value in ("HX-2024-0117", "54 years", "Female", "Upper extremity", "Changed colour over 3 months.",
                  "Dr A. Smith"):
        assert value in text

    # Result: full name, code, probability, risk, confidence, recommendation.
    top, p_top = analysis.ranked()[0]
    assert f"{top.name} ({top.code})" in text
    assert f"Probability {p_top:.1%}" in text
    assert f"Risk level: {top.severity.upper()}" in text
    assert assess_confidence(analysis.ranked()).statement in text
    assert recommendation(top.severity, assess_confidence(analysis.ranked()).low).headline in text

    # Differential: all seven classes, most probable first, each with its probability.
    differential = text[text.index("Differential"):text.index("Model and evidence")]
    positions = []
    for lesion, p in analysis.ranked():
        row = re.search(rf"\d {re.escape(lesion.name)} {lesion.code} \w+ {re.escape(f'{p:.1%}')}", differential)
        assert row, f"{lesion.name} missing from the differential"
        positions.append(row.start())
    assert positions == sorted(positions) and len(positions) == len(CLASSES)

    # Evidence from the model card and config, the confidence rule, limitations.
    assert "test_resnet" in text and "HAM10000" in text and "CC BY-NC 4.0" in text
    assert "balanced accuracy 0.812" in text and "melanoma sensitivity 0.701" in text
    assert "lesion-grouped test split" in text
    assert "T = 1.700" in text
    assert f"{LOW_CONFIDENCE_TOP:.0%}" in text and f"{LOW_CONFIDENCE_MARGIN * 100:.0f} percentage points" in text
    for limitation in ("Dermoscopic images only", "under-represented", "No clinical context"):
        assert limitation in text

    # Limits of use, sign-off, page number.
    for phrase in ("research and education use only", "not a medical device", "not a diagnosis",
                   "does not replace examination by a qualified clinician"):
        assert phrase in text.lower()
    for phrase in ("Reviewing clinician (name)", "Date", "Signature", "Page 1 of 1"):
        assert phrase in text


def test_without_model_card_or_upload_bytes_the_report_says_so(analysis, tiny_classifier):
    text = pdf_pages(make(analysis, tiny_classifier))[0]
    assert "No measured evaluation available for this model." in text
    assert hashlib.sha256(analysis.image.tobytes()).hexdigest() in text
    assert "decoded pixels" in text
    # An empty case prints placeholders, not stray labels with nothing beside them.
    assert "Case reference —" in text and "Clinical notes: —" in text


def test_markup_in_case_fields_prints_as_typed_in_greek_cyrillic_and_latin(analysis, tiny_classifier):
    case = CaseFields(notes=HOSTILE_NOTES, **NAMES)
    pdf = make(analysis, tiny_classifier, case=case)
    text = pdf_pages(pdf)[0]
    for typed in (HOSTILE_NOTES, *NAMES.values()):
        assert typed in text
    # Document properties are easy to overlook when a file is shared: they carry no case details.
    properties = " ".join(str(v) for v in (pypdf.PdfReader(io.BytesIO(pdf)).metadata or {}).values())
    assert "CASE" not in properties and "Ελένη" not in properties


def test_scripts_outside_the_font_do_not_break_the_report(analysis, tiny_classifier):
    notes = "before 漢字 عربى हिन्दी 🙂 after"
    text = pdf_pages(make(analysis, tiny_classifier, case=CaseFields(notes=notes)))[0]
    assert "before" in text and "after" in text


def test_fonts_are_embedded_so_any_reader_prints_the_same_glyphs(analysis, tiny_classifier):
    page = pypdf.PdfReader(io.BytesIO(make(analysis, tiny_classifier))).pages[0]
    fonts = [f.get_object() for f in page["/Resources"]["/Font"].values()]
    descriptors = [f["/DescendantFonts"][0].get_object()["/FontDescriptor"] if "/DescendantFonts" in f
                   else f.get("/FontDescriptor") for f in fonts]
    assert fonts and all("DejaVu" in str(f["/BaseFont"]) for f in fonts)
    assert all(d is not None and "/FontFile2" in d.get_object() for d in descriptors)


def test_longest_case_fields_fit_in_two_pages_with_the_differential_in_one_piece(analysis, tiny_classifier):
    line = ("Wrapped-notes " * 5)[:66]
    notes = "\n".join([line] * MAX_NOTE_LINES)[:MAX_CHARS["notes"]]
    case = CaseFields(reference="R" * MAX_CHARS["reference"], age=120, sex="other", body_site="lower extremity",
                      notes=notes, referring_clinician="Ж" * MAX_CHARS["referring_clinician"])
    pages = pdf_pages(make(analysis, tiny_classifier, case=case, page_size="Letter"))
    assert len(pages) == 2
    assert "Page 1 of 2" in pages[0] and "Page 2 of 2" in pages[1]
    whole = " ".join(pages)
    assert "R" * 20 in whole and "Ж" * 20 in whole and whole.count("Wrapped-notes") == notes.count("Wrapped-notes")
    assert "not a medical device" in pages[1] and "Signature" in pages[1]
    assert any(all(c.name in page for c in CLASSES) for page in pages)


def test_letter_is_selectable_and_a4_is_the_default(analysis, tiny_classifier):
    assert page_size(make(analysis, tiny_classifier, page_size="Letter")) == pytest.approx(LETTER_POINTS, abs=0.1)
    assert page_size(make(analysis, tiny_classifier)) == pytest.approx(A4_POINTS, abs=0.1)
    with pytest.raises(ValueError, match="A4"):
        make(analysis, tiny_classifier, page_size="A3")


def test_same_inputs_give_the_same_report_apart_from_id_and_time(analysis, tiny_classifier, upload):
    case = CaseFields(reference="X1", notes=HOSTILE_NOTES)
    first, second = (pdf_pages(make(analysis, tiny_classifier, case=case, image_bytes=upload))[0]
                     for _ in range(2))
    assert UUID.findall(first)[0] != UUID.findall(second)[0]
    assert without_id_and_time(first) == without_id_and_time(second)


def test_report_is_built_in_memory_without_writing_files(analysis, tiny_classifier, tmp_path, monkeypatch):
    import tempfile
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    make(analysis, tiny_classifier, case=CaseFields(reference="private"))
    assert os.listdir(scratch) == []


def test_a_melanoma_result_is_high_risk_with_prompt_referral(analysis, tiny_classifier):
    labels = analysis.labels
    probabilities = np.full(len(labels), 0.05)
    probabilities[labels.index("mel")] = 0.70
    mel_first = dataclasses.replace(analysis, prediction=dataclasses.replace(
        analysis.prediction, probabilities=probabilities / probabilities.sum()))
    text = pdf_pages(make(mel_first, tiny_classifier))[0]
    assert "Melanoma (mel)" in text and "Risk level: HIGH" in text
    assert "Prompt in-person evaluation by a dermatologist" in text
    assert "Higher confidence" in text and "regardless of the predicted class" not in text


def test_confidence_is_low_when_the_top_probability_or_the_margin_is_small():
    mel, nv = BY_CODE["mel"], BY_CODE["nv"]
    assert not assess_confidence([(nv, 0.90), (mel, 0.05)]).low
    assert assess_confidence([(nv, LOW_CONFIDENCE_TOP - 0.01), (mel, 0.10)]).low
    assert assess_confidence([(nv, 0.70), (mel, 0.70 - LOW_CONFIDENCE_MARGIN + 0.01)]).low
    assert recommendation("low", True).caveat and not recommendation("low", False).caveat
    for severity in ("high", "medium", "low", "unknown"):
        advice = recommendation(severity, False)
        assert "no action" not in f"{advice.headline} {advice.detail}".lower()
    assert "does not exclude skin cancer" in recommendation("low", False).headline


def test_case_fields_are_checked_and_normalised():
    case = CaseFields(reference="  A\tB\nC ", age="54", sex=" Female ", body_site="Lower extremity",
                      notes="line 1\r\nline 2\x00")
    assert (case.reference, case.age, case.sex, case.body_site, case.notes) == \
        ("A B C", 54, "female", "lower extremity", "line 1\nline 2")
    assert CaseFields(age="").age is None and CaseFields(age=None).age is None
    for bad in ({"age": 121}, {"age": 1.5}, {"age": True}, {"age": "old"}, {"sex": "m"},
                {"body_site": "elbow"}, {"notes": "x" * (MAX_CHARS["notes"] + 1)},
                {"notes": "\n".join("x" * (MAX_NOTE_LINES + 1))}, {"reference": 12}):
        with pytest.raises(ValueError):
            CaseFields(**bad)
    assert "unknown" in SEXES and {"back", "face", "acral", "scalp"} <= set(BODY_SITES)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) is not installed")
def test_page_one_renders_with_the_images_and_coloured_result(analysis, tiny_classifier, tmp_path):
    from PIL import Image

    (tmp_path / "report.pdf").write_bytes(make(analysis, tiny_classifier))
    subprocess.run(["pdftoppm", "-r", "40", "-f", "1", "-l", "1", "-png", "-singlefile",
                    str(tmp_path / "report.pdf"), str(tmp_path / "page")], check=True, timeout=60)
    page = np.asarray(Image.open(tmp_path / "page.png").convert("RGB")).astype(int)
    assert page.shape[0] > page.shape[1]  # portrait
    ink = (page.min(axis=2) < 200).mean()
    saturated = ((page.max(axis=2) - page.min(axis=2)) > 80).mean()  # the photo, heatmap, risk colours
    assert ink > 0.05 and saturated > 0.02
