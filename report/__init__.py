"""The clinical-style PDF report of one analysed image: built in memory, never written to disk."""
from __future__ import annotations

from pathlib import Path

from .assessment import (CONFIDENCE_RULE, LOW_CONFIDENCE_MARGIN, LOW_CONFIDENCE_TOP, Confidence,
                         assess_confidence, recommendation)
from .case import BODY_SITES, SEXES, CaseFields

__version__ = "1.0.0"
PRODUCT_NAME = "Explainable Skin-Lesion AI"

__all__ = ["BODY_SITES", "CONFIDENCE_RULE", "LOW_CONFIDENCE_MARGIN", "LOW_CONFIDENCE_TOP", "PRODUCT_NAME",
           "SEXES", "CaseFields", "Confidence", "__version__", "assess_confidence", "build_report",
           "recommendation"]


def build_report(analysis, model_info: dict, case: CaseFields | None = None, page_size: str = "A4",
                 checkpoint_dir: Path | None = None, image_bytes: bytes | None = None) -> bytes:
    """The PDF report of `analysis` (an explain.Analysis) as bytes.

    model_info is Classifier.info; checkpoint_dir holds the model card (README.md) and config.json the
    evidence section quotes; image_bytes are the uploaded file, hashed for the header (when None the
    decoded pixels are hashed and the report says so). page_size is "A4" or "Letter".
    """
    from .pdf import render  # ReportLab is imported only when a report is made

    return render(analysis, model_info, case if case is not None else CaseFields(), page_size,
                  checkpoint_dir, image_bytes, PRODUCT_NAME, __version__)
