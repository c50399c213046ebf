"""SegNet-style encoder–decoder on a ResNet-50 encoder (``segnet_r50``).

Choices, so that the network stays a SegNet (no skip concatenations, decoder mirrors the
encoder) while using ResNet-50's stages:

- Encoder: torchvision's ResNet-50 — stem (7×7 conv, stride 2) → 1/2, then a **2×2** max-pool
  (ResNet's is 3×3 with overlap; 2×2 makes its argmax positions well defined, and it has no
  weights, so ImageNet weights still load) → 1/4, then layer1 (1/4, 256 ch), layer2 (1/8,
  512), layer3 (1/16, 1024), layer4 (1/32, 2048).
- Decoder, mirrored: a 1×1 reduction of the 2048 channels, then at each strided ResNet stage
  (layer4, layer3, layer2: strided convolutions, no pool positions exist) a bilinear ×2
  upsampling followed by two 3×3 conv–BN–ReLU (learned refinement; bilinear avoids the
  checkerboard artefacts of transposed convolutions); at the max-pool, unpooling with the
  encoder's argmax positions; at the stem's strided conv, bilinear ×2 again.
- Nothing but the pool positions crosses from encoder to decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50

from rtseg.models.segnet import conv_bn_relu
from rtseg.models.unpool import max_pool_with_mask, max_unpool_with_mask

DECODER_WIDTHS = (512, 256, 128, 64)  # after the 1×1 reduction, then after each ×2 stage


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two conv–BN–ReLU applied after a ×2 bilinear upsampling (done in ``forward``)."""
    return nn.Sequential(conv_bn_relu(in_ch, out_ch), conv_bn_relu(out_ch, out_ch))


class SegNetResNet50(nn.Module):
    """SegNet-style network on ResNet-50. Input [N, 3, H, W] normalised, H, W divisible by 32."""

    def __init__(self, num_classes: int):
        super().__init__()
        r = resnet50(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu)
        self.layers = nn.ModuleList([r.layer1, r.layer2, r.layer3, r.layer4])
        w = DECODER_WIDTHS
        # 1×1: a 3×3 here alone would hold 9.4 M weights, a quarter of the network.
        self.reduce = nn.Sequential(nn.Conv2d(2048, w[0], 1, bias=False), nn.BatchNorm2d(w[0]),
                                    nn.ReLU(inplace=True))
        self.up4 = up_block(w[0], w[1])   # 1/32 → 1/16
        self.up3 = up_block(w[1], w[2])   # 1/16 → 1/8
        self.up2 = up_block(w[2], w[3])   # 1/8 → 1/4
        self.post_unpool = up_block(w[3], w[3])  # at 1/2, after unpooling
        self.up1 = up_block(w[3], w[3])   # 1/2 → 1
        self.classifier = nn.Conv2d(w[3], num_classes, 3, padding=1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x, mask = max_pool_with_mask(x)          # 64 ch at 1/4, positions kept
        for layer in self.layers:
            x = layer(x)
        x = self.reduce(x)
        x = self.up4(self._up(x))
        x = self.up3(self._up(x))
        x = self.up2(self._up(x))                # 64 ch at 1/4, mirrors layer1's input
        x = self.post_unpool(max_unpool_with_mask(x, mask))
        x = self.up1(self._up(x))
        return self.classifier(x)

    def load_encoder_state(self, resnet_state: dict[str, torch.Tensor]) -> int:
        """Copy torchvision ResNet-50 weights (``fc`` ignored) into the encoder; returns count."""
        mapping = {"conv1.": "stem.0.", "bn1.": "stem.1.", "layer1.": "layers.0.",
                   "layer2.": "layers.1.", "layer3.": "layers.2.", "layer4.": "layers.3."}
        state = {}
        for key, value in resnet_state.items():
            for theirs, ours in mapping.items():
                if key.startswith(theirs):
                    state[ours + key[len(theirs):]] = value
        missing = [k for k in self.state_dict()
                   if k.startswith(("stem.", "layers.")) and k not in state]
        if missing:
            raise ValueError(f"not a ResNet-50 state dict: {len(missing)} encoder tensors "
                             f"missing (first: {missing[0]})")
        self.load_state_dict(state, strict=False)
        return len(state)
