"""Several sources in one run: each stream's name, outputs, labels and numbers.

A stream is named after its source's stem (``front.mp4`` → ``front``, ``frames/`` →
``frames``, camera ``0`` → ``camera0``, ``rtsp://host/live`` → ``live``), made unique with
``-2``, ``-3``, … in ``--source`` order. ``--output`` and ``--masks`` name each stream's
files with a ``{stream}`` pattern (``out/{stream}.mp4``) or a directory (``out/`` →
``out/NAME.mp4``; ``masks/`` → ``masks/NAME/``). ``--labels`` is given once per source, or
once per frame directory, in ``--source`` order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

from rtseg.errors import BadInput
from rtseg.files import ensure_output_dir, ensure_parent, json_safe
from rtseg.pipeline.sinks import Sink, close_all
from rtseg.pipeline.sources import Source, is_camera, is_stream_url, names_path
from rtseg.pipeline.stats import RunStats
from rtseg.redact import redact
from rtseg.scoring.confusion import ConfusionMatrix
from rtseg.scoring.live import LiveScorer

FIELD = "{stream}"
_UNSAFE = re.compile(r"[^\w.\-]+")


def stream_name(spec: str | Path) -> str:
    """A short file-name-safe name for the source ``spec`` (not yet unique)."""
    text = str(spec)
    if is_camera(text):
        return f"camera{text}"
    if is_stream_url(text):
        url = urlparse(text)
        stem = Path(url.path).stem or (url.hostname or "stream")
    else:
        stem = Path(text.rstrip("/\\")).stem or Path(text).resolve().name
    return _UNSAFE.sub("_", stem).strip("._") or "stream"


def stream_names(specs: Sequence[str | Path]) -> list[str]:
    """:func:`stream_name` of each source, made unique with ``-2``, ``-3``, … in order."""
    names: list[str] = []
    for spec in specs:
        base = name = stream_name(spec)
        count = 1
        while name in names:
            count += 1
            name = f"{base}-{count}"
        names.append(name)
    return names


@dataclass(frozen=True)
class StreamPlan:
    """One stream's source (as given: a URL keeps its password, only to be opened) and the
    files it gets."""

    spec: str
    name: str
    labels: Optional[Path] = None
    output: Optional[Path] = None  # the overlay mp4
    masks: Optional[Path] = None  # the class-id PNG directory


def plan_streams(specs: Sequence[str | Path], labels: Sequence[Path] = (),
                 output: Optional[Path] = None, masks: Optional[Path] = None) -> list[StreamPlan]:
    """Each stream's plan; BadInput, naming the flag, for a ``--labels`` count that fits no
    count of sources or an ``--output`` that names one file for several streams. Checks the
    paths (as ``rtseg run`` does for one source) but creates nothing."""
    specs = [str(s) for s in specs]
    names = stream_names(specs)
    per_labels = match_labels(specs, list(labels))
    outputs = output_paths(output, names)
    mask_dirs = mask_paths(masks, names)
    for path in outputs:
        ensure_parent(path, "--output")
    return [StreamPlan(spec, name, lab, out, m) for spec, name, lab, out, m
            in zip(specs, names, per_labels, outputs, mask_dirs)]


def is_frame_dir(spec: str) -> bool:
    """True when ``spec`` names a directory here (a source of frames that can have labels)."""
    return names_path(spec) and Path(spec).is_dir()


def match_labels(specs: Sequence[str], labels: Sequence[Path]) -> list[Optional[Path]]:
    """``--labels`` per stream: once per source, or once per frame directory (the others get
    none), in ``--source`` order."""
    n, dirs = len(specs), [i for i, s in enumerate(specs) if is_frame_dir(s)]
    if not labels:
        return [None] * n
    if len(labels) == n:
        return list(labels)
    if len(labels) == len(dirs):
        out: list[Optional[Path]] = [None] * n
        for i, lab in zip(dirs, labels):
            out[i] = lab
        return out
    raise BadInput(f"--labels is given {len(labels)} times for {n} sources ({len(dirs)} of them "
                   "frame directories): give it once per source, or once per frame directory, "
                   "in --source order")


def output_paths(output: Optional[Path], names: Sequence[str]) -> list[Optional[Path]]:
    """Each stream's overlay video: ``--output`` with ``{stream}`` replaced, or
    ``DIR/NAME.mp4`` for an existing directory."""
    if output is None:
        return [None] * len(names)
    text = str(output)
    if FIELD in text:
        return [Path(text.replace(FIELD, name)) for name in names]
    if output.is_dir():
        return [output / f"{name}.mp4" for name in names]
    raise BadInput(f"--output {output}: {len(names)} sources need one video each: give a "
                   f"pattern with {FIELD} (e.g. out/{FIELD}.mp4) or an existing directory")


def mask_paths(masks: Optional[Path], names: Sequence[str]) -> list[Optional[Path]]:
    """Each stream's mask directory: ``--masks`` with ``{stream}`` replaced, or
    ``DIR/NAME`` (DIR is made when the run starts)."""
    if masks is None:
        return [None] * len(names)
    text = str(masks)
    if FIELD in text:
        paths = [Path(text.replace(FIELD, name)) for name in names]
        for path in paths:
            ensure_output_dir(path, "--masks")
        return paths
    ensure_output_dir(masks, "--masks")
    return [masks / name for name in names]


class StreamStats(RunStats):
    """One stream's numbers; everything counted here is counted in the run's ``total`` too."""

    def __init__(self, total: RunStats):
        super().__init__()
        self.total = total

    def add(self, stage: str, seconds: float, frames: int) -> None:
        super().add(stage, seconds, frames)
        self.total.add(stage, seconds, frames)

    def add_dropped(self, n: int) -> None:
        super().add_dropped(n)
        self.total.add_dropped(n)

    def observe_queue(self, name: str, depth: int) -> None:
        super().observe_queue(name, depth)
        self.total.observe_queue(name, depth)

    def frame_written(self, t_capture: float) -> None:
        super().frame_written(t_capture)
        self.total.frame_written(t_capture)


@dataclass(frozen=True)
class StreamEnd:
    """Follows a stream's last frame to the write stage, which then finalises its outputs."""

    stream: int


class Stream:
    """One source of a run with several: its opened source, numbers, scorer and sinks.
    ``error``: what ended it, if it failed (its capture, or finalising its outputs)."""

    def __init__(self, number: int, plan: StreamPlan, source: Source, total: RunStats):
        self.number, self.plan, self.source = number, plan, source
        self.name = plan.name
        self.stats = StreamStats(total)
        self.scorer: Optional[LiveScorer] = None
        self.sinks: list[Sink] = []
        self.error: Optional[BaseException] = None
        self.closed = False

    def close_sinks(self) -> Optional[BaseException]:
        """Finalise the stream's outputs (once); the first failure, if any."""
        if self.closed:
            return None
        self.closed = True
        return close_all(self.sinks)

    def result(self) -> dict:
        """The stream's entry of the run JSON's ``streams``."""
        s = self.stats
        scores = self.scorer.result() if self.scorer else {"miou": None, "scored_frames": 0}
        return {"name": self.name, "source": redact(self.source.description),
                "frames": s.frames, "seconds": s.seconds(), "fps": s.fps(),
                "dropped": s.dropped, "latency_ms": s.latency_ms(), "miou": scores["miou"],
                "scored_frames": scores["scored_frames"], "live": self.source.live,
                "ended_by": self.ended_by(),
                "error": None if self.error is None else describe(self.error),
                "output": None if self.plan.output is None else str(self.plan.output),
                "masks": None if self.plan.masks is None else str(self.plan.masks)}

    def ended_by(self) -> str:
        if self.error is not None:
            return "failed"
        return self.stats.ended_by or "running"


def describe(exc: BaseException) -> str:
    """An exception in one line: the message of rtseg's and OS errors, else its type too."""
    if isinstance(exc, (BadInput, OSError)) or type(exc).__module__.startswith("rtseg"):
        return redact(str(exc))
    return redact(f"{type(exc).__name__}: {exc}")


def pooled_scores(streams: Sequence[Stream]) -> dict:
    """``miou`` and ``scored_frames`` over the frames of every scored stream together."""
    scorers = [s.scorer for s in streams if s.scorer is not None and s.scorer.scored]
    if not scorers:
        return {"miou": None, "scored_frames": 0}
    first = scorers[0].matrix
    pooled = ConfusionMatrix(first.num_classes, first.ignore_index)
    pooled.matrix = sum(s.matrix.matrix for s in scorers)
    report = pooled.report(scorers[0].class_names)
    return {"miou": json_safe(report["miou"]), "scored_frames": sum(s.scored for s in scorers)}


def hud_line(stream: Stream, total: RunStats) -> str:
    """``solidWhiteRight 24.8 FPS | all 99.1 FPS | pre 1.2 infer 38.0 post 2.9 ms``."""
    ms = total.stage_ms()

    def f(v):
        return "-" if v is None else f"{v:.1f}"

    return (f"{stream.name} {stream.stats.recent_fps():.1f} FPS | all {total.recent_fps():.1f}"
            f" FPS | pre {f(ms['preprocess'])} infer {f(ms['infer'])} post {f(ms['overlay'])} ms")
