"""Model names (the contract's) → builders."""

from __future__ import annotations

import difflib
from typing import Callable

import segmentation_models_pytorch as smp
from torch import nn

from rtseg.errors import BadInput
from rtseg.models.segnets import build_segnet
from rtseg.models.unet import build_unet

Builder = Callable[[int, "str | None"], nn.Module]

MODELS: dict[str, Builder] = {
    # VGG16 with batch norm: from-scratch training of a 13-conv plain network needs it.
    "unet_vgg16": lambda n, w: build_unet("vgg16_bn", n, w),
    "unet_r50": lambda n, w: build_unet("resnet50", n, w),
    "segnet_vgg16": lambda n, w: build_segnet("vgg16", n, w),
    "segnet_r50": lambda n, w: build_segnet("resnet50", n, w),
}

ALIASES = {"unet_resnet50": "unet_r50", "segnet_resnet50": "segnet_r50",
           "unet_vgg16_bn": "unet_vgg16", "segnet_vgg16_bn": "segnet_vgg16"}


SIZE_MULTIPLE = 32  # every model down-samples five times by 2


def check_input_size(size: tuple[int, int], what: str = "input size") -> tuple[int, int]:
    """``(H, W)`` as ints if every model can take it (positive, divisible by 32); else
    BadInput that names a size that would do."""
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise BadInput(f"{what} {h}x{w} must be positive")
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        up = lambda v: -(-v // SIZE_MULTIPLE) * SIZE_MULTIPLE  # noqa: E731
        raise BadInput(f"{what} {h}x{w} is not divisible by {SIZE_MULTIPLE}; "
                       f"use e.g. {up(h)}x{up(w)}")
    return h, w


def canonical_name(name: str) -> str:
    """The registered name for ``name`` (aliases resolved, ``unet_<smp encoder>`` accepted)."""
    name = ALIASES.get(name, name)
    if name in MODELS:
        return name
    if name.startswith("unet_") and name[5:] in smp.encoders.get_encoder_names():
        return name
    close = difflib.get_close_matches(name, [*MODELS, *ALIASES], n=1)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    raise BadInput(f"unknown model {name!r}{hint} (choose one of: {', '.join(MODELS)}, "
                   "or unet_<segmentation-models-pytorch encoder>)")


def build_model(name: str, num_classes: int, encoder_weights: str | None = None) -> nn.Module:
    """The bare network (normalised NCHW float in, logits out) for a contract model name.

    ``encoder_weights``: None / "none" (random init), "imagenet", or a local file path.
    """
    name = canonical_name(name)
    weights = None if encoder_weights in (None, "none") else encoder_weights
    if name in MODELS:
        return MODELS[name](num_classes, weights)
    return build_unet(name[5:], num_classes, weights)
