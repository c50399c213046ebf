"""The recipe options a generalisation study compares: ``--scale-range``, ``--camera-augment``
(gamma, blur, noise, JPEG and stronger colour; on the CPU per frame and on the device per
batch) and ``--loss`` (OHEM, a Dice term), each changing what it should, and all of them
recorded in the checkpoint's recipe."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtseg.cli import main
from rtseg.data.augment import CAMERA, camera_values
from rtseg.data.device_batches import DeviceBatches, gaussian_blur
from rtseg.data.jpeg_torch import jpeg_roundtrip
from rtseg.data.transforms import TrainTransform, apply_camera
from rtseg.models import read_checkpoint_metadata
from rtseg.training.losses import dice_loss, make_criterion

from test_splits import camvid_layout

GAMMA_ONE = math.log(1 / CAMERA.gamma[0]) / math.log(CAMERA.gamma[1] / CAMERA.gamma[0])
OFF = 0.999  # a draw that leaves blur, noise and JPEG off


def smooth_image(h=64, w=96, seed=0) -> np.ndarray:
    """A photo-like uint8 BGR image: smooth shading with a few hard edges."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    image[h // 3:h // 2, w // 4:w // 2] = (30, 40, 200)  # a red box
    return image


class Draws:
    """A stand-in for a NumPy generator whose uniform draws are fixed (the camera's seven)."""

    def __init__(self, u):
        self.u = np.array(u, dtype=np.float64)
        self.rng = np.random.default_rng(0)

    def random(self, n):
        assert n == 7
        return self.u

    def normal(self, *args):
        return self.rng.normal(*args)


def u(gamma=GAMMA_ONE, blur=OFF, blur_sigma=0.5, noise=OFF, noise_sigma=0.5, jpeg=OFF,
      quality=0.0):
    return [gamma, blur, blur_sigma, noise, noise_sigma, jpeg, quality]


def test_camera_draws_map_to_the_recipe_ranges():
    low = camera_values(np.zeros(7))
    assert low["gamma"] == pytest.approx(CAMERA.gamma[0])
    assert low["blur"] and low["noise"] and low["jpeg"]
    assert low["jpeg_quality"] == CAMERA.jpeg_quality[0]
    high = camera_values(np.full(7, OFF))
    assert not (high["blur"] or high["noise"] or high["jpeg"])
    assert camera_values(np.array(u()))["gamma"] == pytest.approx(1.0)


def test_each_camera_step_on_the_cpu_is_what_it_says():
    image = smooth_image()
    assert np.array_equal(apply_camera(image, Draws(u())), image)  # gamma 1, the rest off
    # JPEG alone: OpenCV's encoder at the drawn quality
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, CAMERA.jpeg_quality[0]])
    assert np.array_equal(apply_camera(image, Draws(u(jpeg=0.0))), cv2.imdecode(data, 1))
    # blur alone: a Gaussian of the drawn sigma
    sigma = CAMERA.blur_sigma[0] + 0.5 * (CAMERA.blur_sigma[1] - CAMERA.blur_sigma[0])
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma).round()
    assert np.abs(apply_camera(image, Draws(u(blur=0.0))).astype(int) - blurred).max() <= 1
    # noise alone: zero-mean, of about the drawn sigma
    noisy = apply_camera(image, Draws(u(noise=0.0))).astype(float) - image
    sigma = CAMERA.noise_sigma[0] + 0.5 * (CAMERA.noise_sigma[1] - CAMERA.noise_sigma[0])
    assert abs(noisy.mean()) < 0.3 and noisy.std() == pytest.approx(sigma, rel=0.15)
    # gamma alone: darker midtones above 1, black and white kept
    dark = apply_camera(image, Draws(u(gamma=0.999)))
    assert dark.mean() < image.mean() - 10
    ends = apply_camera(np.array([[[0, 255, 128]]], np.uint8), Draws(u(gamma=0.999)))
    assert ends[0, 0, :2].tolist() == [0, 255]


def jpeg_pair(image: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(OpenCV's JPEG round trip, the device emulation's) of ``image`` at ``quality``."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ours = jpeg_roundtrip(batch, torch.tensor([float(quality)]))[0].permute(1, 2, 0).numpy()
    return cv2.imdecode(data, 1).astype(float), ours


def test_the_device_forms_of_blur_and_jpeg_lose_what_opencv_loses():
    image = smooth_image()
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    blurred = gaussian_blur(batch, torch.tensor([1.2]), CAMERA.blur_sigma[1])[0]
    reference = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.2)
    assert np.abs(blurred.permute(1, 2, 0).numpy() - reference).max() < 0.5
    for quality in (30, 60, 90):
        codec, ours = jpeg_pair(image, quality)
        lost, codec_lost = np.abs(ours - image).mean(), np.abs(codec - image).mean()
        assert 0.6 * codec_lost < lost < 1.4 * codec_lost, (quality, lost, codec_lost)


def test_the_device_jpeg_is_near_the_codecs_on_a_camvid_frame(camvid_root):
    image = cv2.imread(str(camvid_root / "val" / "0016E5_07959.png"))[:96, :128]
    for quality in (30, 60):
        codec, ours = jpeg_pair(image, quality)
        assert np.abs(ours - codec).mean() < 0.6 * np.abs(codec - image).mean()


def plain_and_camera(maker):
    """(plain, camera) outputs of one augmentation maker at the same seed."""
    return maker(False), maker(True)


def cpu_maker(image, label):
    def make(camera_on):  # a stream per frame: the camera's draws follow the geometry's
        return [TrainTransform(crop=(64, 96), base_size=(64, 96), ignore_index=11,
                               scale_range=(1.0, 1.0), jitter=0.0, seed=5 + i,
                               camera=camera_on)(image, label) for i in range(4)]
    return make


def device_maker(image, label):
    def make(camera_on):
        data = DeviceBatches(np.stack([image] * 4), np.stack([label] * 4), (64, 96), (64, 96),
                             11, 4, torch.device("cpu"), scale_range=(1.0, 1.0), jitter=0.0,
                             seed=5, camera=camera_on)
        frames, labels = next(iter(data))
        return list(zip(frames, labels))
    return make


@pytest.mark.parametrize("maker", [cpu_maker, device_maker], ids=["cpu", "device"])
def test_camera_augment_changes_colours_and_texture_not_labels(maker):
    image = smooth_image()
    label = np.zeros(image.shape[:2], np.uint8)
    label[20:40, 30:60] = 8
    plain, changed = plain_and_camera(maker(image, label))
    again = maker(image, label)(True)
    for (f0, l0), (f1, l1), (f2, _) in zip(plain, changed, again):
        assert torch.equal(l0, l1)  # the geometry's draws come first: the same crop and flip
        assert torch.equal(f1, f2)  # reproducible at a seed
        assert (f0.int() - f1.int()).abs().float().mean() > 2.0


def test_device_camera_augment_applies_each_step_to_its_drawn_frames():
    image, label = smooth_image(), np.zeros((64, 96), np.uint8)
    data = DeviceBatches(np.stack([image] * 5), np.stack([label] * 5), (64, 96), (64, 96), 11,
                         5, torch.device("cpu"), scale_range=(1.0, 1.0), jitter=0.0,
                         colour_cast=0.0, camera=True)
    frames = torch.from_numpy(np.stack([image] * 5)).permute(0, 3, 1, 2).float()
    steps = [u(jpeg=0.0), u(), u(blur=0.0), u(noise=0.0), u(gamma=0.999)]
    draws = {"camera": torch.tensor(steps, dtype=torch.float64).T,
             "noise_seed": torch.tensor([1])}
    out = data._camera(frames, draws)
    _, ours = jpeg_pair(image, CAMERA.jpeg_quality[0])  # the first: re-encoded, nothing else
    assert np.array_equal(out[0].permute(1, 2, 0).numpy(), ours)
    assert torch.equal(out[1], frames[1])  # nothing drawn: unchanged
    sigma = float(camera_values(np.array(steps[2]))["blur_sigma"])
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma).round()
    assert np.abs(out[2].permute(1, 2, 0).numpy() - blurred).max() <= 1
    noise = out[3] - frames[3]
    sigma = float(camera_values(np.array(steps[3]))["noise_sigma"])
    assert abs(noise.mean()) < 0.3 and float(noise.std()) == pytest.approx(sigma, rel=0.15)
    assert out[4].mean() < frames[4].mean() - 10  # gamma 1.5: darker


# -- losses -------------------------------------------------------------------------------------
def test_ohem_is_the_weighted_mean_over_the_hard_pixels():
    weight = torch.tensor([1.0, 2.0, 0.5])
    ohem, ce = make_criterion("ohem", weight, 255), make_criterion("ce", weight, 255)
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    uniform = torch.zeros(2, 3, 8, 8)  # every pixel hard (p = 1/3 < 0.7): plain weighted CE
    assert ohem(uniform, target) == pytest.approx(ce(uniform, target).item())
    confident = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 8  # right and sure
    confident[0, :, :2] = 0  # but for 16 of 128 pixels, unsure
    hard = (slice(0, 1), slice(0, 2))
    expected = ce(confident[hard[0]][:, :, :2], target[hard[0]][:, :2])
    assert ohem(confident, target) == pytest.approx(expected.item(), rel=1e-5)
    assert ohem(confident, target) > 5 * ce(confident, target)
    assert ohem(torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 255)).item() == 0.0


def test_the_dice_term_gives_a_rare_class_more_of_the_gradient():
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[0, 8, 8] = 2  # one pixel of a thin class among 256
    weight = torch.ones(3)

    def rare_share(name):
        logits = torch.zeros(1, 3, 16, 16, requires_grad=True)
        make_criterion(name, weight, 255)(logits, target).backward()
        grad = logits.grad.abs().sum(dim=1)[0]
        return (grad[8, 8] / grad.sum()).item()

    assert rare_share("ce+dice") > 1.5 * rare_share("ce")  # ce: 1/256 of it
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    assert dice_loss(perfect, target, 255).item() < 1e-3
    assert dice_loss(torch.zeros(1, 3, 16, 16), target, 255).item() > 0.5


# -- the flags, end to end ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("on_device", [False, True], ids=["loader", "device"])
def test_the_options_train_and_are_recorded_in_the_recipe(tmp_path, on_device):
    root = camvid_layout(tmp_path / "camvid")
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--model", "unet_resnet18", "--dataset", "camvid", "--data-root",
                     str(root), "--out", str(out), "--epochs", "1", "--batch-size", "2",
                     "--crop", "32x32", "--input-size", "32x32", "--workers", "0", "--device",
                     "cpu", "--scale-range", "0.5,2.0", "--camera-augment", "--loss", "ce+dice",
                     *(["--data-on-device"] if on_device else [])]) == 0
    recipe = read_checkpoint_metadata(out / "best.safetensors").extra["recipe"]
    assert recipe["scale_range"] == [0.5, 2.0] and recipe["camera_augment"] is True
    assert recipe["loss"].startswith("ce+dice: cross-entropy")
    assert "camera (gamma, blur, noise, JPEG)" in recipe["augmentation"]
    assert "jitter 0.4, colour cast 0.15" in recipe["augmentation"]  # raised to the camera's


def test_default_recipe_metadata_is_unchanged():
    from rtseg.training.config import TrainConfig
    from rtseg.training.state import run_metadata
    from rtseg.training import distributed as ddp

    cfg = TrainConfig(model="unet_resnet18", dataset="camvid", data_root="unused")
    recipe = run_metadata(cfg, (64, 64), (64, 64), ddp.DistInfo(), torch.device("cpu"),
                          None).extra["recipe"]
    assert recipe["loss"] == "cross-entropy, ENet class weights 1/ln(1.02+p)"
    assert recipe["augmentation"] == "scale (0.75, 1.5), crop, hflip, jitter 0.3"
    assert recipe["camera_augment"] is False and recipe["holdout_sequence"] is None


@pytest.mark.parametrize("flags, message", [
    (["--scale-range", "2,1"], "--scale-range 2.0,1.0: need 0 < low <= high, e.g. 0.5,2.0"),
    (["--scale-range", "0.5"], "--scale-range 0.5: expected LOW,HIGH, e.g. 0.5,2.0"),
])
def test_a_bad_scale_range_is_one_line_and_exit_2(tmp_path, capfd, flags, message):
    code = main(["train", "--model", "unet_resnet18", "--dataset", "camvid", "--data-root",
                 str(tmp_path), *flags])
    assert code == 2 and capfd.readouterr().err.strip() == f"error: {message}"
