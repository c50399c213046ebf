"""The training losses (``rtseg train --loss``): ENet-weighted cross-entropy, and two
variants for rare thin classes (pole, sign, pedestrian) that the weighted mean over all
pixels leaves under-trained.

- ``ce``: cross-entropy with the ENet class weights, the mean over labelled pixels.
- ``ohem``: the same cross-entropy over the hardest pixels only (online hard example
  mining, as in PSPNet/HRNet training): those whose true class gets a probability below
  ``OHEM_THRESHOLD``, and never fewer than ``OHEM_MIN_KEPT`` of the labelled pixels — the
  easy sky and road stop dominating the gradient.
- ``ce+dice``: the weighted cross-entropy plus ``DICE_WEIGHT`` × (1 − the soft Dice score
  averaged over the classes present in the batch): each present class counts equally,
  however few its pixels.

With a teacher (``--teacher``, ``rtseg.training.distill``) any of them gets a second term,
``DistillationLoss``: ``weight`` × T² × KL(teacher ‖ student) at temperature T, averaged over
the pixels inside the crop with the class weights of the teacher's classes (Hinton et al. 2015, per pixel as in Liu et al. 2019, "Structured
knowledge distillation for semantic segmentation"): every pixel gets the teacher's whole
distribution over the classes, not only a label, and unlabelled (void) pixels a target too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "ohem", "ce+dice")
OHEM_THRESHOLD = 0.7  # pixels whose true class has a lower probability are hard
OHEM_MIN_KEPT = 0.125  # and at least this fraction of the labelled pixels is kept
DICE_WEIGHT = 1.0
DISTILL_WEIGHT = 1.0
DISTILL_TEMPERATURE = 2.0
DESCRIPTIONS = {
    "ce": "cross-entropy, ENet class weights 1/ln(1.02+p)",
    "ohem": f"ohem: cross-entropy, ENet class weights 1/ln(1.02+p), over the pixels whose true "
            f"class has probability < {OHEM_THRESHOLD} (at least {OHEM_MIN_KEPT:.1%} of them, "
            "the hardest)",
    "ce+dice": f"ce+dice: cross-entropy, ENet class weights 1/ln(1.02+p), + {DICE_WEIGHT} x "
               "(1 - soft Dice averaged over the classes present in the batch)",
}


class OhemCrossEntropy(nn.Module):
    """Class-weighted cross-entropy over the hard pixels (see the module's docstring)."""

    def __init__(self, weight: torch.Tensor, ignore_index: int,
                 threshold: float = OHEM_THRESHOLD, min_kept: float = OHEM_MIN_KEPT):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index, self.threshold, self.min_kept = ignore_index, threshold, min_kept

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(logits, target, reduction="none",
                                 ignore_index=self.ignore_index).flatten()
        valid = (target != self.ignore_index).flatten()
        if not valid.any():
            return logits.sum() * 0.0  # a batch of ignored pixels: no gradient, no NaN
        weights = self.weight[target.flatten().clamp(0, len(self.weight) - 1)] * valid
        kept = valid & (losses > -math.log(self.threshold))
        floor = max(1, int(self.min_kept * int(valid.sum())))
        if int(kept.sum()) < floor:  # too few hard pixels: the hardest ``floor`` ones
            ranked = torch.where(valid, losses.detach(), torch.full_like(losses, -1.0))
            kept = torch.zeros_like(valid)
            kept[ranked.topk(floor).indices] = True
        weights = weights * kept
        return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


class CrossEntropyDice(nn.Module):
    """Class-weighted cross-entropy plus a soft Dice term (see the module's docstring)."""

    def __init__(self, weight: torch.Tensor, ignore_index: int, dice_weight: float = DICE_WEIGHT):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        self.ignore_index, self.dice_weight = ignore_index, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice_weight * dice_loss(logits, target,
                                                                      self.ignore_index)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """1 − the soft Dice score of softmax(``logits``) [B, C, H, W] against ``target``
    [B, H, W], averaged over the classes present in ``target``; ignored pixels left out."""
    num_classes = logits.shape[1]
    valid = (target != ignore_index)[:, None]
    probs = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    onehot = onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = (2 * inter + 1.0) / (total + 1.0)
    return 1 - dice[present].mean()


def make_criterion(name: str, weight: torch.Tensor, ignore_index: int) -> nn.Module:
    """The loss ``name`` (one of LOSSES) with the class weights ``weight``."""
    if name == "ohem":
        return OhemCrossEntropy(weight, ignore_index)
    if name == "ce+dice":
        return CrossEntropyDice(weight, ignore_index)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


class DistillationLoss(nn.Module):
    """``base`` (the labels' loss) plus ``weight`` × T² × KL(softmax(teacher / T) ‖
    softmax(student / T)) per pixel, averaged over the pixels ``inside`` the crop, each
    weighted by ``class_weight`` of the teacher's class there (the cross-entropy's ENet
    weights: without them the road, sky and buildings, most of every frame, drown the thin
    rare classes that mIoU counts equally); unweighted when ``class_weight`` is None."""

    def __init__(self, base: nn.Module, weight: float = DISTILL_WEIGHT,
                 temperature: float = DISTILL_TEMPERATURE,
                 class_weight: torch.Tensor | None = None):
        super().__init__()
        self.base, self.weight, self.temperature = base, weight, temperature
        self.register_buffer("class_weight", class_weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                teacher: torch.Tensor | None = None,
                inside: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.base(logits, labels)
        if teacher is None:
            return loss
        return loss + self.weight * self.kl(logits, teacher, inside)

    def kl(self, logits: torch.Tensor, teacher: torch.Tensor,
           inside: torch.Tensor | None) -> torch.Tensor:
        """T² × KL(teacher ‖ student) per pixel, the weighted mean over ``inside`` (all
        pixels if None)."""
        t = self.temperature
        target = F.log_softmax(teacher.float() / t, dim=1)
        student = F.log_softmax(logits / t, dim=1)
        per_pixel = (target.exp() * (target - student)).sum(dim=1)  # [B, H, W]
        weights = torch.ones_like(per_pixel) if inside is None else inside.to(per_pixel.dtype)
        if self.class_weight is not None:
            weights = weights * self.class_weight[teacher.argmax(dim=1)]
        return (per_pixel * weights).sum() / weights.sum().clamp(min=1e-12) * t * t
