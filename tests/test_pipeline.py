"""`rtseg run`, the live pipeline: real clips end to end, and its threading contract —
drain at the end, Ctrl-C, failures, slow sinks and fast live sources — with fakes."""

from __future__ import annotations

import ast
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtseg.backends import open_engine
from rtseg.cli import main
from rtseg.engines import NO_BUNDLED, default_engine
from rtseg.errors import BadInput, MissingDependency, StageError
from rtseg.scoring.evaluate import evaluate
import rtseg.pipeline
from rtseg.pipeline import MaskSink, Overlay, Pipeline, RunConfig, Sink, Source, run, runner
from rtseg.pipeline.queues import END, Stopped
from rtseg.pipeline.sinks import check_display
from rtseg.pipeline.stages import Outlet, gather, run_stage
from rtseg.pipeline.stats import RunStats
from rtseg.imageops import resize_frame, resize_nearest
from rtseg.visualize import colorize, palette_lut

from helpers import FakeBackend, engine_meta

CONTRACT_KEYS = {"frames", "seconds", "fps", "dropped", "backend", "miou", "stage_ms",
                 "latency_ms"}
STAGES = {"capture", "preprocess", "infer", "overlay", "write"}


@pytest.fixture(scope="session")
def backend(engine_path):
    with open_engine(engine_path, "cpu") as b:
        yield b


# Every pipeline thread must be joined by the time a run returns or raises.
pytestmark = pytest.mark.usefixtures("no_thread_outlives_a_test")


# --- fakes ----------------------------------------------------------------------------------

class FakeSource(Source):
    """``n`` synthetic 48×64 frames, numbered in their pixels; counts the images alive."""

    def __init__(self, n: int, live: bool = False, fail_on: int | None = None):
        self.live, self.n, self.fail_on = live, n, fail_on
        self.size = (48, 64)
        self.produced = self.alive = self.peak_alive = 0
        self.description = "fake"

    def _gone(self):
        self.alive -= 1

    def read(self, stop):
        if self.produced == self.n:
            return None
        if self.fail_on is not None and self.produced == self.fail_on:
            raise OSError("camera unplugged")
        image = np.full((48, 64, 3), self.produced % 256, np.uint8)
        weakref.finalize(image, self._gone)
        self.alive += 1
        self.peak_alive = max(self.peak_alive, self.alive)
        name = f"{self.produced:06d}"
        self.produced += 1
        return image, name, None


class RecordingSink(Sink):
    """Remembers frame indices; optionally slow or failing."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None, on_write=None):
        self.delay, self.fail_on, self.on_write = delay, fail_on, on_write
        self.indices: list[int] = []
        self.closed = False

    def write(self, item):
        if self.fail_on is not None and len(self.indices) == self.fail_on:
            raise ValueError("disk full")
        time.sleep(self.delay)
        self.indices.append(item.frame.index)
        if self.on_write:
            self.on_write(len(self.indices))

    def close(self):
        self.closed = True


def read_video(path: Path, keep=()) -> tuple[int, dict[int, np.ndarray]]:
    """How many frames a video decodes to, and the frames whose index is in ``keep``."""
    cap = cv2.VideoCapture(str(path))
    kept = {}
    for count in itertools.count():
        ok, frame = cap.read()
        if not ok:
            cap.release()
            return count, kept
        if count in keep:
            kept[count] = frame


def in_frames(bounds: dict, batch: int) -> int:
    """How many frames the pipeline's queues and stages can hold at most."""
    held = bounds["capture"] + batch * (bounds["batches"] + bounds["labels"] + bounds["rendered"])
    return held + 5 * batch + 1  # plus one batch in each stage's hands, plus one being read


# --- real data, end to end ------------------------------------------------------------------

@pytest.mark.slow
def test_dashcam_overlay_video_holds_every_frame_in_order(dashcam_clip, backend, tmp_path):
    out = tmp_path / "overlay.mp4"
    result = run(dashcam_clip, backend, output=out, batch=4, status_interval=0.2)
    assert set(result) >= CONTRACT_KEYS and set(result["stage_ms"]) == STAGES
    assert result["frames"] == 221 and result["dropped"] == 0 and result["miou"] is None
    assert result["backend"] == "pytorch" and result["fps"] > 0
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert not (tmp_path / ".overlay.partial.mp4").exists()

    picks = (0, 100, 220)
    others = {(k + 60) % 221 for k in picks}
    count, written = read_video(out, keep={*picks, *others})
    assert count == 221
    assert written[0].shape == (540, 960, 3)
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)

    # The same frames through preprocess → infer → overlay, one at a time.
    _, source = read_video(dashcam_clip, keep=picks)
    overlay = Overlay(backend.metadata.palette, backend.metadata.class_names, alpha=0.5)
    y_hud = Overlay.hud_rect(540, 960)[1]
    for k in picks:
        labels = backend.infer(resize_frame(source[k], backend.input_size)[None])[0]
        reference = overlay.render(source[k], labels)[:y_hud].astype(np.int16)
        same = np.abs(written[k][:y_hud] - reference).mean()
        other = np.abs(written[(k + 60) % 221][:y_hud] - reference).mean()
        assert same < 4.0, (k, same)  # mp4v loss, and batch-of-4 vs batch-of-1 rounding
        assert same < other / 2, (k, same, other)


@pytest.fixture()
def camvid_clip(camvid_root, tmp_path):
    """The first 12 labelled val frames as an eval root, and a 13th frame without a label."""
    images = sorted((camvid_root / "val").glob("*.png"))[:13]
    root = tmp_path / "camvid"
    for sub in ("val", "valannot", "frames"):
        (root / sub).mkdir(parents=True)
    for i, image in enumerate(images):
        (root / "frames" / image.name).symlink_to(image)
        if i < 12:
            (root / "val" / image.name).symlink_to(image)
            (root / "valannot" / image.name).symlink_to(camvid_root / "valannot" / image.name)
    return root


@pytest.mark.slow
def test_live_miou_equals_eval_and_masks_are_the_engines_labels(camvid_clip, backend, tmp_path):
    masks = tmp_path / "masks"
    result = run(camvid_clip / "frames", backend, labels=camvid_clip / "valannot",
                 masks=masks, batch=4, hud=False)
    reference = evaluate(backend, "camvid", camvid_clip, "val", batch_size=4)
    assert result["frames"] == 13 and result["scored_frames"] == 12  # 13th: segmented only
    assert result["miou"] == pytest.approx(reference["miou"], abs=1e-6)
    assert result["per_class_iou"] == pytest.approx(reference["per_class_iou"], abs=1e-6)

    frames = sorted((camvid_clip / "frames").glob("*.png"))
    assert sorted(p.name for p in masks.iterdir()) == [p.name for p in frames]
    batch = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in frames[:4]]
    labels = backend.infer(np.stack([resize_frame(f, backend.input_size) for f in batch]))
    for path, frame, lbl in zip(frames, batch, labels):
        mask = cv2.imread(str(masks / path.name), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == frame.shape[:2]
        np.testing.assert_array_equal(mask, resize_nearest(lbl, frame.shape[:2]))


@pytest.mark.slow
def test_ctrl_c_exits_130_with_finalised_json_and_video(dashcam_clip, engine_path, tmp_path):
    out, report = tmp_path / "o.mp4", tmp_path / "run.json"
    partial = tmp_path / ".o.partial.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rtseg", "run", "--source", str(dashcam_clip),
                             "--engine", str(engine_path), "--output", str(out), "--json",
                             str(report), "--device", "cpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        # A few frames in the file (not just the mp4 header written when the sink opens), so
        # the press lands mid-run whatever the machine's load.
        while not (partial.exists() and partial.stat().st_size > 100_000):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no frame written within 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    result = json.loads(report.read_text())
    assert set(result) >= CONTRACT_KEYS and result["interrupted"] is True
    assert 0 < result["frames"] < 221
    assert read_video(out)[0] == result["frames"]
    assert "interrupted" in stderr and "frames" in stdout


# --- threading contract, with fakes ----------------------------------------------------------

def test_ctrl_c_in_process_finishes_frames_in_flight(tmp_path):
    def interrupt(snapshot):
        if snapshot["frames"] >= 5:
            raise KeyboardInterrupt

    sink = RecordingSink(delay=0.005)
    result = Pipeline(FakeSource(10_000), FakeBackend(), RunConfig(output=tmp_path / "o.mp4",
                                                                   status_interval=0.01),
                      sinks=[sink], on_status=interrupt).run()
    assert result["interrupted"] and result["ended_by"] == "interrupted"
    assert 5 <= result["frames"] < 10_000 and sink.closed
    assert sink.indices == list(range(result["frames"]))  # nothing in flight was lost
    assert read_video(tmp_path / "o.mp4")[0] == result["frames"]


@pytest.mark.parametrize("where", ["capture", "infer", "write"])
def test_a_failing_stage_stops_everything_and_propagates(where, tmp_path):
    source = FakeSource(10_000, fail_on=20 if where == "capture" else None)
    backend = FakeBackend(fail_on=20 if where == "infer" else None)
    sink = RecordingSink(fail_on=20 if where == "write" else None)
    pipeline = Pipeline(source, backend, RunConfig(output=tmp_path / "o.mp4"), sinks=[sink])
    with pytest.raises(StageError, match=f"{where} stage failed") as info:
        pipeline.run()
    assert isinstance(info.value.__cause__, (OSError, RuntimeError, ValueError))
    assert source.produced < 10_000 and sink.closed
    assert (tmp_path / "o.mp4").is_file()  # finalised even so
    # the autouse fixture checks that every thread was joined


def test_a_slow_sink_back_pressures_without_deadlock():
    sink = RecordingSink(delay=0.01)
    source = FakeSource(100)
    box = {}
    pipeline = Pipeline(source, FakeBackend(), RunConfig(batch=2, queue_size=2), sinks=[sink])
    worker = threading.Thread(target=lambda: box.update(result=pipeline.run()))
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        pipeline.stop.set()
        worker.join()
        pytest.fail("the pipeline deadlocked behind a slow sink")
    result = box["result"]
    assert result["frames"] == 100 and sink.indices == list(range(100))
    for name, depth in result["queue_max"].items():
        assert depth <= result["queue_bounds"][name]
    assert source.peak_alive <= in_frames(result["queue_bounds"], 2) < 100


def test_a_fast_live_source_drops_oldest_frames_instead_of_growing():
    source = FakeSource(300, live=True)
    sink = RecordingSink()
    result = Pipeline(source, FakeBackend(delay=0.01), RunConfig(batch=1), sinks=[sink]).run()
    assert result["dropped"] > 0
    assert result["frames"] + result["dropped"] == 300
    assert result["queue_max"]["capture"] <= result["queue_bounds"]["capture"] == 1
    assert sink.indices == sorted(sink.indices)  # still in order, just fewer
    assert sink.indices[-1] == 299  # the freshest frame is never the one dropped
    assert source.peak_alive <= in_frames(result["queue_bounds"], 1) < 300


class PacedCamera(FakeSource):
    """A live source that delivers a frame every 10 ms."""

    def __init__(self, n: int):
        super().__init__(n, live=True)

    def read(self, stop):
        time.sleep(0.01)
        return super().read(stop)


def test_one_live_source_with_a_batch_timeout_waits_to_fill_its_batches():
    backend = FakeBackend()
    result = Pipeline(PacedCamera(24), backend, RunConfig(batch=4, batch_timeout_ms=500)).run()
    sizes = [shape[0] for shape, *_ in backend.calls]
    assert result["frames"] == 24 and sum(sizes) == 24
    assert sizes == [4] * 6  # each batch waited (40 ms) for its four frames, not 500 ms


class FakeCapture:
    """Stands in for cv2.VideoCapture on a stream: ``frames`` reads succeed, then it fails."""

    def __init__(self, frames: int, opened: bool = True):
        self.frames, self.opened = frames, opened

    def isOpened(self):  # noqa: N802 — OpenCV's name
        return self.opened

    def read(self):
        if not self.opened or self.frames == 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((48, 64, 3), np.uint8)

    def get(self, prop):
        return 30.0

    def release(self):
        self.opened = False


@pytest.mark.parametrize("reopened, frames", [([FakeCapture(0, opened=False)] * 2, 3),
                                              ([FakeCapture(0, opened=False), FakeCapture(2)], 5)])
def test_a_lost_stream_is_reopened_a_bounded_number_of_times(reopened, frames, monkeypatch):
    from rtseg.pipeline.sources import LiveSource, ReconnectPolicy

    captures = itertools.chain([FakeCapture(3), *reopened],
                               iter(lambda: FakeCapture(0, opened=False), None))
    monkeypatch.setattr(LiveSource, "_open", lambda self: next(captures))
    messages = []
    source = LiveSource("rtsp://camera.invalid/stream", ReconnectPolicy(attempts=2, delay_s=0.01),
                        on_message=messages.append)
    result = Pipeline(source, FakeBackend(), sinks=[RecordingSink()]).run()
    assert result["frames"] + result["dropped"] == frames and result["live"]
    assert "lost (2 reconnects failed)" in result["ended_by"]
    assert sum("reconnecting" in m for m in messages) >= 2 and "ending the run" in messages[-1]


def test_stages_overlap():
    """Engine and sink each sleep 20 ms a frame: in series 30 frames take ≥ 1.2 s."""
    result = run(FakeSource(30), FakeBackend(delay=0.02), sinks=[RecordingSink(delay=0.02)])
    assert result["stage_ms"]["infer"] >= 20 and result["stage_ms"]["write"] >= 20
    serial_s = 30 * sum(result["stage_ms"].values()) / 1000
    assert result["seconds"] < 0.75 * serial_s, (result["seconds"], serial_s)


def test_max_frames_and_status_callback():
    snapshots = []
    result = run(FakeSource(100), FakeBackend(), max_frames=7, status_interval=0.001,
                 on_status=snapshots.append)
    assert result["frames"] == 7 and result["ended_by"] == "max frames"
    assert snapshots and set(snapshots[-1]) >= {"fps", "stage_ms", "queues", "dropped"}


class StuckSource(FakeSource):
    """A live source whose read after ``n`` frames hangs, deaf to the stop event, until
    ``release`` is set (a camera driver that never returns)."""

    def __init__(self, n: int):
        super().__init__(n, live=True)
        self.stuck, self.release = threading.Event(), threading.Event()

    def read(self, stop):
        if self.produced == self.n:
            self.stuck.set()
            self.release.wait()
            return None
        return super().read(stop)


@pytest.mark.parametrize("how", ["a failing status callback", "Ctrl-C twice"])
def test_a_capture_stuck_in_a_read_cannot_hang_the_run(how, monkeypatch):
    monkeypatch.setattr(runner, "CAPTURE_JOIN_S", 0.2)
    source = StuckSource(5)

    def on_status(_snapshot):
        if source.stuck.is_set():
            if how == "a failing status callback":
                raise ValueError("the status line broke")
            pipeline.interrupt()

    pipeline = Pipeline(source, FakeBackend(), RunConfig(status_interval=0.01),
                        on_status=on_status)
    t0 = time.monotonic()
    try:
        if how == "a failing status callback":
            with pytest.raises(ValueError, match="status line broke"):
                pipeline.run()
        else:
            assert pipeline.run()["ended_by"] == "interrupted"
        assert time.monotonic() - t0 < 10
    finally:
        source.release.set()
        for t in threading.enumerate():
            if t.name == "rtseg-capture":
                t.join(10)


@pytest.mark.parametrize("options, message", [
    ({"alpha": 7}, "--alpha 7 must be between 0 and 1"),
    ({"max_frames": 0}, "--max-frames 0 must be at least 1"),
    ({"batch": 0}, "--batch and the queue size must be at least 1"),
    ({"queue_size": 0}, "--batch and the queue size must be at least 1"),
    ({"fps": -2.5}, "--fps -2.5 must be positive"),
])
def test_bad_options_fail_before_the_source_or_the_engine_is_opened(options, message, tmp_path):
    with pytest.raises(BadInput, match=message):
        RunConfig(**options)
    with pytest.raises(BadInput, match=message):  # not "source not found", nor the engine's
        run(tmp_path / "missing.mp4", tmp_path / "missing.safetensors", **options)


def test_the_library_run_writes_the_json_and_names_the_cpu(tmp_path):
    """``rtseg.pipeline.run`` is the command: it writes the run JSON, with the CPU's features
    (frame rates depend on them), and a failed run's JSON too, before raising."""
    from rtseg.cpu_features import ISA_CLASSES, REPORTED, read_cpu_features

    report = tmp_path / "run.json"
    result = run(FakeSource(3), FakeBackend(), json_path=report)
    assert json.loads(report.read_text()) == json.loads(json.dumps(result))
    features = read_cpu_features()
    assert result["cpu"] == {"model": features.model, "class": features.isa_class,
                             "features": [f for f in REPORTED if f in features.flags]}
    assert result["cpu"]["class"] in ISA_CLASSES
    if Path("/proc/cpuinfo").is_file():  # Linux: the model and the flags are known
        assert result["cpu"]["model"] and "sse2" in features.flags
    failed = tmp_path / "failed.json"
    with pytest.raises(StageError, match="capture stage failed"):
        run(FakeSource(100, fail_on=5), FakeBackend(), json_path=failed)
    written = json.loads(failed.read_text())
    assert written["ended_by"] == "capture stage failed" and written["frames"] <= 5
    assert "camera unplugged" in written["error"] and written["cpu"] == result["cpu"]


@pytest.mark.parametrize("args, message", [
    ({"source": "missing.mp4"}, "--source missing.mp4: no such file or directory"),
    ({"serve_linger": 3}, "--serve-linger needs --serve"),
    ({"serve": "127.0.0.1:0", "serve_linger": -1}, "--serve-linger -1 must be 0 or more"),
    ({"json_path": "no/such/dir/run.json"}, "--json no/such/dir/run.json: directory no/such"),
])
def test_the_library_run_checks_before_the_engine_loads(args, message, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"")
    args = {"source": "clip.mp4", **args}
    with pytest.raises(BadInput, match=message):  # not the missing engine's error
        run(engine=tmp_path / "missing.safetensors", **args)

def test_cityscapes_frames_are_scored_against_their_label_ids(cityscapes_sample, tmp_path):
    from rtseg.data import read_label
    from rtseg.scoring.confusion import ConfusionMatrix

    frames = cityscapes_sample / "leftImg8bit" / "val" / "frankfurt"
    backend = FakeBackend(dataset="cityscapes")
    result = run(frames, backend, labels=cityscapes_sample / "gtFine" / "val",
                 masks=tmp_path / "m")
    assert result["frames"] == 1 and result["scored_frames"] == 1
    name = "frankfurt_000000_000294"
    truth = read_label(cityscapes_sample / "gtFine" / "val" / "frankfurt" /
                       f"{name}_gtFine_labelIds.png", "cityscapes")
    pred = cv2.imread(str(tmp_path / "m" / f"{name}_leftImg8bit.png"), cv2.IMREAD_UNCHANGED)
    expected = ConfusionMatrix(19, 255)
    expected.update(truth, pred)
    assert result["miou"] == pytest.approx(expected.miou(), abs=1e-9)


# --- pieces -----------------------------------------------------------------------------------

def test_overlay_colours_equal_colouring_full_size_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, (16, 24), dtype=np.uint8)
    frame = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    meta = engine_meta()
    overlay = Overlay(meta.palette, meta.class_names, alpha=1.0, legend=False)
    full = resize_nearest(labels, frame.shape[:2])
    np.testing.assert_array_equal(overlay.render(frame, labels),
                                  colorize(full, palette_lut(meta.palette)))


def test_run_stage_times_each_result_hands_it_on_and_ends_with_end():
    stats, stop, out = RunStats(), threading.Event(), queue.Queue()

    def work(n):
        return END if n == 3 else [n] * n

    run_stage("infer", [1, 2, 3, 4], work, Outlet(out, "labels", stop, stats), stats)
    assert [out.get_nowait() for _ in range(3)] == [[1], [2, 2], END] and out.empty()
    assert stats.stage_ms()["infer"] is not None and stats.stage_ms()["overlay"] is None
    assert stats.queue_max == {"labels": 2}


def test_gather_fills_batches_from_files_and_never_waits_on_a_live_source():
    stop, q = threading.Event(), queue.Queue()
    for item in [0, 1, 2, 3, 4, END]:
        q.put(item)
    assert list(gather(q, stop, 2, live=False)) == [[0, 1], [2, 3], [4]]
    for item in [0, 1, 2]:
        q.put(item)
    batches = gather(q, stop, 4, live=True)
    assert next(batches) == [0, 1, 2]  # what was waiting, not a full batch of 4
    q.put(3)
    q.put(END)
    assert list(batches) == [[3]]


def test_with_a_batch_timeout_a_live_source_waits_that_long_for_a_fuller_batch():
    stop, q = threading.Event(), queue.Queue()

    def camera():  # a frame every 20 ms, then the end
        for item in range(8):
            q.put(item)
            time.sleep(0.02)
        q.put(END)

    feeder = threading.Thread(target=camera)
    feeder.start()
    batches = list(gather(q, stop, 4, live=True, timeout_s=1.0))
    feeder.join()
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]  # full: each waited for the frames to come

    q.put(0)
    started = time.monotonic()
    assert next(gather(q, stop, 4, live=True, timeout_s=0.1)) == [0]  # no more came
    assert 0.1 <= time.monotonic() - started < 1.0
    q.put(0)  # a stop (Ctrl-C) ends even a long wait at once
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        next(gather(q, stop, 4, live=True, timeout_s=100.0))
    assert time.monotonic() - started < 2.0


def test_importing_the_pipeline_does_not_import_torch():
    code = ("import rtseg.pipeline, sys; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_the_pipeline_modules_import_one_way():
    """No import cycle inside rtseg.pipeline, type-checking-only imports included."""
    package = Path(rtseg.pipeline.__file__).parent
    graph = {path.stem: {node.module.rpartition(".")[2]
                         for node in ast.walk(ast.parse(path.read_text()))
                         if isinstance(node, ast.ImportFrom)
                         and (node.module or "").startswith("rtseg.pipeline.")}
             for path in package.glob("*.py") if path.stem != "__init__"}

    def visit(chain):
        for module in graph.get(chain[-1], ()):
            assert module not in chain, " → ".join([*chain, module])
            visit([*chain, module])

    for module in graph:
        visit([module])


def test_mask_names_never_leave_the_directory(tmp_path):
    sink = MaskSink(tmp_path / "masks")
    root = (tmp_path / "masks").resolve()
    for name in ("../../etc/passwd", "..", "a/b\\c", "/abs", ".hidden"):
        assert sink.path_for(name, 3).parent == root
    assert sink.path_for("..", 3).name == "000003.png"
    (tmp_path / "masks" / "planted.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(BadInput, match="would leave"):
        sink.path_for("planted", 0)


def test_default_engine(tmp_path):
    with pytest.raises(BadInput, match="no bundled model yet"):
        default_engine(tmp_path)
    (tmp_path / "only.safetensors").touch()
    assert default_engine(tmp_path) == tmp_path / "only.safetensors"
    (tmp_path / "other.safetensors").touch()
    with pytest.raises(BadInput, match="several"):
        default_engine(tmp_path)
    (tmp_path / "default.safetensors").touch()
    assert default_engine(tmp_path).name == "default.safetensors"
    assert "rtseg train" in NO_BUNDLED


def test_default_engine_takes_the_deploy_graph_on_the_cpu_and_the_weights_elsewhere(tmp_path):
    (tmp_path / "m.safetensors").touch()
    (tmp_path / "m_int8.onnx").touch()
    assert default_engine(tmp_path).name == "m_int8.onnx"  # CPU, --precision auto
    assert default_engine(tmp_path, device="cuda").name == "m.safetensors"
    assert default_engine(tmp_path, precision="bf16").name == "m.safetensors"
    (tmp_path / "m.safetensors").unlink()
    assert default_engine(tmp_path, device="cuda").name == "m_int8.onnx"  # the only form
    (tmp_path / "n_fp32.onnx").touch()
    with pytest.raises(BadInput, match="several"):
        default_engine(tmp_path)


def test_show_without_a_display_is_a_missing_dependency():
    try:
        check_display()
    except MissingDependency as exc:
        assert "--show" in str(exc)
    else:
        pytest.skip("this machine has a display and a GUI-enabled OpenCV")


def test_default_engine_is_found_outside_an_editable_install(tmp_path, monkeypatch):
    monkeypatch.setattr("rtseg.engines.ENGINES_DIR", tmp_path / "site-packages-has-none")
    monkeypatch.delenv("RTSEG_ENGINES", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="no bundled model"):
        default_engine()
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "m.safetensors").write_bytes(b"x")
    assert default_engine() == tmp_path / "engines" / "m.safetensors"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "n.safetensors").write_bytes(b"x")
    monkeypatch.setenv("RTSEG_ENGINES", str(tmp_path / "elsewhere"))
    assert default_engine() == tmp_path / "elsewhere" / "n.safetensors"


@pytest.mark.slow
def test_ctrl_c_as_the_run_ends_still_writes_the_json(dashcam_clip, engine_path, tmp_path,
                                                      monkeypatch, capsys):
    """A press that lands while the outputs are being finalised (here: as the video closes)
    must not skip the JSON; it still counts as an interruption (exit 130)."""
    from rtseg.pipeline import sinks

    close = sinks.VideoSink.close

    def close_and_press(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # let the main thread take the signal mid-finalisation
        close(self)

    monkeypatch.setattr(sinks.VideoSink, "close", close_and_press)
    out, report = tmp_path / "o.mp4", tmp_path / "run.json"
    code = main(["run", "--source", str(dashcam_clip), "--engine", str(engine_path),
                 "--output", str(out), "--json", str(report), "--max-frames", "6",
                 "--device", "cpu"])
    assert code == 130, capsys.readouterr().err
    result = json.loads(report.read_text())
    assert result["frames"] == 6 and read_video(out)[0] == 6
