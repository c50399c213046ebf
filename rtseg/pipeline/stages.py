"""The five stages — capture, preprocess, infer, overlay, write — and the one loop that runs
each of them on its own thread.

:func:`run_stage` takes items, times the work on each into ``RunStats`` under the stage's
name, hands each result on, and passes END on when the items run out. Stages differ only in
where their items come from (:func:`frame_numbers` for capture, :func:`gather` for
preprocess, :func:`queue_items` otherwise), their work (:func:`capture`, :func:`preprocess`,
:func:`infer`, :func:`render`, :func:`write`) and where results go (an :class:`Outlet`, or
:class:`Written` after the sinks). The heavy calls (OpenCV, the engine) release the GIL, so
the stages overlap.

Frames are resized with ``rtseg.imageops.resize_frame``, the very function ``rtseg eval``
uses, so live mIoU equals ``rtseg eval`` on the same frames.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from rtseg.backends import Backend
from rtseg.imageops import resize_frame
from rtseg.pipeline.consistency import ConsistencyMonitor
from rtseg.pipeline.frames import Batch, Frame, Rendered
from rtseg.pipeline.overlay import Overlay, hud_text
from rtseg.pipeline.queues import END, POLL_S, Stopped, get, put, put_latest
from rtseg.pipeline.sinks import Sink
from rtseg.pipeline.smooth import FlowSmoother
from rtseg.pipeline.sources import Source
from rtseg.pipeline.stats import RunStats

Work = Callable[[Any], Any]  # one item in, one result out (END: the stream ends here)


def run_stage(name: str, items: Iterable, work: Work, out: Outlet | Written, stats: RunStats,
              count: Callable[[Any], int] = len) -> None:
    """The body of every stage thread: ``work(item)`` for each item, timed into ``stats`` as
    ``count(result)`` frames of stage ``name``, each result to ``out``; then ``out.end()``.

    ``work`` returning END ends the stream early (the source ran out). A hard stop raises
    ``queues.Stopped`` from wherever the stage waits.
    """
    for item in items:
        t0 = time.perf_counter()
        result = work(item)
        if result is END:
            break
        stats.add(name, time.perf_counter() - t0, count(result))
        out.put(result)
    out.end()


def one(_result: Any) -> int:
    """``count`` for stages whose every result is one frame (capture, write)."""
    return 1


class Outlet:
    """The bounded queue a stage puts its results into; its deepest depth is recorded in
    ``stats`` under ``name``.

    Blocks while the queue is full (back-pressure) unless ``latest``: then the *oldest*
    waiting item is dropped and counted (capture from a camera or stream).
    """

    def __init__(self, q: queue.Queue, name: str, stop: threading.Event, stats: RunStats,
                 latest: bool = False):
        self.queue, self.name, self.stop, self.stats, self.latest = q, name, stop, stats, latest

    def put(self, result: Any) -> None:
        """Put one result (never blocks when ``latest``)."""
        if self.latest:
            self.stats.add_dropped(put_latest(self.queue, result))
        else:
            put(self.queue, result, self.stop)
        self.stats.observe_queue(self.name, self.queue.qsize())

    def end(self) -> None:
        """Put END after the last result (blocking: everything queued is finished first)."""
        put(self.queue, END, self.stop)


class Written:
    """The write stage's receiver: each frame it gets has left every sink, so it counts as
    written and its capture→written latency is known — in ``stats``, or with several
    streams in the stats ``stats_of(item)`` names (None: the item is no frame)."""

    def __init__(self, stats: RunStats | None = None,
                 stats_of: Callable[[Any], RunStats | None] | None = None):
        self.stats_of = stats_of or (lambda item: stats)

    def put(self, result: Rendered) -> None:
        """Count ``result`` as written."""
        stats = self.stats_of(result)
        if stats is not None:
            stats.frame_written(result.frame.t_capture)

    def end(self) -> None:
        """Nothing follows the sinks."""


# -- where items come from -------------------------------------------------------------------
def queue_items(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """Items from ``q`` up to END."""
    while (item := get(q, stop)) is not END:
        yield item


def frame_numbers(stop_capture: threading.Event, stats: RunStats,
                  max_frames: Optional[int] = None) -> Iterator[int]:
    """0, 1, 2, … for capture to read; when ``stop_capture`` is set or ``max_frames`` were
    read, stops and says why in ``stats.ended_by``."""
    index = 0
    while not stop_capture.is_set() and (max_frames is None or index < max_frames):
        yield index
        index += 1
    stats.ended_by = "stopped" if stop_capture.is_set() else "max frames"


def gather(q: queue.Queue, stop: threading.Event, size: int, live: bool,
           timeout_s: float = 0.0) -> Iterator[list]:
    """Frames from ``q`` (up to END) in groups of at most ``size``.

    Files fill every group (throughput); live sources take what is waiting, and wait for
    more only up to ``timeout_s`` after a group's first frame (``--batch-timeout``; 0:
    never — latency first).
    """
    while (first := get(q, stop)) is not END:
        frames = [first]
        deadline = time.monotonic() + timeout_s
        while len(frames) < size:
            item = _waiting(q, stop, deadline) if live else get(q, stop)
            if item is None:
                break
            if item is END:
                yield frames
                return
            frames.append(item)
        yield frames


def _waiting(q: queue.Queue, stop: threading.Event, deadline: float) -> Any:
    """The next item if one is waiting or comes before ``deadline`` (``time.monotonic()``),
    else None; ``Stopped`` once ``stop`` is set."""
    while True:
        try:
            return q.get_nowait()
        except queue.Empty:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
        if stop.is_set():
            raise Stopped
        try:
            return q.get(timeout=min(left, POLL_S))
        except queue.Empty:
            continue


# -- the work of each stage ------------------------------------------------------------------
def capture(source: Source, stop_capture: threading.Event, stats: RunStats) -> Work:
    """Capture: frame number → the :class:`Frame` read from ``source`` (END when the source
    ends; ``stats.ended_by`` then says why)."""
    def read(index: int):
        got = source.read(stop_capture)
        if got is None:
            stats.ended_by = source.ended_by
            return END
        image, name, path = got
        return Frame(index, name, image, time.perf_counter(), path)
    return read


def preprocess(input_size: tuple[int, int]) -> Work:
    """Preprocess: a group of frames → a :class:`Batch`, resized to the engine's input size."""
    def resize(frames: list[Frame]) -> Batch:
        return Batch(frames, np.stack([resize_frame(f.image, input_size) for f in frames]))
    return resize


def infer(backend: Backend, keep_inputs: bool = False,
          call: Optional[Callable[[Any], Any]] = None) -> Work:
    """Infer: a :class:`Batch` → the same batch with the engine's ``labels`` (inputs freed,
    unless ``keep_inputs``: the flicker filter and TC compute their flow on them). ``call``
    runs the engine instead of ``backend.infer`` (``--device-frames``: on device tensors)."""
    call = call or backend.infer

    def segment(batch: Batch) -> Batch:
        labels = call(batch.inputs)
        n, (h, w) = len(batch), backend.input_size
        if tuple(labels.shape) != (n, h, w):
            raise RuntimeError(f"engine returned labels of shape {labels.shape}, "
                               f"expected {(n, h, w)}")
        batch.labels = labels
        if not keep_inputs:
            batch.inputs = None
        return batch
    return segment


def render_frame(overlay: Overlay, frame, labels: np.ndarray, text: str,
                 blended: Optional[np.ndarray] = None,
                 score: Optional[Callable[[Optional[Path], np.ndarray], None]] = None) -> Rendered:
    """One frame's :class:`Rendered`: the overlay of ``labels`` drawn on the host, or
    ``blended`` (made on the device) with the legend and HUD drawn on it; its path and
    full-size labels go to ``score`` when given."""
    picture = (overlay.decorate(blended, text) if blended is not None
               else overlay.render(frame.image, labels, text))
    item = Rendered(frame, picture, labels)
    if score is not None:
        score(frame.path, item.labels)
    return item


def render(overlay: Overlay, stats: RunStats,
           score: Optional[Callable[[Optional[Path], np.ndarray], None]] = None,
           smooth: Optional[FlowSmoother] = None,
           watch: Optional[ConsistencyMonitor] = None,
           blended: Optional[Callable[[Batch, int], np.ndarray]] = None) -> Work:
    """Overlay: a labelled :class:`Batch` → its :class:`Rendered` frames (the HUD shows
    ``stats``); each frame's path and full-size labels go to ``score`` when given.

    ``smooth`` filters each frame's labels first (``--smooth``: what is shown, saved and
    scored); ``watch`` is offered the labels for TC (``--consistency``; never waits). Both
    need the batch's inputs (``infer(keep_inputs=True)``). ``blended(batch, i)``: frame i's
    blended overlay made elsewhere (``--device-frames``), legend and HUD then drawn here."""
    def draw(batch: Batch) -> list[Rendered]:
        text = hud_text(stats, watch.latest if watch else None) if overlay.show_hud else ""
        rendered = []
        for i, (frame, labels) in enumerate(zip(batch.frames, batch.labels)):
            if smooth is not None:
                labels = smooth(batch.inputs[i], labels)
            if watch is not None:
                watch.offer(frame.index, batch.inputs[i], labels)
            rendered.append(render_frame(
                overlay, frame, labels, text,
                blended(batch, i) if blended is not None else None, score))
        return rendered
    return draw


def write(sinks: Sequence[Sink], stop_capture: threading.Event) -> Work:
    """Write: one :class:`Rendered` frame to every sink, in order; a sink returning False
    (a closed window) sets ``stop_capture``, so the run ends after the frames in flight."""
    def to_sinks(item: Rendered) -> Rendered:
        for sink in sinks:
            if sink.write(item) is False:
                stop_capture.set()
        return item
    return to_sinks
