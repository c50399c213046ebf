"""The live pipeline over several sources at once: one capture thread per stream, one
batcher, one engine call per batch, and each stream's frames back to its own overlay and
sinks in its own order.

capture ×N → batcher + preprocess → infer → overlay → write, with the same stage loop,
queues and shutdown rules as the one-source :class:`~rtseg.pipeline.runner.Pipeline` (this
is a subclass: Ctrl-C, hard stops, failures of the shared stages, status and joining are
its). What differs: a stream whose capture ends or fails finalises its own outputs (its
:class:`~rtseg.pipeline.streams.StreamEnd` reaches the write stage after its last frame)
while the others go on; a failed stream makes :meth:`MultiPipeline.run` raise at the end,
after every other stream has finished, with the run JSON as the error's ``result``.
"""

from __future__ import annotations

import queue
import threading
from functools import partial
from itertools import chain
from typing import Callable, Optional, Sequence

import numpy as np

from rtseg.backends import Backend
from rtseg.errors import BadInput, StageError
from rtseg.imageops import resize_frame
from rtseg.pipeline.batcher import Batcher, Gathered
from rtseg.pipeline.config import RunConfig
from rtseg.pipeline.frames import Batch
from rtseg.pipeline.queues import END, Stopped, drain, put, stage_queues
from rtseg.pipeline.runner import MessageCallback, Pipeline, StatusCallback, check_device
from rtseg.pipeline.serve import LiveServer
from rtseg.pipeline.sinks import live_scorer, open_sinks
from rtseg.pipeline.sources import Source
from rtseg.pipeline.stats import RunStats
from rtseg.pipeline.stages import (Outlet, Written, capture, frame_numbers, infer, one,
                                   queue_items, render_frame, run_stage)
from rtseg.pipeline.streams import (Stream, StreamEnd, StreamPlan, describe, hud_line,
                                    pooled_scores)
from rtseg.redact import redact

DEFAULT_BATCH_TIMEOUT_MS = 40.0  # one frame interval at 25 FPS (DeepStream's usual setting)


class _Notifying(Outlet):
    """A capture outlet that wakes the batcher after each put."""

    def __init__(self, *args, ready: threading.Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.ready = ready

    def put(self, result) -> None:
        super().put(result)
        self.ready.set()

    def end(self) -> None:
        put(self.queue, END, self.stop)  # blocking even for a live source: END is never dropped
        self.ready.set()


class MultiPipeline(Pipeline):
    """One run over ``sources`` (opened, owned: closed when their capture ends, or here if
    the run cannot be set up), described by ``plans`` (names, labels, outputs), with
    ``backend``. ``config``'s ``output``, ``masks`` and ``labels`` are ignored (each plan
    holds its own); ``max_frames`` is per stream. Ctrl-C finishes the frames in flight of every
    stream, as with one source.

    >>> plans = plan_streams(["front.mp4", "rear.mp4"], output=Path("out/{stream}.mp4"))
    >>> MultiPipeline([open_source(p.spec) for p in plans], plans, backend,
    ...               RunConfig(batch=4)).run()["streams"]
    """

    def __init__(self, sources: Sequence[Source], plans: Sequence[StreamPlan], backend: Backend,
                 config: RunConfig | None = None, on_status: StatusCallback | None = None,
                 on_message: MessageCallback | None = None,
                 server: Optional[LiveServer] = None):
        self.config = config = config or RunConfig()
        try:
            if config.consistency or config.smooth:
                raise BadInput("--consistency and --smooth follow one clip: give one --source")
            check_device(backend, config)
            self._init_state(backend, on_status, on_message)
        except BaseException:
            for source in sources:
                source.close()
            raise
        self.monitor = self.smoother = None
        self.timeout_ms = (DEFAULT_BATCH_TIMEOUT_MS if config.batch_timeout_ms is None
                           else config.batch_timeout_ms)
        self.streams = [Stream(i, plan, source, self.stats)
                        for i, (plan, source) in enumerate(zip(plans, sources))]
        self.server = server
        try:
            for stream in self.streams:
                self._open_outputs(stream)
        except BaseException:
            for stream in self.streams:
                stream.close_sinks()
                stream.source.close()
            raise
        per = -(-config.batch // len(self.streams))  # a stream's share of a batch
        self.ready = threading.Event()
        self.capture_queues = [queue.Queue(maxsize=per if s.source.live
                                           else per * config.queue_size) for s in self.streams]
        self.queues = stage_queues(config.batch, config.queue_size,
                                   any(s.source.live for s in self.streams))
        del self.queues["capture"]
        if server is not None:
            server.watch(self)

    # -- set-up ------------------------------------------------------------------------------
    def _open_outputs(self, stream: Stream) -> None:
        """The stream's scorer and sinks: the live page's first, then a window, masks, video."""
        plan, source = stream.plan, stream.source
        stream.scorer = live_scorer(plan.labels, source, self.backend.metadata)
        if plan.masks is not None:
            plan.masks.parent.mkdir(exist_ok=True)  # masks/ of masks/NAME (its parent exists)
        page = (self.server.stream_sink(stream.number, stream.name)
                if self.server is not None else None)
        stream.sinks = open_sinks(page, self.config.show, plan.masks, plan.output, source.fps,
                                  source.size, title=f"rtseg {stream.name}")

    def _threads(self) -> list[threading.Thread]:
        threads = [self._capture_thread(s) for s in self.streams]
        q, stop = self.queues, self.stop

        def outlet(name: str) -> Outlet:
            return Outlet(q[name], name, stop, self.stats)

        stages = {
            "preprocess": dict(items=Batcher(self.capture_queues, self.config.batch,
                                             self.timeout_ms / 1000.0, stop, self.ready),
                               work=self._preprocess, out=outlet("batches")),
            "infer": dict(items=queue_items(q["batches"], stop),
                          work=_skip_empty(infer(self.backend, call=self.device and
                                                 self.device.segment)),
                          out=outlet("labels")),
            "overlay": dict(items=queue_items(q["labels"], stop), work=self._render,
                            out=outlet("rendered")),
            "write": dict(items=chain.from_iterable(queue_items(q["rendered"], stop)),
                          work=self._write, out=Written(stats_of=self._stats_of), count=_frames_in),
        }
        for name, args in stages.items():
            body = partial(run_stage, name, stats=self.stats, **args)
            self._ended[f"rtseg-{name}"] = ended = threading.Event()
            close = self._close_sinks if name == "write" else None
            threads.append(threading.Thread(target=self._guard(name, body, close, ended),
                                            name=f"rtseg-{name}"))
        return threads

    def _capture_thread(self, stream: Stream) -> threading.Thread:
        """The stream's capture, on a daemon thread (a camera read can block for ever). Its
        failure is the stream's: reported, its END sent, and the others go on."""
        name = f"rtseg-capture-{stream.number}"
        out = _Notifying(self.capture_queues[stream.number], "capture", self.stop,
                         stream.stats, stream.source.live, ready=self.ready)
        read = capture(stream.source, self.stop_capture, stream.stats)

        def tagged(index: int):
            frame = read(index)
            if frame is not END:
                frame.stream = stream.number
            return frame

        body = partial(run_stage, "capture",
                       frame_numbers(self.stop_capture, stream.stats, self.config.max_frames),
                       tagged, out, stream.stats, count=one)
        self._ended[name] = ended = threading.Event()

        def run() -> None:
            try:
                body()
            except Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 — the stream's failure, not the run's
                stream.error = exc
                self.on_message(f"stream {stream.name} ({redact(stream.source.description)}) "
                                f"failed: {describe(exc)}; the other streams go on")
                try:
                    out.end()
                except Stopped:
                    pass
            finally:
                try:
                    stream.source.close()
                except Exception as exc:  # noqa: BLE001 — as above
                    stream.error = stream.error or exc
                finally:
                    ended.set()

        return threading.Thread(target=run, name=name, daemon=True)

    # -- the work of the shared stages -------------------------------------------------------
    def _preprocess(self, got: Gathered) -> Batch:
        if self.device is not None:
            return self.device.batch(got.frames, got.ended)
        size = self.backend.input_size
        inputs = (np.stack([resize_frame(f.image, size) for f in got.frames])
                  if got.frames else None)
        return Batch(got.frames, inputs, ended=got.ended)

    def _render(self, batch: Batch) -> list:
        """The batch's frames, each rendered with its stream's HUD and scored with its
        stream's labels, then an end marker for each stream that ended before it."""
        out: list = []
        for i, (frame, labels) in enumerate(zip(batch.frames,
                                                batch.labels if batch.frames else ())):
            stream = self.streams[frame.stream]
            text = hud_line(stream, self.stats) if self.overlay.show_hud else ""
            out.append(render_frame(
                self.overlay, frame, labels, text,
                self.device.draw(batch, i) if self.device is not None else None, stream.scorer))
        out.extend(StreamEnd(i) for i in batch.ended)
        return out

    def _stats_of(self, item) -> Optional[RunStats]:
        """The stats a written item counts in: its stream's (a stream's end: none)."""
        return None if isinstance(item, StreamEnd) else self.streams[item.frame.stream].stats

    def _write(self, item):
        """A frame to its stream's sinks; a stream's end finalises its outputs (a failure
        to is that stream's)."""
        if isinstance(item, StreamEnd):
            stream = self.streams[item.stream]
            failure = stream.close_sinks()
            if failure is not None:
                stream.error = stream.error or failure
                self.on_message(f"stream {stream.name}: {describe(failure)}")
            return item
        for sink in self.streams[item.frame.stream].sinks:
            if sink.write(item) is False:  # a closed window ends the run, as with one source
                self.stop_capture.set()
        return item

    def _close_sinks(self) -> None:
        """Close the sinks of every stream still open; raise the first failure."""
        failures = [s.close_sinks() for s in self.streams]
        first = next((f for f in failures if f is not None), None)
        if first is not None:
            raise first

    # -- the calling thread's side -----------------------------------------------------------
    def queue_depths(self) -> dict[str, int]:
        """Items waiting between the stages now (``capture``: every stream's together)."""
        return {"capture": sum(q.qsize() for q in self.capture_queues),
                **{name: q.qsize() for name, q in self.queues.items()}}

    def _stop_and_join(self, threads) -> None:
        super()._stop_and_join(threads)
        for q in self.capture_queues:
            drain(q)

    def run(self) -> dict:
        """Run every stream to its end (or Ctrl-C); the run JSON. Raises as the one-source
        run does when a shared stage fails; when a stream failed (the others finished),
        raises StageError naming it, with the run JSON as ``result``."""
        for stream in self.streams:
            stream.stats.start()
        result = super().run()
        failed = [s for s in self.streams if s.error is not None]
        if not failed:
            return result
        first = failed[0]
        more = f" ({len(failed) - 1} more of {len(self.streams)} streams failed too)" \
            if len(failed) > 1 else ""
        error = StageError(f"stream {first.name} ({redact(first.source.description)}) failed: "
                           f"{describe(first.error)}{more}")
        error.result = {**result, "error": str(error), "ended_by": f"stream {first.name} failed"}
        raise error from first.error

    def result(self) -> dict:
        """The contract's run JSON (over every stream) with ``streams``: each stream's."""
        summary = self.stats.summary()
        scores = pooled_scores(self.streams)
        out = {k: summary[k] for k in ("frames", "seconds", "fps", "dropped")}
        out.update(backend=self.backend.name, miou=scores["miou"],
                   stage_ms=summary["stage_ms"], latency_ms=summary["latency_ms"],
                   scored_frames=scores["scored_frames"],
                   streams=[s.result() for s in self.streams],
                   device=self.backend.device, batch=self.config.batch,
                   batch_timeout_ms=self.timeout_ms,
                   source=[redact(s.source.description) for s in self.streams],
                   live=any(s.source.live for s in self.streams),
                   interrupted=self.interrupted,
                   ended_by="interrupted" if self.interrupted else "every stream ended",
                   queue_max=dict(self.stats.queue_max),
                   queue_bounds={"capture": sum(q.maxsize for q in self.capture_queues),
                                 **{k: q.maxsize for k, q in self.queues.items()}},
                   error=None)
        return out


def _skip_empty(work: Callable[[Batch], Batch]) -> Callable[[Batch], Batch]:
    """``work`` for batches with frames; a batch carrying only stream ends passes as it is."""
    return lambda batch: work(batch) if batch.frames else batch


def _frames_in(item) -> int:
    """``count`` for the write stage: a frame is one, a stream's end none."""
    return 0 if isinstance(item, StreamEnd) else 1


