"""Several cameras, one engine: N streams at batch B against one stream at batch 1.

Two ``rtseg bench`` runs in one process with one loaded engine (:func:`rtseg.bench.bench`):
N copies of the clip through the pipeline at batch B (``--streams N --batch B``), then the
clip alone at batch 1. Each compares its pipeline with the engine alone at its own batch
(``pipeline_ratio``, goal ≥ 0.9); ``gain`` is N-stream aggregate FPS over 1-stream FPS.
No video is written (the overlay is drawn; the mp4 encoder would be a stage of its own).

    python bench/multistream.py --engine engines/unet_vgg16_camvid_int8.onnx --streams 4 --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench_data import REPO, default_clip
from rtseg.backends import open_engine
from rtseg.bench import bench, to_markdown


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", type=Path, required=True)
    p.add_argument("--source", type=Path, default=None, help="default: the dashcam clip")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iters", type=int, default=20, help="timed engine-alone inferences per round")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=None, help="frames per stream")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path,
                   default=REPO / "bench" / "results" / "multistream_cpu.json")
    args = p.parse_args()
    clip = args.source or default_clip()
    runs, load = {}, [os.getloadavg()[0]]  # other work on the machine skews both runs
    with open_engine(args.engine, args.device) as backend:
        for name, streams, batch in (("several", args.streams, args.batch), ("one", 1, 1)):
            runs[name] = bench(backend, str(clip), [batch], args.iters, rounds=args.rounds,
                               max_frames=args.max_frames, on_progress=print, streams=streams)
            print(to_markdown(runs[name]))
    load.append(os.getloadavg()[0])
    several, one = runs["several"], runs["one"]
    report = {"command": "python bench/multistream.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                  if v is not None and k != "json"),
              "date": time.strftime("%Y-%m-%d %H:%M"), "engine": str(args.engine),
              "streams": args.streams, "batch": args.batch,
              "aggregate_fps": several["pipeline_fps"], "engine_fps": several["engine_fps"],
              "ratio": several["pipeline_ratio"], "stream_fps": several["stream_fps"],
              "bound_by": several["bound_by"], "one_stream_fps": one["pipeline_fps"],
              "one_stream_engine_fps": one["engine_fps"], "one_stream_ratio": one["pipeline_ratio"],
              "gain": several["pipeline_fps"] / one["pipeline_fps"],
              "load_average_1min": {"start": load[0], "end": load[1]},
              "runs": runs}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.streams} streams at batch {args.batch}: {report['aggregate_fps']:.2f} FPS in all "
          f"({report['ratio']:.3f} of the engine alone at batch {args.batch}, "
          f"{report['engine_fps']:.2f}); 1 stream at batch 1: {report['one_stream_fps']:.2f} FPS; "
          f"gain {report['gain']:.2f}x; bound by {report['bound_by']}")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
