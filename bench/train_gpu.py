"""Train the report's four models from scratch on CamVid on one GPU, within a time budget,
and write their weights, histories and scores.

Every model goes through ``rtseg.training.train`` (the code behind ``rtseg train``) with one recipe
(but for the batch size of the ResNet-50 models, below):
frames decoded once and augmented on the GPU (``--data-on-device``: random scale 0.75–1.5 of
the 352×480 network input, random crop, flip, colour jitter and a per-channel colour cast —
CamVid's skies are grey, a dashcam's often blue), ENet class weights, AdamW with poly decay,
bf16 autocast, channels_last, validation on the 101 val frames every ``--val-every`` epochs
(best checkpoint kept). Each model gets the same share of the budget (the same GPU time: how
much a model learns in a fixed time is part of the comparison), and its epoch count is fitted
to that share by ``--time-budget`` as its epochs are timed. ``--wall-limit`` bounds the whole
run: a model's share shrinks when the models before it (decoding, validation, the cuDNN
autotuning of a first epoch) took longer than planned. ResNet-50 models train with larger
batches (``--batch-sizes``): at batch 16 their epochs were bound by per-step overhead. A
model whose run dies (out of memory, a non-finite loss) is reported and the others go on.
Runs are resumable: an interrupted model restarts from its last saved state (written at most
a minute apart).

    python bench/train_gpu.py --data-root ../shared/data/camvid --runs runs/gpu --budget 440
    python bench/train_gpu.py --dry-run --data-root ../shared/data/camvid --runs /tmp/dry

It writes, per model, ``RUNS/MODEL/best.safetensors`` and ``last.safetensors`` (what
``rtseg train`` writes), ``history.json`` and the predictions of ``--picture-frames``
(``pred_FRAME.png``, for bench/side_by_side.py); and ``RUNS/summary.json``: the recipe, the
GPU, and per model its best val mIoU, epochs, per-class IoU and seconds.
"""

from __future__ import annotations

import argparse
import platform
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch

from rtseg.backends import open_engine
from rtseg.files import write_json
from rtseg.data import read_image
from rtseg.imageops import resize_frame, resize_nearest
from rtseg.models import load_checkpoint
from rtseg.training.config import TrainConfig
from rtseg.training.train import train

MODELS = ("segnet_r50", "unet_r50", "unet_vgg16", "segnet_vgg16")
PICTURE_FRAMES = "0016E5_07959,0016E5_08093,0016E5_08159"  # first, busiest, last val frame
R50_BATCH = "segnet_r50=32,unet_r50=32"
FIRST_OVERHEAD_S = 60.0  # per model, before one was measured (H200: 41–66 s at 140–210 s shares)
MIN_BUDGET_S = 20.0


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's architecture."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.machine()})"


def train_all(args) -> dict:
    """Train every model of ``args.models`` in turn; the summary of what each one reached."""
    models = args.models.split(",")
    batch_sizes = model_batch_sizes(args.batch_sizes, models, args.batch_size)
    start = time.perf_counter()
    summary = {"device": device_name(args.device), "torch": torch.__version__,
               "budget_s": args.budget, "recipe": {
                   "crop": list(args.crop), "input_size": list(args.input_size),
                   "batch_size": batch_sizes, "lr": args.lr, "max_epochs": args.epochs,
                   "val_every": args.val_every, "data_on_device": True, "amp": "bf16 on CUDA",
                   "colour_cast": args.colour_cast, "wall_limit_s": args.wall_limit},
               "models": {}}
    for k, name in enumerate(models):
        out = args.runs / name
        done = [r for r in summary["models"].values() if "train_seconds" in r]
        budget = model_budget(args.budget, len(models), k, time.perf_counter() - start,
                              args.wall_limit, overhead_s=max(
                                  [r["wall_seconds"] - r["train_seconds"] for r in done],
                                  default=FIRST_OVERHEAD_S))
        cfg = TrainConfig(model=name, dataset="camvid", data_root=args.data_root, out=out,
                          epochs=args.epochs, batch_size=batch_sizes[name], crop=args.crop,
                          input_size=args.input_size, lr=args.lr, device=args.device,
                          resume=(out / "train_state.pt").is_file(), seed=0,
                          workers=args.workers, data_on_device=True, val_every=args.val_every,
                          time_budget_s=budget, train_limit=args.train_limit,
                          val_limit=args.val_limit, colour_cast=args.colour_cast,
                          init=args.init, teacher=args.teacher)
        t0 = time.perf_counter()
        print(f"== {name}: budget {budget:.0f} s of training steps, batch {batch_sizes[name]}",
              flush=True)
        try:
            result = train(cfg, log=lambda s: print(f"   {s}", flush=True))
            _, meta = load_checkpoint(out / "best.safetensors")
            save_predictions(out / "best.safetensors", args.data_root,
                             args.picture_frames.split(","), args.device)
            summary["models"][name] = {
                "best_val_miou": result["best_miou"], "epochs": result["epochs"],
                "best_epoch": meta.extra.get("epoch"),
                "per_class_iou": meta.extra.get("per_class_iou"),
                "train_seconds": round(result["train_seconds"], 1),
                "wall_seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # one model's failure must not cost the others their run
            traceback.print_exc()
            summary["models"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                       "wall_seconds": round(time.perf_counter() - t0, 1)}
        print(f"   {name}: {summary['models'][name]}", flush=True)
        write_summary(args.runs, summary)
    return summary


def model_batch_sizes(spec: str, models: list[str], default: int) -> dict[str, int]:
    """``"segnet_r50=32,unet_r50=32"`` → a batch size for every model (``default`` for the
    models not named)."""
    named = dict(item.split("=") for item in spec.split(",") if item)
    return {m: int(named.get(m, default)) for m in models}


def model_budget(total_s: float, models: int, index: int, elapsed_s: float,
                 wall_limit_s: float | None, overhead_s: float) -> float:
    """Seconds of training steps for model ``index`` of ``models``: an even share of
    ``total_s``, less when what is left of ``wall_limit_s`` (after ``elapsed_s``, and
    ``overhead_s`` of decoding and validation for this and every later model) cannot hold
    it; never below MIN_BUDGET_S."""
    share = total_s / models
    if wall_limit_s is None:
        return share
    left = wall_limit_s - elapsed_s - overhead_s * (models - index)
    return max(MIN_BUDGET_S, min(share, left / (models - index)))


def save_predictions(weights: Path, data_root: Path, frames: list[str], device: str) -> None:
    """``pred_NAME.png`` label maps of the val frames ``frames`` beside ``weights`` (a few KB
    each), so bench/side_by_side.py can draw every model from the run folder alone."""
    with open_engine(weights, device) as backend:
        for name in frames:
            path = data_root / "val" / f"{name}.png"
            if not path.is_file():
                continue
            image = read_image(path)
            labels = backend.infer(resize_frame(image, tuple(backend.input_size))[None])[0]
            labels = resize_nearest(np.ascontiguousarray(labels), image.shape[:2])
            cv2.imwrite(str(weights.parent / f"pred_{name}.png"), labels)


def write_summary(runs: Path, summary: dict) -> None:
    """``runs/summary.json``, replaced atomically."""
    runs.mkdir(parents=True, exist_ok=True)
    write_json(runs / "summary.json", summary)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--runs", type=Path, default=Path("runs/gpu"))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--budget", type=float, default=440.0,
                   help="seconds of training steps for all models together")
    p.add_argument("--epochs", type=int, default=1000, help="upper bound; the budget decides")
    p.add_argument("--crop", default="256x352", help="training crop HxW")
    p.add_argument("--input-size", default="352x480", help="network input HxW (validation)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-sizes", default=R50_BATCH,
                   help="per-model batch sizes, MODEL=N,... (others: --batch-size)")
    p.add_argument("--colour-cast", type=float, default=0.1,
                   help="per-channel colour gain range 1±X in the augmentation (0: off)")
    p.add_argument("--wall-limit", type=float, default=540.0,
                   help="seconds the whole run may take; model budgets shrink to fit")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--init", type=Path,
                   help="start every model from these weights (rtseg train --init), e.g. the "
                        "light model: rtseg prune of the bundled weights, then --models unet_vgg16")
    p.add_argument("--teacher", type=Path,
                   help="distil every model from these weights (rtseg train --teacher), e.g. "
                        "the bundled unet_vgg16 for the light model")
    p.add_argument("--val-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default="cuda")
    p.add_argument("--train-limit", type=int)
    p.add_argument("--val-limit", type=int)
    p.add_argument("--picture-frames", default=PICTURE_FRAMES,
                   help="val frames whose predictions are saved for bench/side_by_side.py")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, tiny crops, 2 epochs, 8 frames: every code path in a minute")
    args = p.parse_args()
    if args.dry_run:
        args.device, args.crop, args.batch_size, args.epochs = "cpu", "64x96", 4, 2
        args.input_size = "64x96"
        args.val_every, args.budget, args.workers = 1, 1e6, 2
        args.train_limit, args.val_limit = 8, 2
        args.batch_sizes, args.wall_limit = "", None
    args.crop = tuple(int(v) for v in args.crop.split("x"))
    args.input_size = tuple(int(v) for v in args.input_size.split("x"))

    train_all(args)


if __name__ == "__main__":
    main()
