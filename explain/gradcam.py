"""Grad-CAM for every class of a timm CNN, from the forward pass that gave the probabilities.

Grad-CAM (Selvaraju et al. 2017) weights the last feature map A (K×h×w) by the mean gradient of a
class score over it: cam_c = ReLU(Σ_k α_ck A_k), α_ck = mean_ij ∂y_c/∂A_kij. For a head that is global
average pooling then a linear layer, y_c = Σ_k W_ck mean_ij A_kij + b_c, so α_ck = W_ck / (h·w): the
weights are the classifier's own and all classes' maps cost one matrix product, no backward pass.
Other heads take the general path: one backward pass per class through forward_head.
"""
from __future__ import annotations

import numpy as np


def _normalize(cams: np.ndarray) -> np.ndarray:
    """ReLU, then each map scaled to [0, 1] as pytorch-grad-cam does (an all-zero map stays zero)."""
    cams = np.maximum(cams, 0)
    low = cams.min(axis=(1, 2), keepdims=True)
    high = cams.max(axis=(1, 2), keepdims=True)
    return ((cams - low) / (high - low + 1e-7)).astype(np.float32)


def cams_from_linear_head(features: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """C×h×w maps for all classes from features K×h×w and classifier weights C×K."""
    k, h, w = features.shape
    return _normalize((weight @ features.reshape(k, h * w)).reshape(-1, h, w))


def cams_from_gradients(model, features: np.ndarray) -> np.ndarray:
    """C×h×w maps for any head, by autograd through model.forward_head (one backward per class)."""
    import torch

    device = next(model.parameters()).device
    a = torch.from_numpy(features[None]).to(device).requires_grad_(True)
    with torch.enable_grad():
        logits = model.forward_head(a)[0]
        cams = []
        for c in range(logits.shape[0]):
            (grad,) = torch.autograd.grad(logits[c], a, retain_graph=c < logits.shape[0] - 1)
            alpha = grad[0].mean(dim=(1, 2))
            cams.append((alpha[:, None, None] * a[0]).sum(0))
    return _normalize(torch.stack(cams).detach().float().cpu().numpy())


def class_activation_maps(classifier, prediction) -> np.ndarray:
    """Grad-CAM maps (C×h×w, in [0, 1], label order) for every class of one prediction."""
    if classifier.linear_head is not None:
        return cams_from_linear_head(prediction.features, classifier.linear_head[0])
    return cams_from_gradients(classifier.model, prediction.features)
