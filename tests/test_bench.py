"""`rtseg bench`: structure and arithmetic of the result (not speed), the pipeline comparison
on the real dashcam clip, the Markdown table, and the CLI end to end (its bad input is in
test_bad_input.py)."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

from rtseg.bench import bench, to_markdown, validate
from rtseg.cli import main
from rtseg.errors import BadInput
from rtseg.imageops import resize_frame

from helpers import REPO, FakeBackend

CONTRACT_KEYS = {"backend", "precision", "input_size", "device", "results", "engine_fps",
                 "pipeline_fps", "pipeline_ratio"}
STAGES = {"capture", "preprocess", "infer", "overlay", "write"}
INPUT = (64, 96)


def fake_backend(delay: float = 0.002) -> FakeBackend:
    """A backend that sleeps ``delay`` per batch and records every batch."""
    return FakeBackend(INPUT, delay=delay)


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
    backend = fake_backend()
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
    backend = fake_backend(delay=0.0)
    bench(backend, batches=[1], iters=2, warmup=0)
    assert all(t is not threading.main_thread() for *_, t in backend.calls)
    assert not any(t.name == "rtseg-bench" for t in threading.enumerate())


@pytest.mark.realdata
def test_pipeline_ratio_on_the_real_clip(dashcam_clip):
    backend = fake_backend()
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


@pytest.mark.parametrize("batches, message", [([], "--batch needs at least one"),
                                              ([0], "--batch 0")])
def test_validate_rejects_batches_the_cli_cannot_send(batches, message):
    """What only a caller of bench() can pass (the CLI's --batch parser stops the rest; the
    other settings' checks are in the bad-input table)."""
    with pytest.raises(BadInput, match=message):
        validate(batches, iters=1)


def test_markdown_has_a_row_per_batch_and_the_pipeline():
    alone = bench(fake_backend(delay=0.0), batches=[1, 3], iters=2, warmup=0)
    text = to_markdown(alone)
    for r in alone["results"]:
        assert f"| {r['batch']} | {r['fps']:.2f} |" in text
    assert "pipeline ratio" not in text
    piped = {**alone, "pipeline_fps": 5.0, "pipeline_ratio": 0.5, "source": "clip.mp4",
             "pipeline_frames": 10, "bound_by": "infer", "stage_ms": dict.fromkeys(STAGES, 1.0)}
    assert "| pipeline ratio | 0.500 |" in to_markdown(piped)


@pytest.mark.realdata
def test_cli_end_to_end(engine_path, dashcam_clip, tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(["bench", "--engine", str(engine_path), "--source", str(dashcam_clip),
                 "--batch", "1,2", "--iters", "3", "--warmup", "1", "--max-frames", "12",
                 "--device", "cpu", "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    result = json.loads(out_json.read_text())
    check_result(result, [1, 2])
    assert result["backend"] == "pytorch" and result["device"] == "cpu"
    assert result["precision"] == "fp32" and result["engine"] == str(engine_path)
    assert result["pipeline_ratio"] == pytest.approx(result["pipeline_fps"]
                                                     / result["engine_fps"])
    assert result["engine_fps"] == result["results"][0]["fps"]  # pipeline batch 1
    markdown = out_md.read_text()
    assert "| 1 |" in markdown and "| 2 |" in markdown and "pipeline ratio" in markdown
    assert not list(tmp_path.glob("*.tmp"))
    stdout = capsys.readouterr().out
    assert "rtseg bench" in stdout and "pipeline FPS" in stdout


def test_slow_cpu_runs_the_command_in_a_quota_group_and_removes_it(tmp_path):
    """bench/slow_cpu.py: the command runs inside a cgroup with the asked share of every core,
    its exit code comes back, and the group is gone afterwards."""
    import os
    import subprocess
    import sys

    slow_cpu = REPO / "bench" / "slow_cpu.py"
    probe = ("import sys; g = [l for l in open('/proc/self/cgroup') "
             "if 'rtseg-slow-cpu' in l]; print(g[0].strip() if g else 'none'); sys.exit(3)")
    done = subprocess.run([sys.executable, slow_cpu, "--share", "0.5", "--", sys.executable,
                           "-c", probe], capture_output=True, text=True, timeout=60)
    if done.returncode == 2 and "cannot make a cgroup" in done.stderr:
        pytest.skip("no writable cgroup CPU controller here (needs root)")
    assert done.returncode == 3, done.stderr
    group = done.stdout.strip().split(":")[-1].lstrip("/")
    assert group.startswith("rtseg-slow-cpu-")
    for root in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup"):
        assert not os.path.exists(os.path.join(root, group))
