"""What ``rtseg run`` can be asked, checked when it is made: a bad value fails before any
frame is read or any file written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rtseg.errors import BadInput, MissingDependency
from rtseg.files import ensure_output_dir, ensure_parent
from rtseg.pipeline.sinks import check_display
from rtseg.pipeline.sources import ReconnectPolicy, Source, check_source, names_path
from rtseg.scoring.live import check_labels

# --smooth K: 2 can never outvote the current frame; more than 15 past frames mostly add cost
# (and lag behind motion).
SMOOTH_MIN, SMOOTH_MAX = 3, 15


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
    # several sources: a batch not full this long after its first frame goes as it is
    # (None: multirunner.DEFAULT_BATCH_TIMEOUT_MS); one source batches as before
    batch_timeout_ms: Optional[float] = None
    queue_size: int = 2  # bound of the queues between stages, in batches (jitter absorbers)
    legend: bool = True
    hud: bool = True
    fps: Optional[float] = None  # rate of a frame directory (default 25)
    status_interval: float = 0.5  # seconds between ``on_status`` calls
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    consistency: bool = False  # measure temporal consistency (TC) on its own thread
    smooth: Optional[int] = None  # flicker filter: majority of the last K flow-aligned labels
    device_frames: bool = False  # resize, engine, colours and blend on the engine's device

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise BadInput(f"--alpha {self.alpha:g} must be between 0 and 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise BadInput(f"--max-frames {self.max_frames} must be at least 1")
        if self.batch < 1 or self.queue_size < 1:
            raise BadInput("--batch and the queue size must be at least 1")
        if self.batch_timeout_ms is not None and not 0 <= self.batch_timeout_ms < 1e6:
            raise BadInput(f"--batch-timeout {self.batch_timeout_ms:g} must be 0 or more "
                           "milliseconds (and under 1000000)")
        if self.smooth is not None and (isinstance(self.smooth, bool)
                                        or not isinstance(self.smooth, int)
                                        or not SMOOTH_MIN <= self.smooth <= SMOOTH_MAX):
            raise BadInput(f"--smooth {self.smooth} must be a whole number of frames from "
                           f"{SMOOTH_MIN} to {SMOOTH_MAX} (a majority of the last K; 2 cannot "
                           "outvote the current frame)")
        if self.device_frames and (self.smooth or self.consistency):
            raise BadInput("--device-frames does not go with --smooth or --consistency (their "
                           "optical flow runs on the host)")
        if self.fps is not None and self.fps <= 0:
            raise BadInput(f"--fps {self.fps:g} must be positive")


def check_run(source: str | Path | Source, config: RunConfig, json_path: Optional[Path] = None,
              serving: bool = False) -> None:
    """The cheap checks of a run, before an engine is loaded: the source exists, ``--labels``
    fits it, the output paths can be written, a window can open (``serving``: the live page
    is asked for too, which the message then suggests instead). BadInput or
    MissingDependency, naming the flag."""
    if config.show:
        try:
            check_display()
        except MissingDependency as exc:
            if not serving:
                raise
            raise MissingDependency(f"{exc}; --serve already shows the overlay in a browser: "
                                    "drop --show") from None
    named = not isinstance(source, Source)
    if named:
        check_source(source)
    labels = config.labels
    if labels is not None:
        if not labels.is_dir():
            raise BadInput(f"--labels {labels}: not a directory")
        if named:  # a Source object is checked when the pipeline is made (its file names)
            if not (names_path(source) and Path(source).is_dir()):
                raise BadInput("--labels needs --source to be a directory of frames (labels "
                               f"are matched by file name); {source} is a video or a stream")
            check_labels(labels, source)
    ensure_parent(config.output, "--output")
    ensure_parent(json_path, "--json")
    ensure_output_dir(config.masks, "--masks")


def check_serve(serve: Optional[str], token: Optional[str], linger: Optional[float]) -> None:
    """BadInput for live-page settings without ``serve`` (the page's ``[HOST:]PORT``) or out
    of range; the address and the token themselves are checked as the page binds."""
    if serve is None:
        if linger is not None:
            raise BadInput("--serve-linger needs --serve [HOST:]PORT")
        if token is not None:
            raise BadInput("--serve-token needs --serve [HOST:]PORT")
        return
    if linger is not None and linger < 0:
        raise BadInput(f"--serve-linger {linger:g} must be 0 or more seconds")
