"""The report's 4-model comparison, regenerated: one row per trained model with its val mIoU
and per-class IoU (from ``rtseg bench --compare --json``, i.e. the same numbers as
``rtseg eval``), speed (FPS at batch 1 and at the best batch, same run), parameter count,
FLOPs per frame at the CamVid deploy size 352×480 and at the trained input size, and what
training cost (epochs, hours of training steps from ``history.json``).

    rtseg bench --compare runs/cpu10/*/best.safetensors --data-root ../shared/data/camvid \
        --batch 1,4 --iters 5 --device cpu --json bench/results/camvid_compare_cpu.json \
        --markdown bench/results/camvid_compare_cpu.md --plot bench/results/camvid_fps_vs_miou_cpu.png
    python bench/model_table.py --compare bench/results/camvid_compare_cpu.json \
        --out bench/results/camvid_models_cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rtseg.models import load_checkpoint
from rtseg.models.flops import count_flops

DEPLOY_SIZE = (352, 480)  # CamVid's 360×480 frames, rounded to a multiple of 32


def model_row(compared: dict) -> dict:
    """Training facts of one compared engine, read from its checkpoint and history.json."""
    path = Path(compared["engine"].rpartition("@")[0] or compared["engine"])
    segmenter, meta = load_checkpoint(path)
    net = segmenter.net.float()
    history_file = path.parent / "history.json"
    epochs = json.loads(history_file.read_text())["epochs"] if history_file.is_file() else []
    size = tuple(meta.input_size)
    return {
        "model": meta.model, "engine": str(path),
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "gflops_352x480": count_flops(net, DEPLOY_SIZE) / 1e9,
        "gflops_input": count_flops(net, size) / 1e9, "input_size": list(size),
        "epochs": len(epochs),
        "train_hours": sum(e["train_seconds"] for e in epochs) / 3600,
        "best_epoch": meta.extra.get("epoch"),
        "miou": compared["miou"], "pixel_accuracy": compared["pixel_accuracy"],
        "per_class_iou": compared["per_class_iou"],
        "fps_batch1": compared["fps_batch1"], "best_fps": compared["best_fps"],
        "best_batch": compared["best_batch"], "precision": compared["precision"],
        "backend": compared["backend"], "device": compared["device"],
    }


def to_markdown(rows: list[dict]) -> str:
    """The comparison table and the per-class IoU table."""
    lines = ["| model | val mIoU | pixel acc. | FPS b1 | best FPS (batch) | params | "
             "GFLOPs 352×480 | epochs | training h |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | **{r['miou']:.4f}** | {r['pixel_accuracy']:.3f} | "
                     f"{r['fps_batch1']:.2f} | {r['best_fps']:.2f} ({r['best_batch']}) | "
                     f"{r['params_m']:.2f} M | {r['gflops_352x480']:.1f} | {r['epochs']} | "
                     f"{r['train_hours']:.2f} |")
    classes = list(rows[0]["per_class_iou"])
    lines += ["", "| class | " + " | ".join(f"`{r['model']}`" for r in rows) + " |",
              "|---|" + "---:|" * len(rows)]
    for c in classes:
        cells = [r["per_class_iou"][c] for r in rows]
        lines.append(f"| {c} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in cells)
                     + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=Path, required=True,
                        help="JSON written by rtseg bench --compare")
    parser.add_argument("--out", type=Path, required=True, help="path stem for .json and .md")
    args = parser.parse_args()
    compared = json.loads(args.compare.read_text())
    rows = sorted((model_row(c) for c in compared["engines"]), key=lambda r: -r["miou"])
    result = {"dataset": compared["dataset"], "split": compared["split"],
              "images": compared["images"], "machine": compared["machine"], "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = to_markdown(rows)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
