"""What ``rtseg train`` is asked: one dataclass the CLI fills from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from rtseg.data import DatasetSpec, get_spec
from rtseg.errors import BadInput
from rtseg.data.augment import COLOUR_CAST, JITTER, SCALE_RANGE
from rtseg.training.losses import DISTILL_TEMPERATURE, DISTILL_WEIGHT, LOSSES


@dataclass
class TrainConfig:
    """Everything ``rtseg train`` needs; the CLI fills it from flags."""

    model: str
    dataset: str                               # camvid, cityscapes or folder (DIR/classes.yaml)
    data_root: Path
    out: Path = Path("runs/train")
    epochs: int = 100
    batch_size: int = 8
    crop: tuple[int, int] | None = None        # default: the data set's training crop
    input_size: tuple[int, int] | None = None  # default: the data set's network input size
    lr: float = 1e-3
    weight_decay: float = 1e-4
    device: str = "auto"
    amp: bool | None = None                    # None: bf16 autocast on CUDA only
    resume: bool = False
    encoder_weights: str = "none"
    init: Path | None = None                   # start from these weights (same model; pruned ones too)
    seed: int = 0
    workers: int = 2
    train_limit: int | None = None             # use only the first N training images
    val_limit: int | None = None
    holdout_sequence: str | None = None        # score on these training frames, not on val
    train_on_val: bool = False                 # train on val too (a model to ship)
    scale_range: tuple[float, float] = SCALE_RANGE  # the augmentation: rtseg.data.augment
    jitter: float = JITTER
    colour_cast: float = COLOUR_CAST           # per-channel gains in 1 ± this (0: off)
    camera_augment: bool = False               # stronger colour, gamma, blur, noise, JPEG
    loss: str = "ce"                           # one of rtseg.training.losses.LOSSES
    teacher: Path | None = None                # distil from these weights' logits (rtseg.training.distill)
    distill_weight: float = DISTILL_WEIGHT
    distill_temperature: float = DISTILL_TEMPERATURE
    data_on_device: bool = False               # decode once, keep and augment batches on the device
    val_every: int = 1                         # validate every N epochs (and after the last)
    time_budget_s: float | None = None         # fit the epoch count to this many seconds of training
    state_every_s: float = 60.0                # resumable state: at most this often (and after the last epoch)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise BadInput(f"--loss {self.loss}: choose one of {', '.join(LOSSES)}")
        if self.distill_weight < 0 or self.distill_temperature <= 0:
            raise BadInput(f"--distill-weight {self.distill_weight}, --distill-temperature "
                           f"{self.distill_temperature}: need a weight >= 0 and a temperature > 0")
        if self.teacher is not None:
            self.data_on_device = True  # the teacher's logits are sampled with the frames
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise BadInput(f"--scale-range {lo},{hi}: need 0 < low <= high, e.g. 0.5,2.0")

    @cached_property
    def spec(self) -> DatasetSpec:
        """The data set's classes and layout (a folder data set's classes.yaml, read once)."""
        return get_spec(self.dataset, self.data_root)
