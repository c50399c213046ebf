"""Pipeline FPS vs the engine alone, on the same frames, in the same process.

``engine_fps``: ``backend.infer`` over batches of frames already decoded and resized in
memory (the contract's definition). ``pipeline_fps``: ``rtseg run`` on the clip — decode,
resize, infer, overlay, mp4 encode — with the same engine and batch. The two alternate for
``--rounds`` rounds and the medians are reported (and the median of the per-round ratios),
so a change in machine load (shared CPUs) does not masquerade as pipeline overhead. The
engine alone runs on a worker thread, like the pipeline's infer stage (the main-thread
figure is reported too: see ``engine_fps_on_a_thread``).
Target: ratio ≥ 0.95.

Without ``--engine``, an untrained (seeded) CamVid model is built: ``--model`` at ``--size``.

    python bench/pipeline_vs_engine.py --model unet_resnet18 --size 64x96 --batch 4
    python bench/pipeline_vs_engine.py --engine runs/camvid/best.safetensors --max-frames 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from rtseg.backends import open_engine
from rtseg.data import get_spec
from rtseg.data.classes import IMAGENET_MEAN, IMAGENET_STD
from rtseg.metadata import EngineMetadata
from rtseg.models import Segmenter, build_model, save_checkpoint
from rtseg.pipeline import preprocess, run

REPO = Path(__file__).resolve().parents[1]


def default_clip() -> Path:
    root = Path(os.environ.get("RTSEG_DATA", REPO.parent / "shared" / "data"))
    return root / "video" / "solidWhiteRight.mp4"


def untrained_engine(model: str, size: tuple[int, int], directory: Path) -> Path:
    """A seeded, untrained CamVid engine: the speed of a trained one, not its accuracy."""
    spec = get_spec("camvid")
    torch.manual_seed(0)
    meta = EngineMetadata(model=model, num_classes=spec.num_classes,
                          class_names=list(spec.class_names),
                          palette=[list(c) for c in spec.palette], ignore_index=spec.ignore_index,
                          input_size=list(size), dataset=spec.name, mean=list(IMAGENET_MEAN),
                          std=list(IMAGENET_STD))
    seg = Segmenter(build_model(model, spec.num_classes), meta.mean, meta.std)
    return save_checkpoint(directory / f"{model}_{size[0]}x{size[1]}.safetensors", seg, meta)


def decoded_inputs(clip: Path, input_size: tuple[int, int], limit: int | None) -> np.ndarray:
    """Every frame of the clip (up to ``limit``), resized to the engine's input."""
    cap, frames = cv2.VideoCapture(str(clip)), []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(preprocess(frame, input_size))
    cap.release()
    return np.stack(frames)


def engine_fps(backend, inputs: np.ndarray, batch: int) -> float:
    """Frames per second of ``backend.infer`` alone over ``inputs`` (one warm-up batch)."""
    backend.infer(inputs[:batch])
    t0 = time.perf_counter()
    for i in range(0, len(inputs), batch):
        backend.infer(inputs[i:i + batch])
    return len(inputs) / (time.perf_counter() - t0)


def engine_fps_on_a_thread(backend, inputs: np.ndarray, batch: int) -> float:
    """``engine_fps`` measured on a fresh thread, as the pipeline's infer stage runs it.

    PyTorch's OpenMP team belongs to the thread that calls it; under CPU contention (shared
    machines) the main thread's team and a worker thread's team perform very differently,
    so the fair comparison runs the engine alone where the pipeline runs it.
    """
    box = {}
    worker = threading.Thread(target=lambda: box.update(fps=engine_fps(backend, inputs, batch)))
    worker.start()
    worker.join()
    return box["fps"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", type=Path, default=None)
    p.add_argument("--model", default="unet_resnet18")
    p.add_argument("--size", default="64x96", help="HxW of the untrained engine")
    p.add_argument("--source", type=Path, default=None, help="default: the dashcam clip")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--main-thread", action="store_true",
                   help="also time the engine alone on the main thread")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "pipeline_vs_engine.json")
    args = p.parse_args()
    clip = args.source or default_clip()
    if not clip.is_file():
        raise SystemExit(f"clip not found: {clip} (set RTSEG_DATA or pass --source)")

    with tempfile.TemporaryDirectory() as tmp:
        engine = args.engine or untrained_engine(
            args.model, tuple(int(v) for v in args.size.split("x")), Path(tmp))
        with open_engine(engine, args.device) as backend:
            inputs = decoded_inputs(clip, backend.input_size, args.max_frames)
            rounds = []
            for _ in range(args.rounds):
                alone = engine_fps_on_a_thread(backend, inputs, args.batch)
                alone_main = (engine_fps(backend, inputs, args.batch) if args.main_thread
                              else None)
                result = run(clip, backend, output=Path(tmp) / "overlay.mp4",
                             batch=args.batch, max_frames=args.max_frames)
                rounds.append({"engine_fps": alone, "engine_fps_main_thread": alone_main,
                               "pipeline_fps": result["fps"], "ratio": result["fps"] / alone,
                               "stage_ms": result["stage_ms"]})
                main_note = f" (main thread {alone_main:.2f})" if alone_main else ""
                print(f"round {len(rounds)}: engine {alone:.2f} FPS{main_note}, pipeline "
                      f"{result['fps']:.2f} FPS, ratio {result['fps'] / alone:.3f}", flush=True)

    def median(key):
        return float(np.median([r[key] for r in rounds]))

    alone, ratio = median("engine_fps"), median("ratio")
    stage_ms = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]["stage_ms"]
    bound = max(stage_ms, key=lambda k: stage_ms[k] or 0.0)
    host_ms = sum(v for k, v in stage_ms.items() if k != "infer" and v is not None)
    # When the engine alone already keeps every core busy, the host stages' CPU time can
    # only come out of inference's: the best ratio is engine CPU / (engine CPU + host CPU).
    cores = min(torch.get_num_threads(), os.cpu_count() or 1) if result["device"] == "cpu" else 0
    engine_cpu_ms = 1000.0 / alone * cores
    ceiling = engine_cpu_ms / (engine_cpu_ms + host_ms) if cores else 1.0
    report = {
        "engine": str(args.engine or f"untrained {args.model} {args.size}"),
        "backend": result["backend"], "device": result["device"], "batch": args.batch,
        "input_size": list(backend.input_size), "frames": result["frames"],
        "engine_fps": alone,
        "engine_fps_main_thread": median("engine_fps_main_thread") if args.main_thread else None,
        "pipeline_fps": median("pipeline_fps"), "pipeline_ratio": ratio,
        "rounds": rounds,
        "stage_ms": stage_ms, "latency_ms": result["latency_ms"], "bound_by": bound,
        "host_ms_per_frame": host_ms, "cpu_bound_ceiling": ceiling,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "opencv": cv2.__version__, "machine": platform.processor() or platform.machine(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    print(f"engine alone   {alone:7.2f} FPS  (median of {len(rounds)}; batch {args.batch}, "
          f"{backend.input_size[0]}x{backend.input_size[1]}, {result['device']})")
    print(f"pipeline       {report['pipeline_fps']:7.2f} FPS  ({result['frames']} frames, "
          "decode → overlay → mp4)")
    print(f"ratio          {ratio:7.3f}  (median of per-round ratios; target ≥ 0.95)")
    print("stage ms/frame " + "  ".join(f"{k} {v:.1f}" for k, v in stage_ms.items()
                                        if v is not None))
    print(f"bound by       {bound}; host stages {host_ms:.1f} ms/frame of CPU next to "
          f"{1000.0 / alone:.1f} ms/frame of engine on {cores or 'a GPU and'} "
          f"{'cores' if cores else 'the host'} -> ceiling {ceiling:.3f} when CPU-bound")
    print(f"written        {args.json}")


if __name__ == "__main__":
    main()
