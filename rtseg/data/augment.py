"""The training augmentation's recipe, written once for its two makers: ``TrainTransform``
(one frame at a time on the CPU, ``transforms.py``) and ``DeviceBatches`` (whole batches on
the device, ``device_batches.py``).

The recipe: resize to ``base_size × scale`` (scale uniform in ``SCALE_RANGE``), pad at the
bottom/right (image 0, label the ignore index) when smaller than the crop, crop at a random
place, flip with probability ½, then (``jitter`` > 0) saturation about the BGR luma and
contrast about the frame's mean, each by a factor uniform in 1 ± ``jitter``, and brightness
shifted by up to ± ``jitter`` × 127.5, and (``colour_cast`` > 0) each of B, G, R scaled by
its own gain in 1 ± ``colour_cast``. With ``camera`` (``rtseg train --camera-augment``): the
jitter and colour cast at least ``CAMERA``'s stronger ones, then a gamma curve, a Gaussian
blur, sensor-like noise and a JPEG re-encoding, each as drawn below — other cameras' tone
curves, optics, sensors and compression than the training set's one camera.
Here: the defaults, the luma weights, the photometric mix and how a run's seed becomes each
epoch's random stream. How each maker draws its random numbers is its own (NumPy per frame,
a torch generator per batch), so the two give equally distributed, not equal, batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

SCALE_RANGE = (0.75, 1.5)  # the random scale about the network's input size
JITTER = 0.3  # saturation and contrast factors in 1 ± this; brightness ± this × 127.5
COLOUR_CAST = 0.0  # per-channel gains in 1 ± this (0: off)
BGR_LUMA = (0.114, 0.587, 0.299)  # grey = the luma of a BGR pixel (ITU-R BT.601)



@dataclass(frozen=True)
class CameraRecipe:
    """The photometric augmentation of ``--camera-augment``: per frame, a gamma drawn
    log-uniformly in ``gamma``; with probability ``blur_p`` a Gaussian blur of sigma uniform
    in ``blur_sigma`` pixels; with ``noise_p`` Gaussian noise of sigma uniform in
    ``noise_sigma`` (0–255 scale); with ``jpeg_p`` a JPEG re-encoding at a quality uniform
    in ``jpeg_quality``. The jitter and colour cast are raised to at least ``jitter`` and
    ``colour_cast``."""

    jitter: float = 0.4
    colour_cast: float = 0.15
    gamma: tuple[float, float] = (0.7, 1.5)
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.4, 1.5)
    noise_p: float = 0.3
    noise_sigma: tuple[float, float] = (2.0, 8.0)
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)


CAMERA = CameraRecipe()


def photometric_strengths(jitter: float, colour_cast: float,
                          camera: bool) -> tuple[float, float]:
    """The (jitter, colour cast) a maker applies: as asked, or with ``camera`` at least
    ``CAMERA``'s."""
    if not camera:
        return jitter, colour_cast
    return max(jitter, CAMERA.jitter), max(colour_cast, CAMERA.colour_cast)


def camera_values(u):
    """The camera augmentation's parameters from seven uniform [0, 1) draws ``u[0..6]``
    (floats or arrays/tensors of them): gamma, blur on and its sigma, noise on and its sigma,
    JPEG on and its quality (a float: the caller rounds). One mapping for both makers."""
    c = CAMERA
    lo, hi = c.gamma
    gamma = lo * (hi / lo) ** u[0]
    blur_sigma = c.blur_sigma[0] + (c.blur_sigma[1] - c.blur_sigma[0]) * u[2]
    noise_sigma = c.noise_sigma[0] + (c.noise_sigma[1] - c.noise_sigma[0]) * u[4]
    quality = c.jpeg_quality[0] + (c.jpeg_quality[1] - c.jpeg_quality[0]) * u[6]
    return {"gamma": gamma, "blur": u[1] < c.blur_p, "blur_sigma": blur_sigma,
            "noise": u[3] < c.noise_p, "noise_sigma": noise_sigma,
            "jpeg": u[5] < c.jpeg_p, "jpeg_quality": quality}


def apply_gamma(images: Images, gamma) -> Images:
    """A tone curve: 255 · (x / 255) ^ gamma, on float images in 0–255."""
    return 255 * (images / 255) ** gamma


# Primes, so that the streams of nearby seeds, epochs and ranks do not coincide.
_EPOCH_STRIDE = 7919
_RANK_STRIDE = 104729

Images = TypeVar("Images")  # a NumPy array or a torch tensor, float, 0–255 scale


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch``'s order and draws, so a resumed run does not replay epoch 0's."""
    return seed + _EPOCH_STRIDE * epoch


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one DDP rank's draws in ``epoch`` (batches made on the device)."""
    return epoch_seed(seed, epoch) + _RANK_STRIDE * (rank + 1)


def brightness_shift(factor):
    """The brightness added for a jitter draw ``factor`` in ±``jitter``: up to half of
    ``factor`` × the 0–255 range."""
    return 255 * factor / 2


def mix_photometric(images: Images, grey: Images, saturation, contrast, brightness,
                    mean: Callable[[Images], Images]) -> Images:
    """The jitter's order, on float images: saturation about ``grey`` (the images' luma,
    broadcastable to them), then contrast about ``mean`` of the result, then ``brightness``
    added. Not clipped: the caller clips (after a colour cast, if any)."""
    images = grey + saturation * (images - grey)
    centre = mean(images)
    return contrast * (images - centre) + centre + brightness
