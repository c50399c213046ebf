"""Temporal consistency (TC): how much a per-frame segmenter flickers, with no labels needed.

The measure of Liu et al. (ECCV 2020, "Efficient Semantic Video Segmentation with Per-frame
Inference"), also VSPW's: the prediction of frame t+1 is warped back onto frame t along the
optical flow, and the intersection and union of every class between the two are summed over
all consecutive pairs; a class's TC is its summed intersection over its summed union, and TC
is the mean over the classes present. A perfectly stable segmentation of a scene whose
motion the flow follows scores 1.

Here the flow is DIS on grey frames at the engine's input size (``scoring/flow.py``), and the
predictions are the engine's label maps at that size. Pixels whose flow fails the
forward–backward test (occlusions, flow failures) are left out of the sums; their share is
reported as ``tc_flow_rejected``. (Liu et al. and VSPW keep every pixel and use RAFT, a far
heavier flow; the numbers are comparable between rtseg runs, not with those papers'.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from rtseg.data.datasets import png_size
from rtseg.files import json_safe
from rtseg.scoring.flow import NO_LABEL, Alignment, DenseFlow, grey

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def pair_counts(labels_a: np.ndarray, warped_b: np.ndarray,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (intersection, union) pixel counts between ``labels_a`` and ``warped_b`` (the
    next prediction warped onto a), over the pixels where ``warped_b`` is not ``NO_LABEL``."""
    keep = (warped_b != NO_LABEL) & (labels_a < num_classes) & (warped_b < num_classes)
    a = labels_a[keep].astype(np.int64)
    b = warped_b[keep].astype(np.int64)
    joint = np.bincount(a * num_classes + b, minlength=num_classes * num_classes)
    joint = joint.reshape(num_classes, num_classes)
    inter = np.diag(joint).copy()
    union = joint.sum(axis=0) + joint.sum(axis=1) - inter
    return inter, union


class TemporalConsistency:
    """Accumulates TC over the consecutive frames of one stream.

    ``add(frame, labels)`` for each frame in order (``frame``: BGR or grey at the labels'
    size, the engine's input); ``add(..., follows=False)`` starts a new run of frames (a
    gap: the pair across it is not scored). ``result()``: the run JSON's ``tc`` keys.

    >>> tc = TemporalConsistency(class_names)
    >>> for frame, labels in zip(frames, predictions):
    ...     tc.add(frame, labels)
    >>> tc.result()["tc"]
    """

    def __init__(self, class_names: Sequence[str], flow: Optional[DenseFlow] = None):
        self.class_names = list(class_names)
        n = len(self.class_names)
        self.intersection = np.zeros(n, np.int64)
        self.union = np.zeros(n, np.int64)
        self.pairs = 0
        self.pixels = 0  # pixels of the scored pairs' first frames
        self.rejected = 0  # of those, left out by the flow check
        self.flow = flow or DenseFlow()
        self._previous: Optional[tuple[np.ndarray, np.ndarray]] = None

    def add(self, frame: np.ndarray, labels: np.ndarray, follows: bool = True) -> None:
        """The next frame of the stream and its prediction (same H, W); scores the pair with
        the previous frame unless ``follows`` is False or the size changed."""
        g = grey(frame)
        if g.shape != labels.shape:
            raise ValueError(f"frame {g.shape} and labels {labels.shape} differ in size")
        previous, self._previous = self._previous, (g, labels)
        if follows and previous is not None and previous[0].shape == g.shape:
            self.add_pair(previous[1], labels, self.flow.align(previous[0], g))

    def add_pair(self, labels_a: np.ndarray, labels_b: np.ndarray, align: Alignment) -> None:
        """Score one pair: ``labels_b`` (frame t+1) warped onto ``labels_a`` (frame t) by
        ``align`` (where t's pixels are in t+1)."""
        inter, union = pair_counts(labels_a, align.warp(labels_b), len(self.class_names))
        self.intersection += inter
        self.union += union
        self.pairs += 1
        self.pixels += labels_a.size
        self.rejected += int(labels_a.size - np.count_nonzero(align.valid))

    def per_class(self) -> np.ndarray:
        """TC of each class; NaN for a class in no scored pixel of either frame."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1),
                            np.nan)

    def tc(self) -> Optional[float]:
        """Mean TC over the classes present; None before a pair was scored."""
        values = self.per_class()
        return float(np.nanmean(values)) if np.isfinite(values).any() else None

    def result(self) -> dict:
        """``tc`` (in [0, 1], None before any pair), ``tc_per_class`` (class name → TC, None
        for a class never seen), ``tc_pairs`` and ``tc_flow_rejected`` (share of the scored
        pixels left out by the forward–backward flow check)."""
        return {"tc": self.tc(),
                "tc_per_class": json_safe(dict(zip(self.class_names,
                                                   map(float, self.per_class())))),
                "tc_pairs": self.pairs,
                "tc_flow_rejected": self.rejected / self.pixels if self.pixels else None}


# -- is a folder of frames a sequence? -------------------------------------------------------
def _numbering(name: str) -> Optional[tuple[str, int]]:
    """``"0016E5_07959"`` → ("0016E5_#", 7959): the name with its last number taken out,
    and that number; None for a name without a digit."""
    m = _LAST_NUMBER.search(name)
    if m is None:
        return None
    return name[:m.start()] + "#" + name[m.end():], int(m.group(1))


def follows(previous: str, name: str) -> bool:
    """Whether frame file ``name`` can follow ``previous`` in one clip: both numbered in one
    scheme (equal but for their last number, as ``0016E5_07959.png``, ``0016E5_07961.png``)
    and the number growing."""
    a, b = _numbering(Path(previous).stem), _numbering(Path(name).stem)
    return a is not None and b is not None and a[0] == b[0] and b[1] > a[1]


def sequence_problem(files: Sequence[Path]) -> Optional[str]:
    """Why ``files`` (frames in file-name order) are not the frames of one clip, or None.

    TC compares each frame with the next, which only means something for consecutive frames
    of one camera. A folder passes when it holds at least two frames, all numbered in one
    scheme (see :func:`follows`) and all of one size (read from PNG headers; other formats
    are not opened here).
    """
    if len(files) < 2:
        return "needs at least two frames"
    for a, b in zip(files, files[1:]):
        if not follows(a.name, b.name):
            return (f"{a.name} and {b.name} are not numbered as consecutive frames of one "
                    "clip (names equal but for a frame number growing in name order: "
                    "zero-pad the numbers)")
    known = [(f, s) for f in files if (s := png_size(f)) is not None]
    for (f0, s0), (f, s) in zip(known, known[1:]):
        if s != s0:
            return (f"{f0.name} is {s0[1]}×{s0[0]} but {f.name} is {s[1]}×{s[0]}: frames of one "
                    "clip have one size")
    return None
