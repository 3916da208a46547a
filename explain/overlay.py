"""Draw a heatmap over the uploaded image at its own size and aspect ratio, with a colour scale.

This runs on every analysis over the full-size upload, so it keeps to three passes over its pixels:
stretch the (tiny) map as 8-bit values, look the colours up, blend.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

COLORMAP = cv2.COLORMAP_JET
# The colour map as an RGB lookup table (256×1×3), for cv2.applyColorMap: no BGR→RGB pass per image.
_RGB_TABLE = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], COLORMAP),
                          cv2.COLOR_BGR2RGB)


def heatmap_rgb(values01: np.ndarray) -> np.ndarray:
    """H×W values in [0, 1] → H×W×3 uint8 RGB through the colour map."""
    return cv2.applyColorMap(_to_u8(values01), _RGB_TABLE)


def _to_u8(values01: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(values01, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, crop_box: tuple[int, int, int, int],
                    opacity: float = 0.45, scale_bar: bool = True) -> np.ndarray:
    """A new image: `image` (H×W×3 uint8) with `cam` blended over the region the model saw.

    The map is stretched over crop_box only: outside it the model saw nothing, so nothing is drawn
    there, and a thin frame marks the boundary when the region is not the whole image.
    """
    height, width = image.shape[:2]
    left, top, right, bottom = crop_box
    # The map is quantised to 8 bits before it is stretched: the same colours (±1 level) as
    # stretching floats, on a quarter of the memory.
    heat = cv2.applyColorMap(cv2.resize(_to_u8(cam), (right - left, bottom - top),
                                        interpolation=cv2.INTER_LINEAR), _RGB_TABLE)
    whole = (left, top, right, bottom) == (0, 0, width, height)
    if whole:
        out = cv2.addWeighted(heat, float(opacity), image, 1.0 - float(opacity), 0.0)
    else:
        out = image.copy()
        region = out[top:bottom, left:right]
        cv2.addWeighted(heat, float(opacity), region, 1.0 - float(opacity), 0.0, dst=region)
    thickness = max(1, round(min(height, width) / 300))
    if not whole:
        cv2.rectangle(out, (left, top), (right - 1, bottom - 1), (255, 255, 255), thickness)
    if scale_bar:
        _draw_scale(out, thickness)
    return out


@functools.lru_cache(maxsize=32)
def _scale_bar(bar_h: int, bar_w: int) -> np.ndarray:
    """The colour bar's pixels (high attention at the top), drawn once per size."""
    ramp = np.linspace(1.0, 0.0, bar_h, dtype=np.float32)[:, None].repeat(bar_w, 1)
    bar = heatmap_rgb(ramp)
    bar.flags.writeable = False
    return bar


def _draw_scale(out: np.ndarray, thickness: int) -> None:
    """A vertical colour bar in the top-right corner: high attention at the top, low at the bottom."""
    height, width = out.shape[:2]
    bar_h, bar_w = max(20, height // 3), max(6, width // 40)
    margin = max(4, width // 60)
    x0, y0 = width - margin - bar_w, margin
    out[y0:y0 + bar_h, x0:x0 + bar_w] = _scale_bar(bar_h, bar_w)
    cv2.rectangle(out, (x0, y0), (x0 + bar_w - 1, y0 + bar_h - 1), (255, 255, 255), thickness)
    font_scale = max(0.3, min(height, width) / 900)
    for text, y in (("high", y0 + int(12 * font_scale / 0.4)), ("low", y0 + bar_h)):
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        org = (x0 - tw - 3, y)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
