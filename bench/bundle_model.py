"""Bundle a trained checkpoint as the default model: fp16 safetensors in ``engines/``.

Casts the weights to fp16 (half the size), scores the *bundled file* with ``rtseg eval``'s
code on the val split, and writes that score into the file's metadata, so the model card,
the metadata and ``tests/test_bundled_model.py`` all quote the same number.

    python bench/bundle_model.py --checkpoint runs/gpu/unet_vgg16/best.safetensors \
        --history runs/gpu/unet_vgg16/history.json --data-root ../shared/data/camvid \
        --out engines/unet_vgg16_camvid.safetensors --hardware "one NVIDIA H200" --input-size 288x384
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rtseg.backends import open_engine
from rtseg.scoring.evaluate import evaluate
from rtseg.models import load_checkpoint, save_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hardware", required=True)
    p.add_argument("--input-size", help="HxW the bundled model runs at (default: as trained); "
                                        "smaller is faster on a CPU, at some cost in mIoU")
    args = p.parse_args()

    segmenter, meta = load_checkpoint(args.checkpoint)
    epochs = json.loads(args.history.read_text())["epochs"]
    train_hours = sum(e["train_seconds"] for e in epochs) / 3600
    if args.input_size:
        size = [int(v) for v in args.input_size.split("x")]
        meta = meta.with_updates(trained_input_size=meta.input_size, input_size=size)
    meta = meta.with_updates(
        bundled_from=str(args.checkpoint), training_hardware=args.hardware,
        training_hours=round(train_hours, 3), training_seconds=round(train_hours * 3600, 1),
        epochs_trained=len(epochs),
        checkpoint_val_miou=meta.extra.get("val_miou"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, segmenter, meta, dtype=torch.float16)

    with open_engine(args.out, "cpu") as backend:
        report = evaluate(backend, meta.dataset, args.data_root, "val")
    meta = meta.with_updates(precision="fp16", val_miou=report["miou"],
                             per_class_iou=report["per_class_iou"])
    save_checkpoint(args.out, segmenter, meta, dtype=torch.float16)
    report["engine"] = str(args.out)
    args.out.with_suffix(".eval.json").write_text(json.dumps(report, indent=2) + "\n")
    size_mb = args.out.stat().st_size / 2**20
    print(f"{args.out}: {size_mb:.1f} MiB, val mIoU {report['miou']:.4f} "
          f"(checkpoint said {meta.extra['checkpoint_val_miou']:.4f}), "
          f"{len(epochs)} epochs, {train_hours:.2f} h on {args.hardware}")


if __name__ == "__main__":
    main()
