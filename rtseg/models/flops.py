"""Floating-point operations of a network per frame, counted by PyTorch's own FLOP counter
(``torch.utils.flop_counter``: convolutions, matrix products and their transposes; a
multiply-add counts as 2 FLOPs — the convention of hardware peak figures).

``count_flops`` runs a real forward pass on the network's own device; ``count_flops_meta``
builds the network on the ``meta`` device (shapes only, no memory, no arithmetic), so a
1024×2048 count costs milliseconds instead of tens of seconds of CPU convolutions.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(net: nn.Module, input_size: tuple[int, int], channels: int = 3) -> int:
    """FLOPs of one forward pass of ``net`` (normalised NCHW input) on one frame of
    ``input_size`` (H, W), on the device and dtype of ``net``'s parameters (``meta`` works).
    Elementwise work (BN, ReLU, pooling, argmax) is not counted: it is memory-bound and a
    rounding error next to the convolutions."""
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


def count_flops_meta(name_or_builder: str | Callable[[], nn.Module], num_classes: int,
                     input_size: tuple[int, int], channels: int = 3) -> int:
    """``count_flops`` of a network built on the ``meta`` device.

    ``name_or_builder``: a model name for ``rtseg.models.build_model`` (random init, no
    download), or a zero-argument builder returning an ``nn.Module`` (``num_classes`` is then
    unused).

    >>> count_flops_meta("segnet_r50", 11, (1024, 2048))  # doctest: +SKIP
    """
    builder = name_or_builder
    if isinstance(builder, str):
        from rtseg.models.registry import build_model  # flops stays importable on its own

        builder = lambda: build_model(name_or_builder, num_classes)  # noqa: E731
    with torch.device("meta"):
        net = builder()
    # Modules that create tensors outside the device context (rare) are moved as well.
    net = net.to("meta")
    return count_flops(net, input_size, channels)


def frame_gflops(metadata, input_size: tuple[int, int] | None = None) -> float:
    """GFLOPs per frame of the network ``metadata`` (an EngineMetadata) describes, at
    ``input_size`` (default: its own). A pruned network's count is the one its metadata
    recorded when it was pruned, scaled by the pixel count (a convolutional network's work
    is proportional to it); any other is counted on the ``meta`` device."""
    h, w = input_size or tuple(metadata.input_size)
    from rtseg.models.pruning import PRUNED_KEY

    pruned = metadata.extra.get(PRUNED_KEY)
    if pruned:
        at_h, at_w = pruned.get("at", metadata.input_size)
        return float(pruned["gflops"]) * (h * w) / (at_h * at_w)
    return count_flops_meta(metadata.model, metadata.num_classes, (h, w)) / 1e9
