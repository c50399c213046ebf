"""The four models on a GPU: PyTorch FP16/FP32, channels_last, CUDA graphs — throughput, FLOPs
per frame and the fraction of the GPU's peak (issue "bench", GPU part).

Each model runs as deployed (``Segmenter``: uint8 BGR frames in, uint8 labels out, BatchNorm
folded, channels_last), seeded untrained weights (speed does not depend on them), frames
already on the device. For every size, precision and batch size: eager, then the same work
captured once in a CUDA graph and replayed (no per-kernel launch cost). Times from CUDA
events over ``--iters`` calls after warm-up; FLOPs from ``torch.utils.flop_counter``.

    python bench/gpu_bench.py                                    # all four, both sizes
    python bench/gpu_bench.py --models segnet_r50 --sizes 352x480 --batches 1,8,32
    python bench/gpu_bench.py --device cpu --sizes 64x96 --batches 1 --iters 2   # logic check

STATUS: written for the H200 the project borrows; as of this commit it has only run with
``--device cpu`` (no GPU was lent) — the CUDA-graph path has not executed yet.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rtseg.data import get_spec
from rtseg.data.classes import IMAGENET_MEAN, IMAGENET_STD
from rtseg.models import Segmenter, build_model
from rtseg.models.flops import count_flops
from rtseg.models.fusion import fold_batchnorm

MODELS = ("unet_vgg16", "unet_r50", "segnet_vgg16", "segnet_r50")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PEAK_TFLOPS = 790.0  # the H200's measured dense bf16/fp16 peak (issue "bench")


def build(name: str, dtype: torch.dtype, device: torch.device) -> Segmenter:
    """The deployed module (seeded weights, BatchNorm folded, channels_last) on ``device``."""
    torch.manual_seed(0)
    net = build_model(name, get_spec("camvid").num_classes)
    segmenter = Segmenter(net, IMAGENET_MEAN, IMAGENET_STD).eval()
    fold_batchnorm(segmenter.net)
    segmenter = segmenter.to(device, dtype).to(memory_format=torch.channels_last)
    return segmenter


def time_calls(fn, iters: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` (CUDA events on a GPU, perf_counter on the CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def graphed(segmenter: Segmenter, frames: torch.Tensor, warmup: int):
    """``segmenter(frames)`` captured in a CUDA graph: returns (replay, output buffer)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(warmup):  # cuDNN autotuning and allocations happen outside the graph
            segmenter(frames)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        out = segmenter(frames)
    return graph.replay, out


def measure(name: str, size: tuple[int, int], precision: str, batches: list[int], iters: int,
            warmup: int, device: torch.device, use_graphs: bool) -> list[dict]:
    """One row per batch size (eager, and graph-replayed on CUDA)."""
    net_flops = count_flops(build_model(name, get_spec("camvid").num_classes), size)
    segmenter = build(name, DTYPES[precision], device)
    rows = []
    for batch in batches:
        frames = torch.randint(0, 256, (batch, *size, 3), dtype=torch.uint8, device=device)
        with torch.inference_mode():
            for _ in range(warmup):
                segmenter(frames)
            eager = time_calls(lambda: segmenter(frames), iters, device)
        row = {"model": name, "input_size": list(size), "precision": precision, "batch": batch,
               "gflops_per_frame": net_flops / 1e9, "eager_ms": eager * 1000,
               "eager_fps": batch / eager}
        best = eager
        if use_graphs and device.type == "cuda":
            replay, _ = graphed(segmenter, frames, warmup)
            seconds = time_calls(replay, iters, device)
            row.update(graph_ms=seconds * 1000, graph_fps=batch / seconds)
            best = min(best, seconds)
        row["fps"] = batch / best
        row["tflops"] = net_flops * batch / best / 1e12
        row["fraction_of_peak"] = row["tflops"] / PEAK_TFLOPS if device.type == "cuda" else None
        rows.append(row)
        print(f"{name:13s} {size[0]}x{size[1]} {precision} b{batch:<3d} eager "
              f"{row['eager_fps']:8.1f} FPS" + (f", graph {row['graph_fps']:8.1f} FPS"
                                                if "graph_fps" in row else "")
              + f"  {row['tflops']:6.1f} TFLOP/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sizes", default="1024x2048,352x480",
                        help="HxW; CamVid's 360x480 runs as 352x480 (multiple of 32)")
    parser.add_argument("--precisions", default="fp16,fp32")
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_bench")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.models.split(","):
        for size_text in args.sizes.split(","):
            size = tuple(int(v) for v in size_text.split("x"))
            for precision in args.precisions.split(","):
                batches = [int(b) for b in args.batches.split(",")]
                if size[0] * size[1] >= 1024 * 2048:  # keep activations within memory
                    batches = [b for b in batches if b <= 8]
                rows += measure(name, size, precision, batches, args.iters, args.warmup,
                                device, not args.no_graphs)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "platform": platform.platform(),
              "peak_tflops": PEAK_TFLOPS, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
