"""Segmentation metrics from one confusion matrix, shared by train, eval, run and bench."""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Accumulates a ``num_classes × num_classes`` confusion matrix (rows: truth, cols: prediction).

    Pixels whose truth equals ``ignore_index`` (or any id ≥ num_classes) are not counted.
    A prediction outside [0, num_classes) is a bug in the engine and raises ValueError.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target: np.ndarray, prediction: np.ndarray) -> None:
        """Add one batch of label maps (any shape, same for both)."""
        if target.shape != prediction.shape:
            raise ValueError(f"target {target.shape} and prediction {prediction.shape} differ")
        n = self.num_classes
        t = target.reshape(-1).astype(np.int64)
        p = prediction.reshape(-1).astype(np.int64)
        keep = (t >= 0) & (t < n)
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        t, p = t[keep], p[keep]
        if p.size and (p.min() < 0 or p.max() >= n):
            raise ValueError(f"prediction holds class ids outside [0, {n})")
        self.matrix += np.bincount(n * t + p, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix of the same shape (e.g. from another rank or worker)."""
        self.matrix += other.matrix

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.matrix[:] = 0

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=1) + self.matrix.sum(axis=0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present (in truth or prediction); NaN if none."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / scored pixels; NaN before any pixel was scored."""
        total = self.matrix.sum()
        return float(np.diag(self.matrix).sum() / total) if total else float("nan")
