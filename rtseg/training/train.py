"""``rtseg train``: one run, class-weighted cross-entropy, poly LR, AMP on CUDA, DDP under
torchrun. The run's parts live beside it: ``config`` (what is asked), ``schedule`` (class
weights, LR, epochs fitted to a budget), ``epoch`` (batches, one pass, validation), ``state``
(metadata and the resumable state).

Reads top to bottom: the steps of ``train`` (``_check_inputs`` → ``_prepare`` → ``_resume`` →
``_wrap_for_ddp`` → ``_make_loader`` → ``_fit``, which repeats ``_run_epoch`` → ``_replan`` →
``_validate_and_save``) → ``train``. Every helper takes explicit arguments.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from rtseg.data import DatasetSpec, check_pair_sizes
from rtseg.data.classes import IMAGENET_MEAN, IMAGENET_STD
from rtseg.data.device_batches import DeviceBatches, decode_split
from rtseg.data.splits import training_split
from rtseg.devices import amp_dtype, cudnn_autotune, resolve_device
from rtseg.errors import BadInput
from rtseg.files import write_json, write_via_temp
from rtseg.metadata import EngineMetadata
from rtseg.models import (Segmenter, canonical_name, read_checkpoint_metadata,
                          save_checkpoint)
from rtseg.training.distill import check_teacher, teacher_id, teacher_logits
from rtseg.training.init_weights import check_init, initial_network
from rtseg.models.registry import check_input_size
from rtseg.training import distributed as ddp
from rtseg.training.config import TrainConfig
from rtseg.training.epoch import (LogitsOf, StopRequested, make_train_loader, train_one_epoch,
                                  validate)
from rtseg.training.losses import DistillationLoss, make_criterion
from rtseg.training.schedule import planned_epochs, poly_lr, shared_class_weights
from rtseg.training.state import (STATE_FILE, check_same_run, load_state, run_metadata,
                                  save_state)


@dataclass(frozen=True)
class _Job:
    """A checked ``TrainConfig``: what is trained, on which images, and where it is written."""

    spec: DatasetSpec
    name: str
    input_size: tuple[int, int]
    crop: tuple[int, int]
    train_pairs: list
    val_pairs: list
    out: Path
    teacher: dict | None = None  # distill.teacher_id

    @property
    def state_path(self) -> Path:
        """The resumable state, ``OUT/train_state.pt``."""
        return self.out / STATE_FILE

    @property
    def run_id(self) -> dict:
        """What a resumed state must match (a teacher only where there is one: the states
        of runs without one match as they always did)."""
        teacher = {"teacher": self.teacher} if self.teacher else {}
        return {"model": self.name, "dataset": self.spec.name,
                "num_classes": self.spec.num_classes} | teacher


@dataclass
class _Run:
    """What this process trains with: its device and place in the job, the network, the
    training forward (``model``: DDP-wrapped under torchrun), loss, optimizer and scaler."""

    device: torch.device
    info: ddp.DistInfo
    dtype: torch.dtype | None
    metadata: EngineMetadata
    segmenter: Segmenter
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    model: nn.Module | None = None


@dataclass
class _Progress:
    """Where the run stands: epochs and steps done, the best val mIoU, the history, the
    plan (``epochs`` in all, ``total_steps`` for the poly schedule) and the clock it is fitted
    by (seconds of training in all and per epoch, the epoch count last logged)."""

    epoch: int = 0
    step: int = 0
    best: float = -1.0
    history: list = field(default_factory=list)
    epochs: int = 0
    total_steps: int = 0
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    logged_plan: int = 0
    state_saved_at: float = -math.inf          # perf_counter() of the last resumable state

    def plan(self, epochs: int, steps_per_epoch: int) -> None:
        """Train ``epochs`` epochs in all; the poly schedule spans their steps."""
        self.epochs, self.total_steps = epochs, epochs * steps_per_epoch


def _check_inputs(cfg: TrainConfig) -> _Job:
    """``cfg`` checked against the data before any process group or directory exists;
    BadInput says what to fix."""
    spec = cfg.spec
    name = canonical_name(cfg.model)
    input_size = tuple(cfg.input_size or spec.input_size)
    crop = tuple(cfg.crop or spec.train_crop)
    check_input_size(input_size, "input size")
    check_input_size(crop, "crop")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise BadInput("--epochs and --batch-size must be at least 1")
    train_pairs, val_pairs = training_split(spec, cfg.data_root, cfg.holdout_sequence,
                                            cfg.train_on_val)
    train_pairs, val_pairs = train_pairs[:cfg.train_limit], val_pairs[:cfg.val_limit]
    check_pair_sizes(train_pairs + val_pairs)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")
    if cfg.resume and not (out / STATE_FILE).is_file():
        raise BadInput(f"--resume: no {STATE_FILE} in {out}")
    if cfg.init is not None:
        check_init(cfg.init, name, spec)
    if cfg.teacher is not None:
        check_teacher(cfg.teacher, spec)
    return _Job(spec, name, input_size, crop, train_pairs, val_pairs, out, teacher_id(cfg))


def _prepare(cfg: TrainConfig, job: _Job, device: torch.device, info: ddp.DistInfo) -> _Run:
    """Seed this rank, then build the network, weighted loss, AdamW and loss scaler on its
    device (under torchrun on CUDA: the GPU of its local rank)."""
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)
    amp = device.type == "cuda" if cfg.amp is None else cfg.amp
    dtype = amp_dtype(device, amp)
    net, inherited = initial_network(cfg, job.name, job.spec)
    metadata = run_metadata(cfg, job.input_size, job.crop, info, device, dtype)
    metadata = metadata.with_updates(**inherited) if inherited else metadata
    segmenter = Segmenter(net, IMAGENET_MEAN, IMAGENET_STD).to(device)
    if device.type == "cuda":
        segmenter = segmenter.to(memory_format=torch.channels_last)
    weights = shared_class_weights(job.train_pairs, job.spec, device, info)
    criterion = make_criterion(cfg.loss, weights, job.spec.ignore_index)
    if cfg.teacher is not None:
        criterion = DistillationLoss(criterion, cfg.distill_weight, cfg.distill_temperature,
                                     class_weight=weights)
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return _Run(device, info, dtype, metadata, segmenter, criterion, optimizer, scaler)


def _resume(job: _Job, run: _Run, log: Callable[[str], None]) -> _Progress:
    """Load ``train_state.pt`` into the network and optimizer; the progress it recorded.
    The best score is also ``best.safetensors``'s: the state is written less often than the
    checkpoints, so the best may be newer than the state, and must not be replaced by a
    worse epoch of the resumed run. BadInput when it is a run of another model or data set."""
    state = load_state(job.state_path, run.device)
    check_same_run(json.loads(state.get("run", "{}")), job.run_id, job.state_path)
    try:
        run.segmenter.net.load_state_dict(state["net"])
    except RuntimeError:
        raise BadInput(f"--resume: {job.state_path} holds a network of other layer widths "
                       "(a pruned one?): pass the run's --init FILE again") from None
    run.optimizer.load_state_dict(state["optimizer"])
    best = state["best_miou"]
    if (job.out / "best.safetensors").is_file():
        best = max(best, read_checkpoint_metadata(job.out / "best.safetensors").extra.get(
            "val_miou", best))
    progress = _Progress(epoch=state["epoch"], step=state["step"], best=best,
                         history=json.loads(state["history"]))
    log(f"resumed from {job.state_path} after epoch {progress.epoch}")
    return progress


def _wrap_for_ddp(segmenter: Segmenter, device: torch.device, info: ddp.DistInfo) -> nn.Module:
    """The training forward; under torchrun DDP-wrapped (batch norm synced across GPUs)."""
    model: nn.Module = LogitsOf(segmenter)
    if info.enabled:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _make_loader(cfg: TrainConfig, job: _Job, run: _Run, start_epoch: int,
                 log: Callable[[str], None], stop: Optional[threading.Event] = None) -> tuple:
    """The training batches and their sampler: made on the device (``data_on_device``, which
    a ``teacher`` implies: its logits are sampled with the frames; one object is both)
    or by ``make_train_loader``; BadInput, before any decoding, when a process gets less than
    one batch (both drop the last partial batch). StopRequested when ``stop`` is set while
    the teacher runs."""
    per_process = len(job.train_pairs) // run.info.world_size
    if per_process < cfg.batch_size:
        raise BadInput(f"{per_process} training images per process is fewer than one batch "
                       f"of {cfg.batch_size}; lower --batch-size")
    if not cfg.data_on_device:
        return make_train_loader(job.train_pairs, cfg, job.crop, job.input_size,
                                 job.spec.ignore_index, run.info, start_epoch)
    images, labels = decode_split(job.train_pairs, job.spec, max(cfg.workers, 1))
    teacher = None if cfg.teacher is None else teacher_logits(
        cfg.teacher, images, run.device, cfg.batch_size,
        log=log if run.info.is_main else lambda s: None, stopped=lambda: _stopped(stop, run))
    batches = DeviceBatches(
        images, labels, job.crop, job.input_size, job.spec.ignore_index, cfg.batch_size,
        run.device, cfg.scale_range, cfg.jitter, cfg.seed, run.info.rank, run.info.world_size,
        cfg.colour_cast, cfg.camera_augment, teacher)
    return batches, batches


def _announce(cfg: TrainConfig, job: _Job, run: _Run, log: Callable[[str], None]) -> None:
    """Rank 0: create the output directory (only now, so that bad input found earlier leaves
    no directory behind) and log what the run trains on."""
    job.out.mkdir(parents=True, exist_ok=True)
    log(f"training {job.name} on {job.spec.name}: {len(job.train_pairs)} train / "
        f"{len(job.val_pairs)} val images, crop {job.crop[0]}x{job.crop[1]}, "
        f"input {job.input_size[0]}x{job.input_size[1]}, "
        f"{run.info.world_size} process(es) on {run.device.type}, "
        f"amp={run.metadata.extra['recipe']['amp']}"
        + (", batches made on the device" if cfg.data_on_device else "")
        + (f", distilled from {Path(cfg.teacher).name}" if cfg.teacher else "")
        + (f"; val = held-out sequence {cfg.holdout_sequence}" if cfg.holdout_sequence else "")
        + ("; val frames trained on too" if cfg.train_on_val else ""))


def _run_epoch(cfg: TrainConfig, run: _Run, progress: _Progress, loader, sampler,
               show_progress: bool, stop: Optional[threading.Event] = None
               ) -> tuple[float, float]:
    """Train the next epoch and count it; returns (this rank's mean loss, seconds taken).
    StopRequested when ``stop`` is set on any rank mid-epoch (the epoch is not counted)."""
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(progress.epoch)
    t0 = time.perf_counter()
    loss, progress.step = train_one_epoch(
        run.model, loader, run.criterion, run.optimizer, run.device, run.dtype, run.scaler,
        cfg.lr, progress.step, progress.total_steps, run.info,
        show_progress and run.info.is_main, f"epoch {progress.epoch + 1}/{progress.epochs}",
        stop)
    seconds = time.perf_counter() - t0
    progress.train_seconds += seconds
    progress.epoch_seconds.append(seconds)
    progress.epoch += 1
    return loss, seconds


def _replan(cfg: TrainConfig, run: _Run, progress: _Progress, steps_per_epoch: int,
            log: Callable[[str], None]) -> None:
    """Fit the epoch count to ``cfg.time_budget_s``, rank 0's plan on every rank; rank 0 logs
    when the plan moves by more than 10 %."""
    # pace: the median of the last few epochs, the first (autotuning) left out
    times = progress.epoch_seconds
    pace = float(np.median(times[1:][-5:] or times))
    fitted = planned_epochs(cfg.epochs, progress.epoch, progress.train_seconds, pace,
                            cfg.time_budget_s)
    fitted = int(ddp.broadcast_tensor(torch.tensor(fitted, device=run.device), run.info))
    if fitted == progress.epochs:
        return
    if run.info.is_main and abs(fitted - progress.logged_plan) > 0.1 * progress.logged_plan:
        progress.logged_plan = fitted
        log(f"--time-budget {cfg.time_budget_s:.0f} s: {fitted} epochs fit "
            f"(at {pace:.2f} s/epoch)")
    progress.plan(fitted, steps_per_epoch)


def _save(cfg: TrainConfig, job: _Job, run: _Run, progress: _Progress, scores: dict) -> None:
    """Rank 0's files after a validation: last (and, if it is the best yet, best)
    safetensors, history.json and the resumable state — the state (weights and optimizer
    moments: 310 MiB for segnet_r50, about 0.5 s to write) at most every
    ``cfg.state_every_s`` seconds, and always after the last epoch."""
    miou = scores["miou"]
    meta = run.metadata.with_updates(val_miou=miou, epoch=progress.epoch,
                                     per_class_iou=scores["per_class_iou"])
    last, best = job.out / "last.safetensors", job.out / "best.safetensors"
    save_checkpoint(last, run.segmenter, meta)
    if miou > progress.best or not best.exists():
        progress.best = max(miou, progress.best)
        write_via_temp(best, lambda tmp: shutil.copyfile(last, tmp))  # the same bytes

    now = time.perf_counter()
    if progress.epoch >= progress.epochs or now - progress.state_saved_at >= cfg.state_every_s:
        save_state(job.state_path, run.segmenter, run.optimizer, progress.epoch, progress.step,
                   progress.best, progress.history, job.run_id)
        progress.state_saved_at = now
    write_json(job.out / "history.json", {"model": job.name, "dataset": job.spec.name,
                                          "epochs": progress.history})


def _validate_and_save(cfg: TrainConfig, job: _Job, run: _Run, progress: _Progress,
                       entry: dict, log: Callable[[str], None]) -> None:
    """Score the val split on every rank and record ``entry`` with the scores; rank 0 saves
    and logs the epoch."""
    ddp.broadcast_buffers(run.segmenter, run.info)
    scores = validate(run.segmenter, run.metadata, job.val_pairs, cfg, run.device,
                      run.info).report(job.spec.class_names)
    entry.update(val_miou=scores["miou"], val_pixel_accuracy=scores["pixel_accuracy"])
    progress.history.append(entry)
    if run.info.is_main:
        _save(cfg, job, run, progress, scores)
        log(f"epoch {progress.epoch}/{progress.epochs}: loss {entry['loss']:.4f}, "
            f"val mIoU {scores['miou']:.4f} (best {progress.best:.4f}), "
            f"{entry['train_seconds']:.1f} s")


def _stopped(stop: Optional[threading.Event], run: _Run) -> bool:
    """Whether a stop was asked on any rank (every rank gets the same answer)."""
    return stop is not None and ddp.any_rank(torch.tensor(stop.is_set(), device=run.device),
                                             run.info)


def _save_on_stop(job: _Job, run: _Run, progress: _Progress, log: Callable[[str], None]) -> None:
    """Rank 0: the resumable state as it stands, so ``--resume`` loses at most the epoch in
    progress (trained again from its start, the weights and LR schedule carried on)."""
    if run.info.is_main:
        save_state(job.state_path, run.segmenter, run.optimizer, progress.epoch, progress.step,
                   progress.best, progress.history, job.run_id)
        log(f"stopped after {progress.epoch} epochs and {progress.step} steps; state saved to "
            f"{job.state_path} (--resume goes on from epoch {progress.epoch + 1})")
    ddp.barrier(run.info)


def _fit(cfg: TrainConfig, job: _Job, run: _Run, progress: _Progress, loader, sampler,
         log: Callable[[str], None], show_progress: bool,
         stop: Optional[threading.Event] = None) -> bool:
    """The epoch loop: train, re-plan to the time budget, then validate and save every
    ``val_every`` epochs and after the last, every rank in step. True when ``stop`` ended
    it early (the resumable state then saved as it stands)."""
    progress.train_seconds = sum(e.get("train_seconds", 0.0) for e in progress.history)
    progress.logged_plan = cfg.epochs
    while progress.epoch < progress.epochs:
        if _stopped(stop, run):
            _save_on_stop(job, run, progress, log)
            return True
        try:
            loss, seconds = _run_epoch(cfg, run, progress, loader, sampler, show_progress, stop)
        except StopRequested as stopped:
            progress.step = stopped.step
            _save_on_stop(job, run, progress, log)
            return True
        _replan(cfg, run, progress, len(loader), log)
        losses = ddp.all_gather_objects(loss, run.info)
        entry = {"epoch": progress.epoch, "loss": float(np.mean(losses)),
                 "lr": poly_lr(cfg.lr, progress.step, progress.total_steps),
                 "train_seconds": seconds}
        if progress.epoch % max(cfg.val_every, 1) and progress.epoch < progress.epochs:
            progress.history.append(entry)
            continue
        _validate_and_save(cfg, job, run, progress, entry, log)
        ddp.barrier(run.info)
    return False


def train(cfg: TrainConfig, log: Callable[[str], None] = lambda s: None,
          show_progress: bool = False, stop: Optional[threading.Event] = None) -> dict:
    """Train ``cfg.model``; writes best/last safetensors, the resumable state and history.json.

    Returns ``{"best_miou", "epochs", "out", "train_seconds", "interrupted"}``. ``stop``
    (set by Ctrl-C or SIGTERM, say) ends the run before the next batch is applied, with the
    resumable state saved (``interrupted``: true). Under torchrun every rank calls this; only
    rank 0 writes files and logs.
    """
    job = _check_inputs(cfg)
    device = resolve_device(cfg.device)
    info = ddp.init_from_env(device.type)
    try:
        run = _prepare(cfg, job, device, info)
        progress = _resume(job, run, log) if cfg.resume else _Progress()
        run.model = _wrap_for_ddp(run.segmenter, run.device, info)
        try:
            loader, sampler = _make_loader(cfg, job, run, progress.epoch, log, stop)
        except StopRequested:  # while the teacher ran: nothing trained, nothing written
            if info.is_main:
                log("stopped before the first training step; nothing written")
            return {"best_miou": progress.best, "epochs": progress.epoch, "out": str(job.out),
                    "train_seconds": 0.0, "interrupted": True}
        progress.plan(cfg.epochs, len(loader))
        if info.is_main:
            _announce(cfg, job, run, log)
        with cudnn_autotune(run.device.type == "cuda"):  # fixed shapes: autotune once
            interrupted = _fit(cfg, job, run, progress, loader, sampler, log, show_progress,
                               stop)
        return {"best_miou": progress.best, "epochs": progress.epochs, "out": str(job.out),
                "train_seconds": progress.train_seconds, "interrupted": interrupted}
    finally:
        ddp.shutdown(info)
