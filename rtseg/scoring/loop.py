"""The scoring loop of ``rtseg eval``, training's validation and ``bench --compare``: engines
segment labelled images, their label maps come back to each label's full size (nearest
neighbour) and one ConfusionMatrix per engine counts the pixels — the same pixels everywhere.

>>> engines = [EngineScore(a, "camvid"), EngineScore(b, "camvid")]
>>> score(engines, eval_batches(pairs, "camvid", batch_size=4))
>>> engines[1].report(), engines[1].agreement()  # b's scores; share of pixels labelled as a does
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from rtseg.backends import Backend
from rtseg.data import get_spec
from rtseg.data.datasets import DatasetLike
from rtseg.data.torch_dataset import SegmentationDataset
from rtseg.imageops import nearest_index, resize_frame, resize_nearest
from rtseg.scoring.confusion import ConfusionMatrix
from rtseg.scoring.temporal import TemporalConsistency

Batch = tuple[Sequence[np.ndarray], Sequence[np.ndarray]]


def _as_tensors(items: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Collate without stacking (sizes may differ); tensors cross worker processes through
    shared memory instead of pickles."""
    return ([torch.from_numpy(image) for image, _ in items],
            [torch.from_numpy(label) for _, label in items])


def eval_batches(pairs: Sequence, dataset: DatasetLike, batch_size: int,
                 workers: int = 0) -> Iterator[Batch]:
    """Batches of (images, labels) in ``pairs`` order, decoded on ``workers`` processes: lists
    of full-size uint8 arrays, BGR images and label maps in the training encoding."""
    ds = SegmentationDataset(pairs, dataset)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=_as_tensors)
    for images, labels in loader:
        yield [i.numpy() for i in images], [lbl.numpy() for lbl in labels]


def engine_frames(images: Sequence[np.ndarray], input_size: tuple[int, int]) -> np.ndarray:
    """An engine's batch: the images resized to its (H, W) input, uint8 [N, H, W, 3]."""
    return np.stack([resize_frame(image, input_size) for image in images])


class EngineScore:
    """One engine's running score: its ConfusionMatrix and how many label pixels (ignore
    included) it labels as the reference engine of :func:`score` does.

    ``on_device``: keep label maps and counts on the engine's torch device (a TorchBackend:
    ``infer_torch``), resized there with ``resize_nearest``'s very mapping — the same counts
    without a copy to the host per batch.
    ``temporal``: the images are the frames of one clip, in order: score temporal
    consistency too (``scoring/temporal.py``; its keys join :meth:`report`).
    """

    def __init__(self, backend: Backend, dataset: DatasetLike, on_device: bool = False,
                 temporal: bool = False):
        spec = get_spec(dataset)
        self.backend = backend
        self.temporal = (TemporalConsistency(backend.metadata.class_names) if temporal
                         else None)
        self.matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
        self.on_device = on_device
        self.agreeing = 0
        self.pixels = 0
        self._index: dict = {}

    def _resize_on_device(self, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        src, dev = tuple(labels.shape), labels.device
        if src == tuple(size):
            return labels
        key = (src, tuple(size), dev)
        if key not in self._index:
            self._index[key] = [torch.tensor(nearest_index(s, d), device=dev)
                                for s, d in zip(src, size)]
        rows, cols = self._index[key]
        return labels.index_select(0, rows).index_select(1, cols)

    def predict(self, frames: np.ndarray, sizes: Sequence[tuple[int, int]]) -> list:
        """The engine's label maps of ``frames`` (uint8 [N, H, W, 3] at the engine's input
        size), each resized (nearest) to its (H, W) in ``sizes``: numpy arrays, or tensors on
        the device when ``on_device``."""
        if not self.on_device:
            labels = self.backend.infer(frames)
            self._add_temporal(frames, labels)
            return [resize_nearest(lbl, size) for lbl, size in zip(labels, sizes)]
        labels = self.backend.infer_torch(torch.from_numpy(frames))
        if self.temporal is not None:
            self._add_temporal(frames, labels.cpu().numpy())
        return [self._resize_on_device(lbl, size) for lbl, size in zip(labels, sizes)]

    def _add_temporal(self, frames: np.ndarray, labels: np.ndarray) -> None:
        """The next frames of the clip and their labels, at the engine's input size."""
        if self.temporal is not None:
            for frame, lbl in zip(frames, labels):
                self.temporal.add(frame, lbl)

    def add(self, labels: Sequence[np.ndarray], predictions: Sequence,
            reference: Sequence) -> None:
        """Count one batch: truth ``labels``, this engine's ``predictions`` and the reference
        engine's (of the same kind: numpy, or tensors on one device)."""
        for label, prediction, ref in zip(labels, predictions, reference):
            self.pixels += label.size
            if self.on_device:
                label = torch.from_numpy(label).to(prediction.device)
            self.matrix.update(label, prediction)
            if prediction is ref:  # the reference engine agrees with itself everywhere
                self.agreeing += prediction.numel() if self.on_device else prediction.size
            else:
                self.agreeing = self.agreeing + (prediction == ref).sum()

    def agreement(self) -> float:
        """Share of the pixels labelled as the reference engine labels them."""
        return float(self.agreeing) / self.pixels

    def report(self) -> dict:
        """``{"miou", "per_class_iou", "pixel_accuracy"}`` under the engine's class names,
        and the ``tc`` keys when scoring temporal consistency."""
        report = self.matrix.report(self.backend.metadata.class_names)
        return report if self.temporal is None else report | self.temporal.result()


def score(engines: Sequence[EngineScore], batches: Iterable[Batch],
          on_batch: Callable[[int], None] | None = None,
          on_image: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None
          ) -> None:
    """Every engine segments each batch of full-size (images, labels) and counts it; the first
    engine is the reference of the others' agreement. ``on_batch(n)`` after each batch of
    ``n``; ``on_image(index, image, label, prediction)`` with the first engine's label map.
    Engines of one input size share one resize of the batch."""
    seen = 0
    for images, labels in batches:
        sizes = [label.shape for label in labels]
        resized: dict[tuple[int, int], np.ndarray] = {}
        reference = None
        for engine in engines:
            size = tuple(engine.backend.input_size)
            if size not in resized:
                resized[size] = engine_frames(images, size)
            predictions = engine.predict(resized[size], sizes)
            reference = predictions if reference is None else reference
            engine.add(labels, predictions, reference)
        if on_image is not None:
            for index, item in enumerate(zip(images, labels, reference), seen):
                on_image(index, *item)
        seen += len(labels)
        if on_batch:
            on_batch(len(labels))
