"""Batches across several streams: up to ``size`` frames, taken round-robin from the streams'
capture queues, sent when full or ``timeout_s`` after its first frame (as DeepStream's
nvstreammux with ``batched-push-timeout``).

Fairness: each pass over the streams takes at most one frame from each, and the next batch
starts with the stream after the last one served, so a fast stream cannot starve a slow one
and a stalled stream holds a batch back by ``timeout_s`` at most. A stream's END (its capture
ended or failed) is passed on with the batch sent after it (see :class:`Gathered`), so the
stages after the engine know when that stream's last frame has gone by.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from rtseg.pipeline.frames import Frame
from rtseg.pipeline.queues import END, POLL_S, Stopped


@dataclass
class Gathered:
    """One batch's frames (possibly none) and the streams that ended before it was sent."""

    frames: list[Frame] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)  # stream numbers: no frame of theirs follows


class Batcher:
    """Iterate to get :class:`Gathered` batches from ``queues`` (one per stream, each ending
    with END) until every stream has ended. ``ready`` is set by the capture threads after
    each put, so an idle batcher sleeps instead of polling; ``stop`` (a hard stop) raises
    ``queues.Stopped``."""

    def __init__(self, queues: Sequence[queue.Queue], size: int, timeout_s: float,
                 stop: threading.Event, ready: threading.Event):
        self.queues, self.size, self.timeout_s = list(queues), size, timeout_s
        self.stop, self.ready = stop, ready
        self.active = list(range(len(self.queues)))  # streams not ended, in serving order

    def __iter__(self) -> Iterator[Gathered]:
        while self.active:
            yield self._gather()

    def _gather(self) -> Gathered:
        got, deadline = Gathered(), None
        while self.active and len(got.frames) < self.size:
            self.ready.clear()  # before looking: a put from now on wakes the wait below
            if self._one_pass(got):
                if deadline is None and got.frames:
                    deadline = time.monotonic() + self.timeout_s
                continue
            if got.ended and not got.frames:  # pass the end on at once
                break
            if deadline is not None and time.monotonic() >= deadline:
                break  # partial batch: a stalled stream holds the others back no longer
            if self.stop.is_set():
                raise Stopped
            wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            self.ready.wait(max(wait, 0.0))
        return got

    def _one_pass(self, got: Gathered) -> bool:
        """One frame (or END) from each active stream that has one waiting, in serving
        order; then the stream after the last one served is first. True if anything came."""
        served, came = None, False
        for stream in list(self.active):
            if len(got.frames) >= self.size:
                break
            try:
                item = self.queues[stream].get_nowait()
            except queue.Empty:
                continue
            came = True
            if item is END:
                self.active.remove(stream)
                got.ended.append(stream)
                continue
            got.frames.append(item)
            served = stream
        if served is not None and served in self.active:
            at = self.active.index(served) + 1
            self.active = self.active[at:] + self.active[:at]
        return came
