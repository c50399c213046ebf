"""Choose a training recipe that generalises, on evidence, then train the model to ship with
it, in at most 8 minutes on one H100 or H200.

1. **Ablation on a held-out sequence.** ``--model`` (unet_vgg16) is trained from scratch
   with the baseline recipe (bench/train_gpu.py's: random scale 0.75–1.5, crop, flip, colour
   jitter, colour cast ±10 %, ENet-weighted cross-entropy, AdamW 2e-3 with poly decay, bf16,
   batches made on the GPU) and with each option of ``--variants`` changed alone: ``scale``
   (``--scale-range 0.5,2.0``), ``camera`` (``--camera-augment``), ``ohem`` and ``dice``
   (``--loss ohem``, ``--loss ce+dice``). Each trains on the training frames outside
   ``--holdout`` (CamVid: 0001TP and 0016E5, 266 frames) for the same number of epochs
   (``--ablation-epochs``: equal epochs, not equal seconds, so that neither the first run's
   cuDNN autotuning nor a costlier augmentation or loss decides the comparison; a time cap
   keeps the wall limit) and is scored on the held-out sequence (0006R0, 101 frames: a road it never saw), the best kept; its
   best weights are then scored on val (0016E5, a clip of a trained sequence) too. The
   held-out gap is val mIoU − held-out mIoU: how much val flatters the model.
2. **Choice.** The baseline plus every option that raised the held-out mIoU by at least
   ``--min-gain`` (of the two losses, the better one). When that combines two or more options
   it is trained and scored like the variants (``chosen``), so its own gap is measured.
3. **The model to ship.** The chosen recipe on train and val (``--train-on-val``, 468 frames)
   for ``--final-budget`` seconds; it is validated on val, whose frames it trained on (that
   score is reported, and is no estimate).

Every run is ``rtseg.training.train`` (the code of ``rtseg train``). Budgets are seconds of
training steps; they shrink together when what is left of ``--wall-limit`` cannot hold them
with the overhead measured so far (decoding, the first epoch's cuDNN autotuning, validation).

    python bench/recipe_gpu.py --data-root ../shared/data/camvid --runs runs/recipe
    python bench/recipe_gpu.py --dry-run --data-root ../shared/data/camvid --runs /tmp/dry

It writes ``RUNS/NAME/`` per run (what ``rtseg train`` writes), the predictions of the model
to ship on three val frames (``RUNS/final/pred_FRAME.png``, for bench/side_by_side.py) and
``RUNS/recipe.json``: the device, the base recipe, per run its options, held-out and val mIoU,
per-class IoU of both, the gap, epochs and seconds; the choice and why; the gap before (the
baseline's) and after (the chosen recipe's); and the final run's.
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path

import torch

from rtseg.backends import open_engine
from rtseg.files import write_json
from rtseg.models import read_checkpoint_metadata
from rtseg.scoring.evaluate import evaluate
from rtseg.training.config import TrainConfig
from rtseg.training.train import train
from train_gpu import PICTURE_FRAMES, device_name, save_predictions

VARIANTS = {"baseline": {}, "scale": {"scale_range": (0.5, 2.0)},
            "camera": {"camera_augment": True}, "ohem": {"loss": "ohem"},
            "dice": {"loss": "ce+dice"}}
FIRST_OVERHEAD_S = 25.0  # per run, before one was measured (decoding, autotuning, validation)
MIN_BUDGET_S = 5.0


def fit_budgets(planned: list[float], elapsed_s: float, wall_limit_s: float | None,
                overhead_s: float) -> list[float]:
    """The remaining runs' budgets: as ``planned``, or all scaled down by one factor when the
    wall time left (less ``overhead_s`` per run) cannot hold them; never below MIN_BUDGET_S."""
    if wall_limit_s is None or not planned:
        return list(planned)
    room = wall_limit_s - elapsed_s - overhead_s * len(planned)
    factor = min(1.0, max(room, 0.0) / sum(planned))
    return [max(MIN_BUDGET_S, b * factor) for b in planned]


def choose(results: dict, min_gain: float) -> tuple[dict, list[str]]:
    """(the chosen recipe options, the variants kept): the baseline plus every variant whose
    held-out mIoU beat the baseline's by ``min_gain``; of several losses, the best one."""
    base = results.get("baseline", {}).get("holdout_miou")
    if base is None:
        return {}, []
    helped = sorted((r["holdout_miou"], name) for name, r in results.items()
                    if name in VARIANTS and name != "baseline"
                    and r.get("holdout_miou") is not None
                    and r["holdout_miou"] - base >= min_gain)
    options, kept = {}, []
    for _, name in reversed(helped):  # best first: a later loss does not replace a better one
        if "loss" in VARIANTS[name] and "loss" in options:
            continue
        options.update(VARIANTS[name])
        kept.append(name)
    return options, kept


def run_one(args, name: str, options: dict, budget: float, holdout: str | None,
            train_on_val: bool) -> dict:
    """Train one run of ``args.model`` with ``options`` (with ``holdout``: an ablation run
    of ``args.ablation_epochs`` epochs, ``budget`` seconds at most; else as many epochs as
    ``budget`` holds); its scores (held-out and val when ``holdout``, else val) and times.
    An exception is left to the caller."""
    out = args.runs / name
    cfg = TrainConfig(model=args.model, dataset="camvid", data_root=args.data_root, out=out,
                      epochs=args.ablation_epochs if holdout else args.epochs, batch_size=args.batch_size, crop=args.crop,
                      input_size=args.input_size, lr=args.lr, device=args.device,
                      resume=(out / "train_state.pt").is_file(), seed=0, workers=args.workers,
                      data_on_device=True, val_every=args.val_every, time_budget_s=budget,
                      train_limit=args.train_limit, val_limit=args.val_limit,
                      colour_cast=args.colour_cast, holdout_sequence=holdout,
                      train_on_val=train_on_val, **options)
    t0 = time.perf_counter()
    print(f"== {name}: {options or 'baseline'}, "
          + (f"{cfg.epochs} epochs, at most " if holdout else "")
          + f"{budget:.0f} s of training steps"
          + (f", held out {holdout}" if holdout else "") + (", train+val" if train_on_val else ""),
          flush=True)
    result = train(cfg, log=lambda s: print(f"   {s}", flush=True))
    meta = read_checkpoint_metadata(out / "best.safetensors")
    row = {"options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
           "epochs": result["epochs"], "best_epoch": meta.extra.get("epoch"),
           "budget_s": round(budget, 1), "train_seconds": round(result["train_seconds"], 1)}
    if holdout:
        row["capped"] = result["epochs"] < cfg.epochs  # the time cap, not the epochs, ended it
        with open_engine(out / "best.safetensors", args.device) as backend:
            val = evaluate(backend, "camvid", args.data_root, "val", limit=args.val_limit)
        row.update(holdout_miou=result["best_miou"],
                   holdout_per_class_iou=meta.extra.get("per_class_iou"),
                   val_miou=val["miou"], val_per_class_iou=val["per_class_iou"],
                   gap=round(val["miou"] - result["best_miou"], 4))
    else:
        row.update(val_miou=result["best_miou"], val_per_class_iou=meta.extra.get("per_class_iou"),
                   val_note="val frames were trained on: not an estimate of generalisation")
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return row


def run_recipe(args) -> dict:
    """The ablation, the choice, the combined run when needed and the model to ship; the
    results document (also written to ``RUNS/recipe.json`` after every run)."""
    start = time.perf_counter()
    variants = [v for v in args.variants.split(",") if v]
    doc = {"device": device_name(args.device), "torch": torch.__version__, "model": args.model,
           "holdout_sequence": args.holdout, "wall_limit_s": args.wall_limit,
           "base_recipe": {"crop": list(args.crop), "input_size": list(args.input_size),
                           "batch_size": args.batch_size, "lr": args.lr,
                           "val_every": args.val_every, "colour_cast": args.colour_cast,
                           "ablation_epochs": args.ablation_epochs,
                           "data_on_device": True, "amp": "bf16 on CUDA"},
           "min_gain": args.min_gain, "runs": {}}
    # planned: each variant, the combined recipe (dropped if not needed), the final run
    plan = [args.ablation_budget] * (len(variants) + 1) + [args.final_budget]

    def next_budget() -> float:
        done = [r for r in doc["runs"].values() if "train_seconds" in r]
        overhead = max([r["wall_seconds"] - r["train_seconds"] for r in done],
                       default=FIRST_OVERHEAD_S)
        return fit_budgets(plan, time.perf_counter() - start, args.wall_limit, overhead)[0]

    def attempt(name, options, holdout, train_on_val):
        budget = next_budget()
        plan.pop(0)
        try:
            doc["runs"][name] = run_one(args, name, options, budget, holdout, train_on_val)
        except Exception as exc:  # one run's failure must not cost the others theirs
            traceback.print_exc()
            doc["runs"][name] = {"options": options, "error": f"{type(exc).__name__}: {exc}"}
        print(f"   {name}: {doc['runs'][name]}", flush=True)
        write_json(args.runs / "recipe.json", {**doc, "elapsed_s": elapsed()})

    def elapsed() -> float:
        return round(time.perf_counter() - start, 1)

    args.runs.mkdir(parents=True, exist_ok=True)
    for name in variants:
        attempt(name, VARIANTS[name], args.holdout, False)
    options, kept = choose(doc["runs"], args.min_gain)
    chosen_run = kept[0] if len(kept) == 1 else ("baseline" if not kept else "chosen")
    if len(kept) > 1:
        attempt("chosen", options, args.holdout, False)
    else:
        plan.pop(0)
    before = doc["runs"].get("baseline", {}).get("gap")
    doc["choice"] = {"options": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in options.items()},
                     "kept": kept, "measured_as": chosen_run,
                     "rule": f"the baseline plus every option whose held-out mIoU beat the "
                             f"baseline's by >= {args.min_gain} (of the losses, the best)"}
    doc["gap"] = {"before": before, "after": doc["runs"].get(chosen_run, {}).get("gap")}
    attempt("final", options, None, True)
    final = args.runs / "final" / "best.safetensors"
    if "error" not in doc["runs"]["final"]:
        save_predictions(final, args.data_root, PICTURE_FRAMES.split(","), args.device)
        doc["runs"]["final"]["weights"] = str(final)
    doc["elapsed_s"] = elapsed()
    write_json(args.runs / "recipe.json", doc)
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--runs", type=Path, default=Path("runs/recipe"))
    p.add_argument("--model", default="unet_vgg16")
    p.add_argument("--holdout", default="0006R0", help="the training sequence held out")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"ablation runs, from: {', '.join(VARIANTS)}")
    p.add_argument("--ablation-epochs", type=int, default=40,
                   help="epochs of each ablation run (the same for all)")
    p.add_argument("--ablation-budget", type=float, default=30.0,
                   help="seconds of training steps an ablation run may take at most")
    p.add_argument("--final-budget", type=float, default=100.0,
                   help="seconds of training steps of the model to ship")
    p.add_argument("--wall-limit", type=float, default=440.0,
                   help="seconds the whole call may take; budgets shrink to fit")
    p.add_argument("--min-gain", type=float, default=0.005,
                   help="held-out mIoU an option must add to be kept")
    p.add_argument("--epochs", type=int, default=1000, help="upper bound; the budget decides")
    p.add_argument("--crop", default="256x352", help="training crop HxW")
    p.add_argument("--input-size", default="352x480", help="network input HxW")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--colour-cast", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-every", type=int, default=10)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default="cuda")
    p.add_argument("--train-limit", type=int)
    p.add_argument("--val-limit", type=int)
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, 32x64 crops, 1 epoch of 4 frames a run: every code path in a minute "
                        "or two (less with --model unet_resnet18 --variants baseline,camera,dice)")
    args = p.parse_args()
    unknown = set(args.variants.split(",")) - set(VARIANTS) - {""}
    if unknown:
        p.error(f"--variants: unknown {', '.join(sorted(unknown))}; from {', '.join(VARIANTS)}")
    if args.dry_run:
        args.device, args.crop, args.input_size, args.batch_size = "cpu", "32x64", "32x64", 2
        args.epochs, args.ablation_epochs, args.val_every, args.workers = 1, 1, 1, 2
        args.train_limit, args.val_limit, args.wall_limit = 4, 2, None
        args.ablation_budget = args.final_budget = 1e6
        args.min_gain = -1.0  # every option "helps": the combined run and its choice run too
    args.crop = tuple(int(v) for v in args.crop.split("x"))
    args.input_size = tuple(int(v) for v in args.input_size.split("x"))
    run_recipe(args)


if __name__ == "__main__":
    main()
