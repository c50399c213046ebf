"""Training batches that live on the device: every frame decoded once and kept there, and the
random scale, crop, flip, colour jitter and (``camera``) the camera augmentation applied to
whole batches on the device.

On a GPU the data-loader processes are the bottleneck long before the network is (a CamVid
epoch is about a second on an H100); decoding 367 PNGs once and augmenting with one
``grid_sample`` per batch removes that. The augmentation is ``TrainTransform``'s (the CPU
path), the recipe of ``rtseg.data.augment``. Image sampling is bilinear and label sampling
nearest, both at pixel centres as OpenCV's resize samples them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rtseg.data.augment import (BGR_LUMA, CAMERA, COLOUR_CAST, JITTER, SCALE_RANGE,
                                apply_gamma, brightness_shift, camera_values, epoch_seed,
                                mix_photometric, photometric_strengths, rank_seed)
from rtseg.data.jpeg_torch import jpeg_roundtrip
from rtseg.data.datasets import DatasetLike, load_pair
from rtseg.errors import BadInput


def decode_split(pairs: Sequence, dataset: DatasetLike,
                 workers: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """All (image, label) pairs decoded: uint8 [N, H, W, 3] BGR and uint8 [N, H, W].

    BadInput if a label's size differs from its image's, or if the frames differ in size
    (batches on the device need one frame size; resize the data set or use the data loader).
    """
    with ThreadPoolExecutor(max(1, workers)) as pool:
        loaded = list(pool.map(lambda pair: load_pair(*pair, dataset), pairs))
    sizes = {image.shape for image, _ in loaded}
    if len(sizes) > 1:
        raise BadInput(f"--data-on-device (and --teacher) needs frames of one size; found "
                       f"{len(sizes)} sizes "
                       f"(e.g. {sorted(sizes)[:2]})")
    return np.stack([i for i, _ in loaded]), np.stack([lbl for _, lbl in loaded])


class DeviceBatches:
    """Shuffled, augmented (frames uint8 [B, h, w, 3] BGR, labels int64 [B, h, w]) batches,
    produced on ``device`` from frames held there; with ``teacher`` logits (``--teacher``)
    also those logits through the same scale, crop and flip, float [B, C, h, w], and which
    pixels lie inside the scaled frame, bool [B, h, w]. Under DDP each rank takes every
    ``world_size``-th sample of one shared permutation (as DistributedSampler does); the last
    partial batch is dropped. ``set_epoch`` makes each epoch's order reproducible."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, crop: tuple[int, int],
                 base_size: tuple[int, int], ignore_index: int, batch_size: int,
                 device: torch.device, scale_range: tuple[float, float] = SCALE_RANGE,
                 jitter: float = JITTER, seed: int = 0, rank: int = 0, world_size: int = 1,
                 colour_cast: float = COLOUR_CAST, camera: bool = False,
                 teacher: torch.Tensor | None = None):
        self.images = torch.from_numpy(images).to(device)
        self.teacher = teacher  # [N, C, h, w] class scores of a teacher, or None
        self.labels = torch.from_numpy(labels).to(device)
        self.crop, self.base_size = tuple(crop), tuple(base_size)
        self.ignore_index, self.batch_size = ignore_index, batch_size
        self.scale_range, self.camera = scale_range, camera
        self.jitter, self.colour_cast = photometric_strengths(jitter, colour_cast, camera)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = device
        self.luma = torch.tensor(BGR_LUMA, device=device).view(1, 3, 1, 1)
        self.epoch = 0

    def __len__(self) -> int:
        per_rank = len(self.images) // self.world_size
        return per_rank // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Shuffle and augment differently (and reproducibly) in each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        perm = torch.randperm(len(self.images), generator=order)
        perm = perm[: len(perm) - len(perm) % self.world_size][self.rank::self.world_size]
        perm = perm.to(self.device)  # once per epoch, not a blocking copy per batch
        rng = torch.Generator().manual_seed(rank_seed(self.seed, self.epoch, self.rank))
        for b in range(len(self)):
            yield self.augment(perm[b * self.batch_size:(b + 1) * self.batch_size], rng)

    def _draws(self, n: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """A batch's random draws, made on the CPU (the generator is there) in a fixed order
        and taken to the device in one copy: scale, crop position (fractions of the room
        left) and flip, then (with jitter) saturation, contrast and brightness, then (with a
        colour cast) per-channel gains. Each keeps its dtype (float32 draws go through
        float64 and back exactly)."""
        draws = {"scale": torch.rand(n, generator=rng, dtype=torch.float64),
                 "top": torch.rand(n, generator=rng, dtype=torch.float64),
                 "left": torch.rand(n, generator=rng, dtype=torch.float64),
                 "flip": torch.rand(n, generator=rng)}
        if self.jitter > 0:
            for name in ("saturation", "contrast", "brightness"):
                draws[name] = torch.rand(n, generator=rng)
        if self.colour_cast > 0:
            draws["gains"] = torch.rand(n, 3, generator=rng)
        if self.camera:
            draws["camera"] = torch.rand(7, n, generator=rng, dtype=torch.float64)
            draws["noise_seed"] = torch.randint(0, 2**31, (1,), generator=rng)
        packed = torch.cat([t.double().reshape(-1) for t in draws.values()]).to(self.device)
        parts = packed.split([t.numel() for t in draws.values()])
        return {name: part.view(t.shape).to(t.dtype)
                for (name, t), part in zip(draws.items(), parts)}

    def _grid(self, draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling grid [n, h, w, 2] of the random scale/crop/flip, and where it is inside
        the scaled frame (False: padding), computed on the device in float64 as on the CPU."""
        ch, cw = self.crop
        lo, hi = self.scale_range
        scale, flip = lo + (hi - lo) * draws["scale"], draws["flip"] < 0.5
        n = len(scale)
        sh = (self.base_size[0] * scale).round().clamp(min=1)
        sw = (self.base_size[1] * scale).round().clamp(min=1)
        top = (draws["top"] * ((sh - ch).clamp(min=0) + 1)).floor()
        left = (draws["left"] * ((sw - cw).clamp(min=0) + 1)).floor()
        f64 = dict(dtype=torch.float64, device=self.device)
        ys = torch.arange(ch, **f64)[None, :] + top[:, None]                          # [n, ch]
        xs = torch.arange(cw, **f64)[None, :].expand(n, cw)
        xs = torch.where(flip[:, None], (cw - 1) - xs, xs) + left[:, None]         # [n, cw]
        inside = (ys < sh[:, None])[:, :, None] & (xs < sw[:, None])[:, None, :]     # [n, ch, cw]
        # Pixel centre of scaled row y is source row (y + ½)·H/sh − ½; grid_sample with
        # align_corners=False maps normalised g to source row (g + 1)·H/2 − ½.
        gy = (ys + 0.5) / sh[:, None] * 2 - 1
        gx = (xs + 0.5) / sw[:, None] * 2 - 1
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        return grid.float(), inside

    def _jitter(self, images: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Random saturation, then contrast about the frame's mean, then brightness (float
        NCHW BGR on the 0–255 scale), as ``TrainTransform``'s jitter."""
        s = self.jitter
        factor = {k: ((draws[k] * 2 - 1) * s).view(-1, 1, 1, 1)
                  for k in ("saturation", "contrast", "brightness")}
        saturation, contrast = 1 + factor["saturation"], 1 + factor["contrast"]
        brightness = brightness_shift(factor["brightness"])
        grey = (images * self.luma).sum(dim=1, keepdim=True)
        return mix_photometric(images, grey, saturation, contrast, brightness,
                               lambda x: x.mean(dim=(1, 2, 3), keepdim=True))

    def _camera(self, images: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """``--camera-augment``'s gamma, blur, noise and JPEG re-encoding (float NCHW BGR,
        0–255), as ``transforms.apply_camera`` applies them one frame at a time; the JPEG is
        ``jpeg_roundtrip``'s emulation (no JPEG codec runs on the device)."""
        v = camera_values(draws["camera"])

        def per_sample(t: torch.Tensor) -> torch.Tensor:
            return t.float().view(-1, 1, 1, 1)

        images = apply_gamma(images.clamp(0, 255), per_sample(v["gamma"]))
        blurred = gaussian_blur(images, v["blur_sigma"].float(), CAMERA.blur_sigma[1])
        images = torch.where(per_sample(v["blur"]).bool(), blurred, images)
        noise_rng = torch.Generator(device=self.device).manual_seed(int(draws["noise_seed"]))
        noise = torch.randn(images.shape, generator=noise_rng, device=self.device)
        images = images + noise * per_sample(v["noise_sigma"] * v["noise"])
        images = images.clamp(0, 255).round()
        encoded = jpeg_roundtrip(images, v["jpeg_quality"].round().float())
        return torch.where(per_sample(v["jpeg"]).bool(), encoded, images)

    @torch.no_grad()
    def augment(self, index: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
        """One augmented batch of the frames at ``index``: (frames, labels), and with teacher
        logits (frames, labels, teacher logits, inside)."""
        draws = self._draws(len(index), rng)
        grid, inside = self._grid(draws)
        images = self.images[index].permute(0, 3, 1, 2).float()
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                               align_corners=False)
        labels = self.labels[index][:, None].float()
        labels = F.grid_sample(labels, grid, mode="nearest", padding_mode="border",
                               align_corners=False)[:, 0].long()
        labels = labels.masked_fill(~inside, self.ignore_index)
        images = images * inside[:, None]
        if self.jitter > 0:
            images = self._jitter(images, draws)
        if self.colour_cast > 0:
            gains = 1 + (draws["gains"] * 2 - 1) * self.colour_cast
            images = images * gains.view(-1, 3, 1, 1)
        if self.camera:
            images = self._camera(images, draws)
        frames = images.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        if self.teacher is None:
            return frames, labels
        teacher = F.grid_sample(self.teacher[index].float(), grid, mode="bilinear",
                                padding_mode="border", align_corners=False)
        return frames, labels, teacher, inside


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Each image of float NCHW ``images`` blurred by a Gaussian of its own ``sigma`` [N]
    (pixels), separably, with reflected borders as OpenCV's GaussianBlur (the kernel spans
    ± 3 × ``max_sigma``)."""
    n, c, h, w = images.shape
    radius = max(1, int(np.ceil(3 * max_sigma)))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-x[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [n·c, k]
    flat = images.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"),
                    kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"),
                    kernel[:, None, :, None], groups=n * c)
    return flat.view(n, c, h, w)
