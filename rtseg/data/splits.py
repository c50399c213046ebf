"""Which frames a run trains on and which it is scored on: the data set's train and val
splits, or a held-out sequence of the training frames (``--holdout-sequence``), or train and
val together for a model to ship (``--train-on-val``).

CamVid's val split is one clip (0016E5) whose sequence is also in train, so a model tuned on
it is tuned to one road. Holding out a whole training sequence — its frames named
``SEQUENCE_*`` — scores the model on a road it never saw: an estimate of how it generalises.
"""

from __future__ import annotations

from pathlib import Path

from rtseg.data.datasets import DatasetLike, find_pairs, get_spec
from rtseg.errors import BadInput

Pairs = list[tuple[Path, Path]]


def split_dir(dataset: DatasetLike, root: Path | str, split: str) -> Path:
    """The folder that holds a split's images (their names are taken relative to it)."""
    root, kind = Path(root), get_spec(dataset, root).kind
    return {"camvid": root / split, "cityscapes": root / "leftImg8bit" / split,
            "folder": root / "images" / split}[kind]


def frame_name(image: Path, base: Path) -> str:
    """An image's name inside its split (``0006R0_f01230.png``; ``city/x.png`` below a
    sub-folder), with forward slashes."""
    try:
        return image.relative_to(base).as_posix()
    except ValueError:
        return image.name


def in_sequence(image: Path, base: Path, prefix: str) -> bool:
    """Whether the frame belongs to the sequence ``prefix``: its file name, or its path
    inside the split, starts with it."""
    return image.name.startswith(prefix) or frame_name(image, base).startswith(prefix)


def sequences(pairs: Pairs) -> list[str]:
    """The sequence names of the frames (file names up to the first ``_``), for messages."""
    return sorted({image.name.split("_")[0] for image, _ in pairs})


def holdout_split(dataset: DatasetLike, root: Path | str, prefix: str) -> tuple[Pairs, Pairs]:
    """(the training frames outside sequence ``prefix``, its frames): both from the train
    split. BadInput when the prefix matches no frame, or every frame."""
    if not prefix:
        raise BadInput("--holdout-sequence: give the start of the held-out frames' names, "
                       "e.g. 0006R0")
    pairs = find_pairs(dataset, root, "train")
    base = split_dir(dataset, root, "train")
    held = [pair for pair in pairs if in_sequence(pair[0], base, prefix)]
    kept = [pair for pair in pairs if not in_sequence(pair[0], base, prefix)]
    names = ", ".join(sequences(pairs)[:8])
    if not held:
        raise BadInput(f"--holdout-sequence {prefix}: no training frame's name starts with it "
                       f"(sequences in train: {names})")
    if not kept:
        raise BadInput(f"--holdout-sequence {prefix}: every training frame's name starts with "
                       "it; nothing would be left to train on")
    return kept, held


def training_split(dataset: DatasetLike, root: Path | str, holdout: str | None = None,
                   train_on_val: bool = False) -> tuple[Pairs, Pairs]:
    """(training frames, frames scored at each validation) of a run.

    By default the train and val splits. ``holdout``: the train split without that sequence,
    scored on it (val is not used). ``train_on_val``: the val split is trained on too (what a
    model to ship is trained on, once the recipe is fixed); it is still scored on val — frames
    it trained on, so that score is no estimate — unless ``holdout`` names the frames scored,
    which then must not share a sequence with val (BadInput: a neighbouring frame of the same
    clip would be trained on)."""
    if holdout is None:
        train, val = find_pairs(dataset, root, "train"), find_pairs(dataset, root, "val")
        return (train + val, val) if train_on_val else (train, val)
    train, held = holdout_split(dataset, root, holdout)
    if train_on_val:
        val = find_pairs(dataset, root, "val")
        base = split_dir(dataset, root, "val")
        shared = [image for image, _ in val if in_sequence(image, base, holdout)]
        if shared:
            raise BadInput(f"--train-on-val with --holdout-sequence {holdout}: {len(shared)} val "
                           f"frames (e.g. {shared[0].name}) are of the held-out sequence and "
                           "would be trained on; hold out a sequence that val does not hold")
        train = train + val
    return train, held


def scored_split(dataset: DatasetLike, root: Path | str, split: str,
                 holdout: str | None = None) -> Pairs:
    """The frames ``rtseg eval`` scores: a split, or (``holdout``) the held-out sequence's
    frames of the train split, as ``rtseg train --holdout-sequence`` validated on."""
    if holdout is None:
        return find_pairs(dataset, root, split)
    return holdout_split(dataset, root, holdout)[1]
