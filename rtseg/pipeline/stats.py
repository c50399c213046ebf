"""Run statistics shared by the stage threads: per-stage time, latency, FPS, queue depths.

Every stage thread reports into one :class:`RunStats` under a lock (a few dict updates per
frame, negligible next to the work); the main thread reads ``snapshot()`` for the live
status line and ``summary()`` for the run JSON.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Mapping, Optional

import numpy as np

STAGES = ("capture", "preprocess", "infer", "overlay", "write")
LATENCY_WINDOW = 200_000  # latencies kept for p50/p99 (bounded for day-long streams)
RECENT = 32  # frames the "current FPS" of the status line is measured over


class RunStats:
    """Thread-safe accumulators of one pipeline run."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seconds = {s: 0.0 for s in STAGES}
        self._frames = {s: 0 for s in STAGES}
        # Capture→written seconds of the last LATENCY_WINDOW frames, a ring indexed by the
        # frame count: the stages write one slot, readers copy a slice (fast under the lock).
        self._latency = np.empty(LATENCY_WINDOW)
        self._recent: deque[float] = deque(maxlen=RECENT)
        self.queue_max: dict[str, int] = {}
        self.frames = 0  # written by every sink
        self.dropped = 0  # live frames dropped because the pipeline was behind
        self.t_start: Optional[float] = None
        self.t_last: Optional[float] = None
        self.ended_by = ""

    def start(self) -> None:
        """Mark the start of the run (FPS and ``seconds`` are measured from here)."""
        self.t_start = time.perf_counter()

    def add(self, stage: str, seconds: float, frames: int) -> None:
        """``frames`` frames spent ``seconds`` in ``stage`` (a batch counts all its frames)."""
        with self._lock:
            self._seconds[stage] += seconds
            self._frames[stage] += frames

    def add_dropped(self, n: int) -> None:
        if n:
            with self._lock:
                self.dropped += n

    def observe_queue(self, name: str, depth: int) -> None:
        """Remember the deepest a queue has been (to show the bound holds)."""
        if depth > self.queue_max.get(name, -1):
            with self._lock:
                self.queue_max[name] = max(depth, self.queue_max.get(name, 0))

    def frame_written(self, t_capture: float) -> None:
        """A frame left the last sink: count it and its capture→written latency."""
        now = time.perf_counter()
        with self._lock:
            self._latency[self.frames % LATENCY_WINDOW] = now - t_capture
            self.frames += 1
            self._recent.append(now)
            self.t_last = now

    def stage_ms(self) -> dict[str, Optional[float]]:
        """Mean milliseconds per frame of each stage (None before a stage saw a frame)."""
        with self._lock:
            return {s: (1000.0 * self._seconds[s] / self._frames[s] if self._frames[s] else None)
                    for s in STAGES}

    def seconds(self) -> float:
        """Wall time from the start to the last frame written (or to now, before any)."""
        if self.t_start is None:
            return 0.0
        end = self.t_last if self.t_last is not None else time.perf_counter()
        return max(end - self.t_start, 0.0)

    def fps(self) -> float:
        """Frames written per second over the whole run."""
        s = self.seconds()
        return self.frames / s if s > 0 else 0.0

    def recent_fps(self) -> float:
        """Frames per second over the last few frames (what the status line shows)."""
        with self._lock:
            times = list(self._recent)
        if len(times) < 2 or times[-1] <= times[0]:
            return self.fps()
        return (len(times) - 1) / (times[-1] - times[0])

    def recent_latency_ms(self) -> Optional[float]:
        """Mean capture→written latency of the last few frames in milliseconds (None before
        any): the latency curve of the live page."""
        with self._lock:
            n = min(RECENT, self.frames)
            recent = self._latency[(self.frames - 1 - np.arange(n)) % LATENCY_WINDOW]
        return 1000.0 * float(recent.mean()) if n else None

    def latency_ms(self) -> dict[str, Optional[float]]:
        """p50 and p99 of capture→written latency in milliseconds."""
        with self._lock:  # a cheap copy under the lock (the stages wait on it), the rest outside
            lat = self._latency[:min(self.frames, LATENCY_WINDOW)].copy()
        if lat.size == 0:
            return {"p50": None, "p99": None}
        p50, p99 = np.percentile(lat * 1000.0, [50, 99])
        return {"p50": float(p50), "p99": float(p99)}

    def snapshot(self, queue_depths: Mapping[str, int]) -> dict:
        """What the live status line shows."""
        return {"frames": self.frames, "fps": self.recent_fps(), "dropped": self.dropped,
                "stage_ms": self.stage_ms(), "queues": dict(queue_depths),
                "seconds": self.seconds()}

    def summary(self) -> dict:
        """The contract's timing keys of the run JSON."""
        return {"frames": self.frames, "seconds": self.seconds(), "fps": self.fps(),
                "dropped": self.dropped, "stage_ms": self.stage_ms(),
                "latency_ms": self.latency_ms()}


def bound_by(stage_ms: Mapping[str, Optional[float]]) -> Optional[str]:
    """The stage that took the most ms per frame (the one that bounds the frame rate); None
    when no stage was timed."""
    known = {k: v for k, v in stage_ms.items() if v is not None}
    return max(known, key=known.get) if known else None


def format_status(snap: Mapping) -> str:
    """One short line for a terminal:
    ``123 frames 24.8 FPS | ms cap 3.1 pre 0.4 infer 38.0 post 2.9 write 5.1 | q 2/1/0/0 | drop 0``
    (queue depths in pipeline order: capture, batches, labels, rendered), then
    ``| TC 0.953`` when the snapshot has a ``tc`` (``--consistency``)."""
    def ms(v):
        return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"

    short = {"capture": "cap", "preprocess": "pre", "infer": "infer", "overlay": "post",
             "write": "write"}
    stages = " ".join(f"{short.get(name, name)} {ms(v)}" for name, v in snap["stage_ms"].items())
    queues = "/".join(str(v) for v in snap["queues"].values())
    tc = f" | TC {snap['tc']:.3f}" if snap.get("tc") is not None else ""
    return (f"{snap['frames']:6d} frames {snap['fps']:6.1f} FPS | ms {stages} | "
            f"q {queues} | drop {snap['dropped']}{tc}")
