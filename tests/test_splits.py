"""Held-out sequences (``--holdout-sequence``) and training on val (``--train-on-val``): which
frames a run trains and is scored on, the same frames scored again by ``rtseg eval``, and
one line (exit 2) for a prefix that matches no frame or every frame."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtseg.cli import main
from rtseg.data.splits import holdout_split, scored_split, training_split
from rtseg.errors import BadInput
from rtseg.models import read_checkpoint_metadata

from test_folder_data import three_class_data

SEQUENCES = {"train": {"0001TP": 3, "0006R0": 2, "0016E5": 3}, "val": {"0016E5": 2}}


def camvid_layout(root: Path, sequences=SEQUENCES, size: int = 32) -> Path:
    """A CamVid-layout data set (``split/SEQ_fNNNNN.png``, labels in ``splitannot/``) of
    small frames: a sky band (class 0) over road (3), a car box (8) in some."""
    rng = np.random.default_rng(0)
    for split, counts in sequences.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir(parents=True)
        for seq, count in counts.items():
            for i in range(count):
                label = np.full((size, size), 3, np.uint8)
                label[: size // 3] = 0
                if i % 2:
                    label[size // 2:size // 2 + 6, 4:14] = 8
                image = np.array([[128, 128, 128]] * 11, np.uint8)
                image[0], image[3], image[8] = (200, 160, 120), (90, 80, 90), (40, 40, 200)
                image = np.clip(image[label] + rng.integers(0, 20, (size, size, 3)), 0, 255)
                name = f"{seq}_f{30 * i:05d}.png"
                cv2.imwrite(str(root / split / name), image.astype(np.uint8))
                cv2.imwrite(str(root / f"{split}annot" / name), label)
    return root


def names(pairs) -> list[str]:
    return [image.name for image, _ in pairs]


def test_a_held_out_sequence_leaves_training_and_becomes_what_is_scored(tmp_path):
    root = camvid_layout(tmp_path / "camvid")
    train, val = training_split("camvid", root, "0006R0")
    assert names(val) == ["0006R0_f00000.png", "0006R0_f00030.png"]
    assert not any(n.startswith("0006R0") for n in names(train)) and len(train) == 6
    assert not set(names(train)) & set(names(val))
    assert scored_split("camvid", root, "val", "0006R0") == val  # what eval scores
    # without a holdout: the splits as they are
    train, val = training_split("camvid", root)
    assert len(train) == 8 and names(val) == ["0016E5_f00000.png", "0016E5_f00030.png"]


def test_train_on_val_adds_val_and_refuses_a_holdout_that_val_shares(tmp_path):
    root = camvid_layout(tmp_path / "camvid")
    train, val = training_split("camvid", root, train_on_val=True)
    assert len(train) == 10 and set(val) <= set(train)  # a model to ship: val trained on
    train, held = training_split("camvid", root, "0006R0", train_on_val=True)
    assert len(train) == 8 and {p[0].parent.name for p in train} == {"train", "val"}
    assert not set(train) & set(held)
    with pytest.raises(BadInput, match="2 val frames .* would be trained on"):
        training_split("camvid", root, "0016E5", train_on_val=True)


@pytest.mark.parametrize("prefix, message", [
    ("Seq05VD", "no training frame's name starts with it (sequences in train: 0001TP, "
                "0006R0, 0016E5)"),
    ("00", "every training frame's name starts with it; nothing would be left to train on"),
])
def test_a_prefix_matching_no_frame_or_every_frame_is_one_line_and_exit_2(tmp_path, capfd,
                                                                         prefix, message):
    root = camvid_layout(tmp_path / "camvid")
    capfd.readouterr()
    code = main(["train", "--model", "unet_resnet18", "--out", str(tmp_path / "run"),
                 "--dataset", "camvid", "--data-root", str(root), "--holdout-sequence", prefix])
    err = capfd.readouterr().err
    assert code == 2 and err.strip() == f"error: --holdout-sequence {prefix}: {message}"
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_folder_data_set_holds_out_by_file_name_or_sub_folder(tmp_path):
    root = tmp_path / "lanes"
    three_class_data(root, size=32, per_split=4)  # images/train/f00.jpg ... f03.jpg
    train, held = holdout_split("folder", root, "f03")
    assert names(held) == ["f03.jpg"] and names(train) == ["f00.jpg", "f01.jpg", "f02.jpg"]
    sub = root / "images" / "train" / "roadB"
    sub.mkdir()
    (root / "labels" / "train" / "roadB").mkdir()
    for stem in ("f00", "f01"):  # a sequence per sub-folder
        (root / "images" / "train" / f"{stem}.jpg").rename(sub / f"{stem}.jpg")
        (root / "labels" / "train" / f"{stem}.png").rename(
            root / "labels" / "train" / "roadB" / f"{stem}.png")
    train, held = holdout_split("folder", root, "roadB/")
    assert names(held) == ["f00.jpg", "f01.jpg"] and names(train) == ["f02.jpg", "f03.jpg"]


@pytest.mark.slow
def test_eval_with_the_holdout_reproduces_the_training_runs_score(tmp_path, capfd):
    root = camvid_layout(tmp_path / "camvid")
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--model", "unet_resnet18", "--dataset", "camvid", "--data-root",
                     str(root), "--holdout-sequence", "0006R0", "--out", str(out), "--epochs",
                     "1", "--batch-size", "2", "--crop", "32x32", "--input-size", "32x32",
                     "--workers", "0", "--device", "cpu"]) == 0
        meta = read_checkpoint_metadata(out / "best.safetensors")
        assert meta.extra["recipe"]["holdout_sequence"] == "0006R0"
        assert meta.extra["recipe"]["train_on_val"] is False
        report = tmp_path / "eval.json"
        assert main(["eval", "--engine", str(out / "best.safetensors"), "--dataset", "camvid",
                     "--data-root", str(root), "--holdout-sequence", "0006R0", "--device",
                     "cpu", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["images"] == 2 and result["holdout_sequence"] == "0006R0"
    assert result["split"] == "train"
    assert result["miou"] == meta.extra["val_miou"]  # the same frames, the same predictions
    assert result["per_class_iou"] == meta.extra["per_class_iou"]
    for bad, message in ((["--holdout-sequence", "0006R0", "--split", "test"],
                          "leave out --split test"),
                         (["--holdout-sequence", "Seq05VD"], "no training frame's name")):
        capfd.readouterr()
        assert main(["eval", "--engine", str(out / "best.safetensors"), "--dataset", "camvid",
                     "--data-root", str(root), *bad]) == 2
        assert message in capfd.readouterr().err
