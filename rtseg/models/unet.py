"""UNet from segmentation-models-pytorch, on any of its encoders."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
from torch import nn

from rtseg.errors import BadInput
from rtseg.models.encoder_weights import download_failed, read_state_dict, strip_prefix


def build_unet(encoder: str, num_classes: int, encoder_weights: str | None) -> nn.Module:
    """smp.Unet with ``encoder``; weights None, "imagenet" (smp's hub) or a local file path."""
    if encoder not in smp.encoders.get_encoder_names():
        raise BadInput(f"unknown encoder {encoder!r} for UNet; "
                       "see segmentation_models_pytorch.encoders.get_encoder_names()")
    hub = encoder_weights if encoder_weights == "imagenet" else None
    try:
        model = smp.Unet(encoder_name=encoder, encoder_weights=hub, classes=num_classes)
    except Exception as exc:
        if hub:
            raise download_failed(f"encoder {encoder}", exc) from None
        raise
    if encoder_weights not in (None, "imagenet"):
        state = strip_prefix(read_state_dict(Path(encoder_weights)), "encoder.")
        try:
            model.encoder.load_state_dict(state)
        except RuntimeError as exc:
            raise BadInput(f"{encoder_weights} does not fit the {encoder} encoder: "
                           f"{str(exc).splitlines()[0]}") from None
    return model
