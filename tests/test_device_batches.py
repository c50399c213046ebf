"""Training batches made on the device (``--data-on-device``): the augmentation matches the
CPU transform's geometry, pads with the ignore index, is reproducible per epoch, and shards
the data between DDP ranks."""

import cv2
import numpy as np
import pytest
import torch

from rtseg.data import find_pairs
from rtseg.data.device_batches import DeviceBatches, decode_split

CPU = torch.device("cpu")


def synthetic(n=6, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    images = np.stack([cv2.GaussianBlur(i, (5, 5), 0) for i in images])  # image-like, smooth
    blocks = rng.integers(0, 11, (n, h // 8, w // 8), dtype=np.uint8)  # regions, as real labels
    labels = np.kron(blocks, np.ones((1, 8, 8), dtype=np.uint8))
    return images, labels


def batches(images, labels, **kw):
    args = dict(crop=images.shape[1:3], base_size=images.shape[1:3], ignore_index=11,
                batch_size=2, device=CPU, scale_range=(1.0, 1.0), jitter=0.0)
    args.update(kw)
    return DeviceBatches(images, labels, **args)


def match_source(frames, labels, images, src_labels):
    """For each sample, the source index it equals (flipped or not), or None."""
    found = []
    for frame, label in zip(frames.numpy(), labels.numpy()):
        hit = None
        for i, (img, lbl) in enumerate(zip(images, src_labels)):
            for f_img, f_lbl in ((img, lbl), (img[:, ::-1], lbl[:, ::-1])):
                if np.array_equal(frame, f_img) and np.array_equal(label, f_lbl):
                    hit = i
        found.append(hit)
    return found


def test_at_scale_one_a_batch_is_the_frames_themselves_flipped_or_not():
    images, labels = synthetic()
    seen = []
    for frames, lbls in batches(images, labels):
        assert frames.dtype == torch.uint8 and frames.shape == (2, 48, 64, 3)
        assert lbls.dtype == torch.int64 and lbls.shape == (2, 48, 64)
        seen += match_source(frames, lbls, images, labels)
    assert None not in seen and sorted(seen) == list(range(6))  # every frame once per epoch


def test_downscaling_matches_opencv_resize():
    images, labels = synthetic(n=2, h=96, w=128)
    frames, lbls = next(iter(batches(images, labels, crop=(48, 64), scale_range=(0.5, 0.5),
                                     batch_size=2)))
    for frame, lbl in zip(frames.numpy(), lbls.numpy()):
        diffs = []
        for img, src_lbl in zip(images, labels):
            ref = cv2.resize(img, (64, 48), interpolation=cv2.INTER_LINEAR).astype(int)
            ref_lbl = cv2.resize(src_lbl, (64, 48), interpolation=cv2.INTER_NEAREST)
            for r, rl in ((ref, ref_lbl), (ref[:, ::-1], ref_lbl[:, ::-1])):
                diffs.append((np.abs(frame.astype(int) - r).mean(), (lbl == rl).mean()))
        pixel_diff, label_agreement = min(diffs)
        assert pixel_diff < 1.0 and label_agreement > 0.95, (pixel_diff, label_agreement)


def test_a_frame_smaller_than_the_crop_is_padded_with_zero_and_the_ignore_index():
    images, labels = synthetic(n=2)
    frames, lbls = next(iter(batches(images, labels, crop=(64, 96), scale_range=(1.0, 1.0))))
    for frame, lbl in zip(frames, lbls):
        # padded below and to the right, then maybe flipped (as TrainTransform does)
        left = bool((lbl[:, :32] == 11).all())
        inside = (slice(0, 48), slice(32, 96) if left else slice(0, 64))
        pad = torch.ones_like(lbl, dtype=torch.bool)
        pad[inside] = False
        assert (lbl[pad] == 11).all() and (frame[pad] == 0).all()
        assert (lbl[inside] != 11).all()


@pytest.mark.parametrize("option", ["jitter", "colour_cast"])
def test_photometric_augmentation_changes_colours_not_geometry(option):
    images, labels = synthetic(n=2)
    plain = list(batches(images, labels, seed=3))
    changed = list(batches(images, labels, seed=3, **{option: 0.3}))
    for (f0, l0), (f1, l1) in zip(plain, changed):
        assert torch.equal(l0, l1)
        assert (f0.int() - f1.int()).abs().float().mean() > 1.0
        if option == "colour_cast":  # each of B, G, R by its own gain in 1 ± 0.3
            ratio = f1.float().mean(dim=(1, 2)) / f0.float().mean(dim=(1, 2))  # [B, 3]
            assert ((ratio - 1).abs() <= 0.3 + 0.02).all() and (ratio.std(dim=1) > 0.01).all()


def test_each_epoch_is_reproducible_and_differs_from_the_next():
    images, labels = synthetic()
    data = batches(images, labels, scale_range=(0.75, 1.5), crop=(32, 32), jitter=0.3)
    data.set_epoch(0)
    first = [f.clone() for f, _ in data]
    assert all(torch.equal(a, b) for a, b in zip(first, [f for f, _ in data]))
    data.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, [f for f, _ in data]))


def test_ranks_see_disjoint_shards():
    n = 8
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 3, axis=3)
    images = np.broadcast_to(images, (n, 16, 16, 3)).copy()
    labels = np.zeros((n, 16, 16), dtype=np.uint8)
    seen = []
    for rank in (0, 1):
        data = batches(images, labels, rank=rank, world_size=2, batch_size=2)
        assert len(data) == 2
        seen.append({int(f[0, 0, 0]) for frames, _ in data for f in frames})
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]


def test_real_camvid_frames_decode_once(camvid_root):
    pairs = find_pairs("camvid", camvid_root, "val")[:4]
    images, labels = decode_split(pairs, "camvid", workers=2)
    assert images.shape == (4, 360, 480, 3) and labels.shape == (4, 360, 480)
    assert labels.max() <= 11
    data = DeviceBatches(images, labels, (352, 480), (352, 480), 11, 4, CPU, seed=0)
    frames, lbls = next(iter(data))
    assert frames.shape == (4, 352, 480, 3) and set(lbls.unique().tolist()) <= set(range(12))
