"""``rtseg prune``: a trained checkpoint made narrower (fewer channels in every layer), ready
to be fine-tuned with ``rtseg train --init``."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from rtseg.errors import BadInput
from rtseg.models import load_checkpoint, save_checkpoint
from rtseg.models.flops import count_flops
from rtseg.models.pruning import PRUNED_KEY, prune_channels

# Scores of the unpruned network: they no longer describe the pruned one.
_STALE_KEYS = ("val_miou", "val_pixel_accuracy", "epoch", "per_class_iou")


def _classifier(net: nn.Module) -> nn.Module:
    """The layer that gives the class scores (its outputs are the classes: never pruned)."""
    head = getattr(net, "segmentation_head", None)  # smp models
    if head is not None:
        return head
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]


def prune_checkpoint(checkpoint: Path, ratio: float, out: Path) -> dict:
    """Prune ``ratio`` of the channels of ``checkpoint``'s network and write the result to
    ``out`` (fp32 safetensors, metadata marking it pruned). Returns
    ``{"gflops_before", "gflops_after", "params_before", "params_after", "out"}`` at the
    checkpoint's input size."""
    segmenter, meta = load_checkpoint(checkpoint)
    if meta.model.startswith("segnet"):
        raise BadInput(f"{meta.model}: pruning takes UNet models (SegNet's pooling indices "
                       "tie its decoder to the encoder's channels)")
    if meta.extra.get(PRUNED_KEY):
        raise BadInput(f"{checkpoint} is already pruned; prune the original once, with the "
                       "ratio you want")
    net, size = segmenter.net, tuple(meta.input_size)
    before = (count_flops(net, size), sum(p.numel() for p in net.parameters()))
    prune_channels(net, ratio, size, keep=[_classifier(net)])
    after = (count_flops(net, size), sum(p.numel() for p in net.parameters()))
    kept = {k: v for k, v in meta.to_dict().items() if k not in _STALE_KEYS}
    kept[PRUNED_KEY] = {"ratio": ratio, "from": Path(checkpoint).name,
                        "gflops": round(after[0] / 1e9, 3), "at": list(size)}
    save_checkpoint(out, segmenter, type(meta).from_dict(kept, source=str(checkpoint)))
    return {"gflops_before": before[0] / 1e9, "gflops_after": after[0] / 1e9,
            "params_before": before[1], "params_after": after[1], "out": str(out)}
