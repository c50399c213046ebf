"""Segmentation metrics from one confusion matrix, shared by train, eval, run and bench."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rtseg.files import json_safe


class ConfusionMatrix:
    """Accumulates a ``num_classes × num_classes`` confusion matrix (rows: truth, cols: prediction).

    Pixels whose truth equals ``ignore_index`` (or any id ≥ num_classes) are not counted.
    A prediction outside [0, num_classes) is a bug in the engine and raises ValueError.

    Label maps may be numpy arrays or torch tensors. Tensors are counted where they live (a
    GPU's counts stay on the GPU, nothing is copied per batch) and join ``matrix`` when it is
    next read; a bad prediction among them raises then.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self._device_counts: Any = None  # a torch tensor of bin counts, see ``_bins``

    def _bins(self, t, p):
        """Bin of every pixel (int64 numpy arrays or torch tensors, flat):
        ``n * truth + prediction``; ``n²`` for a pixel not scored, ``n² + 1`` for a scored
        pixel with a prediction out of range."""
        n = self.num_classes
        keep = (t >= 0) & (t < n)
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        bad = keep & ((p < 0) | (p >= n))
        good = keep & ~bad
        return (n * t + p) * good + (n * n + bad) * ~good

    def _add(self, counts: np.ndarray) -> None:
        n = self.num_classes
        if counts[n * n + 1]:
            raise ValueError(f"prediction holds class ids outside [0, {n})")
        self._matrix += counts[: n * n].reshape(n, n)

    def update(self, target, prediction) -> None:
        """Add one batch of label maps (any shape, the same for both; numpy or torch)."""
        if tuple(target.shape) != tuple(prediction.shape):
            raise ValueError(f"target {tuple(target.shape)} and prediction "
                             f"{tuple(prediction.shape)} differ")
        bins = self.num_classes ** 2 + 2
        if isinstance(target, np.ndarray):
            codes = self._bins(target.reshape(-1).astype(np.int64),
                               np.asarray(prediction).reshape(-1).astype(np.int64))
            self._add(np.bincount(codes, minlength=bins))
            return
        counts = self._bins(target.reshape(-1).long(), prediction.reshape(-1).long()
                            ).bincount(minlength=bins)
        if self._device_counts is not None:
            counts += self._device_counts
        self._device_counts = counts

    @property
    def matrix(self) -> np.ndarray:
        """The int64 counts (rows: truth, cols: prediction), device counts included."""
        if self._device_counts is not None:
            counts, self._device_counts = self._device_counts.cpu().numpy(), None
            self._add(counts)
        return self._matrix

    @matrix.setter
    def matrix(self, value: np.ndarray) -> None:
        self._device_counts = None
        self._matrix = np.asarray(value, dtype=np.int64).reshape(self._matrix.shape)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both truth and prediction."""
        m = self.matrix
        tp = np.diag(m).astype(np.float64)
        union = m.sum(axis=1) + m.sum(axis=0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present (in truth or prediction); NaN if none."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / scored pixels; NaN before any pixel was scored."""
        m = self.matrix
        total = m.sum()
        return float(np.diag(m).sum() / total) if total else float("nan")

    def report(self, class_names: Sequence[str]) -> dict:
        """``{"miou", "per_class_iou", "pixel_accuracy"}``, the scores every command reports.

        ``per_class_iou`` maps each class name to its IoU, None for a class absent from truth
        and prediction alike; ``miou`` and ``pixel_accuracy`` stay NaN when nothing was scored
        (written as null to JSON).
        """
        return {"miou": self.miou(),
                "per_class_iou": json_safe(dict(zip(class_names, map(float, self.iou())))),
                "pixel_accuracy": self.pixel_accuracy()}
