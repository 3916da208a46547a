"""Preprocessing driven by a checkpoint's pretrained_cfg, exactly as timm's eval transform does it.

timm's `transforms_imagenet_eval` (crop_mode "center") resizes the image, keeping its aspect ratio,
so that it covers input_size / crop_pct, then takes the centre input_size crop (padding with black
where the image is smaller). We follow its geometry to the pixel, including its rounding, and resize
with the checkpoint's own interpolation, antialiased as Pillow does it: PyTorch's uint8 antialiased
kernels give Pillow's result to within one grey level at about a quarter of the cost of OpenCV's area
filter. So the model sees the picture timm would show it (tested against timm itself). The crop box
is returned in the original's pixel coordinates so heatmaps can be drawn back onto the upload.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# timm's interpolation names → PyTorch modes; "nearest-exact" samples pixel centres as Pillow does.
# Filters PyTorch lacks (box, hamming, lanczos) take the closest antialiased one.
_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact",
          "box": "bilinear", "hamming": "bilinear", "lanczos": "bicubic"}


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


def resized_size(height: int, width: int, config: DataConfig) -> tuple[int, int]:
    """(height, width) that timm's eval transform resizes a height×width image to before cropping."""
    scale_h, scale_w = (math.floor(t / config.crop_pct) for t in config.input_size[1:])
    if scale_h == scale_w:
        # torchvision's Resize(int): the shorter edge to the scale, the longer one truncated
        long = int(scale_h * max(height, width) / min(height, width))
        return (scale_h, long) if height <= width else (long, scale_h)
    ratio = min(height / scale_h, width / scale_w)  # timm's ResizeKeepRatio (longest=0)
    return round(height / ratio), round(width / ratio)


def _crop_start(size: int, target: int) -> int:
    """Where torchvision's CenterCrop starts along one axis: half the excess rounded half to even, or
    minus the padding it adds when the image is smaller than the crop."""
    return round((size - target) / 2.0) if size >= target else -((target - size) // 2)


def crop_and_resize(rgb: np.ndarray, config: DataConfig) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The uint8 H×W×3 model-sized view of an image, and the box (left, top, right, bottom) it shows
    in the original's pixels (clipped to the image where the crop had to pad)."""
    view, box = _model_view(rgb, config)
    return view[0].permute(1, 2, 0).numpy(), box


def normalize(batch_uint8: np.ndarray, config: DataConfig) -> np.ndarray:
    """N×H×W×3 uint8 → N×3×H×W float32, scaled and normalised with the checkpoint's mean and std."""
    return _normalize(torch.from_numpy(batch_uint8).permute(0, 3, 1, 2), config)


def preprocess(rgb: np.ndarray, config: DataConfig) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One RGB uint8 image → a 1×3×H×W float32 model input and the crop box in original pixels."""
    view, box = _model_view(rgb, config)
    return _normalize(view, config), box


def _model_view(rgb: np.ndarray, config: DataConfig) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """1×3×H×W uint8: the resized centre crop (a view where possible), and its box in the original."""
    height, width = rgb.shape[:2]
    new_h, new_w = resized_size(height, width, config)
    mode = _MODES.get(config.interpolation, "bilinear")
    if not rgb.flags.writeable:  # torch.from_numpy shares memory and insists on a writable array
        rgb = rgb.copy()
    # An H×W×3 array seen as 1×3×H×W is channels-last, the layout PyTorch's fast uint8 kernels take.
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    resized = F.interpolate(x, size=(new_h, new_w), mode=mode, antialias=mode != "nearest-exact")
    target_h, target_w = config.input_size[1:]
    top, left = _crop_start(new_h, target_h), _crop_start(new_w, target_w)
    view = resized[:, :, max(top, 0):top + target_h, max(left, 0):left + target_w]
    if view.shape[2:] != (target_h, target_w):  # crop_pct > 1: black borders, as torchvision pads
        padded = torch.zeros((1, 3, target_h, target_w), dtype=torch.uint8)
        padded[:, :, max(-top, 0):max(-top, 0) + view.shape[2], max(-left, 0):max(-left, 0) + view.shape[3]] = view
        view = padded
    sy, sx = height / new_h, width / new_w
    box = (max(0, round(left * sx)), max(0, round(top * sy)),
           min(width, round((left + target_w) * sx)), min(height, round((top + target_h) * sy)))
    return view, box


def _normalize(x: torch.Tensor, config: DataConfig) -> np.ndarray:
    """N×3×H×W uint8 (any strides) → contiguous float32 (x − mean) / std, in one pass."""
    scale, shift = _affine(config)
    out = torch.empty(x.shape, dtype=torch.float32)
    return torch.addcmul(shift, x, scale, out=out).numpy()


@functools.lru_cache(maxsize=8)
def _affine(config: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 / std, −mean / std) per channel, on the 0–255 scale, shaped to broadcast over N×3×H×W."""
    mean = torch.tensor(config.mean, dtype=torch.float64).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config.std, dtype=torch.float64).view(1, 3, 1, 1) * 255.0
    return (1.0 / std).float(), (-mean / std).float()
