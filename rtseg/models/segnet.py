"""SegNet (Badrinarayanan et al., 2017) with a VGG16-BN encoder.

Encoder: the 13 convolutions of VGG16-BN in five stages, each closed by a 2×2 max-pool whose
argmax positions are kept. Decoder: the mirror image — each stage unpools with the matching
encoder stage's positions, then convolves; no skip concatenations (the pool positions are the
only thing passed across). A 3×3 convolution gives the class scores at full resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from rtseg.models.unpool import max_pool_with_mask, max_unpool_with_mask

# Output channels of each VGG16 convolution, stage by stage.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """3×3 convolution (with bias, as torchvision's VGG16-BN), batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def vgg16_bn_stages() -> nn.ModuleList:
    """VGG16-BN's convolutions as five stages (no pools), torchvision-compatible order."""
    stages, in_ch = [], 3
    for widths in VGG16_STAGES:
        layers = []
        for out_ch in widths:
            layers.append(conv_bn_relu(in_ch, out_ch))
            in_ch = out_ch
        stages.append(nn.Sequential(*layers))
    return nn.ModuleList(stages)


def mirrored_decoder_stages() -> nn.ModuleList:
    """The decoder: stage i mirrors encoder stage 4-i; its last conv narrows to the next width."""
    stages = []
    reversed_stages = list(reversed(VGG16_STAGES))
    for i, widths in enumerate(reversed_stages):
        out_last = reversed_stages[i + 1][0] if i + 1 < len(reversed_stages) else widths[0]
        chans = [widths[0]] * len(widths) + [out_last]
        stages.append(nn.Sequential(*[conv_bn_relu(chans[j], chans[j + 1])
                                      for j in range(len(widths))]))
    return nn.ModuleList(stages)


class SegNetVGG16(nn.Module):
    """SegNet on VGG16-BN. Input [N, 3, H, W] normalised, H and W divisible by 32."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.encoder = vgg16_bn_stages()
        self.decoder = mirrored_decoder_stages()
        self.classifier = nn.Conv2d(VGG16_STAGES[0][0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masks = []
        for stage in self.encoder:
            x, mask = max_pool_with_mask(stage(x))
            masks.append(mask)
        for stage, mask in zip(self.decoder, reversed(masks)):
            x = stage(max_unpool_with_mask(x, mask))
        return self.classifier(x)

    def load_encoder_state(self, vgg_features: dict[str, torch.Tensor]) -> int:
        """Copy torchvision ``vgg16_bn().features`` weights into the encoder; returns tensors copied."""
        ours = [m for m in self.encoder.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        theirs = sorted({k.split(".")[0] for k in vgg_features}, key=int)
        if len(theirs) != len(ours):
            raise ValueError(f"expected VGG16-BN features with {len(ours)} conv/BN layers, "
                             f"found {len(theirs)}")
        copied = 0
        for module, prefix in zip(ours, theirs):
            state = {k[len(prefix) + 1:]: v for k, v in vgg_features.items()
                     if k.split(".")[0] == prefix}
            module.load_state_dict(state)
            copied += len(state)
        return copied
