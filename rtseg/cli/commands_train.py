"""``rtseg train`` and ``rtseg eval``."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rtseg.cli.common import (PRECISION_HELP, Dataset, Device, Precision, Split, app,
                              interrupted_exit, log)
from rtseg.errors import BadInput
from rtseg.files import ensure_parent, write_json
from rtseg.metadata import parse_size


class Loss(str, Enum):
    """rtseg.training.losses.LOSSES."""
    ce = "ce"
    ohem = "ohem"
    ce_dice = "ce+dice"


def parse_range(text: Optional[str], flag: str) -> Optional[tuple[float, float]]:
    """``"0.5,2.0"`` → (0.5, 2.0); None for None; BadInput otherwise."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise BadInput(f"{flag} {text}: expected LOW,HIGH, e.g. 0.5,2.0") from None
    return lo, hi


@app.command()
def train(
    model: str = typer.Option(..., help="unet_vgg16, unet_r50, segnet_vgg16, segnet_r50 "
                                        "(or unet_<smp encoder>)."),
    dataset: Dataset = typer.Option(..., help="Label set of --data-root (folder: your own, "
                                              "DIR/classes.yaml)."),
    data_root: Path = typer.Option(..., help="CamVid (SegNet layout), Cityscapes or folder "
                                             "(images/, labels/, classes.yaml) root."),
    epochs: int = typer.Option(100, min=1),
    batch_size: int = typer.Option(8, min=1, help="Per process."),
    crop: Optional[str] = typer.Option(None, help="Training crop HxW (default per dataset)."),
    input_size: Optional[str] = typer.Option(
        None, help="Network input HxW for validation and deployment (default per dataset)."),
    lr: float = typer.Option(1e-3, min=0.0),
    device: Device = typer.Option(Device.auto),
    out: Path = typer.Option(Path("runs/train"), help="Output directory."),
    resume: bool = typer.Option(False, help="Continue from OUT/train_state.pt."),
    encoder_weights: str = typer.Option("none", help="none, imagenet or a local weights file."),
    init: Optional[Path] = typer.Option(
        None, help="Start from these weights: a checkpoint of the same model and classes "
                   "(a pruned one from rtseg prune keeps its narrower layers)."),
    amp: Optional[bool] = typer.Option(
        None, help="Mixed precision: bf16 autocast (fp16 + loss scaling on GPUs older than "
                   "compute capability 8.0); default on for CUDA."),
    workers: int = typer.Option(2, min=0, help="Data-loader processes."),
    seed: int = typer.Option(0),
    train_limit: Optional[int] = typer.Option(None, min=1, help="First N training images."),
    val_limit: Optional[int] = typer.Option(None, min=1, help="First N val images."),
    holdout_sequence: Optional[str] = typer.Option(
        None, help="Validate on the training frames whose names start with this (a sequence "
                   "the model never trains on, e.g. 0006R0) instead of the val split."),
    train_on_val: bool = typer.Option(
        False, help="Train on the val split too (a model to ship, once the recipe is fixed); "
                    "its val score is then on trained frames."),
    scale_range: Optional[str] = typer.Option(
        None, help="Random scale LOW,HIGH of the network input before the crop "
                   "(0.75,1.5)."),
    camera_augment: bool = typer.Option(
        False, help="Augment for other cameras: stronger colour jitter and cast, gamma, "
                    "blur, noise and JPEG re-encoding."),
    loss: Loss = typer.Option(Loss.ce, help="ce: ENet-weighted cross-entropy; ohem: the "
                                            "same on the hardest pixels; ce+dice: plus a "
                                            "soft Dice term (rare thin classes)."),
    teacher: Optional[Path] = typer.Option(
        None, help="Distil from these trained weights of any model with the same classes: "
                   "their logits on every training frame, computed once, are a second target "
                   "(implies --data-on-device)."),
    distill_weight: Optional[float] = typer.Option(
        None, help="Weight W of the teacher term: --loss + W x T^2 x KL(teacher || student) "
                   "(1.0)."),
    distill_temperature: Optional[float] = typer.Option(
        None, help="Temperature T that softens both class distributions (2.0)."),
    data_on_device: bool = typer.Option(
        False, help="Decode the training frames once, keep them on the device and augment "
                    "whole batches there (GPU training: no data-loader bottleneck)."),
    val_every: int = typer.Option(1, min=1, help="Validate every N epochs (and after the last)."),
    time_budget: Optional[float] = typer.Option(
        None, min=1.0, help="Seconds of training steps: the epoch count shrinks to fit "
                            "(the poly schedule follows)."),
):
    """Train a model; writes OUT/best.safetensors, OUT/last.safetensors, history.json.

    \b
    Examples:
      1. rtseg train --model segnet_r50 --dataset camvid --data-root data/camvid --epochs 200
      2. torchrun --standalone --nproc_per_node 8 -m rtseg train --model unet_r50 ...
      3. rtseg train ... --device cuda --data-on-device --batch-size 16 --time-budget 600
      4. rtseg train --model unet_r50 --dataset folder --data-root my_data   (own classes)
      5. rtseg train ... --holdout-sequence 0006R0   (scored on a road it never saw)
      6. rtseg train --model unet_vgg16 --init slim.safetensors --teacher engines/unet_vgg16_camvid.safetensors ...
    """
    from rtseg.training.config import TrainConfig
    from rtseg.training.distributed import is_main
    from rtseg.training.train import train as run_training

    recipe = {"scale_range": parse_range(scale_range, "--scale-range")} if scale_range else {}
    distill = {k: v for k, v in (("distill_weight", distill_weight),
                                 ("distill_temperature", distill_temperature)) if v is not None}
    if distill and teacher is None:
        raise BadInput("--distill-weight and --distill-temperature need --teacher FILE")
    recipe.update(distill)
    cfg = TrainConfig(model=model, dataset=dataset.value, data_root=data_root, out=out,
                      epochs=epochs, batch_size=batch_size, crop=parse_size(crop, "--crop"),
                      input_size=parse_size(input_size, "--input-size"), lr=lr,
                      device=device.value, amp=amp, resume=resume,
                      encoder_weights=encoder_weights, init=init, seed=seed, workers=workers,
                      train_limit=train_limit, val_limit=val_limit,
                      holdout_sequence=holdout_sequence, train_on_val=train_on_val,
                      camera_augment=camera_augment, loss=loss.value, **recipe,
                      teacher=teacher, data_on_device=data_on_device, val_every=val_every,
                      time_budget_s=time_budget)
    result = _train_until_stopped(cfg, run_training)
    if result["interrupted"]:  # the state is saved: Ctrl-C 130, SIGTERM 143, SIGHUP 129
        raise typer.Exit(interrupted_exit())
    if is_main():
        print(f"best val mIoU {result['best_miou']:.4f}; weights in {result['out']}/best.safetensors")


@app.command()
def prune(
    checkpoint: Path = typer.Option(..., help="Trained weights (.safetensors) of a UNet model."),
    out: Path = typer.Option(..., help="Pruned weights to write (.safetensors)."),
    ratio: float = typer.Option(0.6, help="Fraction of every layer's channels to remove "
                                          "(0-1; the FLOPs fall by about (1-ratio)^2)."),
):
    """Remove the weakest channels of every layer (L1 norm), for a lighter network;
    fine-tune the result with rtseg train --init.

    \b
    Examples:
      1. rtseg prune --checkpoint engines/unet_vgg16_camvid.safetensors --out slim.safetensors
      2. rtseg train --model unet_vgg16 --init slim.safetensors --dataset camvid --data-root ...
    """
    from rtseg.training.prune import prune_checkpoint

    ensure_parent(out, "--out")
    result = prune_checkpoint(checkpoint, ratio, out)
    print(f"{result['gflops_before']:.1f} -> {result['gflops_after']:.1f} GFLOPs a frame, "
          f"{result['params_before'] / 1e6:.2f} M -> {result['params_after'] / 1e6:.2f} M "
          f"parameters; fine-tune {out} with rtseg train --init (its accuracy is lost at the cut)")


def _train_until_stopped(cfg, run_training) -> dict:
    """Train; Ctrl-C, SIGTERM or SIGHUP stops before the next batch with the resumable state
    saved, a second one at once."""
    import threading

    from rtseg.signals import forward_stop_signals, signal_name

    stop = threading.Event()

    def on_stop(signum: int) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log(f"{signal_name(signum)}: stopping before the next batch and saving the training "
            f"state ({signal_name(signum)} again to stop at once)")

    with forward_stop_signals(on_stop):
        return run_training(cfg, log=log, show_progress=sys.stderr.isatty(), stop=stop)


@app.command("eval")
def eval_(
    engine: Path = typer.Option(..., help=".safetensors, .onnx, .plan or .engine"),
    dataset: Dataset = typer.Option(...),
    data_root: Path = typer.Option(...),
    split: Split = typer.Option(Split.val),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON."),
    grid: Optional[Path] = typer.Option(None, help="Write input | truth | prediction PNGs here."),
    batch_size: int = typer.Option(4, min=1),
    limit: Optional[int] = typer.Option(None, min=1, help="First N images only."),
    device: Device = typer.Option(Device.auto),
    precision: Precision = typer.Option(Precision.auto, help=PRECISION_HELP),
    holdout_sequence: Optional[str] = typer.Option(
        None, help="Score the train split's frames whose names start with this (as rtseg "
                   "train --holdout-sequence validated on) instead of --split."),
):
    """Score an engine on a labelled split (mIoU, per-class IoU, pixel accuracy)."""
    from rtseg.backends import open_engine
    from rtseg.scoring.evaluate import evaluate

    if holdout_sequence is not None and split != Split.val:
        raise BadInput(f"--holdout-sequence scores frames of the train split; leave out "
                       f"--split {split.value}")
    ensure_parent(json_path, "--json")
    with open_engine(engine, device.value, precision.value) as backend:
        result = evaluate(backend, dataset.value, data_root, split.value, batch_size, limit,
                          grid, holdout=holdout_sequence)
    result = {"engine": str(engine), **result}
    for name, iou in result["per_class_iou"].items():
        print(f"  {name:<14} {'   n/a' if iou is None else f'{iou:6.4f}'}")
    print(f"mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
          f"({result['images']} images, {result['backend']})")
    if result.get("tc") is not None:  # the split is one clip (CamVid val)
        print(f"TC {result['tc']:.4f}  temporal consistency over {result['tc_pairs']} "
              f"consecutive pairs ({100 * result['tc_flow_rejected']:.1f}% of pixels "
              "flow-rejected)")
    if json_path:
        write_json(json_path, result)


