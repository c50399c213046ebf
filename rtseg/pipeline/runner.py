"""The live pipeline: capture → preprocess → infer → overlay → write, one thread per stage.

Every stage thread runs :func:`~rtseg.pipeline.stages.run_stage`. Stages are joined by
bounded ``queue.Queue``s, so a slow stage back-pressures the ones before it instead of
growing memory (live sources drop their oldest frame instead). Two events steer shutdown:

* ``stop_capture`` — end of input requested (Ctrl-C, a closed window): capture sends END,
  and every frame already captured is finished and written;
* ``stop`` — hard stop (a stage failed, or a second Ctrl-C): every stage returns within
  ``queues.POLL_S`` once its current engine call or sink write is done.

The main thread only waits, reports status and turns Ctrl-C into ``stop_capture``. Every
stage thread is joined before :meth:`Pipeline.run` returns or raises (capture for
``CAPTURE_JOIN_S`` at most: a camera read can block for ever); the write stage closes the
sinks on its way out, so the mp4 is finalised however the run ends.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from itertools import chain
from typing import Callable, Optional, Sequence

from rtseg.backends import Backend
from rtseg.errors import BadInput, RtsegError, StageError
from rtseg.pipeline.config import RunConfig
from rtseg.pipeline.consistency import ConsistencyMonitor, check_sequence
from rtseg.pipeline.overlay import Overlay
from rtseg.pipeline.queues import Stopped, drain, stage_queues
from rtseg.pipeline.serve import LiveServer
from rtseg.signals import start_all
from rtseg.pipeline.sinks import Sink, close_all, live_scorer, open_sinks
from rtseg.pipeline.smooth import FlowSmoother
from rtseg.pipeline.sources import Source
from rtseg.pipeline.stages import (Outlet, Written, capture, frame_numbers, gather, infer, one,
                                   preprocess, queue_items, render, run_stage, write)
from rtseg.pipeline.stats import RunStats
from rtseg.redact import redact
from rtseg.scoring.live import LiveScorer

StatusCallback = Callable[[dict], None]
MessageCallback = Callable[[str], None]
CAPTURE_JOIN_S = 5.0  # how long a stopped run waits for capture to leave a blocking read


class Pipeline:
    """One run of the live pipeline over ``source`` with ``backend``.

    Takes ownership of ``source`` (closed when capture ends, or here if the pipeline cannot
    be set up). ``sinks`` are extra sinks after the ones the config asks for.
    ``on_status(snapshot)`` is called from the calling thread every ``status_interval``
    seconds; ``on_message(text)`` gets warnings (stream reconnects, Ctrl-C) from any thread.
    ``server``: a :class:`~rtseg.pipeline.serve.LiveServer` that shows this run live (it
    outlives the run, showing the last frame and the final numbers: its owner closes it).

    >>> result = Pipeline(open_source("drive.mp4"), backend, RunConfig(output=Path("o.mp4"))).run()
    """

    def __init__(self, source: Source, backend: Backend, config: RunConfig | None = None,
                 sinks: Sequence[Sink] = (), on_status: StatusCallback | None = None,
                 on_message: MessageCallback | None = None,
                 server: Optional[LiveServer] = None):
        self.config = config = config or RunConfig()
        try:
            check_device(backend, config)
            self._init_state(backend, on_status, on_message)
        except BaseException:
            source.close()
            raise
        self.source = source
        self.scorer, self.sinks = self._outputs(server, sinks)
        self.queues = stage_queues(config.batch, config.queue_size, source.live)
        meta = backend.metadata
        self.monitor = ConsistencyMonitor(meta.class_names) if config.consistency else None
        self.smoother = FlowSmoother(config.smooth) if config.smooth else None
        if server is not None:
            server.watch(self)

    def _init_state(self, backend: Backend, on_status: StatusCallback | None,
                    on_message: MessageCallback | None) -> None:
        """What every run holds, with one source or several: the stop events, the error and
        press bookkeeping, the stats, the overlay and the frame path (host or device) —
        made before any output is opened, so a failure here leaves nothing to finalise."""
        self.backend = backend
        self.on_status, self.on_message = on_status, on_message or (lambda _m: None)
        self.stats = RunStats()
        self.stop, self.stop_capture = threading.Event(), threading.Event()
        self.interrupted = False
        self._presses = 0
        self._error: Optional[tuple[str, BaseException]] = None
        self._lock = threading.Lock()
        self._ended: dict[str, threading.Event] = {}  # per stage thread, set as it returns
        meta, config = backend.metadata, self.config
        self.overlay = Overlay(meta.palette, meta.class_names, config.alpha, config.legend,
                               config.hud)
        self.device = on_device(backend, self.overlay, config, self.on_message)

    # -- set-up ------------------------------------------------------------------------------
    def _outputs(self, server: Optional[LiveServer],
                 extra: Sequence[Sink]) -> tuple[Optional[LiveScorer], list[Sink]]:
        """The scorer and the sinks: the live page's first (viewers see a frame before the
        file I/O), then those the config asks for, then ``extra``. If one cannot be opened,
        the sinks opened so far and the source are closed."""
        config, source = self.config, self.source
        try:
            if config.consistency:
                check_sequence(source)
            scorer = live_scorer(config.labels, source, self.backend.metadata)
            sinks = open_sinks(server.sink() if server is not None else None, config.show,
                               config.masks, config.output, source.fps, source.size)
        except BaseException:
            source.close()
            raise
        return scorer, sinks + list(extra)

    def _stages(self) -> dict[str, dict]:
        """Each stage's :func:`run_stage` arguments (besides its name and the stats), in
        pipeline order."""
        q, stats, stop, live = self.queues, self.stats, self.stop, self.source.live

        def outlet(name: str, latest: bool = False) -> Outlet:
            return Outlet(q[name], name, stop, stats, latest)

        device = self.device
        return {
            "capture": dict(items=frame_numbers(self.stop_capture, stats, self.config.max_frames),
                            work=capture(self.source, self.stop_capture, stats),
                            out=outlet("capture", latest=live), count=one),
            "preprocess": dict(items=gather(q["capture"], stop, self.config.batch, live,
                                            (self.config.batch_timeout_ms or 0.0) / 1000.0),
                               work=device.batch if device else preprocess(
                                   self.backend.input_size),
                               out=outlet("batches")),
            "infer": dict(items=queue_items(q["batches"], stop),
                          work=infer(self.backend, keep_inputs=bool(self.monitor or self.smoother),
                                     call=device.segment if device else None),
                          out=outlet("labels")),
            "overlay": dict(items=queue_items(q["labels"], stop),
                            work=render(self.overlay, stats, self.scorer, self.smoother,
                                        self.monitor, blended=device.draw if device else None),
                            out=outlet("rendered")),
            "write": dict(items=chain.from_iterable(queue_items(q["rendered"], stop)),
                          work=write(self.sinks, self.stop_capture), out=Written(stats),
                          count=one),
        }

    def _threads(self) -> list[threading.Thread]:
        """One thread per stage, not started; capture closes the source and write the sinks
        on their way out."""
        closers = {"capture": self.source.close, "write": self._close_sinks}
        threads = []
        for name, args in self._stages().items():
            body = partial(run_stage, name, stats=self.stats, **args)
            self._ended[f"rtseg-{name}"] = ended = threading.Event()
            # Capture may sit in a camera's blocking read that nothing can interrupt: as a
            # daemon it cannot keep the process alive after the run has given up on it.
            threads.append(threading.Thread(
                target=self._guard(name, body, closers.get(name), ended),
                name=f"rtseg-{name}", daemon=name == "capture"))
        return threads

    def _close_sinks(self) -> None:
        """Close every sink, then raise the first failure of one (if any)."""
        failure = close_all(self.sinks)
        if failure is not None:
            raise failure

    # -- the stage threads' side -------------------------------------------------------------
    def _guard(self, name: str, body: Callable[[], None],
               close: Optional[Callable[[], None]] = None,
               ended: Optional[threading.Event] = None) -> Callable[[], None]:
        """A thread body that records the first failure and stops every stage; ``close``
        runs however ``body`` ends (its failure counts as the stage's); ``ended`` is set
        last."""
        def run() -> None:
            try:
                body()
            except Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 — re-raised in the caller
                self._fail(name, exc)
            finally:
                try:
                    if close is not None:
                        close()
                except BaseException as exc:  # noqa: BLE001 — as above
                    self._fail(name, exc)
                finally:
                    if ended is not None:
                        ended.set()
        return run

    def _fail(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = (stage, exc)
        self.stop_capture.set()
        self.stop.set()

    # -- the calling thread's side -----------------------------------------------------------
    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each queue between the stages, now."""
        return {name: q.qsize() for name, q in self.queues.items()}

    def interrupt(self, why: str = "Ctrl-C") -> None:
        """What Ctrl-C (or SIGTERM, SIGHUP: ``why``) does: the first call stops capture and
        lets the frames in flight finish (the result says ``interrupted``); the next stops
        every stage at once. Safe to call from a signal handler (see
        :func:`~rtseg.signals.forward_stop_signals`) or another thread."""
        self._presses += 1
        self.interrupted = True
        self.stop_capture.set()
        if self._presses == 1:
            said = "interrupted" if why == "Ctrl-C" else f"interrupted ({why})"
            self.on_message(f"{said}: finishing the frames in flight "
                            f"({why} again to stop at once)")
        else:
            self.stop.set()

    def run(self) -> dict:
        """Run to the end of the source (or Ctrl-C, or ``max_frames``); the run JSON.

        The first Ctrl-C stops capture and finishes the frames in flight (the result has
        ``interrupted: true``); a second abandons them. A failing stage stops all stages
        and its exception is raised here (wrapped in StageError unless it is an RtsegError),
        with the run JSON of the frames written before it as the error's ``result``. A
        failing ``on_status`` stops all stages and is raised as it is.
        """
        threads = self._threads()
        self.stats.start()
        try:
            if self.monitor is not None:
                self.monitor.start(self._guard)
            start_all(threads)
            self._supervise(threads)
        finally:  # however we leave (even a Ctrl-C inside a handler), stop and join
            self._stop_and_join(threads)
            if self.monitor is not None:  # the frames it holds are scored, unless hard-stopped
                self.monitor.close(finish=self._presses < 2 and self._error is None)
        self._raise_failure()
        try:
            self._status()
        except KeyboardInterrupt:  # too late to stop anything, but the user asked
            self.interrupted = True
        return self.result()

    def _supervise(self, threads: Sequence[threading.Thread]) -> None:
        """Wait for the stages, reporting status; Ctrl-C interrupts (see :meth:`interrupt`);
        a failing status callback stops every stage and is raised."""
        while True:
            try:
                self._wait(threads)
                return
            except KeyboardInterrupt:
                self.interrupt()
            except BaseException as exc:
                self._fail("status", exc)
                raise

    def _wait(self, threads: Sequence[threading.Thread]) -> None:
        """Until every stage has returned or a hard stop, ``on_status`` every interval."""
        for t in threads:
            # An Event, not join(): a join that Ctrl-C interrupts can leave the thread marked
            # as ended while it still runs (CPython gh-90882), and its sinks unclosed.
            while not self._ended[t.name].is_set() and not self.stop.is_set():
                self._ended[t.name].wait(self.config.status_interval)
                self._status()

    def _status(self) -> None:
        if self.on_status is not None:
            snapshot = self.stats.snapshot(self.queue_depths())
            if self.monitor is not None:
                snapshot["tc"] = self.monitor.latest
            self.on_status(snapshot)

    def _stop_and_join(self, threads: Sequence[threading.Thread]) -> None:
        """Stop the stages still running and join every started one, then free the frames
        left in the queues. Capture is joined for ``CAPTURE_JOIN_S`` at most (a camera read
        can block for ever; as a daemon it cannot keep the process alive). The others return
        within ``queues.POLL_S`` of the stop, or when their engine call or sink write ends:
        they are joined to the end, so the sinks are always closed."""
        # "Still running" by the stages' own ended events: a thread that has just set its
        # event may still report is_alive(), and stopping a run that ended would cut it short.
        if any(t.ident is not None and not self._ended[t.name].is_set() for t in threads):
            self.stop_capture.set()
            self.stop.set()
        deadline = time.monotonic() + CAPTURE_JOIN_S  # one wait for every stuck capture
        for t in threads:
            if t.ident is not None:  # started
                t.join(max(0.0, deadline - time.monotonic()) if t.daemon else None)
        for q in self.queues.values():
            drain(q)

    def _raise_failure(self) -> None:
        """Raise the first stage failure, if there was one (see :meth:`_failure`)."""
        if self._error is None:
            return
        error, exc = self._failure(), self._error[1]
        if error is exc:
            raise error
        raise error from exc

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
        if self.monitor is not None:
            out.update(self.monitor.result())
        if self.smoother is not None:
            out.update(smooth=self.smoother.k, smooth_ms=self.smoother.mean_ms())
        out.update(device=self.backend.device, batch=self.config.batch,
                   source=redact(self.source.description), live=self.source.live,
                   interrupted=self.interrupted,
                   ended_by="interrupted" if self.interrupted else self.stats.ended_by,
                   queue_max=dict(self.stats.queue_max),
                   queue_bounds={k: q.maxsize for k, q in self.queues.items()}, error=None)
        return out


def check_device(backend: Backend, config: RunConfig) -> None:
    """BadInput when ``--device-frames`` is asked of an engine that cannot take device
    tensors (only the PyTorch backend can)."""
    if config.device_frames and not hasattr(backend, "infer_torch"):
        raise BadInput(f"--device-frames needs a PyTorch engine (.safetensors); this one runs "
                       f"on {backend.name}")


def on_device(backend: Backend, overlay: Overlay, config: RunConfig,
              on_message: Optional[MessageCallback] = None):
    """The device path (``rtseg.pipeline.device_frames``, which imports torch) when the config
    asks for it (see :func:`check_device`), else None."""
    if not config.device_frames:
        return None
    from rtseg.pipeline.device_frames import DeviceFrames

    return DeviceFrames(backend, overlay.lut, overlay.alpha, on_message)
