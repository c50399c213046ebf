"""What ``rtseg run`` can be asked, checked when it is made: a bad value fails before any
frame is read or any file written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rtseg.errors import BadInput
from rtseg.pipeline.sources import ReconnectPolicy

SMOOTH_MAX = 15  # --smooth K: more past frames mostly add cost (and lag behind motion)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``rtseg run`` can be asked, except the source and the engine.

    Raises BadInput, naming the flag, for a value out of range.

    >>> RunConfig(output=Path("overlay.mp4"), batch=4)
    """

    labels: Optional[Path] = None  # label PNGs for live mIoU (frame directories only)
    output: Optional[Path] = None  # overlay video (.mp4, fourcc mp4v, the source's fps)
    masks: Optional[Path] = None  # class-id PNGs
    show: bool = False  # an OpenCV window
    alpha: float = 0.5  # weight of the class colours in the overlay
    max_frames: Optional[int] = None  # stop after reading this many frames
    batch: int = 1  # frames per inference call
    queue_size: int = 2  # bound of the queues between stages, in batches (jitter absorbers)
    legend: bool = True
    hud: bool = True
    fps: Optional[float] = None  # rate of a frame directory (default 25)
    status_interval: float = 0.5  # seconds between ``on_status`` calls
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    consistency: bool = False  # measure temporal consistency (TC) on its own thread
    smooth: Optional[int] = None  # flicker filter: majority of the last K flow-aligned labels

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise BadInput(f"--alpha {self.alpha:g} must be between 0 and 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise BadInput(f"--max-frames {self.max_frames} must be at least 1")
        if self.batch < 1 or self.queue_size < 1:
            raise BadInput("--batch and the queue size must be at least 1")
        if self.smooth is not None and (isinstance(self.smooth, bool)
                                        or not isinstance(self.smooth, int)
                                        or not 3 <= self.smooth <= SMOOTH_MAX):
            raise BadInput(f"--smooth {self.smooth} must be a whole number of frames from 3 to "
                           f"{SMOOTH_MAX} (a majority of the last K; 2 cannot outvote the "
                           "current frame)")
        if self.fps is not None and self.fps <= 0:
            raise BadInput(f"--fps {self.fps:g} must be positive")
