"""Val mIoU of trained weights run at several input sizes (the trade-off behind a bundled
model's input size): the metadata's input size is changed, frames are resized to it, and
predictions are resized back to the labels' size, exactly as ``rtseg eval`` scores.

    python bench/size_sweep.py --data-root ../shared/data/camvid \\
        --weights runs/gpu/unet_vgg16/best.safetensors runs/gpu/segnet_r50/best.safetensors \\
        --sizes 352x480,288x384,256x352,224x320,192x256 --out bench/results/bundled_size_sweep.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rtseg.backends.torch_backend import TorchBackend
from rtseg.scoring.evaluate import evaluate
from rtseg.models import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--weights", type=Path, nargs="+", required=True)
    p.add_argument("--sizes", default="352x480,288x384,256x352,224x320,192x256")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    results = {}
    for weights in args.weights:
        for text in args.sizes.split(","):
            size = [int(v) for v in text.split("x")]
            segmenter, meta = load_checkpoint(weights)
            backend = TorchBackend(segmenter, meta.with_updates(input_size=size), "cpu", "fp32")
            report = evaluate(backend, meta.dataset, args.data_root, "val", batch_size=4)
            results[f"{meta.model}@{text}"] = {"miou": report["miou"]}
            print(f"{meta.model} {text}: val mIoU {report['miou']:.4f}", flush=True)
    args.out.write_text(json.dumps({"results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
