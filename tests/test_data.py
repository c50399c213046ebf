"""Data sets on the real files: CamVid splits and the Cityscapes label mapping."""

import cv2
import numpy as np
import pytest
import torch

from rtseg.data import (CAMVID, CITYSCAPES, check_pair_sizes, cityscapes_label_lut, find_pairs,
                        get_spec)
from rtseg.data.datasets import cityscapes_label_path, label_name
from rtseg.data.torch_dataset import SegmentationDataset
from rtseg.data.transforms import TrainTransform
from rtseg.imageops import resize_nearest
from rtseg.errors import BadInput
from rtseg.visualize import colorize, palette_lut


@pytest.mark.parametrize("split,count", [pytest.param("train", 367, marks=pytest.mark.slow),
                                         ("val", 101)])
def test_camvid_split_loads_with_shapes_and_ids(camvid_root, split, count):
    pairs = find_pairs("camvid", camvid_root, split)
    assert len(pairs) == count
    ds = SegmentationDataset(pairs, "camvid")
    seen = np.zeros(256, dtype=bool)
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (360, 480, 3) and image.dtype == np.uint8
        assert label.shape == (360, 480) and label.dtype == np.uint8
        seen[np.unique(label)] = True
    assert set(np.flatnonzero(seen)) <= set(range(12))  # ids 0-10 and 11 = ignore
    assert seen[:11].sum() >= 10  # nearly every class occurs in a whole split


def test_camvid_val_sorts_as_a_clip(camvid_root):
    names = [p[0].name for p in find_pairs("camvid", camvid_root, "val")]
    assert names == sorted(names) and names[0].startswith("0016E5")


def test_cityscapes_label_ids_map_to_train_ids(cityscapes_sample):
    pairs = find_pairs("cityscapes", cityscapes_sample, "val")
    assert len(pairs) == 1
    image, label = SegmentationDataset(pairs, "cityscapes")[0]
    shipped_path = str(pairs[0][1]).replace("_labelIds", "_labelTrainIds")
    shipped = cv2.imread(shipped_path, cv2.IMREAD_UNCHANGED)
    assert image.shape[:2] == label.shape == shipped.shape == (128, 256)
    agreement = np.mean(label == shipped)
    assert agreement >= 0.99, agreement
    assert set(np.unique(label)) <= set(range(19)) | {255}


def test_cityscapes_table_is_the_official_one():
    lut = cityscapes_label_lut()
    assert (lut[7], lut[8], lut[26], lut[33]) == (0, 1, 13, 18)  # road, sidewalk, car, bicycle
    assert lut[0] == lut[6] == lut[9] == lut[34] == 255
    assert (lut < 19).sum() == 19 == CITYSCAPES.num_classes


def test_train_transform_shapes_ids_and_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    label = rng.integers(0, 11, (360, 480), dtype=np.uint8)
    t = TrainTransform(crop=(256, 512), base_size=(64, 96), ignore_index=11, seed=1)
    frames, target = t(image, label)
    assert frames.shape == (256, 512, 3) and frames.dtype.is_floating_point is False
    assert target.shape == (256, 512)
    ids = set(target.unique().tolist())
    assert ids <= set(range(12)) and 11 in ids  # nearest resize + ignore padding only


def test_colour_cast_tints_frames_and_leaves_labels_alone():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (64, 96, 3), dtype=np.uint8)
    label = rng.integers(0, 11, (64, 96), dtype=np.uint8)
    kwargs = dict(crop=(64, 96), base_size=(64, 96), ignore_index=11, scale_range=(1.0, 1.0),
                  jitter=0.0, seed=5)
    plain_frames, plain_labels = TrainTransform(**kwargs)(image, label)
    cast_frames, cast_labels = TrainTransform(**kwargs, colour_cast=0.3)(image, label)
    assert torch.equal(plain_labels, cast_labels)  # same geometry: the cast draws after it
    ratio = cast_frames.float().mean(dim=(0, 1)) / plain_frames.float().mean(dim=(0, 1))
    assert (ratio - 1).abs().max() > 0.02 and ratio.std() > 0.01  # channels scaled unequally


def test_missing_and_empty_roots_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="data root not found"):
        find_pairs("camvid", tmp_path / "nope", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(BadInput, match="no images"):
        find_pairs("camvid", tmp_path, "train")
    with pytest.raises(BadInput, match="unknown dataset"):
        find_pairs("kitti", tmp_path, "train")


def test_size_mismatch_is_bad_input(tmp_path):
    for d in ("train", "trainannot"):
        (tmp_path / d).mkdir()
    cv2.imwrite(str(tmp_path / "train" / "a.png"), np.zeros((32, 48, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "trainannot" / "a.png"), np.zeros((30, 48), np.uint8))
    pairs = find_pairs("camvid", tmp_path, "train")
    message = "label a.png is 48×30 but image a.png is 48×32"
    with pytest.raises(BadInput, match=message):
        check_pair_sizes(pairs)  # from the PNG headers
    with pytest.raises(BadInput, match=message):
        SegmentationDataset(pairs, "camvid")[0]  # from the decoded pair


def test_label_file_names_of_both_data_sets(cityscapes_sample):
    assert label_name("0016E5_07959.png", "camvid") == "0016E5_07959.png"
    assert label_name("x_leftImg8bit.png", "cityscapes") == "x_gtFine_labelIds.png"
    assert label_name("x_leftImg8bit.jpg", "cityscapes") == "x_gtFine_labelIds.png"
    assert label_name("x.png", "cityscapes") == "x_gtFine_labelIds.png"
    image, label = find_pairs("cityscapes", cityscapes_sample, "val")[0]
    assert label == cityscapes_label_path(image, cityscapes_sample, "val")
    assert label.name == label_name(image.name, "cityscapes") and label.parts[-4] == "gtFine"


def test_camvid_spec_matches_data_readme():
    assert CAMVID.num_classes == 11 and CAMVID.ignore_index == 11
    assert CAMVID.palette[3] == (128, 64, 128) and CAMVID.class_names[3] == "Road"


@pytest.mark.parametrize("src, dst", [((64, 96), (360, 480)), ((192, 256), (1080, 1920)),
                                      ((352, 480), (1080, 1920)), ((45, 61), (97, 300)),
                                      ((360, 480), (352, 480)), ((100, 100), (40, 250)),
                                      ((7, 3), (7, 3)), ((512, 1024), (1024, 2048))])
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_nearest_upsampling_equals_opencv_bit_for_bit(src, dst, channels):
    rng = np.random.default_rng(src[0] * 7 + dst[1])
    shape = src if channels == 1 else (*src, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    expected = cv2.resize(image, dst[::-1], interpolation=cv2.INTER_NEAREST)
    got = resize_nearest(image, dst)
    assert got.shape == expected.shape and np.array_equal(got, expected)
    if channels == 1:
        assert np.array_equal(resize_nearest(image, dst), expected)


def test_colorize_maps_every_id_through_the_palette():
    lut = palette_lut(get_spec("camvid").palette)
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(colorize(labels, lut), lut[labels])
    assert np.array_equal(colorize(labels[:, ::2], lut), lut[labels[:, ::2]])  # a strided view


def test_the_cpu_and_device_augmentation_share_one_recipe():
    """TrainTransform, DeviceBatches and TrainConfig take their defaults from one recipe, so
    --data-on-device trains on the augmentation the data loader would give."""
    import dataclasses
    import inspect

    from rtseg.data import augment
    from rtseg.data.device_batches import DeviceBatches
    from rtseg.training.config import TrainConfig

    recipe = {"scale_range": augment.SCALE_RANGE, "jitter": augment.JITTER,
              "colour_cast": augment.COLOUR_CAST}
    device = inspect.signature(DeviceBatches).parameters
    for cls in (TrainTransform, TrainConfig):
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        assert {k: fields[k] for k in recipe} == recipe, cls.__name__
    assert {k: device[k].default for k in recipe} == recipe


def test_the_jitter_mixes_saturation_then_contrast_then_brightness():
    """On a grey frame saturation does nothing; contrast scales about the mean, then the
    brightness shift adds half of its factor × 255."""
    from rtseg.data.augment import brightness_shift, mix_photometric

    img = np.array([[[10.0] * 3, [30.0] * 3]], np.float32)  # two grey pixels, mean 20
    grey = img[..., :1]
    out = mix_photometric(img, grey, 1.5, 2.0, brightness_shift(0.1), lambda x: x.mean())
    np.testing.assert_allclose(out[0, :, 0], [0.0 + 12.75, 40.0 + 12.75], rtol=1e-6)
