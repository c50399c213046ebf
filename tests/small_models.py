"""Small real models for the export, int8 and TensorRT tests: 64x96 checkpoints with real
batch-norm statistics and a fitted classifier head (``make_segmenter``), real CamVid frames at
that size (``load_frames``), and ``Graphs``, which makes each checkpoint and its fp32 and int8
deploy graphs once for the whole test session."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from rtseg.data import find_pairs, read_image, read_label
from rtseg.data.classes import CAMVID, IMAGENET_MEAN, IMAGENET_STD
from rtseg.deploy.export import export_onnx
from rtseg.deploy.calibration import MIN_FRAMES, Calibration
from rtseg.models import Segmenter, build_model, save_checkpoint

from helpers import engine_meta

H, W = 64, 96
PROBE_STEPS = 100
CALIB_FRAMES = MIN_FRAMES  # the fewest the CLI accepts: fast, and enough for these nets


def load_frames(root: Path, split: str, count: int, stride: int):
    """``count`` real frames (and labels) of a split, resized to the network input."""
    pairs = find_pairs("camvid", root, split)[::stride][:count]
    frames = np.stack([cv2.resize(read_image(p), (W, H), interpolation=cv2.INTER_AREA)
                       for p, _ in pairs])
    labels = np.stack([cv2.resize(read_label(p, "camvid"), (W, H),
                                  interpolation=cv2.INTER_NEAREST) for _, p in pairs])
    return frames, labels


def make_segmenter(model: str, camvid: Path | None) -> Segmenter:
    """A Segmenter with real batch-norm statistics and, with CamVid, a fitted classifier.

    An untrained net has near-ties in its logits, so fp16 rounding would flip many pixels
    and the agreement test would measure noise. Training end to end costs seconds per step
    on a CPU; instead three train-mode passes over real frames move the BN running
    statistics (momentum 0.1) and the classifier head is fitted on the frozen features (a
    linear probe), which gives the logits real margins in about a second.

    Not exact batch statistics (momentum None): with those, segnet_r50's own half-precision
    PyTorch forward already disagrees with fp32 on a quarter of the pixels — the random
    body amplifies rounding — so the test would measure the weights, not the export.
    """
    torch.manual_seed(0)
    seg = Segmenter(build_model(model, CAMVID.num_classes), IMAGENET_MEAN, IMAGENET_STD)
    if camvid is None:
        frames, labels = np.random.default_rng(0).integers(0, 256, (4, H, W, 3), np.uint8), None
    else:
        frames, labels = load_frames(camvid, "train", 4, stride=90)
    x = torch.from_numpy(frames)
    with torch.no_grad():  # BN running statistics: a blend of the init's and real frames'
        for _ in range(3):
            seg.train().logits(x)
    seg.eval()
    if labels is None:
        return seg

    head = [m for m in seg.net.modules()
            if isinstance(m, nn.Conv2d) and m.out_channels == CAMVID.num_classes][-1]
    captured = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    with torch.no_grad():
        seg.logits(x)
    hook.remove()
    target = torch.from_numpy(labels).long()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss(ignore_index=CAMVID.ignore_index)
    for _ in range(PROBE_STEPS):
        loss = loss_fn(head(captured[0]), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return seg


class Graphs:
    """Checkpoints, fp32 and int8 graphs of the small models, each made once."""

    def __init__(self, folder: Path, camvid: Path):
        self.folder, self.camvid = folder, camvid

    def checkpoint(self, model: str) -> Path:
        path = self.folder / f"{model}.safetensors"
        if not path.exists():
            save_checkpoint(path, make_segmenter(model, self.camvid), engine_meta(model, (H, W)))
        return path

    def fp32(self, model: str) -> Path:
        path = self.folder / f"{model}_fp32.onnx"
        if not path.exists():
            export_onnx(self.checkpoint(model), path)
        return path

    def int8(self, model: str, target: str = "tensorrt") -> Path:
        path = self.folder / f"{model}_int8_{target}.onnx"
        if not path.exists():
            export_onnx(self.checkpoint(model), path, calib=Calibration(
                self.camvid / "val", CALIB_FRAMES, "minmax", target))
        return path
