"""Dense optical flow between two frames and label maps carried along it: what temporal
consistency (``scoring/temporal.py``) and the flicker filter (``pipeline/smooth.py``) share.

The flow is OpenCV's DIS (Kroeger et al., ECCV 2016) on grey frames, so nothing beyond
OpenCV is needed; it costs about 4 ms a pair at 320×448 on one core of a 2-core AMD EPYC.
A pixel whose flow is not trusted — it leaves the picture, or the backward flow does not
bring it back to where it started (occlusions, flow failures) — is *rejected*: it takes no
part in a score or a vote. The forward–backward test has the form of Sundaram, Brox and
Keutzer's (ECCV 2010): ``|w + ŵ|² ≤ FB_RELATIVE (|w|² + |ŵ|²) + FB_ABSOLUTE``, ŵ the backward
flow at the point the forward flow reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

NO_LABEL = 255  # a warped label map's pixel whose flow was rejected (no class has this id)
# The forward–backward test's tolerances (px²): Sundaram et al. use 0.01 and 0.5; DIS's flow
# is noisier in textureless sky and road, where those reject a quarter of a dashcam frame
# whose labels there are one class anyway.
FB_RELATIVE, FB_ABSOLUTE = 0.05, 2.0


def grey(frame: np.ndarray) -> np.ndarray:
    """A BGR (or already grey) uint8 frame as one contiguous grey channel."""
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


@dataclass
class Alignment:
    """Where each pixel of frame ``a`` is in frame ``b``: a sampling map for ``cv2.remap``
    and whether the flow there passed the forward–backward test."""

    map_xy: np.ndarray  # float32 [H, W, 2]: (x, y) in b of each pixel of a
    valid: np.ndarray  # bool [H, W]

    @property
    def rejected(self) -> float:
        """Share of a's pixels whose flow was rejected."""
        return 1.0 - np.count_nonzero(self.valid) / self.valid.size

    def warp(self, labels_b: np.ndarray) -> np.ndarray:
        """``labels_b`` (a label map of frame b) brought onto frame a, nearest neighbour;
        rejected pixels are ``NO_LABEL``."""
        warped = cv2.remap(labels_b, self.map_xy, None, cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=NO_LABEL)
        warped[~self.valid] = NO_LABEL
        return warped


class DenseFlow:
    """DIS optical flow between grey frames of one size. One per thread: OpenCV's DIS object
    keeps state between calls, and the buffers below are reused.

    The arrays of an :class:`Alignment` are this object's buffers: use it (warp with it)
    before the next :meth:`align`. Reusing them matters: a fresh megabyte array costs its
    page faults on every call, which on the 2-core development VM tripled the cost of the
    forward–backward test.

    >>> align = DenseFlow().align(grey_t, grey_t1)   # where frame t's pixels are in t+1
    >>> labels_t1_on_t = align.warp(labels_t1)
    """

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST):
        self.dis = cv2.DISOpticalFlow_create(preset)
        self._grid: dict[tuple[int, int], np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """float32 [H, W, 2]: the (dx, dy) that takes each pixel of grey ``a`` to ``b``.
        (A new array: DIS takes an array passed in as its starting guess.)"""
        return self.dis.calc(a, b, None)

    def grid(self, h: int, w: int) -> np.ndarray:
        """Pixel coordinates, float32 [H, W, 2] of (x, y), built once per size."""
        if (h, w) not in self._grid:
            ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
            self._grid[(h, w)] = np.dstack([xs, ys])
        return self._grid[(h, w)]

    def buffer(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """A reusable array (made again only when the size changes)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype)
        return buf

    def align(self, a: np.ndarray, b: np.ndarray) -> Alignment:
        """Where each pixel of grey frame ``a`` is in grey frame ``b`` (same size), with the
        forward–backward test (two flows, a→b and b→a). Valid until the next call."""
        if a.shape != b.shape:
            raise ValueError(f"frames of different sizes {a.shape} and {b.shape}")
        h, w = a.shape[:2]
        forward, backward = self.flow(a, b), self.flow(b, a)
        return alignment(forward, backward, self.grid(h, w), self.buffer)


OUTSIDE = 1e6  # the backward flow "read" outside frame b: fails the test by any margin
SUM_XY = np.ones((1, 2), np.float32)  # cv2.transform's matrix: dx² + dy² of each pixel


def alignment(forward: np.ndarray, backward: np.ndarray, grid: np.ndarray,
              buffer: Optional[Callable[..., np.ndarray]] = None) -> Alignment:
    """The :class:`Alignment` of a→b from the flows a→b (``forward``, overwritten) and b→a
    (``backward``); ``grid`` the pixel coordinates (:meth:`DenseFlow.grid`); ``buffer(name,
    shape[, dtype])`` supplies reusable arrays (default: new ones). A pixel whose flow leaves
    the picture fails the test."""
    h, w = forward.shape[:2]
    buffer = buffer or (lambda _name, shape, dtype=np.float32: np.empty(shape, dtype))
    map_xy = cv2.add(grid, forward, dst=buffer("map", (h, w, 2)))
    back = cv2.remap(backward, map_xy, None, cv2.INTER_LINEAR, dst=buffer("back", (h, w, 2)),
                     borderMode=cv2.BORDER_CONSTANT, borderValue=(OUTSIDE, OUTSIDE))
    loop = cv2.add(forward, back, dst=buffer("loop", (h, w, 2)))  # ≈ 0: there and back
    cv2.multiply(loop, loop, dst=loop)
    loop_sq = cv2.transform(loop, SUM_XY, dst=buffer("loop_sq", (h, w)))
    cv2.multiply(forward, forward, dst=forward)
    cv2.multiply(back, back, dst=back)
    cv2.add(forward, back, dst=forward)
    limit = cv2.transform(forward, SUM_XY, dst=buffer("limit", (h, w)))
    np.multiply(limit, FB_RELATIVE, out=limit)
    np.add(limit, FB_ABSOLUTE, out=limit)
    valid = np.less_equal(loop_sq, limit, out=buffer("valid", (h, w), bool))
    return Alignment(map_xy, valid)
