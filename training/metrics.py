"""Classification metrics for a probability matrix, from scikit-learn, with lesion-level bootstrap intervals."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, log_loss,
                             roc_auc_score)

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al. 2017)."""
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = (predicted == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def macro_auc(y: np.ndarray, probs: np.ndarray, n_classes: int) -> float:
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    # One-vs-rest per class present; a class absent from y has no defined AUC.
    return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))


def classification_metrics(y: np.ndarray, probs: np.ndarray, labels: list[str],
                           groups: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Everything evaluate reports, for integer labels y (indices into labels) and N×C probabilities."""
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    k = len(labels)
    predicted = probs.argmax(1)
    cm = confusion_matrix(y, predicted, labels=list(range(k)))
    per_class = {}
    for c, name in enumerate(labels):
        tp, fn = cm[c, c], cm[c].sum() - cm[c, c]
        fp = cm[:, c].sum() - tp
        tn = cm.sum() - tp - fn - fp
        positives = int((y == c).sum())
        per_class[name] = {
            "n": positives,
            "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
            "specificity": float(tn / (tn + fp)) if tn + fp else None,
            "auc": float(roc_auc_score(y == c, probs[:, c])) if 0 < positives < len(y) else None,
        }
    result = {
        "n": int(len(y)),
        "labels": list(labels),
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "macro_auc": macro_auc(y, probs, k),
        "log_loss": float(log_loss(y, np.clip(probs, 1e-12, 1), labels=list(range(k)))),
        "ece": expected_calibration_error(probs, y),
        "ece_bins": ECE_BINS,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
    result["ci95"] = bootstrap_intervals(y, probs, groups, n_boot, seed) if n_boot else {}
    return result


def bootstrap_intervals(y, probs, groups=None, n_boot=1000, seed=0) -> dict:
    """Percentile 95% intervals for balanced accuracy and macro AUC.

    Resamples lesions (groups) rather than images when lesion ids are known: photos of one lesion are
    not independent, and resampling them separately would make the interval too narrow.
    """
    rng = np.random.default_rng(seed)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    predicted = probs.argmax(1)
    bal, auc = [], []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(unique), len(unique))])
        yb = y[idx]
        if len(np.unique(yb)) < len(np.unique(y)):
            continue  # a resample that lost a class would change what the metric means
        bal.append(balanced_accuracy_score(yb, predicted[idx]))
        auc.append(macro_auc(yb, probs[idx], probs.shape[1]))
    interval = lambda v: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None  # noqa: E731
    return {"balanced_accuracy": interval(bal), "macro_auc": interval(auc),
            "n_boot": len(bal), "resampled": "lesions" if len(unique) < len(y) else "images"}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (Guo et al. 2017), by LBFGS."""
    import torch

    z, t = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(y, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))
