"""CPU (or GPU) training speed per model: seconds per iteration and per CamVid epoch.

Times a few optimisation steps (forward, class-weighted loss, backward, AdamW) of each model
at the CamVid network input (352×480; 360 is not divisible by 32) and batch 4, on real
CamVid frames, after one warm-up step, and extrapolates to an epoch of the 367-image train
split. Also counts parameters.

    python bench/train_speed.py --data-root ../shared/data/camvid --iters 3 \
        --json bench/results/train_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from rtseg.data import find_pairs
from rtseg.data.torch_dataset import SegmentationDataset
from rtseg.data.transforms import TrainTransform
from rtseg.data.classes import CAMVID, IMAGENET_MEAN, IMAGENET_STD
from rtseg.models import MODELS, Segmenter, build_model


def batch_of(root: Path, size: tuple[int, int], batch: int):
    """One augmented batch of real CamVid training frames at ``size``."""
    t = TrainTransform(crop=size, base_size=size, ignore_index=CAMVID.ignore_index,
                       scale_range=(1.0, 1.0))
    ds = SegmentationDataset(find_pairs("camvid", root, "train")[:batch], "camvid", t)
    frames, labels = zip(*(ds[i] for i in range(batch)))
    return torch.stack(frames), torch.stack(labels)


def time_model(name: str, frames, labels, iters: int, device: torch.device) -> dict:
    """Median seconds per optimisation step of ``name``."""
    torch.manual_seed(0)
    seg = Segmenter(build_model(name, CAMVID.num_classes), IMAGENET_MEAN, IMAGENET_STD).to(device)
    opt = torch.optim.AdamW(seg.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=CAMVID.ignore_index)
    frames, labels = frames.to(device), labels.to(device)
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        loss = loss_fn(seg.logits(frames), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step is warm-up (allocator, oneDNN primitive creation)
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"model": name, "params_m": round(sum(p.numel() for p in seg.parameters()) / 1e6, 2),
            "s_per_iter": round(times[len(times) // 2], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", default="352x480")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    frames, labels = batch_of(args.data_root, size, args.batch)
    epoch_iters = 367 // args.batch
    rows = []
    for name in MODELS:
        row = time_model(name, frames, labels, args.iters, device)
        row["s_per_epoch"] = round(row["s_per_iter"] * epoch_iters, 1)
        rows.append(row)
        print(f"{name:<14} {row['params_m']:6.2f} M params  {row['s_per_iter']:6.2f} s/iter  "
              f"{row['s_per_epoch']:8.1f} s/epoch (367 images, batch {args.batch})", flush=True)
    result = {"device": args.device, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "size": list(size), "batch": args.batch,
              "torch": torch.__version__, "results": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
