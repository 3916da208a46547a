"""The report's pictures: the upload and its Grad-CAM overlay as compact JPEGs, and the colour scale."""
from __future__ import annotations

import functools
import io

import cv2
import numpy as np
from PIL import Image as PILImage
from reportlab.graphics.shapes import Drawing, Rect, String
from reportlab.lib import colors
from reportlab.platypus import Image

from explain import heatmap_rgb, overlay_heatmap

MAX_PIXELS = 640      # longest side embedded; ~270 dpi at the printed size, so nothing visible is lost
JPEG_QUALITY = 88


def display_pair(analysis) -> tuple[np.ndarray, np.ndarray]:
    """(original, overlay of the top class) at most MAX_PIXELS on the longest side, same aspect ratio."""
    image = analysis.image
    height, width = image.shape[:2]
    scale = MAX_PIXELS / max(height, width)
    if scale >= 1.0:
        return image, analysis.overlay()
    # Shrink first and draw the overlay at the shrunk size: same picture, far less work for big uploads.
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    left, top, right, bottom = analysis.prediction.crop_box
    box = (round(left * scale), round(top * scale), max(round(right * scale), round(left * scale) + 1),
           max(round(bottom * scale), round(top * scale) + 1))
    cam = analysis.cams[analysis.prediction.top_index]
    return small, overlay_heatmap(small, cam, box)


def fit(width_px: int, height_px: int, max_w: float, max_h: float) -> tuple[float, float]:
    """The largest size inside max_w × max_h points with the picture's own aspect ratio."""
    scale = min(max_w / width_px, max_h / height_px)
    return width_px * scale, height_px * scale


def pdf_image(pixels: np.ndarray, width: float, height: float) -> Image:
    """A platypus Image of an RGB uint8 array, embedded as JPEG (PDF stores JPEG as is: no re-encoding)."""
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels)).save(buffer, "JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    return Image(buffer, width=width, height=height)


@functools.cache
def _scale_colors(steps: int) -> tuple:
    rgb = heatmap_rgb(np.linspace(0.0, 1.0, steps, dtype=np.float32)[None, :])[0]
    return tuple(colors.Color(*(c / 255.0 for c in px)) for px in rgb)


def colour_scale(width: float, font: str, steps: int = 64) -> Drawing:
    """A horizontal JET colour bar labelled low → high attention, as vector graphics."""
    bar_h, text_h = 6.0, 8.0
    drawing = Drawing(width, bar_h + text_h)
    step = width / steps
    for i, colour in enumerate(_scale_colors(steps)):
        # Overlap each strip slightly so no hairline gaps show between them in viewers.
        drawing.add(Rect(i * step, text_h, step + 0.4, bar_h, fillColor=colour, strokeColor=None))
    drawing.add(Rect(0, text_h, width, bar_h, fillColor=None, strokeColor=colors.grey, strokeWidth=0.3))
    for text, x, anchor in (("low attention", 0, "start"), ("high attention", width, "end")):
        drawing.add(String(x, 1, text, fontName=font, fontSize=6.5, fillColor=colors.HexColor("#444444"),
                           textAnchor=anchor))
    return drawing
