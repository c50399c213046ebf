"""Faults while `rtseg run` is running, through the real CLI entry point: a stream that
disconnects, a source that breaks, a disk that fills up (masks, video, and a real full
tmpfs where this machine may mount one), an engine that raises. Every run must end with
the contract's exit code, one line on stderr, every thread joined, the run JSON written
(frames done so far, ``ended_by``, ``error``) and no mp4 that is not complete and playable.

Exit codes (the contract: 1 internal error, 2 bad usage or bad input): a lost stream
after the reconnect attempts is a clean end (0, ``ended_by`` says so); a broken camera
driver, a full disk or a failing engine is an error of the environment or of rtseg, not of
the user's input (1). (An unreadable frame in a directory is skipped with a warning: see
the bad-input tests.)

SIGTERM (``docker stop``, ``systemctl stop``, Kubernetes, ``timeout``) stops ``rtseg
train`` and ``rtseg bench`` like Ctrl-C: the training state saved, exit 143 (``rtseg run``:
see test_serve, with viewers connected).

Also a short soak (bench/soak.py): structure and invariants, not speed.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

import rtseg.pipeline
from rtseg.backends import open_engine
from rtseg.backends.torch_backend import TorchBackend
from rtseg.cli import main
from rtseg.pipeline import sinks
from rtseg.pipeline.sinks import VideoSink
from rtseg.pipeline.sources import LiveSource, ReconnectPolicy

from helpers import BreakingSource, bench_script, decoded_frames, signal_after_line

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {"frames", "seconds", "fps", "dropped", "backend", "miou", "stage_ms",
                 "latency_ms"}


# Every pipeline thread must be joined by the time a run returns or raises.
pytestmark = pytest.mark.usefixtures("no_thread_outlives_a_test")


def run_cli(args: list, capfd) -> tuple[int, list[str]]:
    """``rtseg run ARGS --device cpu`` in this process: exit code and stderr's lines."""
    code = main(["run", *map(str, args), "--device", "cpu"])
    return code, capfd.readouterr().err.strip().splitlines()


def assert_one_error_line(err: list[str], *fragments: str) -> None:
    """Exactly one ``error:`` line on stderr, the last one, naming every fragment."""
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def read_run_json(path: Path) -> dict:
    """The run JSON: valid, with every contract key."""
    result = json.loads(path.read_text())
    assert set(result) >= CONTRACT_KEYS
    return result


def assert_video_holds(out: Path, frames: int) -> None:
    """``out`` is a finalised mp4 decoding to exactly ``frames`` frames; no partial left."""
    assert decoded_frames(out) == frames > 0
    assert not list(out.parent.glob(".*.partial*"))


# --- a) the source fails mid-way ----------------------------------------------------------

class DroppingStream:
    """Stands in for cv2.VideoCapture on a network stream: the real dashcam clip, which
    disconnects after ``frames`` reads (a reopened one, as a dead camera, never opens)."""

    def __init__(self, clip: Path | None, frames: int = 0):
        self.cap = cv2.VideoCapture(str(clip)) if clip else None
        self.left = frames

    def isOpened(self):
        return self.cap is not None

    def read(self):
        if self.cap is None or self.left == 0:
            return False, None
        self.left -= 1
        return self.cap.read()

    def get(self, prop):
        return self.cap.get(prop) if self.cap else 0.0

    def release(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def test_stream_lost_mid_run_is_a_clean_end(dashcam_clip, engine_path, tmp_path, capfd,
                                            monkeypatch):
    streams = itertools.chain([DroppingStream(dashcam_clip, 40)],
                              iter(lambda: DroppingStream(None), None))
    monkeypatch.setattr(LiveSource, "_open", lambda self: next(streams))
    monkeypatch.setattr(ReconnectPolicy, "delay", lambda self, attempt: 0.01)
    out, report = tmp_path / "o.mp4", tmp_path / "run.json"
    code, err = run_cli(["--source", "rtsp://camera.invalid/live", "--engine", engine_path,
                         "--output", out, "--json", report], capfd)
    assert code == 0, err
    result = read_run_json(report)
    assert "lost (5 reconnects failed)" in result["ended_by"] and result["error"] is None
    assert result["live"] and result["frames"] + result["dropped"] == 40
    assert_video_holds(out, result["frames"])
    assert sum("reconnecting" in line for line in err) == 5
    assert not any(line.startswith("error:") for line in err)


@pytest.mark.slow
def test_a_source_raising_mid_run_exits_1_with_outputs_kept(dashcam_clip, engine_path,
                                                            tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(rtseg.pipeline.launch, "open_source",
                        lambda *a, **k: BreakingSource(dashcam_clip, 30))
    out, masks, report = tmp_path / "o.mp4", tmp_path / "m", tmp_path / "run.json"
    code, err = run_cli(["--source", dashcam_clip, "--engine", engine_path, "--output", out,
                         "--masks", masks, "--json", report], capfd)
    assert code == 1
    assert_one_error_line(err, "capture stage failed", "Input/output error")
    result = read_run_json(report)
    assert result["ended_by"] == "capture stage failed" and "DQBUF" in result["error"]
    assert 0 < result["frames"] <= 30
    assert_video_holds(out, result["frames"])
    assert len(list(masks.glob("*.png"))) == result["frames"]


# --- b) the disk fills up -------------------------------------------------------------------

def fill_disk_after(monkeypatch, writes: int) -> None:
    """Mask files fail with ENOSPC after ``writes`` of them, leaving a truncated file
    behind as a real full disk does."""
    real, count = sinks.save_bytes, itertools.count()

    def save(path, data):
        if next(count) < writes:
            return real(path, data)
        path.write_bytes(bytes(data)[:64])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(sinks, "save_bytes", save)


@pytest.mark.slow
def test_disk_full_for_masks_exits_1_and_keeps_the_video_and_json(dashcam_clip, engine_path,
                                                                   tmp_path, capfd,
                                                                   monkeypatch):
    fill_disk_after(monkeypatch, 12)
    out, masks, report = tmp_path / "o.mp4", tmp_path / "m", tmp_path / "run.json"
    code, err = run_cli(["--source", dashcam_clip, "--engine", engine_path, "--output", out,
                         "--masks", masks, "--json", report, "--max-frames", 60], capfd)
    assert code == 1
    assert_one_error_line(err, "write stage failed", "No space left on device", "000012.png")
    result = read_run_json(report)
    assert result["frames"] == 12 and result["ended_by"] == "write stage failed"
    assert "No space left on device" in result["error"]
    assert_video_holds(out, 12)  # masks come first: frame 12 never reached the video
    pngs = sorted(masks.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:06d}" for i in range(12)]  # no truncated 13th
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None for p in pngs)


class FillingWriter:
    """Wraps the real cv2.VideoWriter: after ``frames`` frames ``write`` returns False, as
    OpenCV 5 does on a full disk; ``truncate`` cuts the file on release instead (the disk
    filled while the mp4 index was being written)."""

    def __init__(self, writer, path: Path, frames: int | None = None, truncate: bool = False):
        self.writer, self.path, self.left, self.truncate = writer, path, frames, truncate

    def write(self, image):
        if self.left == 0:
            return False
        if self.left is not None:
            self.left -= 1
        self.writer.write(image)
        return True

    def release(self):
        self.writer.release()
        if self.truncate:
            os.truncate(self.path, self.path.stat().st_size // 2)


def fill_disk_for_video(monkeypatch, **filling) -> None:
    """VideoSink's writer becomes a FillingWriter; the file system reports no space left."""
    real_open = VideoSink._open

    def _open(self, size):
        real_open(self, size)
        self.writer = FillingWriter(self.writer, self.partial, **filling)

    monkeypatch.setattr(VideoSink, "_open", _open)
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(sinks.shutil, "disk_usage",
                        lambda path: usage._replace(used=usage.total, free=0))


@pytest.mark.slow
@pytest.mark.parametrize("filling, frames", [({"frames": 15}, 15),
                                             ({"truncate": True}, 40)])
def test_disk_full_for_the_video_leaves_no_video_and_exits_1(filling, frames, dashcam_clip,
                                                             engine_path, tmp_path, capfd,
                                                             monkeypatch):
    fill_disk_for_video(monkeypatch, **filling)
    out, report = tmp_path / "o.mp4", tmp_path / "run.json"
    code, err = run_cli(["--source", dashcam_clip, "--engine", engine_path, "--output", out,
                         "--json", report, "--max-frames", 40], capfd)
    assert code == 1
    assert_one_error_line(err, "write stage failed", "No space left on device", "o.partial")
    result = read_run_json(report)
    assert result["frames"] == frames and result["ended_by"] == "write stage failed"
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))  # nothing half-written


@pytest.fixture()
def tiny_fs(tmp_path):
    """A real 1 MiB tmpfs, when this machine lets us mount one (root on Linux)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        pytest.skip("needs Linux mount to make a small real file system")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); the "
                    "simulated full-disk tests cover the same paths")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("on_tiny", ["masks", "video", "both"])
def test_a_real_full_disk_exits_1_and_leaves_nothing_half_written(on_tiny, dashcam_clip,
                                                                  engine_path, tiny_fs,
                                                                  tmp_path, capfd):
    out = (tiny_fs if on_tiny in ("video", "both") else tmp_path) / "o.mp4"
    masks = (tiny_fs if on_tiny in ("masks", "both") else tmp_path) / "m"
    report = tmp_path / "run.json"
    code, err = run_cli(["--source", dashcam_clip, "--engine", engine_path, "--output", out,
                         "--masks", masks, "--json", report], capfd)
    assert code == 1
    assert_one_error_line(err, "write stage failed", "No space left on device")
    assert not any("WARN" in line for line in err), err  # no OpenCV noise besides it
    result = read_run_json(report)
    assert 0 < result["frames"] < 221 and "No space left" in result["error"]
    if on_tiny == "masks":  # the video's disk had room: finalised up to the fault
        assert_video_holds(out, result["frames"])
    elif out.exists():  # published only when it holds every frame written
        assert decoded_frames(out) == result["frames"]
    assert not list(out.parent.glob(".*partial*"))
    pngs = sorted(masks.glob("*.png"))
    assert result["frames"] <= len(pngs) <= result["frames"] + 1
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None for p in pngs)


# --- c) the engine fails mid-run ----------------------------------------------------------

def test_an_engine_failing_mid_run_exits_1_with_outputs_kept(dashcam_clip, engine_path,
                                                             tmp_path, capfd, monkeypatch):
    real_infer, calls = TorchBackend.infer, itertools.count(1)

    def infer(self, frames):
        if next(calls) == 10:
            time.sleep(0.3)  # let the frames before it reach the sinks
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_infer(self, frames)

    monkeypatch.setattr(TorchBackend, "infer", infer)
    out, report = tmp_path / "o.mp4", tmp_path / "run.json"
    code, err = run_cli(["--source", dashcam_clip, "--engine", engine_path, "--output", out,
                         "--json", report], capfd)
    assert code == 1
    assert_one_error_line(err, "infer stage failed", "RuntimeError", "illegal memory access")
    result = read_run_json(report)
    assert result["ended_by"] == "infer stage failed" and "illegal memory" in result["error"]
    assert 0 < result["frames"] <= 9
    assert_video_holds(out, result["frames"])


# --- soak (bench/soak.py), short ----------------------------------------------------------

def load_soak():
    """bench/soak.py as a module."""
    return bench_script("soak")


@pytest.mark.slow
def test_soak_report_structure_and_bounded_queues(dashcam_clip, engine_path, tmp_path):
    soak = load_soak()
    with open_engine(engine_path, "cpu") as backend:
        report = soak.soak(backend, dashcam_clip, tmp_path, frames=300, every=100, warmup=100)
    assert [s["frame"] for s in report["curve"]] == [100, 200, 300]
    for sample in report["curve"]:
        assert sample["rss_mib"] > 0 and sample["seconds"] > 0 and sample["fps"] > 0
        assert set(sample["queues"]) == set(report["queue_bounds"])
    assert set(report["queue_bounds"]) == {"capture", "batches", "labels", "rendered"}
    for name, bound in report["queue_bounds"].items():
        assert 0 <= report["queue_max"][name] <= bound
    rss = report["rss_mib"]
    assert rss["warmup_frame"] == 100 and rss["at_warmup"] > 0
    assert rss["min_after_warmup"] <= rss["end"] <= rss["max_after_warmup"]
    assert set(report["criteria"]) == {"rss_flat", "queues_bounded", "all_frames_written"}
    assert report["criteria"]["queues_bounded"]["passed"]
    assert report["criteria"]["all_frames_written"]["passed"]
    assert report["video_frames"] == report["run"]["frames"] == 300  # the clip looped
    assert report["passed"] == all(c["passed"] for c in report["criteria"].values())
    assert {"cpu_count", "python", "opencv", "torch"} <= set(report["machine"])
    json.dumps(report, allow_nan=False)
    assert "| rss_flat |" in soak.to_markdown(report)
    with pytest.raises(ValueError, match="--warmup"):
        soak.validate(frames=300, every=100, warmup=300, tolerance=0.05)


# --- SIGTERM (training: see test_train) -----------------------------------------------------
@pytest.mark.slow
def test_sigterm_stops_bench_like_ctrl_c(dashcam_clip, engine_path, tmp_path):
    code, stderr = signal_after_line(
        ["bench", "--engine", engine_path, "--source", dashcam_clip, "--rounds", "50",
         "--device", "cpu", "--json", tmp_path / "b.json"], r"round 2/50: pipeline",
        signal.SIGTERM)
    assert code == 143, stderr
    assert stderr.rstrip().endswith("interrupted (SIGTERM)") and "Traceback" not in stderr
