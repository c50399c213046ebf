"""The torch ``Dataset`` over (image, label) pairs that training and eval load batches from."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from rtseg.data.datasets import DatasetLike, get_spec, load_pair


class SegmentationDataset(Dataset):
    """(image, label) pairs passed through a paired transform.

    ``transform(image_bgr_uint8, label_uint8) -> sample``; without one, the raw pair.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], dataset: DatasetLike,
                 transform: Callable | None = None):
        self.pairs = list(pairs)
        self.dataset = get_spec(dataset)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw BGR image and label of one sample; BadInput if their sizes differ."""
        return load_pair(*self.pairs[index], self.dataset)

    def __getitem__(self, index: int):
        image, label = self.load(index)
        return self.transform(image, label) if self.transform else (image, label)
