"""`rtseg bench`: structure and arithmetic of the result (not speed), the pipeline comparison
on the real dashcam clip, the Markdown table, and the CLI end to end and on bad input."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from rtseg.backends import Backend
from rtseg.bench import bench, to_markdown, validate
from rtseg.engines import untrained_engine
from rtseg.cli import main
from rtseg.data import get_spec
from rtseg.data.classes import IMAGENET_MEAN, IMAGENET_STD
from rtseg.errors import BadInput
from rtseg.metadata import EngineMetadata
from rtseg.imageops import resize_frame

CONTRACT_KEYS = {"backend", "precision", "input_size", "device", "results", "engine_fps",
                 "pipeline_fps", "pipeline_ratio"}
STAGES = {"capture", "preprocess", "infer", "overlay", "write"}
INPUT = (64, 96)


class FakeBackend(Backend):
    """Sleeps a little per call; records every batch's shape, dtype, first frame and thread."""

    name = "fake"

    def __init__(self, delay: float = 0.002):
        spec = get_spec("camvid")
        meta = EngineMetadata(model="fake", num_classes=spec.num_classes,
                              class_names=list(spec.class_names),
                              palette=[list(c) for c in spec.palette],
                              ignore_index=spec.ignore_index, input_size=list(INPUT),
                              dataset=spec.name, mean=list(IMAGENET_MEAN),
                              std=list(IMAGENET_STD))
        super().__init__(meta, "cpu", "fp32")
        self.delay, self.calls = delay, []

    def infer(self, frames):
        self.calls.append((frames.shape, frames.dtype, frames[0].copy(),
                           threading.current_thread()))
        time.sleep(self.delay)
        return np.zeros(frames.shape[:3], np.uint8)


@pytest.fixture(scope="session")
def tiny_engine(tmp_path_factory):
    """An untrained but deterministic CamVid engine (seeded init), 64×96 input."""
    return untrained_engine("unet_resnet18", INPUT, tmp_path_factory.mktemp("bench_engine"))


def check_result(result: dict, batches: list[int]) -> None:
    assert CONTRACT_KEYS <= set(result)
    assert result["input_size"] == list(INPUT)
    assert [r["batch"] for r in result["results"]] == batches
    for r in result["results"]:
        assert set(r) >= {"batch", "fps", "latency_ms"}
        lat = r["latency_ms"]
        assert set(lat) == {"p50", "p99"} and 0 < lat["p50"] <= lat["p99"]
        # throughput is frames per second of the same timed calls the latencies come from
        assert r["fps"] == pytest.approx(r["batch"] * 1000.0 / r["mean_ms"], rel=0.01)
        assert lat["p50"] / 10 <= r["mean_ms"]  # a loose sanity bound, not a speed test


def test_engine_alone_structure_and_arithmetic():
    backend = FakeBackend()
    result = bench(backend, batches=[4, 1, 2, 2], iters=5, warmup=2)
    check_result(result, [1, 2, 4])  # ascending, each size once
    assert result["pipeline_batch"] == 4  # the first one asked for
    assert result["engine_fps"] == next(r["fps"] for r in result["results"] if r["batch"] == 4)
    assert result["pipeline_fps"] is None and result["pipeline_ratio"] is None
    assert result["inputs"] == "random uint8" and result["iters"] == 5
    json.dumps(result)  # serialisable as is
    # warm-up + timed calls per size, every batch full-size uint8 BGR at the input size
    shapes = [shape for shape, *_ in backend.calls]
    assert shapes == [(b, *INPUT, 3) for b in (1, 2, 4) for _ in range(2 + 5)]
    assert all(dtype == np.uint8 for _, dtype, *_ in backend.calls)


def test_engine_is_timed_on_a_worker_thread():
    """Where the pipeline's infer stage runs it (OpenMP teams are per thread)."""
    backend = FakeBackend(delay=0.0)
    bench(backend, batches=[1], iters=2, warmup=0)
    assert all(t is not threading.main_thread() for *_, t in backend.calls)
    assert not any(t.name == "rtseg-bench" for t in threading.enumerate())


@pytest.mark.realdata
def test_pipeline_ratio_on_the_real_clip(dashcam_clip):
    backend = FakeBackend()
    result = bench(backend, source=dashcam_clip, batches=[2, 1], iters=3, warmup=1,
                   rounds=2, max_frames=10)
    check_result(result, [1, 2])
    assert result["pipeline_batch"] == 2 and result["pipeline_frames"] == 10
    assert result["pipeline_ratio"] == pytest.approx(result["pipeline_fps"]
                                                     / result["engine_fps"])
    assert result["pipeline_fps"] > 0 and len(result["rounds"]) == 2
    assert set(result["stage_ms"]) == STAGES
    assert all(v is not None and v >= 0 for v in result["stage_ms"].values())
    assert result["bound_by"] in STAGES
    # engine-alone frames are the clip's own frames, resized to the input
    ok, first = cv2.VideoCapture(str(dashcam_clip)).read()
    assert ok and np.array_equal(backend.calls[0][2], resize_frame(first, INPUT))
    assert result["inputs"] == "source frames"


@pytest.mark.parametrize("kwargs, flag", [
    ({"batches": [0]}, "--batch 0"), ({"batches": []}, "--batch"),
    ({"batches": [1], "iters": 0}, "--iters 0"), ({"batches": [1], "warmup": -1}, "--warmup"),
    ({"batches": [1], "rounds": 0}, "--rounds"),
    ({"batches": [1], "max_frames": 0}, "--max-frames"),
])
def test_validate_rejects_bad_settings(kwargs, flag):
    kwargs.setdefault("iters", 1)
    with pytest.raises(BadInput, match=flag):
        validate(**kwargs)


def test_markdown_has_a_row_per_batch_and_the_pipeline():
    alone = bench(FakeBackend(delay=0.0), batches=[1, 3], iters=2, warmup=0)
    text = to_markdown(alone)
    for r in alone["results"]:
        assert f"| {r['batch']} | {r['fps']:.2f} |" in text
    assert "pipeline ratio" not in text
    piped = {**alone, "pipeline_fps": 5.0, "pipeline_ratio": 0.5, "source": "clip.mp4",
             "pipeline_frames": 10, "bound_by": "infer", "stage_ms": dict.fromkeys(STAGES, 1.0)}
    assert "| pipeline ratio | 0.500 |" in to_markdown(piped)


@pytest.mark.realdata
def test_cli_end_to_end(tiny_engine, dashcam_clip, tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["bench", "--engine", str(tiny_engine), "--source", str(dashcam_clip),
                 "--batch", "1,2", "--iters", "3", "--warmup", "1", "--max-frames", "12",
                 "--device", "cpu", "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    result = json.loads(out_json.read_text())
    check_result(result, [1, 2])
    assert result["backend"] == "pytorch" and result["device"] == "cpu"
    assert result["precision"] == "fp32" and result["engine"] == str(tiny_engine)
    assert result["pipeline_ratio"] == pytest.approx(result["pipeline_fps"]
                                                     / result["engine_fps"])
    assert result["engine_fps"] == result["results"][0]["fps"]  # pipeline batch 1
    markdown = out_md.read_text()
    assert "| 1 |" in markdown and "| 2 |" in markdown and "pipeline ratio" in markdown
    assert not list(tmp_path.glob("*.tmp"))
    stdout = capsys.readouterr().out
    assert "rtseg bench" in stdout and "pipeline FPS" in stdout


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch 0"),
    (["--batch", "x"], "--batch"),
    (["--batch", "1,,2"], "--batch"),
    (["--iters", "0"], "--iters 0"),
    (["--source", "{tmp}/missing.mp4"], "no such file"),
    (["--json", "{tmp}/no/such/dir/b.json"], "does not exist"),
    (["--markdown", "{tmp}/no/such/dir/b.md"], "does not exist"),
])
def test_cli_bad_input_exits_2(args, message, tiny_engine, tmp_path, capsys):
    argv = ["bench", "--engine", str(tiny_engine), *(a.format(tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
