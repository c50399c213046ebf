"""The network as users and engines see it: uint8 BGR frames in, class ids out.

Normalisation, BGR→RGB, NHWC→NCHW and the argmax live here, inside the module, so that
training, the PyTorch backend and the exported ONNX/TensorRT graph all share one definition
and the host only resizes and copies bytes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Segmenter(nn.Module):
    """Wraps a bare network with preprocessing and argmax.

    ``logits(frames)`` is for training; ``forward(frames)`` is the deploy graph:
    uint8 [N, H, W, 3] BGR → uint8 [N, H, W] class ids.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        # RGB statistics, reversed to BGR so frames never need a channel shuffle.
        bgr_mean = torch.tensor(list(mean)[::-1], dtype=torch.float32).view(1, 1, 1, 3)
        bgr_std = torch.tensor(list(std)[::-1], dtype=torch.float32).view(1, 1, 1, 3)
        self.register_buffer("bgr_mean", bgr_mean, persistent=False)
        self.register_buffer("bgr_inv_std", 1.0 / bgr_std, persistent=False)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC BGR → normalised NCHW RGB in the module's floating dtype."""
        dtype = self.bgr_mean.dtype
        x = (frames.to(dtype) - self.bgr_mean) * self.bgr_inv_std
        return x.permute(0, 3, 1, 2).flip(1)  # NHWC→NCHW, then BGR→RGB

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        """Class scores [N, C, H, W] for uint8 BGR frames [N, H, W, 3]."""
        x = self.normalise(frames)
        if frames.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        labels = self.logits(frames).argmax(dim=1)
        # ArgMax gives int64; TensorRT converts to UINT8 only from FP32/FP16 (its DataType
        # docs), so the deploy graph goes int → float → uint8. Class ids < 256 are exact.
        return labels.to(self.bgr_mean.dtype).to(torch.uint8)
