"""ConfusionMatrix against hand-computed cases and a brute-force reference."""

import numpy as np
import pytest

from rtseg.scoring.confusion import ConfusionMatrix


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


def test_merge_equals_single_update():
    rng = np.random.default_rng(7)
    t, p = rng.integers(0, 5, (2, 100)), rng.integers(0, 5, (2, 100))
    whole, a, b = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(t, p)
    a.update(t[0], p[0])
    b.update(t[1], p[1])
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, whole.matrix)


def test_rejects_out_of_range_prediction_and_shape_mismatch():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(ValueError):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_empty_matrix_gives_nan():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.full(4, 255), np.zeros(4))
    assert np.isnan(cm.miou()) and np.isnan(cm.pixel_accuracy())
