"""PyTorch backend: ``.safetensors`` weights (never pickles), CPU or CUDA, in fp32, fp16 or
bf16, channels_last."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.errors import BadInput, MissingDependency
from rtseg.metadata import EngineMetadata
from rtseg.models import Segmenter, load_checkpoint
from rtseg.models.fusion import fold_batchnorm

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
    """Whether oneDNN runs bf16 natively here (AVX-512 BF16 or AMX), rather than emulating it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → fp16 on CUDA, fp32 on the CPU; BadInput for a precision the device lacks."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in DTYPES:
        raise BadInput(f"--precision {precision}: use auto, fp32, fp16 or bf16")
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


class TorchBackend(Backend):
    """Runs a Segmenter in eager PyTorch, channels_last (oneDNN and cuDNN both prefer it).

    ``precision``: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` (CUDA only) or
    ``bf16`` (CUDA, or a CPU with native bf16: about 2× fp32 on AVX-512 BF16 — see
    bench/README.md). Converting folds BatchNorm into the convolutions and changes the module
    in place (the backend owns it). ``convert=False`` keeps the module exactly as it is (used
    to validate a model while it trains — the backend then shares the training weights).
    """

    name = "pytorch"

    def __init__(self, segmenter: Segmenter, metadata: EngineMetadata, device: str = "auto",
                 precision: str = "auto", convert: bool = True):
        dev = resolve_device(device)
        if convert:
            precision = resolve_precision(precision, dev)
            fold_batchnorm(segmenter.net)  # exact in fp32, one pass less per conv layer
            segmenter = segmenter.to(dev, DTYPES[precision]).to(memory_format=torch.channels_last)
        else:
            dtype = next(segmenter.parameters()).dtype
            precision = next(k for k, v in DTYPES.items() if v == dtype)
            segmenter = segmenter.to(dev)
        super().__init__(metadata, str(dev), precision)
        self.torch_device = dev
        self.segmenter = segmenter.eval()

    @classmethod
    def from_file(cls, path: Path | str, device: str = "auto",
                  precision: str = "auto") -> "TorchBackend":
        """Load ``.safetensors`` weights and their metadata."""
        segmenter, metadata = load_checkpoint(path)
        return cls(segmenter, metadata, device, precision)

    @torch.inference_mode()
    def infer_torch(self, frames: torch.Tensor) -> torch.Tensor:
        """Like ``infer`` on torch tensors that may already live on the device."""
        return self.segmenter(frames.to(self.torch_device, non_blocking=True))

    def infer(self, frames: np.ndarray) -> np.ndarray:
        labels = self.infer_torch(torch.from_numpy(np.ascontiguousarray(frames)))
        return labels.cpu().numpy()
