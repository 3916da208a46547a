"""The report's pictures: the upload and its Grad-CAM overlay as compact JPEGs, and the colour scale."""
from __future__ import annotations

import functools
import io

import cv2
import numpy as np
from PIL import Image as PILImage
from reportlab.lib import colors
from reportlab.platypus import Flowable, Image

from explain import heatmap_rgb, overlay_heatmap

MAX_PIXELS = 640      # longest side embedded; ~270 dpi at the printed size, so nothing visible is lost
JPEG_QUALITY = 88


def display_pair(analysis) -> tuple[np.ndarray, np.ndarray]:
    """(original, overlay of the top class) at most MAX_PIXELS on the longest side, same aspect ratio."""
    image = analysis.image
    height, width = image.shape[:2]
    scale = MAX_PIXELS / max(height, width)
    # No colour bar drawn into the picture: the report prints its own vector scale under it.
    if scale >= 1.0:
        return image, overlay_heatmap(image, analysis.cams[analysis.prediction.top_index],
                                      analysis.prediction.crop_box, scale_bar=False)
    # Shrink first and draw the overlay at the shrunk size: same picture, far less work for big uploads.
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    left, top, right, bottom = analysis.prediction.crop_box
    box = (round(left * scale), round(top * scale), max(round(right * scale), round(left * scale) + 1),
           max(round(bottom * scale), round(top * scale) + 1))
    cam = analysis.cams[analysis.prediction.top_index]
    return small, overlay_heatmap(small, cam, box, scale_bar=False)


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


class ColourScale(Flowable):
    """A horizontal JET colour bar labelled low → high attention, drawn as vectors in the given font."""

    BAR_H, TEXT_H = 6.0, 8.0

    def __init__(self, width: float, font: str, steps: int = 64):
        super().__init__()
        self.width, self.height, self.font, self.steps = width, self.BAR_H + self.TEXT_H, font, steps

    def draw(self):
        canvas, step = self.canv, self.width / self.steps
        for i, colour in enumerate(_scale_colors(self.steps)):
            # Overlap each strip slightly so no hairline gaps show between them in viewers.
            canvas.setFillColor(colour)
            canvas.rect(i * step, self.TEXT_H, step + 0.4 if i < self.steps - 1 else step, self.BAR_H,
                        stroke=0, fill=1)
        canvas.setStrokeColor(colors.grey)
        canvas.setLineWidth(0.3)
        canvas.rect(0, self.TEXT_H, self.width, self.BAR_H, stroke=1, fill=0)
        canvas.setFillColor(colors.HexColor("#444444"))
        canvas.setFont(self.font, 6.5)
        canvas.drawString(0, 1, "low attention")
        canvas.drawRightString(self.width, 1, "high attention")
