"""Data sets: CamVid, Cityscapes and your own folder data set (``--dataset folder``): finders,
readers and class tables (no torch).
The torch side lives in ``rtseg.data.torch_dataset`` (SegmentationDataset),
``rtseg.data.transforms`` (TrainTransform) and ``rtseg.data.device_batches``."""

from rtseg.data.classes import CAMVID, CITYSCAPES, DATASETS, DatasetSpec, cityscapes_label_lut
from rtseg.data.datasets import (check_pair_sizes, engine_dataset, find_pairs, get_spec,
                                 load_pair, png_size, read_image, read_label)

__all__ = [
    "CAMVID", "CITYSCAPES", "DATASETS", "DatasetSpec", "cityscapes_label_lut",
    "check_pair_sizes", "engine_dataset", "find_pairs", "get_spec", "load_pair", "png_size",
    "read_image",
    "read_label",
]
