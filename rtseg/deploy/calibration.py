"""What int8 calibration runs on: ``rtseg export --int8``'s settings and the real frames.

Calibration frames come from a frame folder or a video, spread evenly over it, resized
exactly as the live pipeline resizes them (``rtseg.imageops.resize_frame``), and are handed
to ONNX Runtime's calibrator a few at a time (``FrameReader``).

>>> calib = Calibration("runs/frames", frames=64)
>>> frames = read_calibration_frames(calib, (352, 480))
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtseg.errors import BadInput
from rtseg.metadata import INPUT_NAME

# How the activation ranges are found. The default is the one that keeps the mIoU on CamVid
# val for every model tried (bench/int8_cpu.py, bench/results/int8_*.md; CamVid train frames):
# with 128 frames entropy lost 0.03 point on both the bundled unet_vgg16 (192x256) and
# segnet_r50 (352x480); with 64 frames min-max lost up to 9.6 and percentile up to 4.4 —
# segnet_r50 has activation outliers that stretch a min-max range (entropy: +0.06). More frames
# help entropy: unet_vgg16 kept -0.36 with 64 frames, -0.03 with 128.
METHODS = ("minmax", "percentile", "entropy")
DEFAULT_METHOD = "entropy"
DEFAULT_FRAMES = 128
MIN_FRAMES = 8  # below this the ranges describe a handful of images, not the scene
CALIB_BATCH = 4  # frames per calibration run: bounds the memory of the recorded activations
# Who runs the int8 graph (``--int8-target``). "tensorrt": symmetric int8 Q/DQ as TensorRT's
# explicit quantization takes it — it also runs on ONNX Runtime, CPUs included. "cpu": ONNX
# Runtime's own layout for CPUs (uint8 activations with zero points, ReLU folded into the
# range, int8 pooling, upsampling and concatenation): faster there, refused by TensorRT.
TARGETS = ("tensorrt", "cpu")
DEFAULT_TARGET = "tensorrt"
# Weights are quantized to 7 bits ([-64, 64] in an int8 tensor; ONNX Runtime's
# ``reduce_range``) for both targets. ONNX Runtime's int8 convolutions on x86 CPUs without
# VNNI (AVX2, and AVX-512 without VNNI) multiply uint8 activations by int8 weights with
# ``vpmaddubsw``, which adds two products in 16 bits with saturation: 2 x 255 x 127 overflows,
# 2 x 255 x 64 = 32640 cannot. With 8-bit weights a small ResNet-50 UNet's tensorrt-layout
# graph agreed with its fp32 graph on 84.1 % of pixels on an emulated AVX2 CPU (QEMU, -cpu
# Haswell) and on 95.7 % with VNNI; with 7 bits on 94.9 % on both, label for label the same
# (bench/int8_avx2.py). VNNI and AMX CPUs (``vpdpbusd``: 32-bit sums) are exact either way and
# run 7-bit weights at the same speed; TensorRT takes 7-bit values in an int8 tensor as they
# are. What 7 bits cost in mIoU: bench/results/int8_weight_bits_cpu.md.
WEIGHT_BITS = (7, 8)
DEFAULT_WEIGHT_BITS = 7

Log = Callable[[str], None]

if TYPE_CHECKING:  # numpy loads with the functions that use it: the CLI starts fast
    import numpy as np


@dataclass(frozen=True)
class Calibration:
    """What ``rtseg export --int8`` calibrates on and for: ``--calib``, ``--calib-frames``,
    the range method (``minmax``, ``percentile`` or ``entropy``), ``--int8-target``
    (``tensorrt`` or ``cpu``) and the weights' bits (7, safe on every x86 CPU; 8 only to
    measure what that costs)."""

    source: str | Path
    frames: int = DEFAULT_FRAMES
    method: str = DEFAULT_METHOD
    target: str = DEFAULT_TARGET
    weight_bits: int = DEFAULT_WEIGHT_BITS

    def __post_init__(self) -> None:
        """BadInput for settings that cannot calibrate, before any work is done."""
        if self.method not in METHODS:
            raise BadInput(f"--calib-method {self.method}: use one of {', '.join(METHODS)}")
        if self.target not in TARGETS:
            raise BadInput(f"--int8-target {self.target}: use one of {', '.join(TARGETS)}")
        if self.weight_bits not in WEIGHT_BITS:
            raise BadInput(f"weight bits {self.weight_bits}: use 7 or 8")
        if int(self.frames) < MIN_FRAMES:
            raise BadInput(f"--calib-frames {self.frames}: calibration needs at least "
                           f"{MIN_FRAMES} frames ({DEFAULT_FRAMES} by default)")
        text = str(self.source)
        from rtseg.pipeline.sources import names_path

        if not names_path(text):
            raise BadInput(f"--calib {text}: calibrate on a frame folder or a video file, "
                           "not a camera or a live stream")
        path = Path(text)
        if not path.exists():
            raise BadInput(f"--calib {text}: not found (expected a frame folder or a video file)")


def read_calibration_frames(calib: Calibration, size: tuple[int, int] | list[int],
                            log: Log | None = None) -> np.ndarray:
    """``calib.frames`` frames of ``calib.source``, evenly spread over it and resized to ``size``
    (H, W) as the pipeline resizes them: uint8 [N, H, W, 3] BGR.

    Unreadable frames of a folder are skipped with a warning. BadInput for a source that is
    missing, empty or unreadable, or that yields fewer than ``MIN_FRAMES`` frames; a source
    with fewer frames than asked for (but enough) is used whole, with a note.
    """
    import numpy as np

    log = log or (lambda _msg: None)
    from rtseg.pipeline.sources import open_source
    from rtseg.imageops import resize_frame

    size = (int(size[0]), int(size[1]))
    wanted = int(calib.frames)
    source = open_source(calib.source, on_message=log)  # BadInput: empty, unreadable
    try:
        # Spread the frames over the whole source: consecutive video frames are near copies.
        total = len(getattr(source, "files", ())) or int(getattr(source, "expected", 0))
        stride = max(1, total // wanted) if total else 1
        frames = [resize_frame(image, size) for image in _every(source, stride, wanted)]
    finally:
        source.close()
    if len(frames) < MIN_FRAMES:
        raise BadInput(f"--calib {calib.source}: only {len(frames)} frame(s) could be read; "
                       f"calibration needs at least {MIN_FRAMES}")
    if len(frames) < wanted:
        log(f"note: --calib {calib.source} has {len(frames)} frames; calibrating on all of "
            f"them (--calib-frames {wanted})")
    return np.stack(frames)


def _every(source, stride: int, count: int) -> Iterator[np.ndarray]:
    """Every ``stride``-th frame of ``source``, at most ``count`` of them."""
    stop, index, kept = threading.Event(), 0, 0
    while kept < count:
        got = source.read(stop)
        if got is None:
            return
        if index % stride == 0:
            kept += 1
            yield got[0]
        index += 1


class FrameReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over frames in memory, in batches of
    ``CALIB_BATCH``; ``set_range`` lets the calibrator record a few batches at a time."""

    def __init__(self, frames: "np.ndarray", batch: int = CALIB_BATCH):
        self.batches = [frames[i:i + batch] for i in range(0, len(frames), batch)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, end_index

    def rewind(self) -> None:
        self.position = 0

    def get_next(self) -> dict | None:
        import numpy as np

        if self.position >= self.end:
            return None
        self.position += 1
        return {INPUT_NAME: np.ascontiguousarray(self.batches[self.position - 1])}
