"""The numbers a training run follows: ENet class weights for the loss, the poly learning-rate
decay per step, and the epoch count fitted to a time budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from rtseg.data import read_label
from rtseg.data.datasets import DatasetLike
from rtseg.training import distributed as ddp


def class_weights(pairs: Sequence, dataset: DatasetLike, num_classes: int, ignore_index: int,
                  workers: int = 4) -> torch.Tensor:
    """ENet's weighting ``1 / ln(1.02 + p_c)`` from label pixel frequencies, mean 1."""
    def count(pair):
        label = read_label(pair[1], dataset).ravel()
        return np.bincount(label[label != ignore_index], minlength=num_classes)[:num_classes]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        counts = sum(pool.map(count, pairs))
    freq = counts / max(counts.sum(), 1)
    weights = 1.0 / np.log(1.02 + freq)
    weights[counts == 0] = 0.0  # a class never seen cannot be learned; don't let it dominate
    weights *= (counts > 0).sum() / max(weights.sum(), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


def shared_class_weights(pairs: Sequence, spec, device: torch.device, info) -> torch.Tensor:
    """``class_weights`` of ``spec``'s classes counted by rank 0 and broadcast to every rank
    (``info``: the process's DistInfo)."""
    weights = torch.zeros(spec.num_classes)
    if info.is_main:
        weights = class_weights(pairs, spec, spec.num_classes, spec.ignore_index)
    return ddp.broadcast_tensor(weights.to(device), info)


def planned_epochs(epochs: int, done: int, elapsed_s: float, last_epoch_s: float,
                   budget_s: float | None) -> int:
    """The epoch count that fits ``budget_s`` seconds of training: the ``done`` epochs took
    ``elapsed_s``, and the rest run ``last_epoch_s`` each (the caller's recent pace: the first
    epoch carries the one-off autotuning, so an average would under-plan). Never below
    ``done``, never above ``epochs``."""
    if budget_s is None or done == 0 or last_epoch_s <= 0:
        return epochs
    fit = done + int(max(budget_s - elapsed_s, 0.0) / last_epoch_s)
    return max(done, min(epochs, fit))


def poly_lr(base_lr: float, step: int, total: int, power: float = 0.9) -> float:
    """Polynomial decay from ``base_lr`` to 0 over ``total`` steps."""
    return base_lr * (1.0 - min(step, total) / max(total, 1)) ** power
