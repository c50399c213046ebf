"""What travels between the stages: a captured :class:`Frame`, a :class:`Batch` of them on
its way through preprocess and inference, and a :class:`Rendered` frame ready for the sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from rtseg.imageops import resize_nearest


@dataclass
class Frame:
    """One captured frame on its way through the pipeline."""

    index: int  # position in the source, counting dropped frames too
    name: str  # names the mask file and finds the label: file stem, or "000123" for video
    image: np.ndarray  # uint8 [H, W, 3] BGR, as decoded
    t_capture: float  # time.perf_counter() when the frame was read
    path: Optional[Path] = None  # the frame's file, for directory sources
    stream: int = 0  # which source it came from, in ``--source`` order (several sources)


@dataclass
class Batch:
    """Frames travelling together through preprocess and inference."""

    frames: list[Frame]
    inputs: Optional[np.ndarray]  # uint8 [N, h, w, 3] at the engine's input size
    labels: Optional[np.ndarray] = None  # uint8 [N, h, w] once inferred
    ended: list[int] = field(default_factory=list)  # streams whose last frame came before
    on_device: Optional[list] = None  # --device-frames: each frame on the engine's device

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class Rendered:
    """A finished frame: the picture to show or save, and its labels.

    ``labels`` (full frame size) is computed on first use: only masks and scoring need it,
    so a plain overlay run never pays for the upsampling.
    """

    frame: Frame
    overlay: np.ndarray
    net_labels: np.ndarray  # at the engine's input size (--device-frames: still there)
    full_labels: Optional[np.ndarray] = None

    @property
    def labels(self) -> np.ndarray:
        """Class ids at the frame's size (nearest-neighbour upsampling of ``net_labels``)."""
        if self.full_labels is None:
            net = self.net_labels
            if not isinstance(net, np.ndarray):  # a device tensor: fetched only when asked
                net = self.net_labels = net.cpu().numpy()
            self.full_labels = resize_nearest(net, self.frame.image.shape[:2])
        return self.full_labels
