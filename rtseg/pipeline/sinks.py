"""Where finished frames go: an mp4 file, class-id PNG masks, a window (and, with labels,
the live mIoU's scorer).

A sink has ``write(rendered) -> None | False`` (False: the user asked to stop, e.g. closed
the window) and ``close()``. The write stage's thread owns the sinks and closes them, so an
mp4 is finalised on every way out of a run (end of stream, Ctrl-C, an error elsewhere).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Sequence

import cv2

from rtseg.data import engine_dataset
from rtseg.errors import BadInput, MissingDependency
from rtseg.metadata import EngineMetadata
from rtseg.pipeline.frames import Rendered
from rtseg.pipeline.sources import Source
from rtseg.scoring.live import LiveScorer


class Sink(ABC):
    """Receives every finished frame, in order, on the writer thread."""

    @abstractmethod
    def write(self, item: Rendered) -> Optional[bool]:
        """Consume one frame; return False to ask the run to stop capturing."""

    def close(self) -> None:
        """Finalise (called once, on the writer thread, however the run ends)."""


FULL_BYTES = 1 << 20  # a file system with less free space than this counts as full


def write_error(path: Path, what: str) -> OSError:
    """The OSError for a write to ``path`` that failed without saying why (OpenCV's video
    writer only returns False): ENOSPC when its file system is (nearly) full, else EIO."""
    try:
        full = shutil.disk_usage(path.parent).free < FULL_BYTES
    except OSError:
        full = False
    code = errno.ENOSPC if full else errno.EIO
    return OSError(code, f"cannot write {what} to {path}: {os.strerror(code)}")


def decodable_frames(path: Path) -> int:
    """How many frames the container at ``path`` says it holds (-1: it cannot be opened).
    Reads the header only (the mp4 index), not the frames; FFmpeg first, as it wrote it."""
    for api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
        cap = cv2.VideoCapture(str(path), api)
        try:
            if cap.isOpened():
                return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
    return -1


class VideoSink(Sink):
    """An mp4 (MPEG-4 part 2, fourcc ``mp4v``) at the source's rate and frame size.

    Written to a hidden ``.NAME.partial.mp4`` beside the target and renamed on ``close``
    once the finalised file is checked to hold every frame written, so the file at ``path``
    is always a complete, playable video. A write that fails (a full disk) raises OSError;
    the partial file is then removed on ``close``, never published.
    """

    def __init__(self, path: Path | str, fps: float, size: Optional[tuple[int, int]] = None):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise BadInput(f"--output {self.path}: directory {self.path.parent} does not exist")
        suffix = self.path.suffix or ".mp4"
        self.partial = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        self.fps = float(fps)
        self.size: Optional[tuple[int, int]] = None
        self.writer: Optional[cv2.VideoWriter] = None
        self.frames = 0  # frames the writer accepted
        self.failed = False  # a write failed: the partial file is not published
        if size is not None:
            self._open(size)

    def _open(self, size: tuple[int, int]) -> None:
        h, w = size
        writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter.fourcc(*"mp4v"), self.fps,
                                 (w, h))
        if not writer.isOpened():
            raise BadInput(f"cannot write video {self.path} ({w}×{h} mp4v at {self.fps:g} FPS)")
        self.writer, self.size = writer, (h, w)

    def write(self, item: Rendered) -> None:
        image = item.overlay
        if self.writer is None:
            self._open(image.shape[:2])
        h, w = self.size
        if image.shape[:2] != (h, w):  # frame directories may mix sizes; a video has one
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        if self.writer.write(image) is False:  # OpenCV ≥ 5 reports a failed write
            self.failed = True
            raise write_error(self.partial, f"frame {self.frames} of the video")
        self.frames += 1

    def close(self) -> None:
        """Finalise; publish the video if it holds every frame, else remove it and raise."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        found = decodable_frames(self.partial) if self.frames and not self.failed else 0
        if not self.failed and found >= self.frames:
            os.replace(self.partial, self.path)
            return
        self.partial.unlink(missing_ok=True)
        if not self.failed:  # release failed (no room for the mp4 index, say)
            raise write_error(self.partial, f"the end of the video ({max(found, 0)} of "
                                            f"{self.frames} frames readable; removed)")


_UNSAFE = re.compile(r"[^\w.\-]+")


class MaskSink(Sink):
    """Class-id PNGs (uint8, one channel, at the frame's size) named after the frames:
    ``DIR/<frame stem>.png`` for frame directories, ``DIR/000123.png`` for video."""

    def __init__(self, directory: Path | str):
        directory = Path(directory)
        if not directory.parent.is_dir():
            raise BadInput(f"--masks {directory}: directory {directory.parent} does not exist")
        if directory.exists() and not directory.is_dir():
            raise BadInput(f"--masks {directory}: exists and is not a directory")
        directory.mkdir(exist_ok=True)
        self.root = directory.resolve()

    def path_for(self, name: str, index: int) -> Path:
        """``DIR/<name>.png`` with anything but letters, digits, ``_ . -`` replaced; never
        outside DIR (not through ``..``, separators or a symlink planted in DIR)."""
        safe = _UNSAFE.sub("_", name).lstrip(".") or f"{index:06d}"
        path = self.root / f"{safe}.png"
        if path.resolve().parent != self.root:
            raise BadInput(f"mask name {name!r} would leave {self.root}")
        return path

    def write(self, item: Rendered) -> None:
        """Encode in memory, then write with Python's I/O, so a full disk raises OSError
        (ENOSPC) rather than leaving a truncated PNG; a partly written file is removed."""
        path = self.path_for(item.frame.name, item.frame.index)
        ok, png = cv2.imencode(".png", item.labels)
        if not ok:
            raise RuntimeError(f"cannot encode mask {path.name} as PNG")
        try:
            save_bytes(path, png)
        except OSError as exc:  # name the file: a failed write() does not
            path.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def save_bytes(path: Path, data) -> None:
    """Write ``data`` to ``path`` (a module function, so tests can make the disk fill up)."""
    with open(path, "wb") as f:
        f.write(data)


def check_display() -> None:
    """MissingDependency unless OpenCV can open a window here."""
    if re.search(r"GUI:\s*NONE", cv2.getBuildInformation()):
        raise MissingDependency("--show needs OpenCV with GUI support, but this OpenCV has none "
                                "(opencv-python-headless); install opencv-python, or write the "
                                "overlay to a file with --output FILE.mp4")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        raise MissingDependency("--show needs a display, but DISPLAY is not set (ssh -X, or "
                                "write the overlay to a file with --output FILE.mp4)")


class WindowSink(Sink):
    """An OpenCV window; ``q`` or Esc or closing the window ends the run gracefully."""

    def __init__(self, title: str = "rtseg"):
        check_display()
        self.title = title
        self.opened = False

    def write(self, item: Rendered) -> Optional[bool]:
        if not self.opened:  # created on the writer thread, which does every GUI call
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            self.opened = True
        cv2.imshow(self.title, item.overlay)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False
        return None

    def close(self) -> None:
        if self.opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


def close_all(sinks: Sequence[Sink]) -> Optional[BaseException]:
    """Close every sink even if one fails; returns the first failure (or None)."""
    first = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:  # noqa: BLE001 — finish closing the others first
            first = first or exc
    return first


def open_sinks(first: Optional[Sink], show: bool, masks: Optional[Path],
               output: Optional[Path], fps: float, size: tuple[int, int],
               title: str = "rtseg") -> list[Sink]:
    """A run's (or a stream's) sinks in their order: ``first`` (the live page's, so viewers
    see a frame before any file I/O), a window, class-id masks, the mp4 at ``fps`` and
    ``size``. If one cannot be opened, those opened so far are closed and the error raised."""
    sinks: list[Sink] = [first] if first is not None else []
    try:
        if show:
            sinks.append(WindowSink(title))
        if masks is not None:
            sinks.append(MaskSink(masks))
        if output is not None:
            sinks.append(VideoSink(output, fps, size))
    except BaseException:
        close_all(sinks)
        raise
    return sinks


def live_scorer(labels: Optional[Path], source: Source,
                metadata: EngineMetadata) -> Optional[LiveScorer]:
    """The live mIoU's scorer of ``source``'s frames against the label PNGs in ``labels``
    (None without labels); BadInput when the source is a video or a stream (labels are
    matched to frames by file name)."""
    if labels is None:
        return None
    if not source.file_names:
        raise BadInput(f"--labels {labels} needs a directory of frames (labels are matched by "
                       f"file name); {source.description} is a video or a stream")
    return LiveScorer(labels, engine_dataset(metadata), metadata.num_classes)
