"""Finding (image, label) pairs on disk and reading them, for CamVid, Cityscapes and your own
folder data set (``rtseg.data.folder``; no torch: the live pipeline reads frames and labels
through here too)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from rtseg.data.classes import DATASETS, DatasetSpec, cityscapes_label_lut
from rtseg.data.folder import (IMAGE_SUFFIXES, folder_pairs, load_folder_spec,
                               read_folder_label, spec_from_metadata)
from rtseg.errors import BadInput
from rtseg.metadata import EngineMetadata

DatasetLike = str | DatasetSpec  # a built-in data set's name, or a spec (a folder data set's)


def get_spec(dataset: DatasetLike, root: Path | str | None = None) -> DatasetSpec:
    """The DatasetSpec of ``dataset``: a spec is itself; ``folder`` reads ``root``'s
    ``classes.yaml``; a built-in name its table. BadInput naming the choices otherwise."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    if dataset == "folder":
        if root is None:
            raise BadInput("--dataset folder needs --data-root DIR (with DIR/classes.yaml)")
        return load_folder_spec(root)
    try:
        return DATASETS[dataset]
    except KeyError:
        raise BadInput(f"unknown dataset {dataset!r}; choose one of: "
                       f"{', '.join(DATASETS)}, folder") from None


def engine_dataset(meta: EngineMetadata) -> DatasetSpec:
    """The data set an engine was trained on, from its metadata: a built-in one by name, a
    folder data set from the class table it carries."""
    if meta.extra.get("data_layout") != "folder" and meta.dataset in DATASETS:
        return DATASETS[meta.dataset]
    return spec_from_metadata(meta)


def camvid_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """CamVid (SegNet layout): ``root/split/*.png`` with labels in ``root/{split}annot`` (same
    name; for JPEG frames, the same stem with ``.png``)."""
    image_dir, label_dir = root / split, root / f"{split}annot"
    if not image_dir.is_dir():
        raise BadInput(f"CamVid split not found: {image_dir} (expected {root}/{split}/*.png)")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = []
    for image in images:
        label = label_dir / label_name(image.name, "camvid")
        if not label.is_file():  # a JPEG frame keeps its label as a PNG of the same stem
            label = label.with_suffix(".png")
        if not label.is_file():
            raise BadInput(f"CamVid label missing for {image.name}: expected {label}")
        pairs.append((image, label))
    return pairs


def label_name(image_name: str, dataset: DatasetLike) -> str:
    """The label file name of an image file name (CamVid: the same; Cityscapes:
    ``X_leftImg8bit.png`` → ``X_gtFine_labelIds.png``; folder: ``X.png``)."""
    kind = dataset if isinstance(dataset, str) else dataset.kind
    if kind == "cityscapes":
        stem = Path(image_name).stem
        return stem.removesuffix("_leftImg8bit") + "_gtFine_labelIds.png"
    if kind == "folder":
        return Path(image_name).stem + ".png"
    return image_name


def cityscapes_label_path(image: Path, root: Path, split: str) -> Path:
    """``leftImg8bit/split/city/X_leftImg8bit.png`` → ``gtFine/split/city/X_gtFine_labelIds.png``."""
    return root / "gtFine" / split / image.parent.name / label_name(image.name, "cityscapes")


def cityscapes_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Cityscapes, official layout: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png``."""
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise BadInput(f"Cityscapes split not found: {image_dir}")
    pairs = []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        label = cityscapes_label_path(image, root, split)
        if not label.is_file():
            raise BadInput(f"Cityscapes label missing for {image.name}: expected {label}")
        pairs.append((image, label))
    return pairs


def find_pairs(dataset: DatasetLike, root: Path | str, split: str) -> list[tuple[Path, Path]]:
    """All (image, label) pairs of a split; BadInput if the root or split is missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"data root not found: {root}")
    spec = get_spec(dataset, root)
    finder = {"camvid": camvid_pairs, "cityscapes": cityscapes_pairs,
              "folder": folder_pairs}[spec.kind]
    pairs = finder(root, split)
    if not pairs:
        raise BadInput(f"no images in the {split} split of {spec.name} under {root}")
    return pairs


def read_image(path: Path) -> np.ndarray:
    """An 8-bit BGR image (OpenCV order); BadInput if it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput(f"cannot read image {path}")
    return image


def png_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from a PNG's header without decoding it; None for other formats (or a file
    too short to say)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return h, w


def check_label_size(label: Path, label_hw: Sequence[int], image: Path,
                     image_hw: Sequence[int], what: str = "image") -> None:
    """BadInput unless a label is the size of its image; ``label_hw``, ``image_hw``: their
    shapes, (H, W) first (a decoded array's ``shape`` will do)."""
    (lh, lw), (ih, iw) = label_hw[:2], image_hw[:2]
    if (lh, lw) != (ih, iw):
        raise BadInput(f"label {label.name} is {lw}×{lh} but {what} {image.name} is {iw}×{ih}")


def check_pair_sizes(pairs: Sequence[tuple[Path, Path]], what: str = "image") -> None:
    """BadInput for the first pair whose label size differs from its image's, read from the
    PNG headers (cheap: nothing is decoded), so a bad pair stops a run before it starts."""
    for image, label in pairs:
        image_hw, label_hw = png_size(image), png_size(label)
        if image_hw and label_hw:
            check_label_size(label, label_hw, image, image_hw, what)


def read_label(path: Path, dataset: DatasetLike) -> np.ndarray:
    """A label map in the data set's training encoding (CamVid ids; Cityscapes train ids;
    a folder data set's class indices)."""
    spec = get_spec(dataset)
    if spec.kind == "folder":
        return read_folder_label(Path(path), spec)
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise BadInput(f"cannot read label {path} as a single-channel 8-bit image")
    if spec.kind == "cityscapes":
        label = cityscapes_label_lut()[label]
    return label.astype(np.uint8, copy=False)


def load_pair(image_path: Path, label_path: Path,
              dataset: DatasetLike) -> tuple[np.ndarray, np.ndarray]:
    """The BGR image and the label map (training encoding) of one pair; BadInput if their
    sizes differ."""
    image, label = read_image(image_path), read_label(label_path, dataset)
    check_label_size(label_path, label.shape, image_path, image.shape)
    return image, label
