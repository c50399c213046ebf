"""``rtseg run --smooth K``: a flicker filter on label maps, the same for every engine.

Each frame's labels become the majority vote of its own prediction and the previous K-1
predictions, each carried onto the current frame along the optical flow (``scoring/flow.py``,
the flow temporal consistency uses). A pixel whose flow fails the forward–backward test
(an occlusion, a flow failure) gives no vote, and a tie keeps the current prediction. An
isolated one-frame flip is outvoted by the frames around it; a still scene stays as it is.
The price: a class that really appears where the past K-1 frames agreed on another one
shows a frame late (K = 3).

It works on labels after the engine, so the deploy graph does not change and every backend
gets it. Causal: no frame waits for a later one. Cost: two DIS flows and K-1 remaps a frame
(about 10 ms at 320×448 on one core of a 2-core AMD EPYC), spent in the overlay stage.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Optional

import numpy as np

from rtseg.pipeline.config import SMOOTH_MAX, SMOOTH_MIN
from rtseg.scoring.flow import NO_LABEL, DenseFlow, grey



def majority(stack: np.ndarray) -> np.ndarray:
    """Per-pixel vote over ``stack`` (uint8 [K, H, W]; ``stack[0]`` the current prediction,
    ``NO_LABEL`` no vote): the label most of the K hold; a tie keeps the earliest, so the
    current prediction wins every tie it is part of."""
    k = stack.shape[0]
    if k == 3:  # the common case, a third of the work: two agreeing past votes outvote it
        now, a, b = stack
        return np.where((a == b) & (a != NO_LABEL), a, now)
    counts = np.zeros(stack.shape, np.uint8)
    for i in range(k):
        for j in range(k):
            counts[i] += stack[i] == stack[j]
    counts[stack == NO_LABEL] = 0
    best = counts.argmax(axis=0)  # the first of the largest counts
    return np.take_along_axis(stack, best[None], axis=0)[0]


class FlowSmoother:
    """Smooths the label maps of one stream, frame after frame (see the module).

    ``__call__(frame, labels)``: ``frame`` the engine's input (BGR or grey, the labels'
    size); returns the filtered labels (a new array, or ``labels`` itself for a first frame).

    >>> smooth = FlowSmoother(3)
    >>> for frame, labels in stream:
    ...     shown = smooth(frame, labels)
    """

    def __init__(self, k: int, flow: Optional[DenseFlow] = None):
        if not SMOOTH_MIN <= k <= SMOOTH_MAX:
            raise ValueError(f"k must be from {SMOOTH_MIN} to {SMOOTH_MAX}, got {k}")
        self.k = k
        self.flow = flow or DenseFlow()
        self.history: deque[np.ndarray] = deque(maxlen=k - 1)  # on the previous frame
        self.previous: Optional[np.ndarray] = None  # the previous grey frame
        self.frames = 0
        self.seconds = 0.0

    def __call__(self, frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        g = grey(frame)
        if self.previous is None or self.previous.shape != g.shape:
            self.history.clear()  # nothing to vote with yet
            out = labels
        else:
            align = self.flow.align(g, self.previous)  # current pixels in the previous frame
            past = [align.warp(h) for h in self.history]
            self.history = deque(past, maxlen=self.k - 1)
            out = majority(np.stack([labels, *past]))
        self.history.appendleft(labels)  # the raw prediction votes, not the filtered one
        self.previous = g
        self.frames += 1
        self.seconds += time.perf_counter() - t0
        return out

    def mean_ms(self) -> Optional[float]:
        """Mean milliseconds per frame spent filtering (None before a frame)."""
        return 1000.0 * self.seconds / self.frames if self.frames else None
