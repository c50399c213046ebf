"""Builders for the two SegNets, with ImageNet encoder weights from torchvision."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from rtseg.errors import BadInput
from rtseg.models.encoder_weights import download_failed, read_state_dict, strip_prefix
from rtseg.models.segnet import SegNetVGG16
from rtseg.models.segnet_resnet import SegNetResNet50


def _imagenet_state(kind: str) -> dict:
    from torchvision.models import ResNet50_Weights, VGG16_BN_Weights, resnet50, vgg16_bn

    try:
        if kind == "vgg16":
            return vgg16_bn(weights=VGG16_BN_Weights.IMAGENET1K_V1).features.state_dict()
        return resnet50(weights=ResNet50_Weights.IMAGENET1K_V2).state_dict()
    except Exception as exc:
        raise download_failed(f"{kind} (torchvision)", exc) from None


def build_segnet(encoder: str, num_classes: int, encoder_weights: str | None) -> nn.Module:
    """SegNet on ``vgg16`` or ``resnet50``; weights None, "imagenet" or a local file path."""
    model = SegNetVGG16(num_classes) if encoder == "vgg16" else SegNetResNet50(num_classes)
    if encoder_weights is None:
        return model
    if encoder_weights == "imagenet":
        state = _imagenet_state(encoder)
    else:
        state = read_state_dict(Path(encoder_weights))
        if encoder == "vgg16":
            state = strip_prefix(state, "features.")
    try:
        model.load_encoder_state(state)
    except (ValueError, RuntimeError) as exc:
        raise BadInput(f"{encoder_weights} does not fit SegNet's {encoder} encoder: "
                       f"{str(exc).splitlines()[0]}") from None
    return model
