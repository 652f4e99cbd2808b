"""Accuracy summaries shared by the patch classifiers (linear probe, kNN)."""

from __future__ import annotations

import numpy as np


def per_class_accuracy(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes,)`` recall of each class; NaN for a class absent from ``target``."""
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        present = target == c
        if present.any():
            out[c] = float(np.mean(predicted[present] == c))
    return out


def balanced_accuracy(per_class: np.ndarray) -> float:
    """Mean recall over the classes present in the target (the NaN-free entries of ``per_class``)."""
    present = per_class[~np.isnan(per_class)]
    return float(present.mean()) if present.size else float("nan")
