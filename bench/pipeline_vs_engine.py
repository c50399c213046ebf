"""Pipeline FPS vs the engine alone, on the same frames, in the same process.

A thin wrapper over :func:`rtseg.bench.bench` (what ``rtseg bench --source`` runs) that
defaults to the dashcam clip, several rounds and, without ``--engine``, an untrained
(seeded) CamVid model: ``--model`` at ``--size``.

``engine_fps``: ``backend.infer`` over batches of frames already decoded and resized in
memory (the contract's definition). ``pipeline_fps``: the pipeline on the clip — decode,
resize, infer, overlay, mp4 encode — with the same engine and batch. The two alternate for ``--rounds``
rounds and the medians are reported, so a change in machine load (shared CPUs) does not
masquerade as pipeline overhead. The engine alone runs on a worker thread, like the
pipeline's infer stage: PyTorch's OpenMP team belongs to the calling thread, and under CPU
contention the main thread's team performs very differently from a worker's.
Target: ratio ≥ 0.95.

    python bench/pipeline_vs_engine.py --model unet_resnet18 --size 64x96 --batch 4
    python bench/pipeline_vs_engine.py --engine runs/camvid/best.safetensors --max-frames 60
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_data import REPO, default_clip
from rtseg.backends import open_engine
from rtseg.bench import bench, to_markdown
from rtseg.engines import untrained_engine



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", type=Path, default=None)
    p.add_argument("--model", default="unet_resnet18")
    p.add_argument("--size", default="64x96", help="HxW of the untrained engine")
    p.add_argument("--source", type=Path, default=None, help="default: the dashcam clip")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iters", type=int, default=50, help="engine-alone inference calls per round")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "pipeline_vs_engine.json")
    args = p.parse_args()
    clip = args.source or default_clip()
    if not clip.is_file():
        raise SystemExit(f"clip not found: {clip} (set RTSEG_DATA or pass --source)")

    with tempfile.TemporaryDirectory() as tmp:
        engine = args.engine or untrained_engine(
            args.model, tuple(int(v) for v in args.size.split("x")), tmp)
        with open_engine(engine, args.device) as backend:
            report = bench(backend, clip, [args.batch], args.iters, rounds=args.rounds,
                           max_frames=args.max_frames, output=Path(tmp) / "overlay.mp4",
                           on_progress=print)
    report = {"engine": str(args.engine or f"untrained {args.model} {args.size}"), **report}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(to_markdown(report))
    if "cpu_bound_ceiling" in report:
        print(f"ceiling when CPU-bound: {report['cpu_bound_ceiling']:.3f} (host stages' CPU "
              "time comes out of the engine's)")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
