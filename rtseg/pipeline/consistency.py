"""``rtseg run --consistency``: temporal consistency (TC) measured live, off the stage threads.

The overlay stage hands each frame's engine input and labels to :class:`ConsistencyMonitor`
without ever waiting: a small bounded queue feeds one thread of its own that computes the
flow and scores the pair (``scoring/temporal.py``). When that thread falls behind, the queue
is full and the frame is left out of TC — the pipeline never slows down for it; the run JSON
says how many pairs were scored (``tc_pairs``) and how many were skipped (``tc_skipped``).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from rtseg.pipeline.queues import END, Stopped, get
from rtseg.scoring.flow import grey
from rtseg.data.datasets import IMAGE_SUFFIXES
from rtseg.errors import BadInput
from rtseg.pipeline.sources import Source
from rtseg.scoring.temporal import TemporalConsistency, sequence_problem

Guard = Callable[[str, Callable[[], None]], Callable[[], None]]
QUEUE_SIZE = 4  # frames waiting for the TC thread; more only delays the numbers


class ConsistencyMonitor:
    """Scores TC of one stream on its own thread.

    ``offer(index, frame, labels)`` from the thread that has the frames in order (never
    blocks); ``start()`` / ``close()`` around the run; ``result()`` at any time.
    ``index``: the frame's position in the source, so that a frame dropped anywhere (here or
    by a live source) breaks the pair across it instead of scoring two frames that are not
    consecutive.
    """

    def __init__(self, class_names: Sequence[str], queue_size: int = QUEUE_SIZE):
        self.tc = TemporalConsistency(class_names)
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.offered = 0
        self.left_out = 0  # frames not taken because the queue was full
        self.processed = 0
        self.latest: Optional[float] = None  # TC so far, for the HUD and the status line
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def offer(self, index: int, frame: np.ndarray, labels: np.ndarray) -> None:
        """Queue one frame (the engine's input, BGR) and its labels; left out when full."""
        self.offered += 1
        try:
            self.queue.put_nowait((index, frame, labels))
        except queue.Full:
            self.left_out += 1

    def work(self) -> None:
        """The TC thread's body: score frames until ``close()``."""
        try:
            self._score_all()
        except Stopped:
            pass

    def _score_all(self) -> None:
        previous: Optional[tuple[int, np.ndarray, np.ndarray]] = None
        while (item := get(self.queue, self._stop)) is not END:
            index, frame, labels = item
            g = grey(frame)
            if previous is not None and index == previous[0] + 1 and previous[1].shape == g.shape:
                align = self.tc.flow.align(previous[1], g)
                with self._lock:
                    self.tc.add_pair(previous[2], labels, align)
                self.latest = self.tc.tc()
            previous = (index, g, labels)
            self.processed += 1

    def start(self, guard: Optional[Guard] = None) -> None:
        """Start the TC thread; ``guard(name, body)`` wraps its body (the runner's failure
        handling)."""
        body = guard("consistency", self.work) if guard else self.work
        self._thread = threading.Thread(target=body, name="rtseg-consistency", daemon=True)
        self._thread.start()

    def close(self, finish: bool = True) -> None:
        """Stop the TC thread: after the frames queued (``finish``; a few flows at most),
        or at once."""
        if self._thread is None:
            return
        if not finish:
            self._stop.set()
        while finish and self._thread.is_alive():
            try:
                self.queue.put(END, timeout=0.05)
                break
            except queue.Full:
                continue
        self._thread.join()

    def result(self) -> dict:
        """The run JSON's TC keys: ``tc``, ``tc_per_class``, ``tc_pairs``,
        ``tc_flow_rejected`` and ``tc_skipped`` (pairs of consecutive frames written but not
        scored: TC fell behind, or a live source dropped a frame between them)."""
        with self._lock:
            out = self.tc.result()
        waiting = self.offered - self.processed - self.left_out
        out["tc_skipped"] = max(0, self.offered - 1 - out["tc_pairs"] - waiting)
        return out


def check_sequence(source: Source | str | Path) -> None:
    """BadInput unless ``source`` (a Source, or what ``--source`` names) gives consecutive
    frames of one clip, what TC compares: a video, a camera and a stream do; a folder must
    hold numbered frames of one size (see
    :func:`~rtseg.scoring.temporal.sequence_problem`)."""
    if isinstance(source, Source):
        files, where = getattr(source, "files", None), source.description
    else:
        where = str(source)
        path = Path(source)
        files = (sorted((p for p in path.iterdir()
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                        key=lambda p: p.name) if path.is_dir() else None)
    if files is None:
        return
    problem = sequence_problem(files)
    if problem is not None:
        raise BadInput(f"--consistency compares each frame with the next, so it needs the "
                       f"frames of one clip; {where}: {problem}")
