"""PyTorch backend: ``.safetensors`` weights (never pickles), CPU or CUDA, in fp32, fp16 or
bf16, channels_last."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtseg.backends.base import Backend
from rtseg.devices import DTYPES, resolve_device, resolve_precision
from rtseg.metadata import EngineMetadata
from rtseg.models import Segmenter, load_checkpoint
from rtseg.models.fusion import fold_batchnorm

class TorchBackend(Backend):
    """Runs a Segmenter in eager PyTorch, channels_last (oneDNN and cuDNN both prefer it).

    ``precision``: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` (CUDA only) or
    ``bf16`` (CUDA, or a CPU with native bf16; faster than fp32 on some CPUs and slower on
    others — see docs/precision.md). Converting folds BatchNorm into the convolutions and changes the module
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
