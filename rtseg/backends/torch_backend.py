"""PyTorch backend: ``.safetensors`` weights (never pickles), CPU or CUDA (FP16, channels_last)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.errors import MissingDependency
from rtseg.metadata import EngineMetadata
from rtseg.models import Segmenter, load_checkpoint


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cuda`` without a GPU → MissingDependency."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MissingDependency("--device cuda asked for, but PyTorch sees no CUDA GPU here")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MissingDependency(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


class TorchBackend(Backend):
    """Runs a Segmenter in eager PyTorch. On CUDA by default: FP16 weights, channels_last.

    ``fp16=False`` keeps the module as it is (used to validate a model while it trains —
    the backend then shares, and never converts, the training weights).
    """

    name = "pytorch"

    def __init__(self, segmenter: Segmenter, metadata: EngineMetadata, device: str = "auto",
                 fp16: bool | None = None):
        dev = resolve_device(device)
        fp16 = dev.type == "cuda" if fp16 is None else fp16
        super().__init__(metadata, str(dev), "fp16" if fp16 else "fp32")
        self.torch_device = dev
        segmenter = segmenter.eval().to(dev)
        if fp16:
            segmenter = segmenter.half().to(memory_format=torch.channels_last)
        self.segmenter = segmenter

    @classmethod
    def from_file(cls, path: Path | str, device: str = "auto") -> "TorchBackend":
        """Load ``.safetensors`` weights and their metadata."""
        segmenter, metadata = load_checkpoint(path)
        return cls(segmenter, metadata, device)

    @torch.inference_mode()
    def infer_torch(self, frames: torch.Tensor) -> torch.Tensor:
        """Like ``infer`` on torch tensors that may already live on the device."""
        return self.segmenter(frames.to(self.torch_device, non_blocking=True))

    def infer(self, frames: np.ndarray) -> np.ndarray:
        labels = self.infer_torch(torch.from_numpy(np.ascontiguousarray(frames)))
        return labels.cpu().numpy()
