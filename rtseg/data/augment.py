"""The training augmentation's recipe, written once for its two makers: ``TrainTransform``
(one frame at a time on the CPU, ``transforms.py``) and ``DeviceBatches`` (whole batches on
the device, ``device_batches.py``).

The recipe: resize to ``base_size × scale`` (scale uniform in ``SCALE_RANGE``), pad at the
bottom/right (image 0, label the ignore index) when smaller than the crop, crop at a random
place, flip with probability ½, then (``jitter`` > 0) saturation about the BGR luma and
contrast about the frame's mean, each by a factor uniform in 1 ± ``jitter``, and brightness
shifted by up to ± ``jitter`` × 127.5, and (``colour_cast`` > 0) each of B, G, R scaled by
its own gain in 1 ± ``colour_cast``.
Here: the defaults, the luma weights, the photometric mix and how a run's seed becomes each
epoch's random stream. How each maker draws its random numbers is its own (NumPy per frame,
a torch generator per batch), so the two give equally distributed, not equal, batches.
"""

from __future__ import annotations

from typing import Callable, TypeVar

SCALE_RANGE = (0.75, 1.5)  # the random scale about the network's input size
JITTER = 0.3  # saturation and contrast factors in 1 ± this; brightness ± this × 127.5
COLOUR_CAST = 0.0  # per-channel gains in 1 ± this (0: off)
BGR_LUMA = (0.114, 0.587, 0.299)  # grey = the luma of a BGR pixel (ITU-R BT.601)

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
