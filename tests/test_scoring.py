"""Scoring: ConfusionMatrix against hand-computed cases and a brute-force reference, its one
report, and the scoring loop — numpy and on-device counting give the same matrix."""

import math

import numpy as np
import pytest
import torch

from rtseg.backends import Backend, open_engine
from rtseg.data import find_pairs, get_spec
from rtseg.data.classes import engine_metadata
from rtseg.engines import untrained_engine
from rtseg.files import json_safe
from rtseg.imageops import nearest_index, resize_nearest
from rtseg.scoring.confusion import ConfusionMatrix
from rtseg.scoring.loop import EngineScore, eval_batches, score


def brute_force(target, pred, n, ignore):
    """Per-class IoU by counting pixels one class at a time — slow and obvious."""
    keep = target != ignore
    t, p = target[keep], pred[keep]
    ious = []
    for c in range(n):
        inter = np.sum((t == c) & (p == c))
        union = np.sum((t == c) | (p == c))
        ious.append(inter / union if union else np.nan)
    acc = np.mean(t == p) if t.size else np.nan
    return np.array(ious), acc


def test_hand_computed_case():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(target, pred)
    # class 0: tp 1, fn 1, fp 0 → 1/2; class 1: tp 2, fp 1 → 2/3; class 2: 1/1
    np.testing.assert_allclose(cm.iou(), [0.5, 2 / 3, 1.0])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 5)  # the 255 pixel is not scored


def test_absent_class_is_not_averaged():
    cm = ConfusionMatrix(4, ignore_index=None)
    cm.update(np.array([0, 0, 1]), np.array([0, 0, 1]))
    iou = cm.iou()
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert cm.miou() == 1.0


def test_predicted_but_absent_class_counts_as_zero():
    cm = ConfusionMatrix(3, ignore_index=None)
    cm.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 2]))
    assert cm.iou()[2] == 0.0
    assert cm.miou() == pytest.approx((0.75 + 0.0) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    n, ignore = 11, 11
    target = rng.integers(0, n + 1, size=(3, 37, 41))  # includes the ignore id 11
    pred = np.where(rng.random(target.shape) < 0.6, np.minimum(target, n - 1),
                    rng.integers(0, n, size=target.shape))
    cm = ConfusionMatrix(n, ignore_index=ignore)
    for t, p in zip(target, pred):  # accumulating batches equals one big update
        cm.update(t, p)
    iou, acc = brute_force(target, pred, n, ignore)
    np.testing.assert_allclose(cm.iou(), iou, equal_nan=True)
    assert cm.miou() == pytest.approx(np.nanmean(iou))
    assert cm.pixel_accuracy() == pytest.approx(acc)


def test_rejects_out_of_range_prediction_and_shape_mismatch():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    cm.update(np.array([255, 1]), np.array([7, 1]))  # an unscored pixel may hold anything
    assert cm.matrix.sum() == 1


def test_empty_matrix_gives_nan():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.full(4, 255), np.zeros(4))
    assert np.isnan(cm.miou()) and np.isnan(cm.pixel_accuracy())


def test_report_names_classes_and_writes_absent_ones_as_none():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.array([0, 0, 1, 255]), np.array([0, 1, 1, 2]))
    report = cm.report(["a", "b", "c"])
    assert list(report) == ["miou", "per_class_iou", "pixel_accuracy"]
    assert report["per_class_iou"] == {"a": 0.5, "b": 0.5, "c": None}
    assert report["miou"] == 0.5 and report["pixel_accuracy"] == pytest.approx(2 / 3)
    empty = ConfusionMatrix(3).report(["a", "b", "c"])
    assert math.isnan(empty["miou"]) and math.isnan(empty["pixel_accuracy"])
    assert json_safe(empty) == {"miou": None, "per_class_iou": dict.fromkeys("abc"),
                                "pixel_accuracy": None}


def test_torch_tensors_count_like_numpy_and_join_the_matrix_when_read():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 12, (2, 30, 40)).astype(np.uint8)
    pred = rng.integers(0, 11, (2, 30, 40)).astype(np.uint8)
    on_numpy, on_torch = ConfusionMatrix(11, 11), ConfusionMatrix(11, 11)
    for t, p in zip(target, pred):
        on_numpy.update(t, p)
        on_torch.update(torch.from_numpy(t), torch.from_numpy(p))
    np.testing.assert_array_equal(on_torch.matrix, on_numpy.matrix)
    on_torch.update(torch.from_numpy(target[0]), torch.from_numpy(pred[0]))
    assert on_torch.matrix.sum() == on_numpy.matrix.sum() + (target[0] != 11).sum()
    bad = ConfusionMatrix(3)
    bad.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="outside"):
        bad.miou()


@pytest.mark.parametrize("src, dst", [((64, 96), (360, 480)), ((352, 480), (360, 480)),
                                      ((360, 480), (64, 96)), ((45, 61), (97, 300)),
                                      ((512, 1024), (1024, 2048)), ((7, 3), (7, 3))])
def test_nearest_index_is_the_mapping_of_resize_nearest(src, dst):
    image = np.random.default_rng(src[0]).integers(0, 256, src, dtype=np.uint8)
    rows, cols = nearest_index(src[0], dst[0]), nearest_index(src[1], dst[1])
    np.testing.assert_array_equal(image[rows][:, cols], resize_nearest(image, dst))


class BandsBackend(Backend):
    """Labels by bands of the blue channel, in numpy and in torch: a fast stand-in engine."""

    name = "rule"

    def __init__(self, input_size=(64, 96), shift=0):
        super().__init__(engine_metadata("rule", get_spec("camvid"), input_size), "cpu", "fp32")
        self.shift = shift

    def infer(self, frames):
        return ((frames[..., 0] // 24 + self.shift) % 11).astype(np.uint8)

    def infer_torch(self, frames):
        return ((frames[..., 0] // 24 + self.shift) % 11).to(torch.uint8)


def device_and_host_scores(backend, pairs):
    on_host = EngineScore(backend, "camvid")
    on_device = EngineScore(backend, "camvid", on_device=True)
    score([on_host], eval_batches(pairs, "camvid", batch_size=3))
    score([on_device], eval_batches(pairs, "camvid", batch_size=3))
    assert on_device.matrix.matrix.sum() > 0.9 * len(pairs) * 360 * 480  # few unlabelled pixels
    np.testing.assert_array_equal(on_device.matrix.matrix, on_host.matrix.matrix)
    assert on_device.report() == on_host.report()


@pytest.mark.parametrize("input_size", [(64, 96), (352, 480), (384, 512)])
def test_device_counts_equal_numpy_counts_on_real_frames(input_size, camvid_root):
    device_and_host_scores(BandsBackend(input_size), find_pairs("camvid", camvid_root, "val")[:4])


@pytest.mark.slow
def test_device_counts_equal_numpy_counts_for_a_network(camvid_root, tmp_path):
    engine = untrained_engine("unet_resnet18", (64, 96), tmp_path)
    with open_engine(engine, "cpu") as backend:
        device_and_host_scores(backend, find_pairs("camvid", camvid_root, "val")[:4])


def test_loop_hands_the_reference_maps_to_on_image_and_counts_agreement(camvid_root):
    pairs = find_pairs("camvid", camvid_root, "val")[:3]
    seen, batches = [], []
    engines = [EngineScore(BandsBackend(), "camvid"), EngineScore(BandsBackend(), "camvid"),
               EngineScore(BandsBackend(shift=1), "camvid")]
    score(engines, eval_batches(pairs, "camvid", batch_size=2), on_batch=batches.append,
          on_image=lambda i, image, label, pred: seen.append((i, label.shape, pred.shape)))
    assert batches == [2, 1]
    assert seen == [(i, (360, 480), (360, 480)) for i in range(3)]
    assert engines[0].agreement() == engines[1].agreement() == 1.0
    assert engines[2].agreement() == 0.0  # every pixel one band off
    assert engines[0].pixels == 3 * 360 * 480
