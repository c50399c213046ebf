"""Paired (image, label) transforms, in one place: images resize with linear
interpolation, labels with nearest neighbour, and padding of labels uses the ignore index.

Images stay uint8 BGR HWC (OpenCV's order): normalisation happens inside the network
(``rtseg.models.Segmenter``), so training and the deploy graph share one preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from rtseg.data.augment import (BGR_LUMA, COLOUR_CAST, JITTER, SCALE_RANGE, apply_gamma,
                                brightness_shift, camera_values, mix_photometric,
                                photometric_strengths)
from rtseg.imageops import resize_frame, resize_nearest


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 HWC image and uint8 HW label → torch uint8 and int64 tensors (no copies of layout)."""
    return (torch.from_numpy(np.ascontiguousarray(image)),
            torch.from_numpy(np.ascontiguousarray(label)).long())


def _jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation, vectorised on the whole image."""
    contrast = 1.0 + rng.uniform(-strength, strength)
    brightness = brightness_shift(rng.uniform(-strength, strength))
    saturation = 1.0 + rng.uniform(-strength, strength)
    img = image.astype(np.float32)
    grey = (img @ np.array(BGR_LUMA, np.float32))[..., None]
    img = mix_photometric(img, grey, saturation, contrast, brightness, lambda x: x.mean())
    return np.clip(img, 0, 255).astype(np.uint8)


def _colour_cast(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A random colour cast: each of B, G, R scaled by its own gain in 1 ± ``strength`` (other
    white balances and sky colours than the training set's)."""
    gains = (1.0 + rng.uniform(-strength, strength, 3)).astype(np.float32)
    return np.clip(image.astype(np.float32) * gains, 0, 255).astype(np.uint8)


def apply_camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``--camera-augment``'s gamma, blur, noise and JPEG re-encoding (``CAMERA``'s
    recipe, ``rtseg.data.augment``), in that order, on a uint8 BGR image."""
    v = camera_values(rng.random(7))
    img = apply_gamma(image.astype(np.float32), np.float32(v["gamma"]))
    if v["blur"]:
        img = cv2.GaussianBlur(img, (0, 0), float(v["blur_sigma"]))
    if v["noise"]:
        img = img + rng.normal(0.0, v["noise_sigma"], img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).round().astype(np.uint8)
    if v["jpeg"]:
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY,
                                              int(round(v["jpeg_quality"]))])
        out = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return out


@dataclass
class TrainTransform:
    """Random scale, pad, crop, horizontal flip, photometric jitter, (``colour_cast`` > 0)
    a per-channel colour cast and (``camera``) the camera augmentation: the recipe of
    ``rtseg.data.augment``, one frame at a time.

    ``base_size`` is the (H, W) the image is first resized to (the network's input size,
    so training sees objects at deploy scale); then a random scale in ``scale_range``.
    """

    crop: tuple[int, int]
    base_size: tuple[int, int]
    ignore_index: int
    scale_range: tuple[float, float] = SCALE_RANGE
    jitter: float = JITTER
    seed: int = 0
    colour_cast: float = COLOUR_CAST
    camera: bool = False  # --camera-augment: stronger colour, gamma, blur, noise, JPEG

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)
        self.jitter, self.colour_cast = photometric_strengths(self.jitter, self.colour_cast,
                                                              self.camera)

    def reseed(self, seed: int) -> None:
        """Give this copy (one per data-loader worker) its own random stream."""
        self._rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, label: np.ndarray):
        rng = self._rng
        scale = rng.uniform(*self.scale_range)
        h = max(1, round(self.base_size[0] * scale))
        w = max(1, round(self.base_size[1] * scale))
        image = resize_frame(image, (h, w))
        label = resize_nearest(label, (h, w))

        ch, cw = self.crop
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                       value=self.ignore_index)
        top = int(rng.integers(0, image.shape[0] - ch + 1))
        left = int(rng.integers(0, image.shape[1] - cw + 1))
        image = image[top:top + ch, left:left + cw]
        label = label[top:top + ch, left:left + cw]

        if rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.jitter > 0:
            image = _jitter(image, rng, self.jitter)
        if self.colour_cast > 0:
            image = _colour_cast(image, rng, self.colour_cast)
        if self.camera:
            image = apply_camera(image, rng)
        return to_tensors(image, label)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: each worker's transform gets its own stream."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "reseed"):
        transform.reseed(info.seed % 2**32)
