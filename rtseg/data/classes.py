"""Class names, palettes and label encodings of the supported data sets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtseg.metadata import EngineMetadata

# ImageNet statistics on the 0-255 scale, RGB order; used for every model so that
# ImageNet-pretrained encoders see what they were trained on.
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set contributes to a model's metadata."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class id
    ignore_index: int
    input_size: tuple[int, int]  # default [H, W] the network sees (divisible by 32)
    train_crop: tuple[int, int]  # default training crop
    layout: str = ""  # how files are found and labels read: camvid, cityscapes or folder
    # A folder data set's raw label value → class index (others: ignored); empty: the
    # label values are the class indices.
    label_map: tuple[tuple[int, int], ...] = ()
    ignore_color: tuple[int, int, int] | None = None  # colour-coded labels: the ignored colour

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def kind(self) -> str:
        """The layout: the built-in data sets' own, or ``folder``."""
        return self.layout or self.name


CAMVID = DatasetSpec(
    name="camvid",
    class_names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                 "Fence", "Car", "Pedestrian", "Bicyclist"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
             (0, 128, 192)),
    ignore_index=11,
    # CamVid frames are 360×480; 360 is not divisible by 32, so the network sees 352×480
    # (a 2 % vertical squeeze) and predictions are resized back to 360×480 for scoring.
    input_size=(352, 480),
    train_crop=(352, 480),
)

CITYSCAPES = DatasetSpec(
    name="cityscapes",
    class_names=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                 "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                 "truck", "bus", "train", "motorcycle", "bicycle"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
             (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
             (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
             (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    ignore_index=255,
    input_size=(1024, 2048),
    train_crop=(512, 1024),
)

DATASETS = {spec.name: spec for spec in (CAMVID, CITYSCAPES)}


def engine_metadata(model: str, spec: DatasetSpec, input_size, **extra) -> EngineMetadata:
    """The contract metadata of ``model`` trained on ``spec``'s classes (fp32, ImageNet
    normalisation); ``extra`` adds keys such as the recipe."""
    if spec.kind == "folder":  # what run --labels needs to read the user's labels later
        extra = {"data_layout": "folder", **extra}
        if spec.label_map:
            extra["label_map"] = {str(k): v for k, v in spec.label_map}
        if spec.ignore_color is not None:
            extra["ignore_color"] = list(spec.ignore_color)
    return EngineMetadata(
        model=model, num_classes=spec.num_classes, class_names=list(spec.class_names),
        palette=[list(c) for c in spec.palette], ignore_index=spec.ignore_index,
        input_size=[int(v) for v in input_size], dataset=spec.name, mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD), precision="fp32", extra=dict(extra))

# The official cityscapesScripts table (labels.py): labelId → trainId for the 34 ids;
# everything not listed (and license plate, id -1) is ignored.
_CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


def cityscapes_label_lut() -> np.ndarray:
    """A 256-entry uint8 lookup table mapping Cityscapes labelIds to the 19 train ids."""
    lut = np.full(256, CITYSCAPES.ignore_index, dtype=np.uint8)
    for label_id, train_id in _CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut
