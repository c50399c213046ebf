"""`rtseg run` with several sources: each stream's labels equal a run of that source alone, in
order; a failing stream finalises its own outputs while the others go on; a stalled stream
holds the others back by the batch timeout at most; Ctrl-C finalises every stream's video and
the JSON; bad requests are one line, exit 2, before any frame. Small synthetic inputs and a
fake engine (labels from the pixels), except the Ctrl-C test, which runs the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import rtseg.pipeline.launch
from rtseg.cli import main
from rtseg.errors import BadInput, StageError
from rtseg.pipeline import RunConfig, Source, run
from rtseg.pipeline.batcher import Batcher
from rtseg.pipeline.frames import Frame
from rtseg.pipeline.multirunner import MultiPipeline
from rtseg.pipeline.queues import END
from rtseg.pipeline.sources import open_source
from rtseg.pipeline.streams import StreamPlan, stream_names

from helpers import BreakingSource, FakeBackend, decoded_frames

pytestmark = pytest.mark.usefixtures("no_thread_outlives_a_test")

CONTRACT_KEYS = {"frames", "seconds", "fps", "dropped", "backend", "miou", "stage_ms",
                 "latency_ms"}


# --- small inputs of different kinds and sizes ------------------------------------------------

def make_video(path: Path, frames: int, size=(48, 64), seed: int = 0) -> Path:
    """An mp4 of ``frames`` seeded random frames of ``size`` (H, W)."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (w, h))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    writer.release()
    return path


def make_frames(directory: Path, frames: int, size=(40, 56), seed: int = 1) -> Path:
    """A directory of ``frames`` seeded random PNG frames of ``size`` (H, W)."""
    directory.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(frames):
        cv2.imwrite(str(directory / f"f{i:03d}.png"),
                    rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return directory


def masks_of(directory: Path) -> dict[str, np.ndarray]:
    """The class-id PNGs a run wrote, by file name."""
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            for p in sorted(directory.glob("*.png"))}


@pytest.fixture()
def inputs(tmp_path):
    """A 48x64 video of 14 frames, a folder of 9 40x56 frames, a 32x32 video (to break)."""
    return (make_video(tmp_path / "front.mp4", 14),
            make_frames(tmp_path / "side", 9),
            make_video(tmp_path / "rear.mp4", 12, size=(32, 32), seed=2))


def test_each_stream_equals_its_source_alone_and_a_failing_one_stops_no_other(
        inputs, tmp_path, monkeypatch):
    video, folder, broken = inputs
    alone = {}
    for source in inputs:  # each source on its own, through the one-source pipeline
        out = tmp_path / f"alone-{source.stem}"
        run(str(source), FakeBackend(), masks=out, batch=2)
        alone[source.stem] = masks_of(out)

    monkeypatch.setattr(rtseg.pipeline.launch, "open_source",
                        lambda spec, *a, **k: BreakingSource(broken, 5) if spec == str(broken)
                        else open_source(spec, *a, **k))
    report = tmp_path / "run.json"
    with pytest.raises(StageError, match="stream rear .* failed: .*Input/output error"):
        run([str(video), str(folder), str(broken)], FakeBackend(), batch=4,
            masks=tmp_path / "m", output=tmp_path / "{stream}.mp4", json_path=report)

    result = json.loads(report.read_text())
    assert set(result) >= CONTRACT_KEYS | {"streams"}
    front, side, rear = result["streams"]
    assert [s["name"] for s in (front, side, rear)] == ["front", "side", "rear"]
    assert (front["frames"], side["frames"], rear["frames"]) == (14, 9, 5)
    assert front["error"] is side["error"] is None and "Input/output" in rear["error"]
    assert result["frames"] == 28 and "stream rear" in result["error"]
    assert result["ended_by"] == "stream rear failed"
    for name, written in (("front", 14), ("side", 9), ("rear", 5)):
        got = masks_of(tmp_path / "m" / name)
        want = dict(list(alone[name].items())[:written])
        assert list(got) == list(want)  # the same frames, by name
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
        assert decoded_frames(tmp_path / f"{name}.mp4") == written  # each video finalised
    assert not list(tmp_path.glob(".*.partial*"))


class Ticking(Source):
    """A live source: a frame every ``period`` s, or none ever after the first (``stall``)."""

    live = True

    def __init__(self, period: float, stall: bool = False, value: int = 0):
        self.period, self.stall, self.value, self.count = period, stall, value, 0
        self.description, self.size = "ticking", (24, 32)

    def read(self, stop):
        if self.stall and self.count:
            stop.wait()
            return None
        if stop.wait(self.period):
            return None
        self.count += 1
        return np.full((24, 32, 3), self.value, np.uint8), f"{self.count:06d}", None


def run_streams(sources, config, stop_after: int, backend=None) -> tuple[dict, FakeBackend]:
    """A MultiPipeline over ``sources``, interrupted once ``stop_after`` frames are written."""
    def status(snapshot):
        if snapshot["frames"] >= stop_after:
            raise KeyboardInterrupt

    backend = backend or FakeBackend()
    plans = [StreamPlan(f"s{i}", f"s{i}") for i in range(len(sources))]
    return MultiPipeline(sources, plans, backend, config, on_status=status).run(), backend


def test_a_stalled_stream_holds_the_others_back_by_the_timeout_at_most():
    config = RunConfig(batch=8, batch_timeout_ms=30, status_interval=0.02)
    result, backend = run_streams([Ticking(0.1, stall=True), Ticking(0.1, value=200)],
                                  config, stop_after=8)
    stalled, healthy = result["streams"]
    assert stalled["frames"] == 1 and healthy["frames"] >= 7
    # Waiting for a batch of 8 would hold each frame back for up to 0.7 s; the timeout sends
    # what there is 30 ms after the first frame.
    assert healthy["latency_ms"]["p99"] < 400
    assert max(shape[0] for shape, *_ in backend.calls) < 8  # never waited for a full batch


def test_the_batcher_serves_streams_round_robin_in_each_streams_order():
    import queue

    queues = [queue.Queue() for _ in range(3)]
    for stream, count in enumerate((9, 3, 6)):  # a fast stream must not starve the others
        for i in range(count):
            queues[stream].put(Frame(i, f"{i}", None, 0.0, stream=stream))
        queues[stream].put(END)
    ready = threading.Event()
    batches = list(Batcher(queues, 4, 0.01, threading.Event(), ready))
    first = [(f.stream, f.index) for f in batches[0].frames]
    assert first == [(0, 0), (1, 0), (2, 0), (0, 1)]  # one from each before a second
    order = [(f.stream, f.index) for b in batches for f in b.frames]
    for stream, count in enumerate((9, 3, 6)):
        assert [i for s, i in order if s == stream] == list(range(count))
    assert sorted(s for b in batches for s in b.ended) == [0, 1, 2]
    assert all(len(b.frames) <= 4 for b in batches)


def test_ctrl_c_in_process_finalises_every_streams_video(tmp_path):
    from rtseg.pipeline.streams import plan_streams

    class Endless(Source):
        def __init__(self, value, size):
            self.value, self.size, self.n, self.description = value, size, 0, "endless"

        def read(self, stop):
            self.n += 1
            return np.full((*self.size, 3), self.value, np.uint8), f"{self.n:06d}", None

    plans = plan_streams(["a", "b"], output=tmp_path / "{stream}.mp4")
    config = RunConfig(batch=3, status_interval=0.01)
    sources = [Endless(10, (24, 32)), Endless(200, (40, 48))]

    def status(snapshot):
        if snapshot["frames"] >= 6:
            raise KeyboardInterrupt

    result = MultiPipeline(sources, plans, FakeBackend(), config, on_status=status).run()
    assert result["interrupted"] and result["ended_by"] == "interrupted"
    for stream in result["streams"]:
        assert stream["frames"] > 0
        assert decoded_frames(tmp_path / f"{stream['name']}.mp4") == stream["frames"]


@pytest.mark.slow
def test_ctrl_c_with_several_streams_exits_130_with_every_video_and_the_json(
        dashcam_clip, engine_path, tmp_path):
    report = tmp_path / "run.json"
    partials = [tmp_path / ".solidWhiteRight.partial.mp4",
                tmp_path / ".solidWhiteRight-2.partial.mp4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtseg", "run", "--source", str(dashcam_clip), "--source",
         str(dashcam_clip), "--batch", "2", "--engine", str(engine_path), "--output",
         str(tmp_path / "{stream}.mp4"), "--json", str(report), "--device", "cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not all(p.exists() and p.stat().st_size > 50_000 for p in partials):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no frames written within 90 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    result = json.loads(report.read_text())
    assert set(result) >= CONTRACT_KEYS and result["interrupted"] is True
    assert [s["name"] for s in result["streams"]] == ["solidWhiteRight", "solidWhiteRight-2"]
    for stream in result["streams"]:
        assert 0 < stream["frames"] < 221
        assert decoded_frames(tmp_path / f"{stream['name']}.mp4") == stream["frames"]
    assert result["frames"] == sum(s["frames"] for s in result["streams"])


@pytest.mark.parametrize("extra, message", [
    (["--output", "{tmp}/o.mp4"], "{stream}"),
    (["--labels", "{tmp}", "--labels", "{tmp}", "--labels", "{tmp}"],
     "--labels is given 3 times for 2 sources"),
    (["--batch", "0"], "--batch"),
    (["--batch-timeout", "-5"], "--batch-timeout -5"),
])
def test_bad_requests_with_several_sources_are_one_line_exit_2_before_any_frame(
        extra, message, inputs, tmp_path, capfd):
    video, folder, _ = inputs
    args = ["run", "--source", video, "--source", folder, "--engine", tmp_path / "none.onnx",
            "--device", "cpu", "--json", tmp_path / "run.json",
            *[str(a).replace("{tmp}", str(tmp_path)) for a in extra]]
    code = main([str(a) for a in args])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert message in err[0], err
    assert not (tmp_path / "run.json").exists() and not (tmp_path / "o.mp4").exists()


def test_one_source_given_as_a_list_is_the_one_source_run(inputs, tmp_path):
    result = run([str(inputs[0])], FakeBackend(), output=tmp_path / "o.mp4")
    assert "streams" not in result and result["frames"] == 14
    assert decoded_frames(tmp_path / "o.mp4") == 14


def test_sinks_of_the_python_api_are_refused_with_several_sources(inputs, tmp_path):
    from rtseg.pipeline import MaskSink

    with pytest.raises(BadInput, match="sinks= takes the frames of one source"):
        run([str(inputs[0]), str(inputs[1])], FakeBackend(), sinks=[MaskSink(tmp_path / "m")])


def test_stream_names_are_stems_made_unique():
    assert stream_names(["a/front.mp4", "b/front.mp4", "frames/", "0",
                         "rtsp://user:pw@cam.local/live", "front.mp4"]) == \
        ["front", "front-2", "frames", "camera0", "live", "front-3"]


def test_serve_shows_a_grid_a_route_per_stream_and_each_streams_numbers():
    from rtseg.pipeline import LiveServer

    from test_serve import Moving, Stream as Viewer, decode, request, stats, wait_until

    sources = [Moving(size=(48, 64), period=0.01), Moving(size=(32, 40), period=0.01)]
    plans = [StreamPlan("a", "front"), StreamPlan("b", "rear")]
    with LiveServer(("127.0.0.1", 0)) as live:
        pipeline = MultiPipeline(sources, plans, FakeBackend(), RunConfig(batch=2), server=live)
        worker = threading.Thread(target=pipeline.run)
        worker.start()
        try:
            status, _, page = request(live.port, "/")
            assert status == 200 and b"stream/" in page and b"stats.json" in page
            for route, size in (("/stream/0.mjpg", (48, 64)), ("/stream/1.mjpg", (32, 40)),
                                ("/stream.mjpg", (48, 64))):
                viewer = Viewer(live.port, route)
                try:
                    assert viewer.status == 200
                    assert decode(viewer.frame()).shape[:2] == size
                finally:
                    viewer.close()
            wait_until(lambda: request(live.port, "/snapshot/1.jpg")[0] == 200, what="a snapshot")
            assert decode(request(live.port, "/snapshot/1.jpg")[2]).shape[:2] == (32, 40)
            for missing in ("/stream/2.mjpg", "/stream/1.jpg", "/snapshot/x.jpg"):
                assert request(live.port, missing)[0] == 404, missing
            numbers = wait_until(lambda: (s := stats(live.port))["streams"][1]["frames"] and s,
                                 what="frames of both streams")
            assert [s["name"] for s in numbers["streams"]] == ["front", "rear"]
            assert [s["route"] for s in numbers["streams"]] == ["/stream/0.mjpg",
                                                                "/stream/1.mjpg"]
            assert all(s["fps_now"] is not None for s in numbers["streams"])
            assert numbers["state"] == "running" and len(numbers["source"]) == 2
        finally:
            pipeline.interrupt()
            pipeline.interrupt()
            worker.join(30)
    assert not worker.is_alive()


def test_bench_runs_n_copies_of_the_clip_against_the_engine_alone_at_batch_b(inputs):
    from rtseg.bench import bench

    result = bench(FakeBackend(), str(inputs[0]), [3], iters=2, warmup=0, streams=3,
                   max_frames=6)
    assert result["streams"] == 3 and result["pipeline_batch"] == 3
    assert result["pipeline_frames"] == 18 and len(result["stream_fps"]) == 3
    assert result["engine_fps"] == result["results"][0]["fps"] > 0
    assert result["pipeline_ratio"] == pytest.approx(result["pipeline_fps"] / result["engine_fps"])
    assert result["bound_by"] in {"capture", "preprocess", "infer", "overlay", "write"}


def test_bench_streams_refuses_one_video_for_several_before_any_engine_call(inputs, tmp_path):
    from rtseg.bench import bench

    class Untouchable(FakeBackend):
        def infer(self, frames):
            raise AssertionError("the engine ran before the output was checked")

    with pytest.raises(BadInput, match=r"3 sources need one video each"):
        bench(Untouchable(), str(inputs[0]), [3], iters=2, warmup=0, streams=3,
              output=tmp_path / "one.mp4")
    assert not (tmp_path / "one.mp4").exists()


@pytest.mark.parametrize("args, message", [
    (["--streams", "2"], "--streams needs --source"),
    (["--streams", "0", "--source", "{video}"], "--streams 0 must be at least 1"),
    (["--streams", "2", "--source", "0"], "--streams needs --source to be a video file"),
])
def test_bench_streams_needs_a_clip(args, message, inputs, tmp_path, capfd):
    args = [a.replace("{video}", str(inputs[0])) for a in args]
    code = main(["bench", "--engine", str(tmp_path / "none.onnx"), *args])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


@pytest.mark.slow
def test_gpu_multistream_dry_run_writes_every_row(dashcam_clip, tmp_path):
    """bench/gpu_multistream.py on the CPU (tiny model): every code path the GPU run takes."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "bench/gpu_multistream.py", "--dry-run", "--source",
                           str(dashcam_clip), "--out", str(tmp_path / "gms")], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads((tmp_path / "gms.json").read_text())
    rows = [(r["streams"], r["device_frames"], r["video"]) for r in report["rows"]]
    assert rows == [(1, True, False), (2, True, False), (1, False, False), (2, False, False),
                    (2, True, True)]
    assert all(r["pipeline_fps"] > 0 and r["bound_by"] for r in report["rows"])
    assert "| model | 2 | 2 | yes | mp4 |" in (tmp_path / "gms.md").read_text()
