"""The FPS-vs-mIoU plot of the models trained by ``bench/train_gpu.py``: val mIoU from its
summaries, speed from ``bench/gpu_bench.py``'s rows on the same GPU (fp16, the best batch at the
CamVid size) — drawn by the same code as ``rtseg bench --compare --plot``. With several
summaries (runs of other lengths) each point is labelled with its seconds of training.

    python bench/plot_gpu_models.py --summary bench/results/camvid_gpu_h200_run2/summary.json \\
        --summary bench/results/camvid_gpu_h200_run3/summary.json \\
        --bench bench/results/gpu_h200_bench.json --out bench/results/camvid_fps_vs_miou_gpu_h200.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rtseg.compare import plot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--summary", type=Path, action="append", required=True,
                   help="a train_gpu.py summary.json; repeat for several runs")
    p.add_argument("--bench", type=Path, required=True)
    p.add_argument("--size", default="352x480")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    bench = json.loads(args.bench.read_text())
    engines = []
    for summary_path in args.summary:
        for model, result in json.loads(summary_path.read_text())["models"].items():
            rows = [r for r in bench["rows"] if r["model"] == model and r["size"] == args.size
                    and r["precision"] == args.precision]
            if "best_val_miou" not in result or not rows:
                continue
            best = max(rows, key=lambda r: r["fps"])
            name = model if len(args.summary) == 1 else f"{model}, {result['train_seconds']:.0f} s"
            engines.append({"engine": name, "model": model, "precision": args.precision,
                            "miou": result["best_val_miou"], "best_fps": best["fps"],
                            "best_batch": best["batch"], "backend": "PyTorch",
                            "device": bench["device"]})
    plot({"engines": engines, "dataset": "camvid", "split": "val"}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
