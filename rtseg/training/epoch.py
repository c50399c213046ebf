"""One epoch's work: the shuffled, augmented training batches, one pass of optimiser steps over
them, and the validation that scores the model on the val split."""

from __future__ import annotations

import threading
from typing import Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from rtseg.backends.torch_backend import TorchBackend
from rtseg.data.augment import epoch_seed
from rtseg.data.torch_dataset import SegmentationDataset
from rtseg.data.transforms import TrainTransform, seed_worker
from rtseg.metadata import EngineMetadata
from rtseg.models import Segmenter
from rtseg.scoring.confusion import ConfusionMatrix
from rtseg.scoring.loop import EngineScore, eval_batches, score
from rtseg.training import distributed as ddp
from rtseg.training.config import TrainConfig
from rtseg.training.schedule import poly_lr


class StopRequested(Exception):
    """A stop (Ctrl-C, SIGTERM) was asked on some rank: every rank leaves the epoch at the
    same step, ``step`` optimiser steps done (the batch in hand is not applied)."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}")
        self.step = step


def make_train_loader(pairs, cfg: TrainConfig, crop, input_size, ignore_index,
                      info: ddp.DistInfo, start_epoch: int = 0
                      ) -> tuple[DataLoader, torch.utils.data.Sampler]:
    """Shuffled, augmented training batches; a DistributedSampler under torchrun.

    Seeds depend on ``start_epoch`` so a resumed run does not replay epoch 1's order.
    """
    seed = epoch_seed(cfg.seed, start_epoch)
    transform = TrainTransform(crop=crop, base_size=input_size, ignore_index=ignore_index,
                               scale_range=cfg.scale_range, jitter=cfg.jitter,
                               colour_cast=cfg.colour_cast, camera=cfg.camera_augment,
                               seed=seed + info.rank)
    ds = SegmentationDataset(pairs, cfg.spec, transform)
    if info.enabled:
        sampler = DistributedSampler(ds, info.world_size, info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(seed + info.rank)
    loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, worker_init_fn=seed_worker,
                        generator=generator, pin_memory=torch.cuda.is_available(),
                        persistent_workers=cfg.workers > 0)
    return loader, sampler


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, device: torch.device,
                    dtype: torch.dtype | None, scaler: torch.amp.GradScaler, base_lr: float,
                    step: int, total_steps: int, info: ddp.DistInfo, show: bool,
                    desc: str, stop: Optional[threading.Event] = None) -> tuple[float, int]:
    """One pass over ``loader``; returns (mean loss, global step after it).

    ``dtype``: the autocast dtype (None: full precision); ``scaler`` scales fp16 losses
    (disabled otherwise). A non-finite loss on any rank stops every rank at the same step;
    so does ``stop`` set on any rank (StopRequested, before the batch in hand is applied).
    """
    model.train()
    losses = []
    bar = tqdm(loader, desc=desc, disable=not show, leave=False, dynamic_ncols=True)
    for frames, labels, *teacher in bar:  # teacher: (logits, inside) under --teacher
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(base_lr, step, total_steps)
        frames = frames.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        teacher = [t.to(device, non_blocking=True) for t in teacher]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(frames)
        loss = criterion(logits.float(), labels, *teacher)
        bad = ~torch.isfinite(loss.detach())
        # One collective a step, as before: the stop rides on the non-finite check.
        if ddp.any_rank(bad | bool(stop is not None and stop.is_set()), info):
            if ddp.any_rank(bad, info):
                raise FloatingPointError(f"training loss became non-finite ({loss.item()} on "
                                         f"rank {info.rank}) at step {step}; lower --lr")
            raise StopRequested(step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())
        step += 1
        if show:
            bar.set_postfix(loss=f"{losses[-1].item():.3f}")
    return float(torch.stack(losses).mean()), step


class LogitsOf(nn.Module):
    """Adapts a Segmenter so DDP wraps the training forward (``logits``)."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, frames):
        return self.segmenter.logits(frames)


def validate(segmenter: Segmenter, metadata: EngineMetadata, pairs: Sequence, cfg: TrainConfig,
             device: torch.device, info: ddp.DistInfo) -> ConfusionMatrix:
    """Confusion matrix over the val split, each rank scoring its share, summed over ranks.

    Counted on ``device`` exactly as ``rtseg eval`` counts (labels at full size, predictions
    resized to them, nearest neighbour).
    """
    backend = TorchBackend(segmenter, metadata, str(device), convert=False)
    engine = EngineScore(backend, cfg.spec, on_device=True)
    score([engine], eval_batches(pairs[info.rank::info.world_size], cfg.spec,
                                 cfg.batch_size, cfg.workers))
    engine.matrix.matrix = ddp.all_reduce_sum(engine.matrix.matrix, info, device)
    return engine.matrix
