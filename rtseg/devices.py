"""Which device and which precision: ``--device`` and ``--precision`` resolved against what this
machine has, and the autocast dtype of a training step. One home for these rules, used by
the backends and by training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rtseg.cpu_features import read_cpu_features
from rtseg.errors import BadInput, MissingDependency
from rtseg.metadata import PRECISIONS

# The torch dtype of each precision of PRECISIONS but auto.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cuda`` without a GPU → MissingDependency."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MissingDependency("--device cuda asked for, but PyTorch sees no CUDA GPU here")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MissingDependency(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16, read from its
    features), rather than oneDNN emulating it more slowly than fp32."""
    return read_cpu_features().native_bf16


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → fp16 on CUDA, fp32 on the CPU; BadInput for a precision the device lacks."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in DTYPES:
        raise BadInput(f"--precision {precision}: use {', '.join(PRECISIONS[:-1])} or "
                       f"{PRECISIONS[-1]}")
    if device.type == "cpu" and precision == "fp16":
        raise BadInput("--precision fp16 runs on CUDA only; on the CPU use bf16 (or fp32)")
    if (device.type == "cuda" and precision == "bf16"
            and torch.cuda.get_device_capability(device)[0] < 8):
        raise BadInput("--precision bf16 needs a GPU of compute capability 8.0 or newer "
                       "(Ampere, Hopper, ...); use fp16")
    if device.type == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
        raise BadInput("--precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), "
                       "so it would run slower than fp32; use fp32")
    return precision


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of a training step: bf16 where the device computes it natively (CPUs
    asked with ``--amp``, CUDA GPUs of compute capability ≥ 8.0), fp16 on older GPUs (with a
    GradScaler), None without ``amp``."""
    if not amp:
        return None
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        return torch.float16
    return torch.bfloat16


@contextmanager
def cudnn_autotune(enabled: bool = True) -> Iterator[None]:
    """cuDNN autotuning (``torch.backends.cudnn.benchmark``: worth it for fixed shapes) set to
    ``enabled`` inside the block only, restored however the block ends."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved

