"""Data sets: CamVid and Cityscapes readers, class tables and paired transforms."""

from rtseg.data.classes import CAMVID, CITYSCAPES, DATASETS, DatasetSpec, cityscapes_label_lut
from rtseg.data.datasets import (SegmentationDataset, check_pair_sizes, find_pairs, get_spec,
                                 png_size, read_image, read_label)
from rtseg.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "CAMVID", "CITYSCAPES", "DATASETS", "DatasetSpec", "cityscapes_label_lut",
    "SegmentationDataset", "check_pair_sizes", "find_pairs", "get_spec", "png_size",
    "read_image", "read_label",
    "EvalTransform", "TrainTransform",
]
