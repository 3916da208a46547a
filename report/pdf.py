"""Lay out the clinical-style PDF report with ReportLab platypus, in memory.

Every value a user typed is escaped before it reaches Paragraph markup, so `<b>` or `&` print as typed.
The report is deterministic apart from its id and time: ReportLab runs in invariant mode (no creation
date or random document id in the file) and nothing else varies.
"""
from __future__ import annotations

import functools
import hashlib
import io
import uuid
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (BaseDocTemplate, Flowable, Frame, HRFlowable, KeepTogether, PageTemplate,
                                Paragraph, Spacer, Table, TableStyle)

from .assessment import CONFIDENCE_RULE, IN_PERSON, RISK_LABELS, assess_confidence, recommendation
from .case import CaseFields
from .evidence import DATA_SOURCE, LIMITATIONS, load_evidence
from .fonts import MONO, SANS, SANS_BOLD, register_fonts
from .images import ColourScale, display_pair, fit, pdf_image

# Store streams as binary, not ASCII85 text: ReportLab's pure-Python ASCII85 encoder was most of the build
# time (the JPEGs), and binary streams are a quarter smaller. Process-wide, but only this package uses ReportLab.
rl_config.useA85 = 0

PAGE_SIZES = {"a4": A4, "letter": LETTER}
TITLE = "Skin-lesion image analysis report"
DISCLAIMER = ("For research and education use only. This software is not a medical device and has not been "
              "cleared or approved by any regulator. Its output is not a diagnosis and does not replace "
              "examination by a qualified clinician; decisions about care must not rest on it.")
PRIVACY = ("Case details as entered by the user, not verified. Nothing was stored: the image and case details "
           "exist only in this report.")

RISK_COLORS = {"high": colors.HexColor("#B3261E"), "medium": colors.HexColor("#C25E00"),
               "low": colors.HexColor("#2E7D32"), "unknown": colors.HexColor("#616161")}
INK, MUTED, ACCENT = colors.HexColor("#1A1A1A"), colors.HexColor("#555555"), colors.HexColor("#1F3A5F")
RULE, TINT = colors.HexColor("#B0B7C3"), colors.HexColor("#F2F4F7")
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 14 * mm, 11 * mm, 17 * mm


@functools.cache
def _styles() -> dict[str, ParagraphStyle]:
    register_fonts()
    base = ParagraphStyle("base", fontName=SANS, fontSize=7.6, leading=9.4, textColor=INK)
    return {
        "base": base,
        "small": ParagraphStyle("small", base, fontSize=6.8, leading=8.2, textColor=MUTED),
        "label": ParagraphStyle("label", base, fontName=SANS_BOLD, fontSize=6.8, leading=8.6, textColor=MUTED),
        "mono": ParagraphStyle("mono", base, fontName=MONO, fontSize=6.8, leading=8.6),
        "caption": ParagraphStyle("caption", base, fontSize=6.8, leading=8.2, textColor=MUTED, alignment=1),
        "section": ParagraphStyle("section", base, fontName=SANS_BOLD, fontSize=8.8, leading=10.5,
                                  textColor=ACCENT, spaceBefore=4.5, spaceAfter=1),
        "product": ParagraphStyle("product", base, fontName=SANS_BOLD, fontSize=13, leading=15.5,
                                  textColor=ACCENT),
        "title": ParagraphStyle("title", base, fontSize=9, leading=11, textColor=MUTED),
        "right": ParagraphStyle("right", base, fontSize=7, leading=9, alignment=TA_RIGHT, textColor=MUTED),
        "banner": ParagraphStyle("banner", base, fontName=SANS_BOLD, fontSize=7.4, leading=9,
                                 textColor=colors.white, alignment=1),
        "result": ParagraphStyle("result", base, fontName=SANS_BOLD, fontSize=11.5, leading=14),
        "risk": ParagraphStyle("risk", base, fontName=SANS_BOLD, fontSize=8.4, leading=10.5,
                               textColor=colors.white),
    }


def _text(value: str) -> str:
    """User or data text → Paragraph markup that prints exactly as typed, line breaks kept."""
    return escape(value).replace("\n", "<br/>")


def _p(markup: str, style: str = "base") -> Paragraph:
    return Paragraph(markup, _styles()[style])


def _section(title: str) -> list[Flowable]:
    return [_p(escape(title), "section"), HRFlowable(width="100%", thickness=0.6, color=RULE,
                                                     spaceBefore=0.5, spaceAfter=2.5)]


class _Table(Table):
    """A Table whose plain-string cells use the embedded font (ReportLab's default is unembedded Helvetica)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), SANS)]))


class _Bar(Flowable):
    """A probability bar: a filled share of a light track."""

    def __init__(self, fraction: float, width: float, color, height: float = 5.5):
        super().__init__()
        self.fraction, self.width, self.height, self.color = max(0.0, min(1.0, fraction)), width, height, color

    def draw(self):
        self.canv.setFillColor(TINT)
        self.canv.rect(0, 0, self.width, self.height, stroke=0, fill=1)
        if self.fraction > 0:
            self.canv.setFillColor(self.color)
            self.canv.rect(0, 0, max(0.6, self.width * self.fraction), self.height, stroke=0, fill=1)


def _grid(rows, widths, *, spans=(), label_cols=(0,), pad=1.6) -> Table:
    table = _Table(rows, colWidths=widths, hAlign="LEFT")
    style = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), pad),
             ("BOTTOMPADDING", (0, 0), (-1, -1), pad), ("LEFTPADDING", (0, 0), (-1, -1), 3),
             ("RIGHTPADDING", (0, 0), (-1, -1), 3),
             ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#DDE1E6"))]
    style += [("BACKGROUND", (c, 0), (c, -1), TINT) for c in label_cols]
    style += [("SPAN", a, b) for a, b in spans]
    table.setStyle(TableStyle(style))
    return table


def _header(report_id: str, created: str, version: str, product: str, width: float) -> list[Flowable]:
    title = [_p(escape(product), "product"), _p(escape(TITLE), "title")]
    stamp = [_p(f"Report ID <font name='{MONO}'>{report_id}</font>", "right"),
             _p(f"Generated (UTC) <font name='{MONO}'>{created}</font>", "right"),
             _p(f"Software version {escape(version)}", "right")]
    top = _Table([[title, stamp]], colWidths=[width * 0.5, width * 0.5])
    top.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "BOTTOM"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                             ("RIGHTPADDING", (0, 0), (-1, -1), 0), ("BOTTOMPADDING", (0, 0), (-1, -1), 3)]))
    banner = _Table([[_p("RESEARCH AND EDUCATION USE ONLY · NOT A MEDICAL DEVICE · NOT A DIAGNOSIS", "banner")]],
                    colWidths=[width])
    banner.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), ACCENT), ("TOPPADDING", (0, 0), (-1, -1), 2),
                                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5)]))
    return [top, banner, Spacer(1, 3)]


def _provenance(model_info: dict, image_hash: str, hash_source: str, width: float) -> Table:
    mono = lambda v: _p(escape(str(v)), "mono")  # noqa: E731
    label = lambda v: _p(escape(v), "label")  # noqa: E731
    backend = model_info.get("backend") or "unknown"
    rows = [
        [label("Model"), _p(f"{escape(str(model_info.get('id') or 'unknown'))} <font color='#555555' size='6.8'>"
                            f"({escape(str(model_info.get('architecture') or 'unknown'))}, "
                            f"{escape(str(backend))} runtime)</font>"), label("Revision"),
         mono(model_info.get("revision") or "unknown")],
        [label("Weights SHA-256"), mono(model_info.get("sha256") or "unknown"), "", ""],
        [label("Image SHA-256"), [mono(image_hash), _p(escape(hash_source), "small")], "", ""],
    ]
    w0, w2 = 80, 48
    w3 = 0.30 * width
    return _grid(rows, [w0, width - w0 - w2 - w3, w2, w3], label_cols=(0,),
                 spans=[((1, r), (3, r)) for r in (1, 2)])


def _case(case: CaseFields, width: float) -> list[Flowable]:
    def value(v: str) -> Paragraph:
        return _p(_text(v)) if v else _p("—", "small")
    label = lambda v: _p(escape(v), "label")  # noqa: E731
    age = f"{case.age} years" if case.age is not None else ""
    rows = [[label("Case reference"), value(case.reference), label("Age"), value(age), label("Sex"),
             value(case.sex.capitalize())],
            [label("Referring clinician"), value(case.referring_clinician), "", "", label("Body site"),
             value(case.body_site.capitalize())]]
    lw, aw, sw = 80, 40, 48
    rest = width - lw - aw - sw - 2 * 58
    grid = _grid(rows, [lw, rest, aw, 58, sw, 58], label_cols=(0, 2, 4), spans=[((1, 1), (3, 1))])
    grid.setStyle(TableStyle([("BACKGROUND", (2, 1), (3, 1), colors.white)]))
    notes = _p(f"<font name='{SANS_BOLD}' color='#555555'>Clinical notes:</font> "
               + (_text(case.notes) if case.notes else "<font color='#555555'>—</font>"))
    return [grid, Spacer(1, 2.5), notes, Spacer(1, 1.5), _p(escape(PRIVACY), "small")]


def _pictures_and_result(analysis, confidence, width: float) -> Table:
    """Upload and overlay side by side at their own aspect ratio; beside them the result and advice."""
    original, overlay = display_pair(analysis)
    panel_w, gap = 206, 8
    cell_w = (width - panel_w - gap) / 2
    img_w, img_h = fit(original.shape[1], original.shape[0], cell_w - 6, 124)
    top = analysis.top
    probability = float(analysis.probabilities[analysis.prediction.top_index])
    height_px, width_px = analysis.image.shape[:2]
    framed = tuple(analysis.prediction.crop_box) != (0, 0, width_px, height_px)
    original_cell = [pdf_image(original, img_w, img_h), Spacer(1, 2),
                     _p(f"Uploaded image ({width_px}×{height_px} px)", "caption")]
    overlay_cell = [pdf_image(overlay, img_w, img_h), Spacer(1, 2),
                    _p(f"Grad-CAM overlay for {escape(top.name)}: where the evidence for this class lies"
                       + ("; the frame marks the region the model saw" if framed else ""), "caption"),
                    Spacer(1, 2.5), ColourScale(cell_w - 12, SANS)]
    severity = top.severity if top.severity in RISK_LABELS else "unknown"
    inner_w = panel_w - 12
    risk = _Table([[_p(f"Risk level: {RISK_LABELS[severity].upper()}", "risk")]], colWidths=[inner_w],
                  hAlign="LEFT")
    risk.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), RISK_COLORS[severity]),
                              ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
                              ("LEFTPADDING", (0, 0), (-1, -1), 4)]))
    panel = [_p("Predicted class", "label"),
             _p(f"{escape(top.name)} <font name='{MONO}' size='9'>({escape(top.code)})</font>", "result"),
             _p(f"Probability <font name='{SANS_BOLD}' size='10'>{probability:.1%}</font>"),
             Spacer(1, 3), risk, Spacer(1, 3), _p(escape(confidence.statement)),
             Spacer(1, 4), _p("Recommendation", "label"), Spacer(1, 0.5),
             *_recommendation(severity, confidence.low)]
    table = _Table([[original_cell, overlay_cell, panel]], colWidths=[cell_w, cell_w, panel_w + gap])
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("ALIGN", (0, 0), (1, 0), "CENTER"),
        ("LEFTPADDING", (0, 0), (1, 0), 0), ("RIGHTPADDING", (0, 0), (1, 0), 0),
        ("TOPPADDING", (0, 0), (1, 0), 0),
        ("BACKGROUND", (2, 0), (2, 0), TINT), ("LINEBEFORE", (2, 0), (2, 0), 2.2, RISK_COLORS[severity]),
        ("LEFTPADDING", (2, 0), (2, 0), 7), ("RIGHTPADDING", (2, 0), (2, 0), 5),
        ("TOPPADDING", (2, 0), (2, 0), 4), ("BOTTOMPADDING", (2, 0), (2, 0), 5)]))
    return table


def _recommendation(severity: str, low_confidence: bool) -> list[Flowable]:
    advice = recommendation(severity, low_confidence)
    items = [_p(f"<font name='{SANS_BOLD}'>{escape(advice.headline)}</font> {escape(advice.detail)}")]
    if advice.caveat:
        items += [Spacer(1, 2), _p(f"<font name='{SANS_BOLD}'>{escape(advice.caveat)}</font>")]
    return items


def _differential(analysis, width: float) -> Table:
    widths = [14, 196, 40, 48, 46]
    bar_w = width - sum(widths) - 5
    widths.append(bar_w + 5)
    head = [_p(h, "label") for h in ("#", "Class", "Code", "Risk", "Prob.", "")]
    rows = [head]
    for rank, (lesion, p) in enumerate(analysis.ranked(), 1):
        severity = lesion.severity if lesion.severity in RISK_LABELS else "unknown"
        risk_hex = RISK_COLORS[severity].hexval()[2:]
        rows.append([_p(str(rank), "small"), _p(escape(lesion.name)),
                     _p(escape(lesion.code), "mono"),
                     _p(f"<font color='#{risk_hex}'>{RISK_LABELS[severity]}</font>"),
                     _p(f"{p:.1%}"), _Bar(p, bar_w, RISK_COLORS[severity])])
    table = _Table(rows, colWidths=widths, hAlign="LEFT")
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("TOPPADDING", (0, 0), (-1, -1), 1.1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.1), ("LEFTPADDING", (0, 0), (-1, -1), 2.5),
        ("RIGHTPADDING", (0, 0), (-1, -1), 2.5), ("LINEBELOW", (0, 0), (-1, 0), 0.5, RULE),
        ("BACKGROUND", (0, 1), (-1, 1), TINT)]))
    return table


def _evidence(model_info: dict, checkpoint_dir, width: float) -> Table:
    evidence = load_evidence(checkpoint_dir)
    label = lambda v: _p(escape(v), "label")  # noqa: E731
    if evidence.metrics:
        measured = ", ".join(f"{m.name} {m.value:.3f}" for m in evidence.metrics)
        split = evidence.dataset or "the held-out test split"
        results = _p(escape(f"{measured}; measured on {split}, as recorded in the model card."))
    else:
        results = _p(escape(evidence.note))
    if evidence.temperature is not None:
        calibration = (f"Temperature scaling, T = {evidence.temperature:.3f} (config.json; fitted on the "
                       f"validation split). {CONFIDENCE_RULE}")
    else:
        calibration = f"No temperature recorded: probabilities are the raw softmax. {CONFIDENCE_RULE}"
    rows = [[label("Architecture"), _p(escape(f"{model_info.get('architecture') or 'unknown'} (timm image "
                                              "classifier, 7 HAM10000 classes)"))],
            [label("Training data"), _p(escape(DATA_SOURCE + "."))],
            [label("Measured (test)"), results],
            [label("Calibration"), _p(escape(calibration))],
            [label("Known limitations"), _p("<br/>".join(f"• {escape(item)}" for item in LIMITATIONS))]]
    return _grid(rows, [76, width - 76], label_cols=(0,), pad=1.4)


def _disclaimer_and_signoff(width: float) -> list[Flowable]:
    disclaimer = f"<font name='{SANS_BOLD}'>Disclaimer.</font> {escape(DISCLAIMER)} {escape(IN_PERSON)}"
    box = _Table([[_p(disclaimer)]], colWidths=[width])
    box.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.8, RISK_COLORS["high"]),
                             ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#FCF1F0")),
                             ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 4)]))
    label = lambda v: _p(escape(v), "label")  # noqa: E731
    sign = _Table([[label("Reviewing clinician (name)"), "", label("Date"), "", label("Signature"), ""]],
                  colWidths=[112, width * 0.30, 30, width * 0.14, 50, None], rowHeights=[22])
    sign.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                              ("LINEBELOW", (1, 0), (1, 0), 0.6, INK), ("LINEBELOW", (3, 0), (3, 0), 0.6, INK),
                              ("LINEBELOW", (5, 0), (5, 0), 0.6, INK), ("LEFTPADDING", (0, 0), (-1, -1), 2),
                              ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return [Spacer(1, 5), box, KeepTogether(_section("Clinician sign-off") + [sign])]


def _numbered_canvas(footer: tuple[str, ...]):
    """A canvas that holds pages back until the end, so every footer can say 'Page i of n'."""

    class NumberedCanvas(Canvas):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._held = []

        def showPage(self):
            self._held.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._held)
            for number, state in enumerate(self._held, 1):
                self.__dict__.update(state)
                width, _ = self._pagesize
                self.setStrokeColor(RULE)
                self.setLineWidth(0.5)
                self.line(MARGIN_X, MARGIN_BOTTOM - 5, width - MARGIN_X, MARGIN_BOTTOM - 5)
                self.setFillColor(MUTED)
                self.setFont(SANS, 6.5)
                for line, text in enumerate(footer):
                    self.drawString(MARGIN_X, MARGIN_BOTTOM - 13 - 8 * line, text)
                self.setFont(SANS_BOLD, 7)
                self.drawRightString(width - MARGIN_X, MARGIN_BOTTOM - 13, f"Page {number} of {total}")
                super().showPage()
            super().save()

    return NumberedCanvas


def render(analysis, model_info: dict, case: CaseFields, page_size: str, checkpoint_dir: Path | None,
           image_bytes: bytes | None, product: str, version: str) -> bytes:
    try:
        pagesize = PAGE_SIZES[str(page_size).strip().lower()]
    except KeyError:
        raise ValueError(f"page_size must be 'A4' or 'Letter', not {page_size!r}.") from None
    _styles()  # registers the fonts before anything measures text
    report_id = str(uuid.uuid4())
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if image_bytes is not None:
        image_hash, hash_source = hashlib.sha256(image_bytes).hexdigest(), "of the uploaded file, as received"
    else:
        height, width_px = analysis.image.shape[:2]
        image_hash = hashlib.sha256(analysis.image.tobytes()).hexdigest()
        hash_source = (f"of the decoded pixels (RGB, 8-bit, {width_px}×{height}, row-major): the uploaded "
                       "file itself was not available")

    width = pagesize[0] - 2 * MARGIN_X
    ranked = analysis.ranked()
    confidence = assess_confidence(ranked)

    story: list[Flowable] = [
        *_header(report_id, created, version, product, width),
        _provenance(model_info, image_hash, hash_source, width),
        *_section("Case details"), *_case(case, width),
        # Kept together so a page break (long notes) never strands a heading or splits the differential.
        KeepTogether(_section("Images, result and recommendation")
                     + [_pictures_and_result(analysis, confidence, width)]),
        KeepTogether(_section("Differential: all classes by probability") + [_differential(analysis, width)]),
        KeepTogether(_section("Model and evidence") + [_evidence(model_info, checkpoint_dir, width)]),
        *_disclaimer_and_signoff(width),
    ]
    buffer = io.BytesIO()
    # initialFontName: pages start in the embedded font, so the file references no unembedded Helvetica.
    doc = BaseDocTemplate(buffer, pagesize=pagesize, leftMargin=MARGIN_X, rightMargin=MARGIN_X,
                          topMargin=MARGIN_TOP, bottomMargin=MARGIN_BOTTOM, invariant=1, initialFontName=SANS,
                          title=TITLE, author=product, creator=f"{product} {version}",
                          subject="Research and education use only; not a medical device.")
    # No frame padding: the tables are sized to the full text width.
    frame = Frame(doc.leftMargin, doc.bottomMargin, doc.width, doc.height, leftPadding=0, rightPadding=0,
                  topPadding=0, bottomPadding=0)
    doc.addPageTemplates([PageTemplate("page", [frame])])
    # Metadata deliberately carries no case details: PDF properties are easy to overlook when sharing.
    footer = (f"{product} {version} · {TITLE.lower()} {report_id}",
              "Research and education use only · not a medical device · not a diagnosis")
    doc.build(story, canvasmaker=_numbered_canvas(footer))
    return buffer.getvalue()
