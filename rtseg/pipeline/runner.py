"""The live pipeline: capture → preprocess → infer → overlay → write, one thread per stage.

Stages are joined by bounded ``queue.Queue``s, so a slow stage back-pressures the ones
before it instead of growing memory (live sources drop their oldest frame instead, see
``sources``). Two events steer shutdown:

* ``stop_capture`` — end of input requested (Ctrl-C, ``--max-frames``, a closed window):
  capture sends END, and every frame already captured is finished and written;
* ``stop`` — hard stop (a stage failed, or a second Ctrl-C): every stage returns within
  ``queues.POLL_S``.

The main thread only waits, reports status and turns Ctrl-C into ``stop_capture``. Every
thread is joined before :meth:`Pipeline.run` returns or raises; the writer thread closes the
sinks on its way out, so the mp4 is finalised however the run ends.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from rtseg.backends import Backend, open_engine
from rtseg.errors import BadInput, RtsegError, StageError
from rtseg.pipeline.queues import Stopped, drain
from rtseg.scoring.live import LiveScorer
from rtseg.pipeline.sinks import MaskSink, Sink, VideoSink, WindowSink, close_all, write_loop
from rtseg.pipeline.sources import ReconnectPolicy, Source, capture_loop, open_source
from rtseg.pipeline.stages import Overlay, batch_loop, infer_loop, overlay_loop
from rtseg.pipeline.stats import RunStats

if TYPE_CHECKING:
    from rtseg.pipeline.serve import LiveServer

StatusCallback = Callable[[dict], None]
MessageCallback = Callable[[str], None]


@dataclass
class RunConfig:
    """Everything ``rtseg run`` can be asked, except the source and the engine."""

    labels: Optional[Path] = None  # label PNGs for live mIoU (frame directories only)
    output: Optional[Path] = None  # overlay video (.mp4, fourcc mp4v, the source's fps)
    masks: Optional[Path] = None  # class-id PNGs
    show: bool = False  # an OpenCV window
    alpha: float = 0.5  # weight of the class colours in the overlay
    max_frames: Optional[int] = None  # stop after reading this many frames
    batch: int = 1  # frames per inference call
    queue_size: int = 2  # bound of the queues between stages, in batches (jitter absorbers)
    legend: bool = True
    hud: bool = True
    fps: Optional[float] = None  # rate of a frame directory (default 25)
    status_interval: float = 0.5  # seconds between ``on_status`` calls
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise BadInput(f"--alpha {self.alpha:g} must be between 0 and 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise BadInput(f"--max-frames {self.max_frames} must be at least 1")
        if self.batch < 1 or self.queue_size < 1:
            raise BadInput("--batch and the queue size must be at least 1")
        if self.fps is not None and self.fps <= 0:
            raise BadInput(f"--fps {self.fps:g} must be positive")


class Pipeline:
    """One run of the live pipeline over ``source`` with ``backend``.

    Takes ownership of ``source`` (closed when capture ends, or here if the pipeline cannot
    be set up). ``sinks`` are extra sinks
    after the ones the config asks for. ``on_status(snapshot)`` is called from the calling
    thread every ``status_interval`` seconds; ``on_message(text)`` gets warnings (stream
    reconnects, Ctrl-C) from any thread. ``server``: a
    :class:`~rtseg.pipeline.serve.LiveServer` that shows this run live (it outlives the run,
    showing the last frame and the final numbers: its owner closes it).

    >>> result = Pipeline(open_source("drive.mp4"), backend, RunConfig(output=Path("o.mp4"))).run()
    """

    def __init__(self, source: Source, backend: Backend, config: RunConfig | None = None,
                 sinks: Sequence[Sink] = (), on_status: StatusCallback | None = None,
                 on_message: MessageCallback | None = None,
                 server: Optional["LiveServer"] = None):
        self.config = config = config or RunConfig()
        self.source, self.backend = source, backend
        self.on_status, self.on_message = on_status, on_message or (lambda _m: None)
        self.stats = RunStats()
        self.stop, self.stop_capture = threading.Event(), threading.Event()
        self.interrupted = False
        self._presses = 0
        self._error: Optional[tuple[str, BaseException]] = None
        self._lock = threading.Lock()
        self.sinks: list[Sink] = []
        try:
            config.validate()
            self.scorer = self._scorer()
            if server is not None:  # first: viewers see a frame before the file I/O
                self.sinks.append(server.sink())
            if config.show:
                self.sinks.append(WindowSink())
            if config.masks is not None:
                self.sinks.append(MaskSink(config.masks))
            if config.output is not None:
                self.sinks.append(VideoSink(config.output, source.fps, source.size))
            self.sinks.extend(sinks)
        except BaseException:
            close_all(self.sinks)
            source.close()
            raise
        n, size = config.batch, config.queue_size
        # Live sources: one batch waiting for the engine at most (freshness over depth).
        self.queues = {
            "capture": queue.Queue(maxsize=n if source.live else n * size),
            "batches": queue.Queue(maxsize=1 if source.live else size),
            "labels": queue.Queue(maxsize=size),
            "rendered": queue.Queue(maxsize=size),
        }
        self.overlay = Overlay(backend.metadata.palette, backend.metadata.class_names,
                               config.alpha, config.legend, config.hud)
        if server is not None:
            server.watch(self)

    def _scorer(self) -> Optional[LiveScorer]:
        labels = self.config.labels
        if labels is None:
            return None
        if not self.source.file_names:
            raise BadInput(f"--labels needs a directory of frames (labels are matched by file "
                           f"name); {self.source.description} is a video or a stream")
        meta = self.backend.metadata
        return LiveScorer(labels, meta.dataset, meta.num_classes)

    def queue_depths(self) -> dict[str, int]:
        return {name: q.qsize() for name, q in self.queues.items()}

    def _guard(self, name: str, body: Callable[[], None]) -> Callable[[], None]:
        """A thread body that records the first failure and stops every stage."""
        def run() -> None:
            try:
                body()
            except Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 — re-raised in the caller
                self._fail(name, exc)
            finally:
                if name == "write":
                    failure = close_all(self.sinks)
                    if failure is not None:
                        self._fail("write", failure)
        return run

    def _fail(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = (stage, exc)
        self.stop_capture.set()
        self.stop.set()

    def _threads(self) -> list[threading.Thread]:
        q, s, stop, cfg = self.queues, self.stats, self.stop, self.config
        bodies = {
            "capture": lambda: capture_loop(self.source, q["capture"], self.stop_capture, stop,
                                            s, cfg.max_frames),
            "preprocess": lambda: batch_loop(q["capture"], q["batches"], stop, s,
                                             self.backend.input_size, cfg.batch, self.source.live),
            "infer": lambda: infer_loop(q["batches"], q["labels"], stop, s, self.backend),
            "overlay": lambda: overlay_loop(q["labels"], q["rendered"], stop, s, self.overlay,
                                            self.scorer),
            "write": lambda: write_loop(q["rendered"], stop, self.stop_capture, s, self.sinks),
        }
        # Capture may sit in a camera's blocking read that nothing can interrupt: as a daemon
        # it cannot keep the process alive after the run has given up on it.
        return [threading.Thread(target=self._guard(name, body), name=f"rtseg-{name}",
                                 daemon=name == "capture")
                for name, body in bodies.items()]

    def _status(self) -> None:
        if self.on_status is not None:
            self.on_status(self.stats.snapshot(self.queue_depths()))

    def interrupt(self) -> None:
        """What Ctrl-C does: the first call stops capture and lets the frames in flight
        finish (the result says ``interrupted``); the next stops every stage at once. Safe
        to call from a signal handler (see :func:`forward_sigint`) or another thread."""
        self._presses += 1
        self.interrupted = True
        self.stop_capture.set()
        if self._presses == 1:
            self.on_message("interrupted: finishing the frames in flight "
                            "(Ctrl-C again to stop at once)")
        else:
            self.stop.set()

    def _wait(self, threads: Sequence[threading.Thread]) -> None:
        for t in threads:
            while t.is_alive():
                t.join(self.config.status_interval)
                self._status()

    def run(self) -> dict:
        """Run to the end of the source (or Ctrl-C, or ``max_frames``); the run JSON.

        The first Ctrl-C stops capture and finishes the frames in flight (the result has
        ``interrupted: true``); a second abandons them. A failing stage stops all stages
        and its exception is raised here (wrapped in StageError unless it is an RtsegError),
        with the run JSON of the frames written before it as the error's ``result``.
        """
        threads = self._threads()
        self.stats.start()
        start_all(threads)
        try:
            while True:
                try:
                    self._wait(threads)
                    break
                except KeyboardInterrupt:
                    self.interrupt()
                except BaseException as exc:  # a failing status callback: stop, join, re-raise
                    self._fail("status", exc)
                    for t in threads:
                        if t.ident is not None:  # started
                            t.join()
                    raise
        finally:  # however we leave (even a Ctrl-C inside the handler above), stop and join
            if any(t.is_alive() for t in threads):
                self.stop_capture.set()
                self.stop.set()
                for t in threads:
                    if t.ident is not None:
                        t.join(timeout=5.0 if t.daemon else None)
        for q in self.queues.values():  # after a hard stop, free the frames left behind
            drain(q)
        if self._error is not None:
            error, exc = self._failure(), self._error[1]
            if error is exc:
                raise error
            raise error from exc
        try:
            self._status()
        except KeyboardInterrupt:  # too late to stop anything, but the user asked
            self.interrupted = True
        return self.result()

    def _failure(self) -> RtsegError:
        """The error to raise for the first failure (an RtsegError as is, anything else as
        StageError), carrying the run JSON of the frames written so far as ``result``."""
        stage, exc = self._error
        error = exc if isinstance(exc, RtsegError) else StageError(
            f"{stage} stage failed: {type(exc).__name__}: {exc}")
        error.result = {**self.result(), "ended_by": f"{stage} stage failed",
                        "error": str(error)}
        return error

    def result(self) -> dict:
        """The contract's run JSON plus details (scoring, queue bounds, why the run ended;
        ``error``: null, or the message of the failure that ended the run)."""
        summary = self.stats.summary()
        scores = self.scorer.result() if self.scorer else {"miou": None}
        out = {k: summary[k] for k in ("frames", "seconds", "fps", "dropped")}
        out.update(backend=self.backend.name, miou=scores.pop("miou"),
                   stage_ms=summary["stage_ms"], latency_ms=summary["latency_ms"])
        out.update(scores)
        out.update(device=self.backend.device, batch=self.config.batch,
                   source=self.source.description, live=self.source.live,
                   interrupted=self.interrupted,
                   ended_by="interrupted" if self.interrupted else self.stats.ended_by,
                   queue_max=dict(self.stats.queue_max),
                   queue_bounds={k: q.maxsize for k, q in self.queues.items()}, error=None)
        return out


@contextlib.contextmanager
def forward_sigint(on_interrupt: Callable[[], None]):
    """Within the block, Ctrl-C calls ``on_interrupt()`` instead of raising KeyboardInterrupt,
    so no press — early, mid-run or just as the run ends — can skip the code that finalises
    the outputs (the CLI writes the run JSON inside it). Main thread only; elsewhere, where
    Python delivers no signals, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: on_interrupt())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_all(threads: Sequence[threading.Thread]) -> None:
    """Start every thread with SIGINT held back, so a Ctrl-C cannot land between a thread's
    start and our bookkeeping (which once started a thread twice); it is delivered, as a
    KeyboardInterrupt in the main thread, as soon as all are running."""
    block = getattr(signal, "pthread_sigmask", None)  # POSIX only
    previous = block(signal.SIG_BLOCK, {signal.SIGINT}) if block else None
    try:
        for t in threads:
            t.start()
    finally:
        if block:
            block(signal.SIG_SETMASK, previous)


def run(source: str | Path | Source, engine: Backend | str | Path, device: str = "auto",
        precision: str = "auto", sinks: Sequence[Sink] = (), on_status: StatusCallback | None = None,
        on_message: MessageCallback | None = None, server: Optional["LiveServer"] = None,
        **options) -> dict:
    """The Python face of ``rtseg run``: segment ``source`` with ``engine``; the run JSON.

    ``source``: a path, camera index, URL or a Source. ``engine``: a loaded Backend or an
    engine file (opened on ``device`` in ``precision`` and closed afterwards). ``options`` are RunConfig's
    fields (``output``, ``masks``, ``labels``, ``alpha``, ``max_frames``, ``batch``, …).
    ``server``: a :class:`~rtseg.pipeline.serve.LiveServer` to watch the run in a browser.

    >>> run("drive.mp4", "engines/default.safetensors", output="overlay.mp4")["fps"]
    """
    for key in ("labels", "output", "masks"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    config = RunConfig(**options)
    config.validate()
    backend = engine if isinstance(engine, Backend) else open_engine(engine, device, precision)
    try:
        if not isinstance(source, Source):
            source = open_source(source, config.fps, config.reconnect, on_message)
        return Pipeline(source, backend, config, sinks, on_status, on_message, server).run()
    finally:
        if backend is not engine:
            backend.close()
