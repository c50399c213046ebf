"""Scoring an engine over labelled batches — shared by ``rtseg eval`` and training's
validation, so both count exactly the same pixels."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from rtseg.backends import Backend
from rtseg.data.torch_dataset import SegmentationDataset
from rtseg.data.transforms import EvalTransform
from rtseg.imageops import resize_nearest
from rtseg.scoring.confusion import ConfusionMatrix


def eval_loader(pairs: Sequence, dataset: str, input_size: tuple[int, int], batch_size: int,
                workers: int = 0) -> torch.utils.data.DataLoader:
    """Batches of (frames resized to the input size, labels at full size, indices)."""
    ds = SegmentationDataset(pairs, dataset, EvalTransform(tuple(input_size)))

    def collate(items):
        return torch.stack([f for f, _ in items]), [lbl for _, lbl in items]

    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                       num_workers=workers, collate_fn=collate)


def predict_full_size(backend: Backend, frames: np.ndarray,
                      sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Run the engine and bring each label map back to its original (H, W), nearest neighbour."""
    return [resize_nearest(lbl, size) for lbl, size in zip(backend.infer(frames), sizes)]


def score(backend: Backend, loader, matrix: ConfusionMatrix,
          on_batch: Callable[[int], None] | None = None,
          grid: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> ConfusionMatrix:
    """Accumulate predictions of ``backend`` over ``loader`` into ``matrix``."""
    seen = 0
    for frames, labels in loader:
        preds = predict_full_size(backend, frames.numpy(), [lbl.shape for lbl in labels])
        for lbl, pred in zip(labels, preds):
            truth = lbl.numpy()
            matrix.update(truth, pred)
            if grid is not None:
                grid(seen, truth, pred)
            seen += 1
        if on_batch:
            on_batch(len(labels))
    return matrix
