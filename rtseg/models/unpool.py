"""Max-pooling that remembers where the maxima were, and the matching unpooling, built only
from ops TensorRT's ONNX parser accepts.

SegNet's decoder places values back at the argmax positions of the encoder's max-pools.
PyTorch does this with ``MaxPool2d(return_indices=True)`` + ``MaxUnpool2d``, which export to
ONNX ``MaxPool`` with an Indices output and ``MaxUnpool`` — both rejected by TensorRT's ONNX
parser (onnx-tensorrt operators table; TensorRT issue 3761). Instead we keep a *mask*: for each
2×2 window, a one-hot over its four positions marking the maximum. Unpooling is then
``nearest-upsample(y) * mask`` (exported as Reshape/Transpose/Mul/Where).

Tie rule: when several positions of a window share the maximum, the first in row-major order
(top-left, top-right, bottom-left, bottom-right) wins — the same choice PyTorch's max-pool
index makes, so the result equals ``MaxUnpool2d(MaxPool2d(2, return_indices=True))``
exactly, ties included. (With NaN inputs the two may differ: the mask then marks the
bottom-right position.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _windows(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] → [N, C, 4, H/2, W/2]: the four positions of each 2×2 window."""
    n, c, h, w = x.shape
    return F.pixel_unshuffle(x, 2).reshape(n, c, 4, h // 2, w // 2)


def max_pool_with_mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2×2, stride-2 max-pool returning (pooled, mask).

    ``mask`` is [N, C, 4, H/2, W/2] in ``x``'s dtype, one-hot over each window's positions.
    H and W must be even.
    """
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"max_pool_with_mask needs even H and W, got {tuple(x.shape[-2:])}")
    pooled = F.max_pool2d(x, kernel_size=2, stride=2)
    hit = _windows(x) == pooled.unsqueeze(2)
    first = hit[:, :, 0]
    second = hit[:, :, 1] & ~first
    third = hit[:, :, 2] & ~(first | second)
    fourth = ~(first | second | third)  # exactly one position per window is marked
    mask = torch.stack([first, second, third, fourth], dim=2).to(x.dtype)
    return pooled, mask


def max_unpool_with_mask(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place ``y`` [N, C, h, w] at the positions ``mask`` [N, C, 4, h, w] marks → [N, C, 2h, 2w]."""
    n, c, h, w = y.shape
    spread = (y.unsqueeze(2) * mask).reshape(n, c * 4, h, w)
    return F.pixel_shuffle(spread, 2)
