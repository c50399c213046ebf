"""``rtseg train``: class-weighted cross-entropy, poly LR, AMP on CUDA, DDP under torchrun.

Reads top to bottom: ``class_weights`` → ``make_loaders`` → ``train_one_epoch`` →
``validate`` → ``train``. Every helper takes explicit arguments.
"""

from __future__ import annotations

import json
import pickle
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from rtseg.backends.torch_backend import TorchBackend
from rtseg.data import check_pair_sizes, find_pairs, get_spec, read_label
from rtseg.data.classes import IMAGENET_MEAN, IMAGENET_STD, engine_metadata
from rtseg.data.device_batches import DeviceBatches, decode_split
from rtseg.data.torch_dataset import SegmentationDataset
from rtseg.data.transforms import TrainTransform, seed_worker
from rtseg.devices import amp_dtype, resolve_device
from rtseg.errors import BadInput
from rtseg.files import write_json, write_via_temp
from rtseg.metadata import EngineMetadata
from rtseg.models import Segmenter, build_model, canonical_name, save_checkpoint
from rtseg.models.registry import check_input_size
from rtseg.scoring.confusion import ConfusionMatrix
from rtseg.scoring.loop import EngineScore, eval_batches, score
from rtseg.training import distributed as ddp

STATE_FILE = "train_state.pt"
STATE_KEYS = ("net", "optimizer", "epoch", "step", "best_miou", "history")


@dataclass
class TrainConfig:
    """Everything ``rtseg train`` needs; the CLI fills it from flags."""

    model: str
    dataset: str
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
    seed: int = 0
    workers: int = 2
    train_limit: int | None = None             # use only the first N training images
    val_limit: int | None = None
    scale_range: tuple[float, float] = (0.75, 1.5)
    jitter: float = 0.3
    colour_cast: float = 0.0                   # per-channel gains in 1 ± this (0: off)
    data_on_device: bool = False               # decode once, keep and augment batches on the device
    val_every: int = 1                         # validate every N epochs (and after the last)
    time_budget_s: float | None = None         # fit the epoch count to this many seconds of training
    extra: dict = field(default_factory=dict)


def class_weights(pairs: Sequence, dataset: str, num_classes: int, ignore_index: int,
                  workers: int = 4) -> torch.Tensor:
    """ENet's weighting ``1 / ln(1.02 + p_c)`` from label pixel frequencies, mean 1."""
    def count(pair):
        label = read_label(pair[1], dataset).ravel()
        return np.bincount(label[label != ignore_index], minlength=num_classes)[:num_classes]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        counts = sum(pool.map(count, pairs))
    freq = counts / max(counts.sum(), 1)
    weights = 1.0 / np.log(1.02 + freq)
    weights[counts == 0] = 0.0  # a class never seen cannot be learned; don't let it dominate
    weights *= (counts > 0).sum() / max(weights.sum(), 1e-12)
    return torch.tensor(weights, dtype=torch.float32)


def make_train_loader(pairs, cfg: TrainConfig, crop, input_size, ignore_index,
                      info: ddp.DistInfo, start_epoch: int = 0
                      ) -> tuple[DataLoader, torch.utils.data.Sampler]:
    """Shuffled, augmented training batches; a DistributedSampler under torchrun.

    Seeds depend on ``start_epoch`` so a resumed run does not replay epoch 1's order.
    """
    seed = cfg.seed + 7919 * start_epoch
    transform = TrainTransform(crop=crop, base_size=input_size, ignore_index=ignore_index,
                               scale_range=cfg.scale_range, jitter=cfg.jitter,
                               colour_cast=cfg.colour_cast,
                               seed=seed + info.rank)
    ds = SegmentationDataset(pairs, cfg.dataset, transform)
    if info.enabled:
        sampler = DistributedSampler(ds, info.world_size, info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    else:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(seed + info.rank)
    loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, worker_init_fn=seed_worker,
                        generator=generator, pin_memory=torch.cuda.is_available(),
                        persistent_workers=cfg.workers > 0)
    if len(loader) == 0:
        raise BadInput(f"{len(ds)} training images per process is fewer than one batch of "
                       f"{cfg.batch_size}; lower --batch-size")
    return loader, sampler


def planned_epochs(epochs: int, done: int, elapsed_s: float, last_epoch_s: float,
                   budget_s: float | None) -> int:
    """The epoch count that fits ``budget_s`` seconds of training: the ``done`` epochs took
    ``elapsed_s``, and the rest run ``last_epoch_s`` each (the caller's recent pace: the first
    epoch carries the one-off autotuning, so an average would under-plan). Never below
    ``done``, never above ``epochs``."""
    if budget_s is None or done == 0 or last_epoch_s <= 0:
        return epochs
    fit = done + int(max(budget_s - elapsed_s, 0.0) / last_epoch_s)
    return max(done, min(epochs, fit))


def poly_lr(base_lr: float, step: int, total: int, power: float = 0.9) -> float:
    """Polynomial decay from ``base_lr`` to 0 over ``total`` steps."""
    return base_lr * (1.0 - min(step, total) / max(total, 1)) ** power


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer, device: torch.device,
                    dtype: torch.dtype | None, scaler: torch.amp.GradScaler, base_lr: float,
                    step: int, total_steps: int, info: ddp.DistInfo, show: bool,
                    desc: str) -> tuple[float, int]:
    """One pass over ``loader``; returns (mean loss, global step after it).

    ``dtype``: the autocast dtype (None: full precision); ``scaler`` scales fp16 losses
    (disabled otherwise). A non-finite loss on any rank stops every rank at the same step.
    """
    model.train()
    losses = []
    bar = tqdm(loader, desc=desc, disable=not show, leave=False, dynamic_ncols=True)
    for frames, labels in bar:
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(base_lr, step, total_steps)
        frames = frames.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(frames)
        loss = criterion(logits.float(), labels)
        if ddp.any_rank(~torch.isfinite(loss.detach()), info):
            raise FloatingPointError(f"training loss became non-finite ({loss.item()} on rank "
                                     f"{info.rank}) at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())
        step += 1
        if show:
            bar.set_postfix(loss=f"{losses[-1].item():.3f}")
    return float(torch.stack(losses).mean()), step


class _LogitsOf(nn.Module):
    """Adapts a Segmenter so DDP wraps the training forward (``logits``)."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, frames):
        return self.segmenter.logits(frames)


def validate(segmenter: Segmenter, metadata: EngineMetadata, pairs: Sequence, cfg: TrainConfig,
             device: torch.device, info: ddp.DistInfo) -> ConfusionMatrix:
    """Confusion matrix over the val split, each rank scoring its share, summed over ranks.

    Counted on ``device`` exactly as ``rtseg eval`` counts (labels at full size, predictions
    resized to them, nearest neighbour).
    """
    backend = TorchBackend(segmenter, metadata, str(device), convert=False)
    engine = EngineScore(backend, cfg.dataset, on_device=True)
    score([engine], eval_batches(pairs[info.rank::info.world_size], cfg.dataset,
                                 cfg.batch_size, cfg.workers))
    engine.matrix.matrix = ddp.all_reduce_sum(engine.matrix.matrix, info, device)
    return engine.matrix


def _metadata(cfg: TrainConfig, input_size, crop, info: ddp.DistInfo, device: torch.device,
              amp: bool) -> EngineMetadata:
    spec = get_spec(cfg.dataset)
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("data_root", "out", "extra")}
    dtype = amp_dtype(device, amp)
    recipe.update(crop=list(crop), input_size=list(input_size), world_size=info.world_size,
                  process_group=ddp.backend_name(info),
                  device_type=device.type,
                  amp={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off"),
                  optimizer="AdamW", schedule="poly(0.9) per step",
                  loss="cross-entropy, ENet class weights 1/ln(1.02+p)",
                  augmentation=f"scale {cfg.scale_range}, crop, hflip, jitter {cfg.jitter}"
                  + (f", colour cast {cfg.colour_cast}" if cfg.colour_cast else ""))
    recipe.update(cfg.extra)
    return engine_metadata(canonical_name(cfg.model), spec, input_size, recipe=recipe)


def _save_state(path: Path, segmenter: Segmenter, optimizer, epoch: int, step: int,
                best: float, history: list, run_id: dict) -> None:
    state = {"net": segmenter.net.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "step": step, "best_miou": best,
             "history": json.dumps(history), "run": json.dumps(run_id)}
    write_via_temp(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path, device: torch.device) -> dict:
    """The resumable state ``_save_state`` wrote. ``weights_only=True``: tensors, numbers and
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


def train(cfg: TrainConfig, log: Callable[[str], None] = lambda s: None,
          show_progress: bool = False) -> dict:
    """Train ``cfg.model``; writes best/last safetensors, the resumable state and history.json.

    Returns ``{"best_miou", "epochs", "out"}``. Under torchrun every rank calls this; only
    rank 0 writes files and logs.
    """
    spec = get_spec(cfg.dataset)
    name = canonical_name(cfg.model)
    input_size = tuple(cfg.input_size or spec.input_size)
    crop = tuple(cfg.crop or spec.train_crop)
    check_input_size(input_size, "input size")
    check_input_size(crop, "crop")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise BadInput("--epochs and --batch-size must be at least 1")
    train_pairs = find_pairs(cfg.dataset, cfg.data_root, "train")[:cfg.train_limit]
    val_pairs = find_pairs(cfg.dataset, cfg.data_root, "val")[:cfg.val_limit]
    check_pair_sizes(train_pairs + val_pairs)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory")
    state_path = out / STATE_FILE
    if cfg.resume and not state_path.is_file():
        raise BadInput(f"--resume: no {STATE_FILE} in {out}")

    device = resolve_device(cfg.device)
    info = ddp.init_from_env(device.type)
    try:
        if device.type == "cuda" and info.enabled:
            device = torch.device("cuda", info.local_rank)
        torch.manual_seed(cfg.seed + info.rank)
        np.random.seed(cfg.seed + info.rank)
        amp = device.type == "cuda" if cfg.amp is None else cfg.amp
        dtype = amp_dtype(device, amp)
        metadata = _metadata(cfg, input_size, crop, info, device, amp)

        segmenter = Segmenter(build_model(name, spec.num_classes, cfg.encoder_weights),
                              IMAGENET_MEAN, IMAGENET_STD).to(device)
        if device.type == "cuda":
            segmenter = segmenter.to(memory_format=torch.channels_last)
        weights = torch.zeros(spec.num_classes)
        if info.is_main:
            weights = class_weights(train_pairs, cfg.dataset, spec.num_classes, spec.ignore_index)
        weights = ddp.broadcast_tensor(weights.to(device), info)
        criterion = nn.CrossEntropyLoss(weight=weights, ignore_index=spec.ignore_index)
        optimizer = torch.optim.AdamW(segmenter.parameters(), lr=cfg.lr,
                                      weight_decay=cfg.weight_decay,
                                      fused=device.type == "cuda")
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

        run_id = {"model": name, "dataset": spec.name, "num_classes": spec.num_classes}
        start_epoch, step, best, history = 0, 0, -1.0, []
        if cfg.resume:
            state = load_state(state_path, device)
            saved = json.loads(state.get("run", "{}"))
            if saved and saved != run_id:
                raise BadInput(f"--resume: {state_path} is a {saved['model']} run on "
                               f"{saved['dataset']}, not {run_id['model']} on {run_id['dataset']}")
            segmenter.net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, step, best = state["epoch"], state["step"], state["best_miou"]
            history = json.loads(state["history"])
            log(f"resumed from {state_path} after epoch {start_epoch}")

        model: nn.Module = _LogitsOf(segmenter)
        if info.enabled:
            if device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.data_on_device:
            images, labels = decode_split(train_pairs, cfg.dataset, max(cfg.workers, 1))
            loader = sampler = DeviceBatches(
                images, labels, crop, input_size, spec.ignore_index, cfg.batch_size, device,
                cfg.scale_range, cfg.jitter, cfg.seed, info.rank, info.world_size,
                cfg.colour_cast)
            if len(loader) == 0:
                raise BadInput(f"{len(images)} training images per process is fewer than one "
                               f"batch of {cfg.batch_size}; lower --batch-size")
        else:
            loader, sampler = make_train_loader(train_pairs, cfg, crop, input_size,
                                                spec.ignore_index, info, start_epoch)
        epochs = cfg.epochs
        total_steps = epochs * len(loader)
        if info.is_main:  # only now: bad input found above leaves no directory behind
            out.mkdir(parents=True, exist_ok=True)
            log(f"training {name} on {spec.name}: {len(train_pairs)} train / {len(val_pairs)} "
                f"val images, crop {crop[0]}x{crop[1]}, input {input_size[0]}x{input_size[1]}, "
                f"{info.world_size} process(es) on {device.type}, "
                f"amp={metadata.extra['recipe']['amp']}"
                + (", batches made on the device" if cfg.data_on_device else ""))

        train_seconds_total = sum(e.get("train_seconds", 0.0) for e in history)
        epoch_times: list[float] = []
        logged_plan = cfg.epochs
        cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: autotune once
        try:
            epoch = start_epoch
            while epoch < epochs:
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                t0 = time.perf_counter()
                loss, step = train_one_epoch(model, loader, criterion, optimizer, device, dtype,
                                             scaler, cfg.lr, step, total_steps, info,
                                             show_progress and info.is_main,
                                             f"epoch {epoch + 1}/{epochs}")
                train_seconds = time.perf_counter() - t0
                train_seconds_total += train_seconds
                epoch_times.append(train_seconds)
                epoch += 1
                # pace: the median of the last few epochs, the first (autotuning) left out
                pace = float(np.median(epoch_times[1:][-5:] or epoch_times))
                fitted = planned_epochs(cfg.epochs, epoch, train_seconds_total, pace,
                                        cfg.time_budget_s)
                fitted = int(ddp.broadcast_tensor(torch.tensor(fitted, device=device), info))
                if fitted != epochs:
                    if info.is_main and abs(fitted - logged_plan) > 0.1 * logged_plan:
                        logged_plan = fitted  # say so when the plan moves by more than 10 %
                        log(f"--time-budget {cfg.time_budget_s:.0f} s: {fitted} epochs fit "
                            f"(at {pace:.2f} s/epoch)")
                    epochs, total_steps = fitted, fitted * len(loader)
                losses = ddp.all_gather_objects(loss, info)
                entry = {"epoch": epoch, "loss": float(np.mean(losses)),
                         "lr": poly_lr(cfg.lr, step, total_steps),
                         "train_seconds": train_seconds}
                if epoch % max(cfg.val_every, 1) and epoch < epochs:
                    history.append(entry)
                    continue
                ddp.broadcast_buffers(segmenter, info)
                scores = validate(segmenter, metadata, val_pairs, cfg, device,
                                  info).report(spec.class_names)
                miou = scores["miou"]
                entry.update(val_miou=miou, val_pixel_accuracy=scores["pixel_accuracy"])
                history.append(entry)
                if info.is_main:
                    meta = metadata.with_updates(val_miou=miou, epoch=epoch,
                                                 per_class_iou=scores["per_class_iou"])
                    save_checkpoint(out / "last.safetensors", segmenter, meta)
                    if miou > best or not (out / "best.safetensors").exists():
                        best = max(miou, best)
                        save_checkpoint(out / "best.safetensors", segmenter, meta)
                    _save_state(state_path, segmenter, optimizer, epoch, step, best, history,
                                run_id)
                    write_json(out / "history.json", {"model": name, "dataset": spec.name,
                                                       "epochs": history})
                    log(f"epoch {epoch}/{epochs}: loss {entry['loss']:.4f}, "
                        f"val mIoU {miou:.4f} (best {best:.4f}), {train_seconds:.1f} s")
                ddp.barrier(info)
        finally:
            torch.backends.cudnn.benchmark = cudnn_benchmark
        return {"best_miou": best, "epochs": epochs, "out": str(out),
                "train_seconds": train_seconds_total}
    finally:
        ddp.shutdown(info)
