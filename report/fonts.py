"""DejaVu fonts for the report: they cover Latin, Greek and Cyrillic, and are embedded (subset) in the PDF.

ReportLab's built-in Helvetica covers Latin-1 only, so names such as "Дмитрий" would print as boxes.
matplotlib, a dependency already, ships the DejaVu TrueType files; Debian's fonts-dejavu is the fallback.
"""
from __future__ import annotations

import functools
from pathlib import Path

SANS, SANS_BOLD, MONO = "DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono"
_FILES = {SANS: "DejaVuSans.ttf", SANS_BOLD: "DejaVuSans-Bold.ttf", MONO: "DejaVuSansMono.ttf"}


def _font_dirs() -> list[Path]:
    dirs = []
    try:
        import matplotlib
        dirs.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf")
    except ImportError:
        pass
    return dirs + [Path("/usr/share/fonts/truetype/dejavu")]


@functools.cache
def register_fonts() -> None:
    """Register the report's fonts with ReportLab, once per process (parsing a TTF takes tens of ms)."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for name, filename in _FILES.items():
        path = next((d / filename for d in _font_dirs() if (d / filename).is_file()), None)
        if path is None:
            raise RuntimeError(f"Font {filename} not found in {', '.join(map(str, _font_dirs()))}; "
                               "install matplotlib (it ships DejaVu) or Debian's fonts-dejavu-core.")
        pdfmetrics.registerFont(TTFont(name, str(path)))
    # <b> in paragraph markup picks the bold face; there is no italic face, so italic maps to upright.
    for bold, italic, face in ((0, 0, SANS), (1, 0, SANS_BOLD), (0, 1, SANS), (1, 1, SANS_BOLD)):
        addMapping(SANS, bold, italic, face)
