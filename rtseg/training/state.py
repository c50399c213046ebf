"""What a training run records beside its weights: the checkpoint metadata with the recipe, and
the resumable state (``train_state.pt``) that ``--resume`` reads back without running code."""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from rtseg.data.augment import photometric_strengths
from rtseg.data.classes import engine_metadata
from rtseg.errors import BadInput
from rtseg.files import write_via_temp
from rtseg.metadata import EngineMetadata
from rtseg.models import Segmenter, canonical_name
from rtseg.training import distributed as ddp
from rtseg.training.config import TrainConfig
from rtseg.training.losses import DESCRIPTIONS as LOSS_DESCRIPTIONS

STATE_FILE = "train_state.pt"
STATE_KEYS = ("net", "optimizer", "epoch", "step", "best_miou", "history")


def run_metadata(cfg: TrainConfig, input_size, crop, info: ddp.DistInfo, device: torch.device,
                 dtype: torch.dtype | None) -> EngineMetadata:
    """The metadata every checkpoint of the run carries: classes, sizes and the recipe
    (``dtype``: the autocast dtype, None without autocast)."""
    spec = cfg.spec
    jitter, colour_cast = photometric_strengths(cfg.jitter, cfg.colour_cast, cfg.camera_augment)
    recipe = {k: v for k, v in asdict(cfg).items()
              if k not in ("data_root", "out", "extra", "init", "teacher", "distill_weight",
                           "distill_temperature")}
    if cfg.init is not None:
        recipe["init"] = Path(cfg.init).name
    if cfg.teacher is not None:
        recipe["teacher"] = Path(cfg.teacher).name
    recipe.update(crop=list(crop), input_size=list(input_size), world_size=info.world_size,
                  process_group=ddp.backend_name(info),
                  device_type=device.type,
                  amp={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off"),
                  optimizer="AdamW", schedule="poly(0.9) per step",
                  loss=LOSS_DESCRIPTIONS[cfg.loss]
                  + (f" + {cfg.distill_weight} x T^2 x KL(teacher || student) at T "
                     f"{cfg.distill_temperature}, per pixel weighted by the class weight of the "
                     "teacher's class" if cfg.teacher else ""),
                  augmentation=f"scale {cfg.scale_range}, crop, hflip, jitter {jitter}"
                  + (f", colour cast {colour_cast}" if colour_cast else "")
                  + (", camera (gamma, blur, noise, JPEG)" if cfg.camera_augment else ""))
    recipe.update(cfg.extra)
    return engine_metadata(canonical_name(cfg.model), spec, input_size, recipe=recipe)


def save_state(path: Path, segmenter: Segmenter, optimizer, epoch: int, step: int,
                best: float, history: list, run_id: dict) -> None:
    """Write the resumable state ``load_state`` reads (via a temporary file)."""
    state = {"net": segmenter.net.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "step": step, "best_miou": best,
             "history": json.dumps(history), "run": json.dumps(run_id)}
    write_via_temp(path, lambda tmp: torch.save(state, tmp))


def check_same_run(saved: dict, run_id: dict, path: Path) -> None:
    """BadInput, in one line, unless the state at ``path`` (its ``saved`` run id) is a run of
    the same model and data set, taught the same way (``teacher``: ``distill.teacher_id``)."""
    if not saved:
        return
    if saved.get("teacher") != run_id.get("teacher"):
        raise BadInput(f"--resume: {path} was trained {_taught(saved.get('teacher'))}, not "
                       f"{_taught(run_id.get('teacher'))}: give the run's own --teacher flags")
    if saved != run_id:
        raise BadInput(f"--resume: {path} is a {saved['model']} run on {saved['dataset']}, "
                       f"not {run_id['model']} on {run_id['dataset']}")


def _taught(teacher: dict | None) -> str:
    """How a run was taught, in words."""
    if not teacher:
        return "without a teacher"
    return (f"with --teacher {teacher['file']} (weight {teacher['weight']}, temperature "
            f"{teacher['temperature']})")


def load_state(path: Path, device: torch.device) -> dict:
    """The resumable state ``save_state`` wrote. ``weights_only=True``: tensors, numbers and
    strings only — a pickle carrying code is refused, never run; BadInput for that or any
    other file that is not such a state."""
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notice: noise here
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as exc:
        raise BadInput(f"--resume: {path} cannot be loaded as a training state "
                       f"({type(exc).__name__}: corrupt, or not written by rtseg train; pickled "
                       "code is never run)") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise BadInput(f"--resume: {path} is not a training state written by rtseg train")
    return state
