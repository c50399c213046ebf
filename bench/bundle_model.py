"""Bundle a trained checkpoint as the default model: fp16 safetensors in ``engines/`` and,
with ``--int8-calib``, the int8 deploy graph ``rtseg run`` uses by default on a CPU.

Casts the weights to fp16 (half the size), scores the *bundled file* with ``rtseg eval``'s
code on the val split, and writes that score into the file's metadata, so the model card,
the metadata and ``tests/test_bundled_model.py`` all quote the same number. With
``--int8-calib SRC`` the fp16 file is also exported as an int8 Q/DQ graph calibrated on SRC
(what ``rtseg export --int8 --calib SRC`` writes), which is scored the same way and gets its
own score in its metadata (``OUT_int8.onnx``, ``OUT_int8.eval.json``). The int8 graph is
ONNX Runtime's CPU layout by default (``--int8-target cpu``: it is what ``rtseg run`` runs on
a CPU; a GPU runs the fp16 weights). ``--fp32-graph`` also writes the fp32 deploy graph
``OUT_fp32.onnx`` (the light model's form for CPUs without VNNI or AMX). ``--int8-only`` remakes
just the int8 graph from the bundled OUT.

    python bench/bundle_model.py --checkpoint runs/gpu/unet_vgg16/best.safetensors \
        --history runs/gpu/unet_vgg16/history.json --data-root ../shared/data/camvid \
        --out engines/unet_vgg16_camvid.safetensors --hardware "one NVIDIA H200" \
        --input-size 256x352 --int8-calib ../shared/data/camvid/train
    python bench/bundle_model.py --out engines/unet_vgg16_camvid.safetensors --int8-only \
        --data-root ../shared/data/camvid --int8-calib ../shared/data/camvid/train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
import torch

from rtseg.backends import open_engine
from rtseg.deploy.export import export_onnx, write_model
from rtseg.deploy.calibration import DEFAULT_FRAMES, TARGETS, Calibration
from rtseg.files import write_json
from rtseg.metadata import EngineMetadata
from rtseg.models import load_checkpoint, read_checkpoint_metadata, save_checkpoint
from rtseg.scoring.evaluate import evaluate


def score(engine: Path, dataset: str, data_root: Path) -> dict:
    """``rtseg eval``'s report of ``engine`` on the val split, also written beside it."""
    with open_engine(engine, "cpu") as backend:
        report = evaluate(backend, dataset, data_root, "val")
    report["engine"] = str(engine)
    write_json(engine.with_suffix(".eval.json"), report)
    return report


def restate_onnx_metadata(path: Path, **updates) -> None:
    """Rewrite the rtseg metadata of the graph at ``path`` with ``updates`` (nothing else)."""
    model = onnx.load(str(path))
    EngineMetadata.from_onnx(model).with_updates(**updates).write_onnx(model)
    write_model(model, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--history", type=Path)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hardware")
    p.add_argument("--input-size", help="HxW the bundled model runs at (default: as trained); "
                                        "smaller is faster on a CPU, at some cost in mIoU")
    p.add_argument("--int8-calib", type=Path,
                   help="also write OUT_int8.onnx, calibrated on these frames (a folder or video)")
    p.add_argument("--calib-frames", type=int, default=DEFAULT_FRAMES)
    p.add_argument("--int8-target", choices=TARGETS, default="cpu")
    p.add_argument("--fp32-graph", action="store_true",
                   help="also write OUT_fp32.onnx, the fp32 deploy graph (for CPUs where int8 "
                        "buys nothing: the light model's form on AVX2-only CPUs)")
    p.add_argument("--int8-only", action="store_true",
                   help="remake only OUT_int8.onnx from the bundled OUT")
    args = p.parse_args()
    if args.int8_only and not args.int8_calib:
        p.error("--int8-only needs --int8-calib")
    if not args.int8_only:
        if not (args.checkpoint and args.history and args.hardware):
            p.error("--checkpoint, --history and --hardware are required (or --int8-only)")
        bundle_weights(args)
    if args.fp32_graph:
        bundle_fp32(args.out, args.data_root)
    if args.int8_calib:
        bundle_int8(args.out, args.int8_calib, args.calib_frames, args.int8_target,
                    args.data_root)


def bundle_weights(args) -> None:
    """The fp16 weights at ``args.out``, scored on the val split, the score in their metadata."""
    segmenter, meta = load_checkpoint(args.checkpoint)
    epochs = json.loads(args.history.read_text())["epochs"]
    train_hours = sum(e["train_seconds"] for e in epochs) / 3600
    if args.input_size:
        size = [int(v) for v in args.input_size.split("x")]
        trained = meta.extra.get("trained_input_size", meta.input_size)
        meta = meta.with_updates(trained_input_size=trained, input_size=size)
    meta = meta.with_updates(
        bundled_from=str(args.checkpoint), training_hardware=args.hardware,
        training_hours=round(train_hours, 3), training_seconds=round(train_hours * 3600, 1),
        epochs_trained=len(epochs),
        checkpoint_val_miou=meta.extra.get("checkpoint_val_miou", meta.extra.get("val_miou")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, segmenter, meta, dtype=torch.float16)

    report = score(args.out, meta.dataset, args.data_root)
    meta = meta.with_updates(precision="fp16", val_miou=report["miou"],
                             per_class_iou=report["per_class_iou"])
    save_checkpoint(args.out, segmenter, meta, dtype=torch.float16)
    size_mb = args.out.stat().st_size / 2**20
    print(f"{args.out}: {size_mb:.1f} MiB, val mIoU {report['miou']:.4f} "
          f"(checkpoint said {meta.extra['checkpoint_val_miou']:.4f}), "
          f"{len(epochs)} epochs, {train_hours:.2f} h on {args.hardware}")


def bundle_fp32(bundled: Path, data_root: Path) -> None:
    """``bundled``'s fp32 deploy graph, ``<stem>_fp32.onnx`` beside it, scored on val like the
    weights and with that score in its metadata."""
    meta = read_checkpoint_metadata(bundled)
    graph = bundled.with_name(bundled.stem + "_fp32.onnx")
    export_onnx(bundled, graph, log=print)
    report = score(graph, meta.dataset, data_root)
    restate_onnx_metadata(graph, val_miou=report["miou"], per_class_iou=report["per_class_iou"],
                          weights_val_miou=meta.extra["val_miou"])
    print(f"{graph}: {graph.stat().st_size / 2**20:.1f} MiB, val mIoU {report['miou']:.4f} "
          f"(the fp16 weights: {meta.extra['val_miou']:.4f})")


def bundle_int8(bundled: Path, calib: Path, frames: int, target: str, data_root: Path) -> None:
    """``bundled``'s int8 graph, ``<stem>_int8.onnx`` beside it, scored on val like the
    weights and with that score in its metadata."""
    meta = read_checkpoint_metadata(bundled)
    int8 = bundled.with_name(bundled.stem + "_int8.onnx")
    export_onnx(bundled, int8, calib=Calibration(calib, frames, target=target), log=print)
    report = score(int8, meta.dataset, data_root)
    restate_onnx_metadata(int8, val_miou=report["miou"], per_class_iou=report["per_class_iou"],
                          weights_val_miou=meta.extra["val_miou"])
    print(f"{int8}: {int8.stat().st_size / 2**20:.1f} MiB, val mIoU {report['miou']:.4f} "
          f"(the fp16 weights: {meta.extra['val_miou']:.4f})")


if __name__ == "__main__":
    main()
