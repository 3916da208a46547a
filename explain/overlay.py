"""Draw a heatmap over the uploaded image at its own size and aspect ratio, with a colour scale."""
from __future__ import annotations

import cv2
import numpy as np

COLORMAP = cv2.COLORMAP_JET


def heatmap_rgb(values01: np.ndarray) -> np.ndarray:
    """H×W values in [0, 1] → H×W×3 uint8 RGB through the colour map."""
    u8 = np.clip(values01 * 255.0, 0, 255).astype(np.uint8)
    # cvtColor, not a [..., ::-1] view: blending a contiguous array is about 8x faster in OpenCV.
    return cv2.cvtColor(cv2.applyColorMap(u8, COLORMAP), cv2.COLOR_BGR2RGB)


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, crop_box: tuple[int, int, int, int],
                    opacity: float = 0.45, scale_bar: bool = True) -> np.ndarray:
    """The image (H×W×3 uint8) with `cam` blended over the region the model saw.

    The map is stretched over crop_box only: outside it the model saw nothing, so nothing is drawn
    there, and a thin frame marks the boundary when the region is not the whole image.
    """
    out = image.copy()
    left, top, right, bottom = crop_box
    region = out[top:bottom, left:right]
    heat = heatmap_rgb(cv2.resize(cam, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR))
    cv2.addWeighted(heat, float(opacity), region, 1.0 - float(opacity), 0.0, dst=region)
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    if (left, top, right, bottom) != (0, 0, width, height):
        cv2.rectangle(out, (left, top), (right - 1, bottom - 1), (255, 255, 255), thickness)
    if scale_bar:
        _draw_scale(out, thickness)
    return out


def _draw_scale(out: np.ndarray, thickness: int) -> None:
    """A vertical colour bar in the top-right corner: high attention at the top, low at the bottom."""
    height, width = out.shape[:2]
    bar_h, bar_w = max(20, height // 3), max(6, width // 40)
    margin = max(4, width // 60)
    x0, y0 = width - margin - bar_w, margin
    ramp = np.linspace(1.0, 0.0, bar_h, dtype=np.float32)[:, None].repeat(bar_w, 1)
    out[y0:y0 + bar_h, x0:x0 + bar_w] = heatmap_rgb(ramp)
    cv2.rectangle(out, (x0, y0), (x0 + bar_w - 1, y0 + bar_h - 1), (255, 255, 255), thickness)
    font_scale = max(0.3, min(height, width) / 900)
    for text, y in (("high", y0 + int(12 * font_scale / 0.4)), ("low", y0 + bar_h)):
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        org = (x0 - tw - 3, y)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
