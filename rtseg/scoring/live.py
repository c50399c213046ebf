"""Live mIoU: label PNGs matched to frames by file name, scored into the shared ConfusionMatrix.

Same rules as ``rtseg eval``: labels in the engine's data set encoding (``read_label``),
predictions resized to the label's size with nearest neighbour, the ignore index not scored.
Frames without a label (Cityscapes sequences label one frame in 30) are segmented, not scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from rtseg.data import check_pair_sizes, get_spec, read_label
from rtseg.data.datasets import IMAGE_SUFFIXES, DatasetLike, check_label_size, label_name
from rtseg.errors import BadInput
from rtseg.files import json_safe
from rtseg.scoring.confusion import ConfusionMatrix

def index_labels(labels_dir: Path) -> dict[str, Path]:
    """Label PNGs under ``labels_dir`` (searched recursively) by file name, first one wins."""
    index: dict[str, Path] = {}
    for path in sorted(labels_dir.rglob("*.png")):
        index.setdefault(path.name, path)
    return index


def check_labels(labels_dir: Path | str, frames_dir: Path | str) -> None:
    """Before a run: ``labels_dir`` must hold label PNGs, at least one named after a frame of
    ``frames_dir`` (any data set's naming, as the engine is not known yet), and every
    matched label must be the size of its frame (read from PNG headers, nothing decoded)."""
    labels_dir, frames_dir = Path(labels_dir), Path(frames_dir)
    index = index_labels(labels_dir)
    if not index:
        raise BadInput(f"--labels {labels_dir}: no label PNGs found")
    frames = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(f, index[n]) for f in frames
             for n in dict.fromkeys(label_name(f.name, d)
                                    for d in ("camvid", "cityscapes", "folder"))
             if n in index]
    if not pairs:
        raise BadInput(f"--labels {labels_dir}: no label file name matches a frame in "
                       f"{frames_dir} (CamVid: the same name; Cityscapes: "
                       "X_gtFine_labelIds.png for X_leftImg8bit.png; folder: X.png for X.jpg)")
    check_pair_sizes(pairs, "frame")


class LiveScorer:
    """Callable ``(frame_path, full_size_prediction)`` that accumulates a ConfusionMatrix.

    ``labels_dir`` is searched recursively once, so both a flat CamVid ``valannot/`` and a
    Cityscapes ``gtFine/val`` (with city folders) work.
    """

    def __init__(self, labels_dir: Path | str, dataset: DatasetLike,
                 num_classes: int | None = None):
        labels_dir = Path(labels_dir)
        if not labels_dir.is_dir():
            raise BadInput(f"--labels {labels_dir}: not a directory")
        spec = get_spec(dataset)
        if num_classes is not None and num_classes != spec.num_classes:
            raise BadInput(f"engine has {num_classes} classes but its data set {spec.name} has "
                           f"{spec.num_classes}: its labels cannot be scored")
        self.dataset = spec
        self.class_names = list(spec.class_names)
        self.matrix = ConfusionMatrix(spec.num_classes, spec.ignore_index)
        self.index = index_labels(labels_dir)
        if not self.index:
            raise BadInput(f"--labels {labels_dir}: no label PNGs found")
        self.scored = 0

    def label_for(self, frame_path: Optional[Path]) -> Optional[Path]:
        """The label file of the frame read from ``frame_path``, or None (no such label, or
        a frame of a video or stream, which has no path)."""
        if frame_path is None:
            return None
        return self.index.get(label_name(frame_path.name, self.dataset))

    def __call__(self, frame_path: Optional[Path], prediction: np.ndarray) -> None:
        """Score ``prediction`` (full frame size) against the label of ``frame_path``, if any."""
        path = self.label_for(frame_path)
        if path is None:
            return
        truth = read_label(path, self.dataset)
        check_label_size(path, truth.shape, frame_path, prediction.shape, "frame")
        self.matrix.update(truth, prediction)
        self.scored += 1

    def result(self) -> dict:
        """``miou`` (None when no frame had a label), per-class IoU and the frames scored."""
        if not self.scored:
            return {"miou": None, "per_class_iou": None, "scored_frames": 0}
        report = self.matrix.report(self.class_names)
        return {**report, "miou": json_safe(report["miou"]), "scored_frames": self.scored}
