"""Knowledge distillation (``rtseg train --teacher FILE``): a small network learns from a large
trained one's class scores as well as from the labels.

The teacher runs once, before training, on every training frame at its own input size; its
logits are kept (float16) beside the frames, and each training batch samples them through
the same random scale, crop and flip as the frames (``DeviceBatches``), so the teacher costs
one forward pass per frame in all, not one per step — on a CPU, where a student step costs
less than the teacher's forward, that is what makes distillation affordable.

The loss that uses them is ``rtseg.training.losses.DistillationLoss``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from rtseg.data import DatasetSpec
from rtseg.devices import amp_dtype
from rtseg.errors import BadInput
from rtseg.imageops import resize_frame
from rtseg.models import load_checkpoint, read_checkpoint_metadata
from rtseg.training.epoch import StopRequested

TEACHER_MEMORY = 4 << 30  # bytes of kept teacher logits; above it they are kept at a coarser grid


def check_teacher(path: Path, spec: DatasetSpec) -> None:
    """BadInput unless ``path`` holds trained weights for ``spec``'s classes (same names, same
    order)."""
    if not Path(path).is_file():
        raise BadInput(f"--teacher {path}: no such file")
    meta = read_checkpoint_metadata(path)
    if list(meta.class_names) != list(spec.class_names):
        raise BadInput(f"--teacher {path} predicts {meta.num_classes} classes "
                       f"({', '.join(meta.class_names[:4])}, ...), not the "
                       f"{spec.num_classes} of {spec.name}")


def teacher_id(cfg) -> dict | None:
    """What a resumed run must be taught with: ``--teacher``'s file name, weight and
    temperature (None without a teacher). ``cfg``: a TrainConfig."""
    if cfg.teacher is None:
        return None
    return {"file": Path(cfg.teacher).name, "weight": cfg.distill_weight,
            "temperature": cfg.distill_temperature}


def teacher_logits(path: Path, images: np.ndarray, device: torch.device, batch_size: int = 8,
                   memory: int = TEACHER_MEMORY,
                   log: Callable[[str], None] = lambda s: None,
                   stopped: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """The teacher's class scores for uint8 BGR ``images`` [N, H, W, 3], each resized to the
    teacher's input size: float16 [N, C, h, w] on ``device``, average-pooled by the smallest
    factor that keeps them under ``memory`` bytes. StopRequested (at step 0) as soon as
    ``stopped()`` says so, asked before each batch (under DDP every rank asks as often, so
    it may be a collective): the pass takes minutes on a CPU."""
    segmenter, meta = load_checkpoint(path)
    segmenter = segmenter.to(device).eval()
    height, width = meta.input_size
    n, c = len(images), meta.num_classes
    factor = 1
    while n * c * (height // factor) * (width // factor) * 2 > memory and factor < 16:
        factor *= 2
    dtype = amp_dtype(device, device.type == "cuda")
    kept = torch.empty((n, c, height // factor, width // factor), dtype=torch.float16,
                       device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                         enabled=dtype is not None):
        for start in range(0, n, batch_size):
            if stopped is not None and stopped():
                raise StopRequested(0)
            chunk = np.stack([resize_frame(im, (height, width))
                              for im in images[start:start + batch_size]])
            scores = segmenter.logits(torch.from_numpy(chunk).to(device)).float()
            if factor > 1:
                scores = F.avg_pool2d(scores, factor, ceil_mode=False)
            kept[start:start + len(chunk)] = scores.to(torch.float16)
    log(f"teacher {Path(path).name} ({meta.model}): logits of {n} frames at "
        f"{height // factor}x{width // factor} kept on {device.type} "
        f"({kept.numel() * 2 / 2**20:.0f} MiB)")
    return kept
