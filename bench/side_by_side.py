"""A picture to look at instead of a table: for a few CamVid val frames, input | truth | each
model's prediction, side by side, every panel titled, the class legend below.

Predictions come from engines (any file ``rtseg eval`` takes) or from label PNGs saved next to
a training run (``bench/train_gpu.py`` writes ``MODEL/pred_<frame>.png`` for the frames it is
asked for, so the picture can be made where the weights are not).

    python bench/side_by_side.py --data-root ../shared/data/camvid \\
        --model unet_vgg16=runs/gpu_h200/unet_vgg16.safetensors \\
        --model segnet_r50=runs/gpu_h200/segnet_r50.safetensors \\
        --frames 0016E5_07977,0016E5_08157,0016E5_08370 --out bench/results/camvid_side_by_side.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from rtseg.backends import open_engine
from rtseg.data import get_spec, read_image, read_label
from rtseg.imageops import resize_frame, resize_nearest
from rtseg.visualize import colorize, palette_lut, side_by_side

PANEL_W = 320  # each panel's width in the picture (CamVid frames are 480 wide)


def predict(source: str, images: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Label maps at each frame's size: run an engine file, or read ``source/pred_NAME.png``."""
    path = Path(source)
    if path.is_dir():
        return [read_label(path / f"pred_{n}.png", "camvid") for n in names]
    with open_engine(path, "cpu") as backend:
        frames = np.stack([resize_frame(i, tuple(backend.input_size)) for i in images])
        return [resize_nearest(lbl, i.shape[:2]) for lbl, i in zip(backend.infer(frames), images)]


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """The panel scaled to PANEL_W wide with a title bar above it."""
    h = round(panel.shape[0] * PANEL_W / panel.shape[1])
    panel = cv2.resize(panel, (PANEL_W, h), interpolation=cv2.INTER_AREA)
    bar = np.full((26, PANEL_W, 3), 255, np.uint8)
    cv2.putText(bar, title, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel])


def legend(width: int, class_names, lut: np.ndarray) -> np.ndarray:
    """One row of colour swatches with class names."""
    row = np.full((30, width, 3), 255, np.uint8)
    step = width // len(class_names)
    for i, name in enumerate(class_names):
        x = i * step + 4
        cv2.rectangle(row, (x, 8), (x + 14, 22), [int(c) for c in lut[i]], -1)
        cv2.putText(row, name, (x + 18, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--model", action="append", required=True, metavar="NAME=ENGINE_OR_DIR")
    p.add_argument("--frames", required=True, help="comma-separated val frame names (no suffix)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    spec = get_spec("camvid")
    lut = palette_lut(spec.palette)
    names = args.frames.split(",")
    images = [read_image(args.data_root / "val" / f"{n}.png") for n in names]
    truths = [read_label(args.data_root / "valannot" / f"{n}.png", "camvid") for n in names]
    models = [m.split("=", 1) for m in args.model]
    preds = {title: predict(src, images, names) for title, src in models}
    rows = []
    for i, name in enumerate(names):
        panels = [titled(images[i], name), titled(colorize(truths[i], lut), "truth")]
        panels += [titled(colorize(preds[t][i], lut), t) for t, _ in models]
        rows.append(side_by_side(*panels))
    picture = np.concatenate(rows + [legend(rows[0].shape[1], spec.class_names, lut)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), picture):
        raise SystemExit(f"cannot write {args.out}")
    print(f"wrote {args.out} ({picture.shape[1]}×{picture.shape[0]})")


if __name__ == "__main__":
    main()
