"""bench/gpu_bench.py without a GPU: meta-device FLOPs equal real ones, the plan's order, the
TF32 flags restored, sweep/OOM/budget bookkeeping, and the whole ``--dry-run`` end to end —
so a typo shows here, not on a GPU machine."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from rtseg.models import MODELS, build_model
from rtseg.models.flops import count_flops, count_flops_meta
from helpers import bench_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_bench.py"


@pytest.fixture(scope="module")
def gpu_bench():
    """The script imported as a module (bench/ is not a package)."""
    return bench_script("gpu_bench")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_meta_flops_equal_a_real_forward(name):
    real = count_flops(build_model(name, 11), (32, 64))
    assert real > 0
    assert count_flops_meta(name, 11, (32, 64)) == real


def test_meta_flops_take_a_builder_and_leave_no_real_tensors():
    conv = lambda: torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)  # noqa: E731
    assert count_flops_meta(conv, 0, (10, 12)) == 2 * 3 * 8 * 9 * 10 * 12


def test_dense_peaks_by_device_name(gpu_bench):
    assert gpu_bench.dense_peaks("NVIDIA H100 80GB HBM3")["tf32"] == 494.7
    assert gpu_bench.dense_peaks("NVIDIA H200")["fp16"] == 989.4
    assert gpu_bench.dense_peaks("NVIDIA H100 PCIe")["fp32"] == 51.2
    assert gpu_bench.dense_peaks("NVIDIA H100 NVL") is None
    assert gpu_bench.dense_peaks("NVIDIA A100-SXM4-80GB") is None


def test_tf32_flags_are_restored_even_after_an_error(gpu_bench):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with pytest.raises(RuntimeError), gpu_bench.tf32(not before[0]):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before[0])
        raise RuntimeError("row failed")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_plan_puts_the_target_comparison_first_and_compile_only_on_request(gpu_bench):
    sizes = ["1024x2048", "352x480"]
    jobs = gpu_bench.plan(gpu_bench.MODELS, sizes, ["fp16", "fp32", "tf32", "bf16"],
                          ["eager", "graph"], gpu_bench.DEFAULT_SWEEPS)
    first = jobs[:8]
    assert {(j.size, j.mode, j.batches) for j in first} == {("1024x2048", "eager", (1,))}
    assert [(j.model, j.precision) for j in first[:2]] == [("unet_vgg16", "fp16"),
                                                            ("unet_vgg16", "fp32")]
    steps = [j.step[0] for j in jobs]
    assert steps == sorted(steps) and steps[-1] == "6"  # steps 1..6 in order
    assert not any(j.mode == "compile" for j in jobs)
    with_compile = gpu_bench.plan(gpu_bench.MODELS, sizes, ["fp16"], ["eager", "compile"], {})
    assert with_compile[-1].mode == "compile"


def _bench(gpu_bench, tmp_path, fake_row, seconds_left=100.0):
    header = {"target_size": "352x480", "models": ["unet_r50"], "device": "cpu", "torch": "x",
              "cuda": None, "cudnn": None, "peaks_tflops": None, "matmul_bf16_tflops": None,
              "max_seconds": seconds_left, "notes": []}
    results = gpu_bench.Results(tmp_path / "out", header, time.monotonic())
    bench = gpu_bench.Bench(torch.device("cpu"), None, gpu_bench.Settings(), None, results,
                            deadline=time.monotonic() + seconds_left)
    bench._row = fake_row
    return bench


def _fake_row(fps_by_batch, oom_from=None):
    def row(job, batch, what):
        if oom_from is not None and batch >= oom_from:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        fps = fps_by_batch[batch]
        return {**what, "fps": fps, "latency_ms_p50": 1.0, "latency_ms_p99": 1.0,
                "gflops_per_frame": 55.0, "tflops": fps * 0.055, "fraction_of_peak": None,
                "peak_memory_gb": None}
    return row


def test_sweep_stops_when_fps_stops_growing(gpu_bench, tmp_path):
    bench = _bench(gpu_bench, tmp_path, _fake_row({1: 100, 4: 300, 8: 310, 16: 900}))
    bench.run(gpu_bench.Job("1", "unet_r50", "352x480", "fp16", "eager"))
    bench.run(gpu_bench.Job("3", "unet_r50", "352x480", "fp16", "eager", (4, 8, 16), sweep=True))
    assert [r["batch"] for r in bench.results.rows] == [1, 4, 8]  # 310 < 1.05 × 300: stop
    assert bench.results.best_batch("unet_r50", "352x480", "fp16", "eager")["batch"] == 8
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["best_batches"][0]["batch"] == 8 and len(saved["rows"]) == 3


def test_out_of_memory_is_recorded_and_ends_the_sweep(gpu_bench, tmp_path):
    bench = _bench(gpu_bench, tmp_path, _fake_row({1: 100, 4: 300}, oom_from=8))
    bench.run(gpu_bench.Job("3", "unet_r50", "352x480", "fp32", "eager", (4, 8, 16), sweep=True))
    assert [r["batch"] for r in bench.results.rows] == [4]
    assert bench.results.failed == [{"model": "unet_r50", "size": "352x480", "precision": "fp32",
                                     "mode": "eager", "batch": 8, "reason": "out of memory"}]
    assert "out of memory" in (tmp_path / "out.md").read_text()


def test_a_spent_budget_skips_rows_and_says_why(gpu_bench, tmp_path):
    bench = _bench(gpu_bench, tmp_path, _fake_row({1: 100}), seconds_left=-1.0)
    bench.run(gpu_bench.Job("1", "unet_r50", "352x480", "fp16", "eager"))
    assert not bench.results.rows
    assert bench.results.skipped[0]["reason"].startswith("budget")
