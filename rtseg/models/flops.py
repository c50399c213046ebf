"""Floating-point operations of a network per frame, counted by PyTorch's own FLOP counter
(``torch.utils.flop_counter``: convolutions, matrix products and their transposes; a
multiply-add counts as 2 FLOPs — the convention of hardware peak figures)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(net: nn.Module, input_size: tuple[int, int], channels: int = 3) -> int:
    """FLOPs of one forward pass of ``net`` (normalised NCHW input) on one frame of
    ``input_size`` (H, W). Elementwise work (BN, ReLU, pooling, argmax) is not counted: it is
    memory-bound and a rounding error next to the convolutions."""
    h, w = input_size
    param = next(net.parameters())
    x = torch.zeros(1, channels, h, w, dtype=param.dtype, device=param.device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        net.train(was_training)
    return int(counter.get_total_flops())
