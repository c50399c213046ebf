"""`rtseg train --teacher`: a student learns from a trained teacher's class scores, sampled
through the same scale, crop and flip as its frames; the teacher term is zero where they
agree and ignores padding; bad teachers get one line."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rtseg.models import load_checkpoint, read_checkpoint_metadata
from rtseg.training.distill import teacher_logits
from rtseg.training.losses import DistillationLoss
from test_device_batches import batches, synthetic
from test_folder_data import cli as _cli
from test_folder_data import trained_three_class

BUNDLED = Path(__file__).resolve().parents[1] / "engines" / "unet_vgg16_camvid.safetensors"


def test_the_teacher_term_vanishes_where_the_student_agrees_and_pulls_it_there():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7)
    labels = torch.randint(0, 5, (2, 6, 7))
    base = nn.CrossEntropyLoss()
    loss = DistillationLoss(base, weight=1.0, temperature=2.0)
    assert torch.allclose(loss(logits, labels, logits.clone()), base(logits, labels), atol=1e-6)
    teacher = torch.randn(2, 5, 6, 7) * 3
    assert float(loss(logits, labels, teacher)) > float(base(logits, labels)) + 0.05

    student = logits.clone().requires_grad_()
    before = loss.kl(student, teacher, None)
    before.backward()
    with torch.no_grad():
        after = loss.kl(student - 0.5 * student.grad, teacher, None)
    assert float(after) < float(before.detach())


def test_the_teacher_term_weighs_each_pixel_by_the_teachers_class():
    teacher = torch.zeros(1, 2, 4, 4)
    teacher[:, 0, :, :2] = 5.0  # class 0 on the left half, class 1 on the right
    teacher[:, 1, :, 2:] = 5.0
    student = teacher.clone()
    student[:, :, :, 2:] = 0.0  # wrong only where the teacher sees the rare class 1
    plain = DistillationLoss(nn.CrossEntropyLoss())
    weighted = DistillationLoss(nn.CrossEntropyLoss(), class_weight=torch.tensor([1.0, 9.0]))
    wrong = plain.kl(student[..., 2:], teacher[..., 2:], None)  # mean over the wrong half
    assert torch.allclose(plain.kl(student, teacher, None), wrong / 2)
    assert torch.allclose(weighted.kl(student, teacher, None), wrong * 9 / 10)


def test_pixels_outside_the_frame_do_not_count():
    torch.manual_seed(1)
    logits, teacher = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    inside = torch.zeros(1, 8, 8, dtype=torch.bool)
    inside[:, :, :5] = True
    loss = DistillationLoss(nn.CrossEntropyLoss())
    other = teacher.clone()
    other[..., 5:] = 50 * torch.randn(1, 4, 8, 3)  # only the padding changes
    assert torch.allclose(loss.kl(logits, teacher, inside), loss.kl(logits, other, inside))
    assert not torch.allclose(loss.kl(logits, teacher, None), loss.kl(logits, other, None))


def test_teacher_scores_go_through_the_frames_scale_crop_and_flip():
    images, labels = synthetic(n=6, h=96, w=128)
    # A teacher that is right everywhere, kept at half the frame size: the sampled scores'
    # argmax must be the sampled labels wherever the crop lies inside the frame.
    onehot = F.one_hot(torch.from_numpy(labels).long(), 11).permute(0, 3, 1, 2).float() * 10
    teacher = F.avg_pool2d(onehot, 2).half()
    made = batches(images, labels, crop=(64, 96), scale_range=(0.6, 1.4), teacher=teacher)
    agree, checked, padded = 0, 0, 0
    for epoch in range(3):
        made.set_epoch(epoch)
        for frames, lbls, scores, inside in made:
            assert scores.shape == (2, 11, 64, 96) and inside.shape == (2, 64, 96)
            assert torch.equal(lbls == 11, ~inside)  # synthetic labels have no void pixels
            agree += int(((scores.argmax(1) == lbls) & inside).sum())
            checked += int(inside.sum())
            padded += int((~inside).sum())
    assert padded > 0  # some crops reached past a downscaled frame
    assert agree / checked > 0.97  # only pixels on block edges may differ


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A 3-class unet_resnet18 trained for one epoch on a tiny folder data set (the teacher:
    ``run/best.safetensors``)."""
    return trained_three_class(tmp_path_factory.mktemp("distill"))


def test_teacher_scores_are_kept_coarser_when_they_would_not_fit(teacher):
    weights = teacher / "run" / "best.safetensors"
    segmenter, meta = load_checkpoint(weights)
    frames = np.random.default_rng(0).integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    full = teacher_logits(weights, frames, torch.device("cpu"), batch_size=2)
    h, w = meta.input_size
    assert full.shape == (3, 3, h, w) and full.dtype == torch.float16
    resized = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames])
    with torch.no_grad():  # each frame resized to the teacher's input, as the pipeline does
        expected = segmenter.logits(torch.from_numpy(resized))
    assert torch.allclose(full.float(), expected, atol=0.05, rtol=0.01)
    coarse = teacher_logits(weights, frames, torch.device("cpu"), memory=full.numel())
    assert coarse.shape == (3, 3, h // 2, w // 2)
    assert torch.allclose(coarse.float(), F.avg_pool2d(expected, 2), atol=0.05, rtol=0.01)


def test_train_with_a_teacher_records_it(teacher, tmp_path, capfd):
    weights = teacher / "run" / "best.safetensors"
    code, out, err = _cli(["train", "--model", "unet_resnet18", "--teacher", weights,
                           "--distill-weight", 0.5, "--dataset", "folder", "--data-root",
                           teacher / "data", "--epochs", "1", "--batch-size", "2",
                           "--workers", "0", "--device", "cpu", "--out", tmp_path / "student"],
                          capfd)
    assert code == 0, err
    assert "distilled from best.safetensors" in out + err
    recipe = read_checkpoint_metadata(tmp_path / "student" / "best.safetensors").extra["recipe"]
    assert recipe["teacher"] == "best.safetensors" and recipe["data_on_device"] is True
    assert "0.5 x T^2 x KL(teacher || student) at T 2.0" in recipe["loss"]

    # --resume must be taught as the run was: without the teacher it is refused in one line
    code, _, err = _cli(["train", "--model", "unet_resnet18", "--resume", "--dataset", "folder",
                         "--data-root", teacher / "data", "--epochs", "2", "--device", "cpu",
                         "--out", tmp_path / "student"], capfd)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was trained with --teacher best.safetensors (weight 0.5" in err


@pytest.mark.parametrize("case", ["missing", "other classes", "bad temperature",
                                  "no teacher"])
def test_a_bad_teacher_gets_one_line(teacher, tmp_path, capfd, case):
    args = {"missing": ["--teacher", tmp_path / "none.safetensors"],
            "other classes": ["--teacher", BUNDLED],  # CamVid's 11, not 3
            "bad temperature": ["--teacher", teacher / "run" / "best.safetensors",
                                "--distill-temperature", 0],
            "no teacher": ["--distill-weight", 2]}[case]
    code, _, err = _cli(["train", "--model", "unet_resnet18", *args, "--dataset", "folder",
                         "--data-root", teacher / "data", "--epochs", "1", "--device", "cpu",
                         "--out", tmp_path / "student"], capfd)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert {"missing": "no such file", "other classes": "predicts 11 classes",
            "bad temperature": "--distill-temperature 0", "no teacher": "need --teacher"}[case] \
        in lines[0]
    assert not (tmp_path / "student").exists()


def test_a_stop_while_the_teacher_runs_ends_the_run_at_once(teacher, tmp_path):
    import threading

    from rtseg.training.config import TrainConfig
    from rtseg.training.train import train

    stop = threading.Event()
    stop.set()  # Ctrl-C or SIGTERM before the first step
    said = []
    cfg = TrainConfig(model="unet_resnet18", dataset="folder", data_root=teacher / "data",
                      out=tmp_path / "student", epochs=1, batch_size=2, workers=0,
                      device="cpu", teacher=teacher / "run" / "best.safetensors")
    result = train(cfg, log=said.append, stop=stop)
    assert result["interrupted"] and said == ["stopped before the first training step; "
                                              "nothing written"]
    assert not (tmp_path / "student").exists()
