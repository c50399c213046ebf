"""Frame sources: video file, directory of frames, camera, network stream.

Two delivery policies, chosen by the source (and carried out by the capture stage):

* **files and directories** (``live = False``): every frame, in order; capture blocks when
  the pipeline is behind (back-pressure), so nothing is ever skipped.
* **cameras and streams** (``live = True``): the world does not wait. When the pipeline is
  behind, the *oldest* waiting frame is dropped (and counted), so the queue — and memory —
  stay bounded and the frame segmented next is always the freshest one.

A stream that stalls or disconnects is reopened with exponential back-off, a bounded number
of times (:class:`ReconnectPolicy`); after that the source ends cleanly, like a file.
"""

from __future__ import annotations

import math
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import cv2
import numpy as np

from rtseg.data.datasets import IMAGE_SUFFIXES, read_image
from rtseg.errors import BadInput
from rtseg.redact import redact

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv",
                  ".ts", ".flv", ".gif")
DEFAULT_FPS = 25.0  # when a source does not say (frame directories, some cameras)
# FFmpeg (inside OpenCV) prints its own complaints about a broken file ("moov atom not
# found") straight to stderr; rtseg says what went wrong in one line instead. Read when
# OpenCV first opens a video; OPENCV_FFMPEG_LOGLEVEL=16 shows FFmpeg's errors again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

Message = Callable[[str], None]


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a lost live stream is retried: ``attempts`` reopenings, waiting ``delay_s``,
    doubling up to ``max_delay_s`` (0.5, 1, 2, 4, 4 s by default — about 12 s, plus up to
    ``timeout_s`` per attempt for FFmpeg to give up opening or reading)."""

    attempts: int = 5
    delay_s: float = 0.5
    max_delay_s: float = 4.0
    timeout_s: float = 5.0  # FFmpeg open/read timeout, so a stalled stream cannot hang a read

    def delay(self, attempt: int) -> float:
        return min(self.delay_s * 2 ** (attempt - 1), self.max_delay_s)


class Source(ABC):
    """Something frames come from. ``read`` returns (image, name, path) or None at the end."""

    live: bool = False  # True: drop the oldest waiting frame when behind (cameras, streams)
    file_names: bool = False  # True: frames come from files (so labels can be matched)
    fps: float = DEFAULT_FPS
    size: Optional[tuple[int, int]] = None  # (H, W) when known up front
    description: str = "source"  # shown and written: never a URL's password (see redact)
    ended_by: str = "end of stream"  # why ``read`` returned None, for the run summary

    @abstractmethod
    def read(self, stop: threading.Event) -> Optional[tuple[np.ndarray, str, Optional[Path]]]:
        """The next frame; None when the source is exhausted (or ``stop`` was set)."""

    def close(self) -> None:
        """Release the device or file."""


def _fps_of(cap: cv2.VideoCapture) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else DEFAULT_FPS


class VideoFileSource(Source):
    """A video file (or a URL naming one): every frame in order; names are frame indices.

    The first frame is decoded on opening, so a file that opens but holds no decodable
    frame (cut off, empty) is BadInput here rather than a run of zero frames.
    """

    def __init__(self, path: Path | str):
        self.description = shown = redact(str(path))
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise BadInput(f"cannot open video {shown} (not a video OpenCV/FFmpeg can decode)")
        ok, self.first = self.cap.read()
        if not ok:
            self.cap.release()
            raise BadInput(f"video {shown} has no decodable frame (empty, truncated or corrupt)")
        self.fps = _fps_of(self.cap)
        self.size = self.first.shape[:2]
        self.expected = int(max(self.cap.get(cv2.CAP_PROP_FRAME_COUNT), 0))
        self.index = 0

    def read(self, stop):
        image, self.first = self.first, None
        ok = image is not None
        if not ok:
            ok, image = self.cap.read()
        if not ok:
            if self.index < 0.9 * self.expected:  # frame counts of some containers are estimates
                self.ended_by = (f"video ended at frame {self.index} of {self.expected}: "
                                 "truncated or corrupt file?")
            return None
        name = f"{self.index:06d}"
        self.index += 1
        return image, name, None

    def close(self):
        self.cap.release()


class DirectorySource(Source):
    """Image files of a directory in file-name order; ``fps`` is what the output video gets.

    A file that cannot be decoded is skipped, with a warning through ``on_message``, and the
    run goes on; a directory with no decodable frame at all is BadInput.
    """

    file_names = True

    def __init__(self, directory: Path | str, fps: float | None = None,
                 on_message: Message | None = None):
        directory = Path(directory)
        self.description = str(directory)
        self.files = sorted((p for p in directory.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                            key=lambda p: p.name)
        if not self.files:
            raise BadInput(f"no frames ({', '.join(IMAGE_SUFFIXES)}) in directory {directory}")
        self.fps = float(fps or DEFAULT_FPS)
        self.position, self.skipped = 0, 0
        held: list[str] = []  # warnings wait until a frame was found: else one error line
        self.on_message = held.append
        self.pending = self._next_readable()
        if self.pending is None:
            raise BadInput(f"none of the {len(self.files)} frames in {directory} could be read "
                           "as an image (corrupt or not images)")
        self.on_message = on_message or (lambda _m: None)
        for message in held:
            self.on_message(message)

    def _next_readable(self) -> tuple[np.ndarray, str, Path] | None:
        """The next frame that decodes, skipping (and reporting) those that do not."""
        while self.position < len(self.files):
            path = self.files[self.position]
            self.position += 1
            try:
                return read_image(path), path.stem, path
            except BadInput:
                self.skipped += 1
                self.on_message(f"warning: skipping unreadable frame {path} (not an image "
                                "OpenCV can decode)")
        if self.skipped:
            self.ended_by = f"end of frames ({self.skipped} unreadable skipped)"
        return None

    def read(self, stop):
        got, self.pending = self.pending, None
        return got if got is not None else self._next_readable()


class LiveSource(Source):
    """A camera index (``"0"``) or a network stream URL, reopened when lost."""

    live = True

    def __init__(self, spec: str, policy: ReconnectPolicy = ReconnectPolicy(),
                 on_message: Message | None = None):
        self.spec = spec  # the real URL: only ever handed to OpenCV to open the stream
        self.camera = is_camera(spec)
        self.description = f"camera {spec}" if self.camera else redact(spec)
        self.policy = policy
        self.on_message = on_message or (lambda _m: None)
        self.cap = self._open()
        if not self.cap.isOpened():
            raise BadInput(f"cannot open {self.description}")
        self.fps = _fps_of(self.cap)
        self.index = 0

    def _open(self) -> cv2.VideoCapture:
        if self.camera:
            return cv2.VideoCapture(int(self.spec))
        ms = int(self.policy.timeout_s * 1000)
        return cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])

    def read(self, stop):
        attempt = 0
        while not stop.is_set():
            ok, image = self.cap.read() if self.cap.isOpened() else (False, None)
            if ok:
                name = f"{self.index:06d}"
                self.index += 1
                return image, name, None
            attempt += 1
            if attempt > self.policy.attempts:
                self.ended_by = f"{self.description} lost ({self.policy.attempts} reconnects failed)"
                self.on_message(f"{self.ended_by}; ending the run")
                return None
            delay = self.policy.delay(attempt)
            self.on_message(f"{self.description} stalled or disconnected; reconnecting in "
                            f"{delay:g} s ({attempt}/{self.policy.attempts})")
            if stop.wait(delay):
                break
            self.cap.release()
            self.cap = self._open()
        self.ended_by = "stopped"
        return None

    def close(self):
        self.cap.release()


def is_stream_url(spec: str) -> bool:
    """True for rtsp://, http(s):// and other network stream URLs."""
    return urlparse(spec).scheme.lower() in STREAM_SCHEMES


def is_camera(spec: str) -> bool:
    """True for a camera index such as ``"0"``."""
    return spec.isdigit()


def names_path(spec: str | Path) -> bool:
    """True when a ``--source`` argument names a file or directory here; False for a camera
    index or a network URL (the one place that tells them apart)."""
    text = str(spec)
    return not (is_camera(text) or is_stream_url(text))


def check_source(spec: str | Path, flag: str = "--source") -> None:
    """BadInput, naming ``flag``, for a file or directory source that does not exist: checked
    before an engine is loaded. A camera or a URL is only known when it is opened."""
    if names_path(spec) and not Path(spec).exists():
        raise BadInput(f"{flag} {spec}: no such file or directory")


def open_source(spec: str | Path, fps: float | None = None,
                reconnect: ReconnectPolicy = ReconnectPolicy(),
                on_message: Message | None = None) -> Source:
    """The Source a ``--source`` argument names.

    ``spec``: a video file, a directory of frames, a camera index (``"0"``), or an
    ``rtsp://`` / ``http(s)://`` URL (a URL ending in a video suffix is read like a file,
    every frame in order). ``fps`` sets the rate of frame directories (default 25).
    ``on_message`` gets warnings: stream reconnects, unreadable frames skipped.
    """
    text = str(spec)
    if is_camera(text):
        return LiveSource(text, reconnect, on_message)
    if is_stream_url(text):
        if Path(urlparse(text).path).suffix.lower() in VIDEO_SUFFIXES:
            return VideoFileSource(text)
        return LiveSource(text, reconnect, on_message)
    path = Path(text)
    if path.is_dir():
        return DirectorySource(path, fps, on_message)
    if path.is_file():
        return VideoFileSource(path)
    raise BadInput(f"source not found: {redact(text)} (expected a video file, a directory of frames, "
                   "a camera index such as 0, or an rtsp:// or http(s):// URL)")
