"""Hand-offs between pipeline stages: bounded queues, a stop event, never an unbounded wait.

Every blocking ``put``/``get`` waits in short slices and gives up as soon as the shared stop
event is set, so a stage stuck behind a slow or dead neighbour can always be shut down.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

POLL_S = 0.05  # how often a blocked stage looks at the stop event


class _EndOfStream:
    """The sentinel that follows the last item through every queue."""

    def __repr__(self) -> str:
        return "END"


END = _EndOfStream()


class Stopped(Exception):
    """Raised inside a stage when the pipeline was told to stop; the stage just returns."""


def put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    """Blocking put (back-pressure) that gives up with ``Stopped`` once ``stop`` is set."""
    while True:
        if stop.is_set():
            raise Stopped
        try:
            q.put(item, timeout=POLL_S)
            return
        except queue.Full:
            continue


def get(q: queue.Queue, stop: threading.Event) -> Any:
    """Blocking get that gives up with ``Stopped`` once ``stop`` is set."""
    while True:
        if stop.is_set():
            raise Stopped
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            continue


def put_latest(q: queue.Queue, item: Any) -> int:
    """Put without ever blocking: when ``q`` is full, drop the *oldest* waiting items.

    Returns how many items were dropped. Meant for a queue with a single producer (the
    capture thread): consumers can only make room, so the loop ends after at most
    ``maxsize`` drops and memory never grows past the bound.
    """
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass


def drain(q: queue.Queue) -> None:
    """Throw away whatever is still queued (after a hard stop, so buffers are freed)."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def stage_queues(batch: int, size: int, live: bool) -> dict[str, queue.Queue]:
    """The queues between the stages, in pipeline order: ``capture`` (frames, to preprocess),
    ``batches`` (to infer), ``labels`` (to overlay), ``rendered`` (to write).

    Each holds ``size`` batches of ``batch`` frames; for a live source, ``capture`` holds one
    batch and ``batches`` one (one batch waiting for the engine at most: freshness over depth).
    """
    return {
        "capture": queue.Queue(maxsize=batch if live else batch * size),
        "batches": queue.Queue(maxsize=1 if live else size),
        "labels": queue.Queue(maxsize=size),
        "rendered": queue.Queue(maxsize=size),
    }
