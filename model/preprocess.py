"""Preprocessing driven by a checkpoint's pretrained_cfg, as timm's eval transform does it.

Geometry matches timm's `transforms_imagenet_eval` with crop_mode "center": scale the image so it
covers input_size / crop_pct keeping its aspect ratio, then take the centre input_size crop. We crop
the original first and resize only that region with OpenCV (area filter when shrinking, like Pillow's
antialiasing), which is the same picture at a fraction of the cost for a large upload. The crop box
is returned in the original's pixel coordinates so heatmaps can be drawn back onto the upload.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_UPSCALE = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class DataConfig:
    """The preprocessing facts of a checkpoint (timm's resolved data config)."""
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    @classmethod
    def from_timm(cls, cfg: dict) -> "DataConfig":
        return cls(tuple(cfg["input_size"]), tuple(cfg["mean"]), tuple(cfg["std"]),
                   float(cfg.get("crop_pct") or 1.0), str(cfg.get("interpolation") or "bilinear"))


def crop_box(width: int, height: int, config: DataConfig) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the region of a width×height image that the model sees."""
    target_h, target_w = config.input_size[1:]
    scale_h, scale_w = math.floor(target_h / config.crop_pct), math.floor(target_w / config.crop_pct)
    ratio = min(height / scale_h, width / scale_w)  # original pixels per resized pixel
    box_w, box_h = min(width, target_w * ratio), min(height, target_h * ratio)
    left, top = round((width - box_w) / 2), round((height - box_h) / 2)
    return left, top, left + max(1, round(box_w)), top + max(1, round(box_h))


def crop_and_resize(rgb: np.ndarray, config: DataConfig) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The uint8 H×W×3 model-sized view of an image, and where it came from in the original."""
    height, width = rgb.shape[:2]
    box = crop_box(width, height, config)
    region = rgb[box[1]:box[3], box[0]:box[2]]
    target_h, target_w = config.input_size[1:]
    shrinking = region.shape[0] >= target_h and region.shape[1] >= target_w
    interpolation = cv2.INTER_AREA if shrinking else _UPSCALE.get(config.interpolation, cv2.INTER_LINEAR)
    return cv2.resize(region, (target_w, target_h), interpolation=interpolation), box


def normalize(batch_uint8: np.ndarray, config: DataConfig) -> np.ndarray:
    """N×H×W×3 uint8 → N×3×H×W float32, scaled and normalised with the checkpoint's mean and std."""
    mean = np.asarray(config.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(config.std, np.float32) * 255.0)
    out = (batch_uint8.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def preprocess(rgb: np.ndarray, config: DataConfig) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One RGB uint8 image → a 1×3×H×W float32 model input and the crop box in original pixels."""
    view, box = crop_and_resize(rgb, config)
    return normalize(view[None], config), box
