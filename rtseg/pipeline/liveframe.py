"""The newest rendered frame, handed from the writer thread to the viewers of ``--serve``.

The pipeline side is a reference swap under a lock (:meth:`FrameSlot.publish`): no copy, no
encoding. JPEG encoding happens on the viewers' threads, and only when one asks: at most once
per rendered frame and at most ``max_fps`` times a second, however many viewers there are; a
viewer always gets the newest frame, so a slow one skips frames instead of falling behind.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import cv2
import numpy as np

from rtseg.pipeline.frames import Rendered
from rtseg.pipeline.sinks import Sink

JPEG_QUALITY = 80
MAX_STREAM_FPS = 30.0  # more is wasted on a browser, and would cost a core on a fast GPU run


class FrameSlot:
    """The latest overlay (``publish``) and its JPEG, made on demand (``next_jpeg``).

    >>> slot = FrameSlot(); slot.publish(image)
    >>> seq, jpeg = slot.next_jpeg(after=0, timeout=1.0)
    """

    def __init__(self, quality: int = JPEG_QUALITY, max_fps: float = MAX_STREAM_FPS):
        self.quality = int(quality)
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()
        self._image: Optional[np.ndarray] = None
        self._seq = 0  # frames published
        self._jpeg: Optional[bytes] = None
        self._jpeg_seq = 0  # the frame ``_jpeg`` shows
        self._jpeg_t = float("-inf")
        self.encodes = 0  # JPEGs made (to show they are made once per frame at most)
        self.ended = False  # the run writing into it has ended: the last frame stays
        self.closed = False  # the server is shutting down: viewers leave

    def publish(self, image: np.ndarray) -> None:
        """Make ``image`` (BGR, not modified afterwards) the newest frame. Cheap: no copy."""
        with self._cond:
            self._image, self._seq, self.ended = image, self._seq + 1, False
            self._cond.notify_all()

    def end(self) -> None:
        """The run ended: the last frame stays for viewers; no new ones will come."""
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting viewer so that it can leave."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def size(self) -> Optional[tuple[int, int]]:
        """(H, W) of the newest frame, None before the first."""
        image = self._image
        return None if image is None else image.shape[:2]

    @property
    def frames(self) -> int:
        """How many frames were published."""
        return self._seq

    def cached(self) -> Optional[tuple[int, bytes]]:
        """The last JPEG made, as ``(seq, bytes)``, without encoding anything (None: none yet)."""
        with self._encode_lock:
            return None if self._jpeg is None else (self._jpeg_seq, self._jpeg)

    def next_jpeg(self, after: int, timeout: float) -> Optional[tuple[int, bytes]]:
        """``(seq, jpeg)`` of a frame newer than frame ``after`` — the newest, or one made less
        than ``1/max_fps`` ago — waiting up to ``timeout`` s for one; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after or self.closed, timeout):
                return None
            if self.closed:
                return None
        with self._encode_lock:  # one encoder at a time: the others then reuse its JPEG
            age = time.monotonic() - self._jpeg_t
            if self._jpeg_seq > after and (age < self.min_interval or self._jpeg_seq == self._seq):
                return self._jpeg_seq, self._jpeg
            if age < self.min_interval:  # pace the encoder, not the pipeline
                time.sleep(self.min_interval - age)
            with self._cond:
                seq, image = self._seq, self._image
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise RuntimeError(f"cannot encode a {image.shape} frame as JPEG")
            self._jpeg, self._jpeg_seq, self._jpeg_t = buf.tobytes(), seq, time.monotonic()
            self.encodes += 1
            return seq, self._jpeg


class ServeSink(Sink):
    """Publishes each finished overlay into a :class:`FrameSlot` (on the writer thread);
    closing it marks the run ended, so the page keeps the last frame."""

    def __init__(self, slot: FrameSlot):
        self.slot = slot

    def write(self, item: Rendered) -> None:
        self.slot.publish(item.overlay)

    def close(self) -> None:
        self.slot.end()
