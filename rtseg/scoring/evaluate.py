"""``rtseg eval``: score any engine on a labelled split, optionally writing a picture grid."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from rtseg.backends import Backend
from rtseg.data import check_pair_sizes, get_spec
from rtseg.data.datasets import DatasetLike
from rtseg.data.splits import scored_split
from rtseg.errors import BadInput
from rtseg.scoring.loop import EngineScore, eval_batches, score
from rtseg.scoring.temporal import sequence_problem
from rtseg.visualize import colorize, palette_lut, side_by_side


def check_engine_matches(backend: Backend, dataset: DatasetLike) -> None:
    """The engine must have been trained on ``dataset``'s classes: the same data set, or
    the same class names in the same order (CamVid as a folder data set, say)."""
    spec = get_spec(dataset)
    meta = backend.metadata
    same_names = list(meta.class_names) == list(spec.class_names)
    if same_names or (meta.dataset == spec.name and meta.num_classes == spec.num_classes
                      and spec.kind != "folder"):
        return
    if meta.num_classes == spec.num_classes:
        raise BadInput(f"engine was trained on {meta.dataset}'s classes "
                       f"({', '.join(meta.class_names)}), not {spec.name}'s "
                       f"({', '.join(spec.class_names)})")
    raise BadInput(f"engine was trained on {meta.dataset} ({meta.num_classes} classes), "
                   f"not {spec.name} ({spec.num_classes} classes)")


def write_grid_png(path: Path, image_bgr: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                   lut: np.ndarray) -> None:
    """input | ground truth | prediction, coloured with the palette, as one PNG."""
    if not cv2.imwrite(str(path), side_by_side(image_bgr, colorize(truth, lut), colorize(pred, lut))):
        raise BadInput(f"cannot write {path}")


def grid_writer(pairs: Sequence[tuple[Path, Path]], grid_dir: Path,
                palette: Sequence[Sequence[int]]
                ) -> Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]:
    """``write(i, image, truth, pred)``: the grid PNG of ``pairs[i]`` (whose decoded image is
    ``image``), named after its image file."""
    lut = palette_lut(palette)

    def write(i: int, image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> None:
        write_grid_png(grid_dir / f"{pairs[i][0].stem}.png", image, truth, pred, lut)

    return write


def is_clip(pairs: Sequence[tuple[Path, Path]]) -> bool:
    """Whether the images of ``pairs`` are the frames of one clip, in order (TC then means
    something)."""
    return sequence_problem([image for image, _ in pairs]) is None


def first_missing(path: Path) -> Path | None:
    """The outermost directory on the way to ``path`` that does not exist yet (what
    ``mkdir(parents=True)`` would create first); None when ``path`` exists."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def evaluate(backend: Backend, dataset: DatasetLike, data_root: Path | str, split: str = "val",
             batch_size: int = 4, limit: int | None = None, grid_dir: Path | None = None,
             workers: int = 0, on_batch: Callable[[int], None] | None = None,
             holdout: str | None = None) -> dict:
    """Score ``backend`` on a split; returns the contract's eval JSON (minus ``engine``).

    When the split's images are the frames of one clip (CamVid val: sequence 0016E5; see
    :func:`~rtseg.scoring.temporal.sequence_problem`), temporal consistency is scored too:
    the ``tc`` keys of ``rtseg run --consistency``; else ``tc`` is None.

    ``holdout``: score the frames of the train split whose names start with it instead (the
    held-out sequence of ``rtseg train --holdout-sequence``).

    A ``grid_dir`` this call creates is removed again if scoring fails (a bad image, say),
    so a failed eval leaves no half-written grid behind.
    """
    spec = get_spec(dataset, data_root)
    check_engine_matches(backend, spec)
    pairs = scored_split(spec, data_root, split, holdout)[:limit]
    check_pair_sizes(pairs)
    engine = EngineScore(backend, spec, temporal=is_clip(pairs))

    grid, created = None, None
    if grid_dir is not None:
        grid_dir = Path(grid_dir)
        created = first_missing(grid_dir)
        grid_dir.mkdir(parents=True, exist_ok=True)
        grid = grid_writer(pairs, grid_dir, backend.metadata.palette)
    try:
        score([engine], eval_batches(pairs, spec, batch_size, workers), on_batch, grid)
    except Exception:  # not on Ctrl-C: the grids written so far are kept then
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return {
        "tc": None,
        **engine.report(),
        "images": len(pairs),
        "backend": backend.name,
        "split": "train" if holdout else split,
        "dataset": spec.name,
        **({"holdout_sequence": holdout} if holdout else {}),
    }
