"""``rtseg eval``: score any engine on a labelled split, optionally writing a picture grid."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from rtseg.backends import Backend
from rtseg.data import EvalTransform, SegmentationDataset, find_pairs, get_spec
from rtseg.data.transforms import resize_labels
from rtseg.errors import BadInput
from rtseg.metrics import ConfusionMatrix
from rtseg.visualize import colorize, palette_lut, side_by_side


def check_engine_matches(backend: Backend, dataset: str) -> None:
    """The engine must have been trained on ``dataset``'s classes."""
    spec = get_spec(dataset)
    meta = backend.metadata
    if meta.dataset != spec.name or meta.num_classes != spec.num_classes:
        raise BadInput(f"engine was trained on {meta.dataset} ({meta.num_classes} classes), "
                       f"not {spec.name} ({spec.num_classes} classes)")


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
    return [resize_labels(lbl, size) for lbl, size in zip(backend.infer(frames), sizes)]


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


def write_grid_png(path: Path, image_bgr: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                   lut: np.ndarray) -> None:
    """input | ground truth | prediction, coloured with the palette, as one PNG."""
    if not cv2.imwrite(str(path), side_by_side(image_bgr, colorize(truth, lut), colorize(pred, lut))):
        raise BadInput(f"cannot write {path}")


def evaluate(backend: Backend, dataset: str, data_root: Path | str, split: str = "val",
             batch_size: int = 4, limit: int | None = None, grid_dir: Path | None = None,
             workers: int = 0, on_batch: Callable[[int], None] | None = None) -> dict:
    """Score ``backend`` on a split; returns the contract's eval JSON (minus ``engine``)."""
    check_engine_matches(backend, dataset)
    spec = get_spec(dataset)
    pairs = find_pairs(dataset, data_root, split)[:limit]
    loader = eval_loader(pairs, dataset, backend.input_size, batch_size, workers)
    matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)

    grid = None
    if grid_dir is not None:
        grid_dir = Path(grid_dir)
        grid_dir.mkdir(parents=True, exist_ok=True)
        lut = palette_lut(backend.metadata.palette)

        def grid(i: int, truth: np.ndarray, pred: np.ndarray) -> None:
            image_path = pairs[i][0]
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            write_grid_png(grid_dir / f"{image_path.stem}.png", image, truth, pred, lut)

    score(backend, loader, matrix, on_batch, grid)
    iou = matrix.iou()
    return {
        "miou": matrix.miou(),
        "per_class_iou": {name: (None if np.isnan(v) else float(v))
                          for name, v in zip(backend.metadata.class_names, iou)},
        "pixel_accuracy": matrix.pixel_accuracy(),
        "images": len(pairs),
        "backend": backend.name,
        "split": split,
        "dataset": spec.name,
    }
