"""On a CUDA GPU: the PyTorch backend in fp16/bf16 against the CPU, one AMP training run whose
checkpoint the CPU evaluation reproduces, torchrun DDP over NCCL (one process per GPU), and
``rtseg run --device cuda`` on the dashcam clip. Every test is marked ``gpu`` and skips
(conftest.py) where PyTorch sees no CUDA GPU. Small inputs: the whole file runs in about a
minute on an H100.

The model of the inference tests is ``$RTSEG_GPU_MODEL`` when set, else the bundled one in
engines/. Real data as everywhere (``$RTSEG_DATA`` or ../shared/data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rtseg.backends.torch_backend import TorchBackend
from rtseg.devices import DTYPES
from rtseg.cli import main
from rtseg.engines import default_engine
from rtseg.errors import BadInput
from rtseg.scoring.evaluate import evaluate
from rtseg.models import read_checkpoint_metadata
from rtseg.compare import split_frames
from rtseg.training.config import TrainConfig
from rtseg.training.train import train

from helpers import decoded_frames, free_port

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {"frames", "seconds", "fps", "dropped", "backend", "miou", "stage_ms",
                 "latency_ms"}
STAGES = {"capture", "preprocess", "infer", "overlay", "write"}
CLIP_FRAMES = 221


@pytest.fixture(scope="module")
def gpu_model() -> Path:
    """A trained CamVid .safetensors: ``$RTSEG_GPU_MODEL``, else the bundled model."""
    env = os.environ.get("RTSEG_GPU_MODEL")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.skip(f"RTSEG_GPU_MODEL={env}: no such file")
    else:
        try:
            path = default_engine(REPO / "engines", device="cuda")  # the weights
        except BadInput:
            pytest.skip("no trained model: engines/ holds none and RTSEG_GPU_MODEL is not set")
    assert read_checkpoint_metadata(path).dataset == "camvid", f"{path} is not a CamVid model"
    return path


@pytest.fixture(scope="module")
def model_val_frames(gpu_model, camvid_root) -> np.ndarray:
    """8 real CamVid val frames, resized to the model's input exactly as ``rtseg eval`` does
    (conftest's ``val_frames`` are at the small models' 64x96)."""
    size = tuple(read_checkpoint_metadata(gpu_model).input_size)
    return split_frames("camvid", camvid_root, "val", size, 8)


@pytest.fixture(scope="module")
def cpu_labels(gpu_model, model_val_frames) -> np.ndarray:
    """The reference: the CPU backend in fp32."""
    return TorchBackend.from_file(gpu_model, device="cpu", precision="fp32").infer(model_val_frames)


def child_env(**extra: str) -> dict:
    """The environment of a child process: rtseg importable from this checkout even where it
    is not pip-installed (the GPU machine imports it through PYTHONPATH)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


# Thresholds of pixel agreement with CPU fp32. fp16 (11-bit significand) flips only pixels
# whose top-2 logits are within ~1e-3 of each other: the bundled model's fp16 ONNX graph agrees
# on 99.93 % of the val pixels (docs/precision.md). bf16 keeps 8 bits, 8× coarser: the same model
# in bf16 on the CPU (oneDNN, fp32 accumulation like cuDNN) agrees on 99.38 % of the val pixels
# (docs/precision.md), so 99.5 % would fail on rounding alone; 99 % still catches any real fault
# (wrong layout, channel order or normalisation move far more than 1 % of the pixels).
AGREEMENT = {"fp16": 0.995, "bf16": 0.99}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_backend_agrees_with_cpu_fp32(precision, gpu_model, model_val_frames, cpu_labels):
    backend = TorchBackend.from_file(gpu_model, device="cuda", precision=precision)
    assert backend.precision == precision and backend.torch_device.type == "cuda"
    convs = [m.weight for m in backend.segmenter.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_cuda and w.dtype == DTYPES[precision] for w in convs)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    # 1×1 kernels are contiguous in both layouts: some weight must really have been reordered.
    assert any(not w.is_contiguous() for w in convs)

    labels = backend.infer(model_val_frames)
    assert labels.shape == cpu_labels.shape and labels.dtype == np.uint8
    agreement = float((labels == cpu_labels).mean())
    assert agreement >= AGREEMENT[precision], (
        f"{precision} on CUDA agrees with CPU fp32 on {agreement:.4%} of "
        f"{cpu_labels.size} pixels (need ≥ {AGREEMENT[precision]:.1%})")


@pytest.mark.slow
def test_amp_training_lowers_the_loss_and_cpu_eval_reproduces_val_miou(camvid_root, tmp_path,
                                                                      monkeypatch):
    # Validation in train() runs the fp32 network on CUDA (no autocast there), where cuDNN would
    # use TF32 (10-bit significand) by default. Without TF32 both sides are true fp32 and only
    # the order of summation (cuDNN vs oneDNN, BatchNorm folded at CPU load) differs: ~1e-6
    # relative on the logits, which on a checkpoint of this recipe (CPU run) flips ~1e-5 of the
    # predicted pixels — an mIoU change of ~1e-4 on 4 frames. 0.002 leaves 20× headroom and
    # still tells this recipe's epochs apart (their val mIoUs differ by ~0.005 or more).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    out = tmp_path / "run"
    cfg = TrainConfig(model="unet_r50", dataset="camvid", data_root=camvid_root, out=out,
                      epochs=3, batch_size=4, crop=(128, 160), input_size=(128, 160),
                      train_limit=8, val_limit=4, device="cuda", workers=0, lr=1e-3,
                      jitter=0.0, scale_range=(1.0, 1.0))  # amp: left at the CUDA default
    train(cfg)

    history = json.loads((out / "history.json").read_text())["epochs"]
    losses = [e["loss"] for e in history]
    assert len(losses) == 3 and all(np.isfinite(losses)), losses
    # On the CPU in fp32 this recipe goes 2.42 → 2.16 → 2.00: a 17 % drop; a step that does not
    # learn (no gradient through autocast, a scaler skipping every step) stays within noise.
    assert losses[-1] < 0.95 * losses[0], losses

    meta = read_checkpoint_metadata(out / "best.safetensors")
    assert meta.extra["recipe"]["amp"] in ("bf16", "fp16"), meta.extra["recipe"]["amp"]
    assert meta.extra["recipe"]["device_type"] == "cuda"
    mious = [e["val_miou"] for e in history]
    assert meta.extra["val_miou"] == max(mious) == mious[meta.extra["epoch"] - 1], (meta.extra,
                                                                                    mious)
    with TorchBackend.from_file(out / "best.safetensors", device="cpu", precision="fp32") as cpu:
        report = evaluate(cpu, "camvid", camvid_root, "val", batch_size=4, limit=4)
    assert report["images"] == 4
    assert report["miou"] == pytest.approx(meta.extra["val_miou"], abs=0.002), (
        f"CPU eval mIoU {report['miou']:.5f} vs val mIoU {meta.extra['val_miou']:.5f} "
        "recorded by training on CUDA")


@pytest.mark.slow
def test_torchrun_ddp_on_cuda(camvid_root, tmp_path):
    # Under torchrun rtseg forms the process group even for one process, so one GPU runs the
    # NCCL + SyncBatchNorm + DDP code path (NCCL refuses two ranks on one GPU).
    nproc = min(torch.cuda.device_count(), 2)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), "-m", "rtseg", "train", "--model", "unet_r50", "--dataset", "camvid",
           "--data-root", str(camvid_root), "--epochs", "1", "--batch-size", "2",
           "--train-limit", "4", "--val-limit", "2", "--crop", "128x160", "--input-size",
           "128x160", "--device", "cuda", "--workers", "0", "--out", str(out)]
    env = child_env(MASTER_PORT=str(free_port()), NCCL_DEBUG="INFO", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-3000:]

    history = json.loads((out / "history.json").read_text())["epochs"]
    assert len(history) == 1 and np.isfinite(history[0]["loss"]), history
    assert (out / "best.safetensors").is_file()
    recipe = read_checkpoint_metadata(out / "best.safetensors").extra["recipe"]
    assert recipe["world_size"] == nproc and recipe["device_type"] == "cuda", recipe
    assert recipe["process_group"] == "nccl", recipe
    assert proc.stdout.count("best val mIoU") == 1  # only rank 0 reports


@pytest.mark.slow
def test_run_on_cuda_writes_every_frame_and_the_contract_json(gpu_model, dashcam_clip, tmp_path,
                                                             capsys, no_thread_outlives_a_test):
    video, report = tmp_path / "x.mp4", tmp_path / "x.json"
    code = main(["run", "--source", str(dashcam_clip), "--engine", str(gpu_model),
                 "--device", "cuda", "--output", str(video), "--json", str(report)])
    assert code == 0, capsys.readouterr().err[-2000:]

    result = json.loads(report.read_text())
    assert set(result) >= CONTRACT_KEYS, CONTRACT_KEYS - set(result)
    assert set(result["stage_ms"]) >= STAGES and set(result["latency_ms"]) >= {"p50", "p99"}
    assert result["frames"] == CLIP_FRAMES and result["dropped"] == 0
    assert result["backend"] == "pytorch" and result["device"].startswith("cuda")
    assert result["miou"] is None and result["fps"] > 0 and result["seconds"] > 0
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert decoded_frames(dashcam_clip) == CLIP_FRAMES
    assert decoded_frames(video) == CLIP_FRAMES
