"""Engine speed per batch size, and the live pipeline against the engine alone.

:func:`bench` times ``Backend.infer`` on frames already in memory (real frames of a source,
resized to the network input, or seeded random ones) for each batch size: latency p50/p99
per call and throughput in frames per second. With a source it also runs the full pipeline
(:func:`rtseg.pipeline.run`, no sinks, same process and engine) at the *pipeline batch* — the
first batch size asked for — and reports the contract's

* ``engine_fps``: the engine alone at the pipeline batch, on frames in memory;
* ``pipeline_fps``: frames per second of the pipeline run (decode → … → overlay);
* ``pipeline_ratio`` = ``pipeline_fps / engine_fps`` (None without a source).

The engine alone is timed on a worker thread, where the pipeline's infer stage runs it:
PyTorch's OpenMP team belongs to the calling thread, and under CPU contention the main
thread's team and a worker's perform very differently (see ``bench/pipeline_vs_engine.py``).
With ``rounds > 1`` engine-alone and pipeline runs alternate and medians are reported, so a
change of machine load does not pass for pipeline overhead.

>>> with open_engine("model.onnx") as backend:
...     print(to_markdown(bench(backend, source="drive.mp4", batches=[4, 1])))
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from rtseg.backends import Backend
from rtseg.cpu_features import read_cpu_features
from rtseg.errors import BadInput
from rtseg.imageops import resize_frame
from rtseg.pipeline import open_source, run
from rtseg.pipeline.stats import bound_by
from rtseg.pipeline.streams import output_paths
from rtseg.redact import redact

POOL = 32  # frames held in memory for the engine alone (more when a batch is larger)
LIVE_FRAMES = 300  # pipeline frames from a camera or stream when max_frames is not given

Progress = Callable[[str], None]


def parse_batches(text: str) -> list[int]:
    """``"1,4,8"`` → [1, 4, 8]; BadInput for anything that is not a list of integers ≥ 1."""
    try:
        batches = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise BadInput(f"--batch expects comma-separated integers, e.g. 1,4,8; got {text!r}") \
            from None
    for b in batches:
        if b < 1:
            raise BadInput(f"--batch {b}: batch sizes must be at least 1")
    return batches


def validate(batches: Sequence[int], iters: int, warmup: int = 0, rounds: int = 1,
             max_frames: Optional[int] = None, streams: Optional[int] = None,
             source: str | Path | None = None, output: Path | str | None = None) -> None:
    """BadInput, naming the flag, for settings a benchmark cannot run with (before any
    engine call: a pipeline round comes after the engine alone)."""
    if streams is not None:
        if streams < 1:
            raise BadInput(f"--streams {streams} must be at least 1")
        if source is None:
            raise BadInput("--streams needs --source (a clip each stream plays a copy of)")
        if not Path(str(source)).exists():  # a camera or a stream cannot be opened N times
            raise BadInput(f"--streams needs --source to be a video file or a frame "
                           f"directory; {redact(str(source))} is not one here")
        if streams > 1 and output is not None:  # one video per stream
            output_paths(Path(output), [f"stream{i}" for i in range(streams)])
    if not batches:
        raise BadInput("--batch needs at least one batch size, e.g. 1,4")
    bad = [b for b in batches if b < 1]
    if bad:
        raise BadInput(f"--batch {bad[0]}: batch sizes must be at least 1")
    for flag, value, least in (("--iters", iters, 1), ("--warmup", warmup, 0),
                               ("--rounds", rounds, 1)):
        if value < least:
            raise BadInput(f"{flag} {value} must be at least {least}")
    if max_frames is not None and max_frames < 1:
        raise BadInput(f"--max-frames {max_frames} must be at least 1")


def source_frames(source: str | Path, input_size: tuple[int, int], count: int,
                  on_message: Progress | None = None) -> np.ndarray:
    """Up to ``count`` frames of ``source``, resized to the engine input: uint8 [N, H, W, 3].
    ``on_message`` hears the source's warnings (unreadable frames skipped, reconnects)."""
    src, stop, frames = open_source(source, on_message=on_message), threading.Event(), []
    try:
        while len(frames) < count:
            got = src.read(stop)
            if got is None:
                break
            frames.append(resize_frame(got[0], input_size))
    finally:
        src.close()
    if not frames:
        raise BadInput(f"--source {redact(source)}: no frames could be read")
    return np.stack(frames)


def random_frames(input_size: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    """Seeded random uint8 frames [count, H, W, 3] (speed does not depend on the content)."""
    h, w = input_size
    return np.random.default_rng(seed).integers(0, 256, (count, h, w, 3), dtype=np.uint8)


def _batches_of(pool: np.ndarray, batch: int) -> list[np.ndarray]:
    """Contiguous batches cycling through ``pool``, built before any clock starts."""
    count = max(1, len(pool) // batch)
    index = np.arange(count * batch) % len(pool)
    return [np.ascontiguousarray(pool[index[i * batch:(i + 1) * batch]]) for i in range(count)]


def time_engine(backend: Backend, pool: np.ndarray, batch: int, iters: int,
                warmup: int = 0) -> dict:
    """``iters`` timed ``backend.infer`` calls of ``batch`` frames (after ``warmup`` untimed
    ones), on the calling thread: {"batch", "fps", "latency_ms": {"p50", "p99"}, "mean_ms",
    "iters"}. ``infer`` returns host arrays, so a GPU has finished when the clock stops."""
    batches = _batches_of(pool, batch)
    cancel = _CANCEL.get()
    for i in range(warmup):
        _check(cancel)
        backend.infer(batches[i % len(batches)])
    seconds = np.empty(iters)
    for i in range(iters):
        _check(cancel)
        t0 = time.perf_counter()
        backend.infer(batches[i % len(batches)])
        seconds[i] = time.perf_counter() - t0
    ms = seconds * 1000.0
    p50, p99 = np.percentile(ms, [50, 99])
    return {"batch": batch, "fps": batch * iters / float(seconds.sum()),
            "latency_ms": {"p50": float(p50), "p99": float(p99)}, "mean_ms": float(ms.mean()),
            "iters": iters}


# Set by on_worker for the worker thread: Ctrl-C (or SIGTERM) ends its engine calls.
_CANCEL: ContextVar[Optional[threading.Event]] = ContextVar("rtseg_bench_cancel", default=None)


def _check(cancel: Optional[threading.Event]) -> None:
    if cancel is not None and cancel.is_set():
        raise KeyboardInterrupt


def on_worker(fn: Callable[[], dict]) -> dict:
    """``fn()`` on a fresh thread, as the pipeline's infer stage runs the engine; its result
    or its exception. Ctrl-C or SIGTERM in the main thread lets the engine call in progress
    end, then raises there (the process must not exit while a thread is inside the engine:
    some runtimes then abort); a second one raises at once."""
    box: dict = {}
    cancel, done = threading.Event(), threading.Event()

    def body() -> None:
        _CANCEL.set(cancel)
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 — re-raised in the caller
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=body, name="rtseg-bench", daemon=True)
    worker.start()
    # Waits on an Event, not join(): a join that a signal interrupts can leave the thread
    # marked as ended while it still runs (CPython gh-90882).
    try:
        while not done.wait(0.2):  # short waits: Ctrl-C reaches the main thread
            pass
    except KeyboardInterrupt:
        cancel.set()
        done.wait()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


def cpu_bound_ceiling(engine_fps: float, stage_ms: dict, cores: int) -> float:
    """The best pipeline ratio when the engine alone already keeps ``cores`` busy: host
    stages' CPU time comes out of inference's, so engine CPU / (engine CPU + host CPU)."""
    host_ms = sum(v for k, v in stage_ms.items() if k != "infer" and v is not None)
    engine_cpu_ms = 1000.0 / engine_fps * cores
    return engine_cpu_ms / (engine_cpu_ms + host_ms)


def machine(device: str) -> dict:
    """What the numbers were measured on: platform, CPU model and its int8/bf16 features
    (VNNI, AVX-512 BF16, AMX: they decide what int8 and bf16 gain), versions, the GPU."""
    import cv2

    cpu = read_cpu_features()
    info = {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "opencv": cv2.__version__, "cpu_model": cpu.model,
            "cpu_class": cpu.isa_class, "cpu_features": cpu.reported()}
    torch = sys.modules.get("torch")  # only when a backend already loaded it
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    return info


def bench(backend: Backend, source: str | Path | None = None, batches: Sequence[int] = (1,),
          iters: int = 20, warmup: int = 3, rounds: int = 1, max_frames: Optional[int] = None,
          output: Path | str | None = None, on_progress: Progress | None = None,
          streams: Optional[int] = None, run_options: Optional[dict] = None) -> dict:
    """Benchmark ``backend``: the bench JSON of the contract, plus details.

    ``batches``: batch sizes for the engine alone (reported in ascending order); the first
    one is the pipeline batch. ``iters`` timed calls per batch size after ``warmup`` untimed
    ones. ``source``: frames for the engine (else random ones) and, when given, a pipeline run
    over it (``max_frames`` frames at most; a live source stops after LIVE_FRAMES by default),
    ``rounds`` times alternating with the engine alone at the pipeline batch; ``output``: an
    overlay mp4 the pipeline also writes (as ``rtseg run --output``; no sink by default).
    ``streams``: the pipeline plays that many copies of ``source`` at once, batched together
    (``rtseg run --source S --source S ...``); ``pipeline_fps`` is then every stream's
    frames together, ``stream_fps`` each stream's, ``max_frames`` per stream.
    ``run_options``: more of ``rtseg run``'s settings for the pipeline (``device_frames``).
    """
    batches = list(batches)
    validate(batches, iters, warmup, rounds, max_frames, streams, source, output)
    say = on_progress or (lambda _m: None)
    pipeline_batch, sizes = batches[0], sorted(set(batches))
    size = backend.input_size
    count = max(POOL, max(sizes))
    pool = (source_frames(source, size, count, say) if source is not None
            else random_frames(size, count))

    def sweep() -> list[dict]:
        out = []
        for b in sizes:
            say(f"engine alone: batch {b}, {warmup} warm-up + {iters} timed calls")
            out.append(time_engine(backend, pool, b, iters, warmup))
        return out

    results = on_worker(sweep)
    by_batch = {r["batch"]: r for r in results}
    result = {"backend": backend.name, "precision": backend.precision,
              "input_size": list(size), "device": backend.device, "results": results,
              "engine_fps": by_batch[pipeline_batch]["fps"],
              "pipeline_fps": None, "pipeline_ratio": None, "pipeline_batch": pipeline_batch,
              "source": None if source is None else redact(str(source)),
              "inputs": "source frames" if source is not None else "random uint8",
              "frames": len(pool), "iters": iters, "warmup": warmup}
    if streams is not None:
        result["streams"] = streams
    if source is not None:
        result.update(_pipeline_rounds(backend, str(source), pool, by_batch[pipeline_batch],
                                       pipeline_batch, iters, rounds, max_frames, output, say,
                                       streams or 1, run_options or {}))
    result["machine"] = machine(backend.device)
    return result


def _pipeline_rounds(backend: Backend, source: str, pool: np.ndarray, first_alone: dict,
                     batch: int, iters: int, rounds: int, max_frames: Optional[int],
                     output: Path | str | None, say: Progress, streams: int = 1,
                     options: Optional[dict] = None) -> dict:
    """Alternate the pipeline and the engine alone; medians, and the middle round's stages."""
    done = []
    for r in range(rounds):
        if r == 0:
            alone = first_alone
        else:
            say(f"round {r + 1}/{rounds}: engine alone, batch {batch}")
            alone = on_worker(lambda: time_engine(backend, pool, batch, iters))
        copies = f"{streams} streams of " if streams > 1 else ""
        say(f"round {r + 1}/{rounds}: pipeline on {copies}{redact(source)}, batch {batch}")
        if streams > 1:  # files only (validate): each stream opens its own copy
            out = run([source] * streams, backend, batch=batch, max_frames=max_frames,
                      output=output, **(options or {}))
        else:
            src = open_source(source, on_message=say)  # the pipeline owns and closes it
            limit = LIVE_FRAMES if max_frames is None and src.live else max_frames
            out = run(src, backend, batch=batch, max_frames=limit, output=output,
                      **(options or {}))
        if out["interrupted"]:  # Ctrl-C: a partial run is no measurement
            raise KeyboardInterrupt
        if out["frames"] == 0:
            raise BadInput(f"--source {redact(source)}: the pipeline read no frames")
        done.append({"engine_fps": alone["fps"], "pipeline_fps": out["fps"],
                     "ratio": out["fps"] / alone["fps"], "stage_ms": out["stage_ms"],
                     "latency_ms": out["latency_ms"], "frames": out["frames"],
                     **({"stream_fps": [st["fps"] for st in out["streams"]]}
                        if "streams" in out else {})})
    engine_fps = float(np.median([d["engine_fps"] for d in done]))
    pipeline_fps = float(np.median([d["pipeline_fps"] for d in done]))
    middle = sorted(done, key=lambda d: d["ratio"])[len(done) // 2]
    stage_ms = middle["stage_ms"]
    extra = {"engine_fps": engine_fps, "pipeline_fps": pipeline_fps,
             "pipeline_ratio": pipeline_fps / engine_fps, "stage_ms": stage_ms,
             "pipeline_latency_ms": middle["latency_ms"], "pipeline_frames": middle["frames"],
             "bound_by": bound_by(stage_ms), "rounds": done}
    if "stream_fps" in middle:
        extra["stream_fps"] = middle["stream_fps"]
    if backend.device == "cpu":
        cores = os.cpu_count() or 1
        torch = sys.modules.get("torch")
        if torch is not None:
            cores = min(cores, torch.get_num_threads())
        extra["cpu_bound_ceiling"] = cpu_bound_ceiling(engine_fps, stage_ms, cores)
    return extra


def to_markdown(result: dict) -> str:
    """The bench result as Markdown: a header line, the batch table, the pipeline figures."""
    h, w = result["input_size"]
    lines = [(f"**{result['backend']}** on {result['device']}, {result['precision']}, "
              f"input {h}x{w}, {result['inputs']}"), "",
             "| batch | FPS | p50 ms | p99 ms |", "|---:|---:|---:|---:|"]
    for r in result["results"]:
        lat = r["latency_ms"]
        lines.append(f"| {r['batch']} | {r['fps']:.2f} | {lat['p50']:.2f} | {lat['p99']:.2f} |")
    if result.get("pipeline_fps") is not None:
        copies = (f"{result['streams']} streams of " if result.get("streams", 1) > 1 else "")
        lines += ["", (f"Pipeline on {copies}`{result['source']}`, batch "
                       f"{result['pipeline_batch']}, {result['pipeline_frames']} frames:"), "",
                  "| | value |", "|---|---:|",
                  f"| engine FPS (alone) | {result['engine_fps']:.2f} |",
                  f"| pipeline FPS | {result['pipeline_fps']:.2f} |",
                  f"| pipeline ratio | {result['pipeline_ratio']:.3f} |"]
        if result.get("stream_fps"):
            lines.append("| FPS per stream | " + ", ".join(f"{v:.2f}" for v in
                                                       result["stream_fps"]) + " |")
        lines += [f"| {stage} ms/frame | {'-' if v is None else f'{v:.2f}'} |"
                  for stage, v in result["stage_ms"].items()]
        lines.append(f"| bound by | {result['bound_by']} |")
    return "\n".join(lines) + "\n"
