"""Batched augmentation for dermoscopy, done on the whole batch at once so 2 CPU cores go to training.

One affine warp per image combines a random resized crop, any rotation and both flips (a lesion has
no up, down, left or right); then mild brightness, contrast and saturation jitter.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(batch_uint8: torch.Tensor, out_size: tuple[int, int], generator: torch.Generator,
                  scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """N×H×W×3 uint8 → N×3×h×w float in [0, 1], each image cropped, rotated and flipped at random."""
    x = batch_uint8.permute(0, 3, 1, 2).float().div_(255)
    n, _, in_h, in_w = x.shape
    u = lambda: torch.rand(n, generator=generator)  # noqa: E731
    area = scale[0] + (scale[1] - scale[0]) * u()
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u()
    sx, sy = (area * log_r.exp()).sqrt(), (area / log_r.exp()).sqrt()  # fraction of width / height
    sx = sx * torch.where(u() < 0.5, -1.0, 1.0)
    sy = sy * torch.where(u() < 0.5, -1.0, 1.0)
    angle = 2 * math.pi * u()
    cos, sin = angle.cos(), angle.sin()
    # In pixel space: rotate the scaled crop; then back to normalised input coordinates.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin * sy * in_h / in_w
    theta[:, 1, 0] = sin * sx * in_w / in_h
    theta[:, 1, 1] = cos * sy
    theta[:, 0, 2] = (1 - sx.abs()) * (2 * u() - 1)
    theta[:, 1, 2] = (1 - sy.abs()) * (2 * u() - 1)
    grid = F.affine_grid(theta, (n, 3, *out_size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Mild per-image brightness, contrast and saturation changes on N×3×H×W in [0, 1]."""
    n = x.shape[0]
    factor = lambda: 1 + strength * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)  # noqa: E731
    x = x * factor()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray) * factor() + gray
    return x.clamp_(0, 1)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
