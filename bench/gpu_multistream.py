"""Several streams on one GPU: `unet_vgg16` fp16 at 352×480 with 1, 4, 8 and 16 copies of the
dashcam clip, each at batch = streams, against the engine alone at that batch; the host frame
path and ``--device-frames`` side by side; then 8 streams writing an mp4 each, and the bundled
model on one stream. One process, one loaded engine per model; rows are skipped once
``--max-seconds`` is spent (the most important first), and the JSON and Markdown are
rewritten after every row.

Goals (the GPU part of "many cameras, one engine"): aggregate FPS ≥ 0.9 × the engine alone
at the same batch; ≥ 1000 FPS in all with 8 streams and no video; the bundled model on one
stream ≥ 400 FPS.

    python bench/gpu_multistream.py --out bench/results/gpu_multistream     # on a GPU, ≤ 8 min
    python bench/gpu_multistream.py --dry-run --out /tmp/gms                 # the CPU, seconds

As of this writing it has run only on the CPU (``--dry-run``), not yet on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_data import REPO, default_clip
from rtseg.backends import open_engine
from rtseg.bench import bench, machine
from rtseg.engines import untrained_engine
from rtseg.files import atomic_write, write_json

BUNDLED = REPO / "engines" / "unet_vgg16_camvid.safetensors"


def plan(args) -> list[dict]:
    """The rows, most important first."""
    rows = []
    for device_frames in (True, False):
        for n in args.streams:
            rows.append({"engine": "model", "streams": n, "batch": n,
                         "device_frames": device_frames, "video": False})
    rows.append({"engine": "model", "streams": args.video_streams, "batch": args.video_streams,
                 "device_frames": True, "video": True})
    if args.bundled is not None:
        for device_frames in (True, False):
            rows.append({"engine": "bundled", "streams": 1, "batch": 1,
                         "device_frames": device_frames, "video": False})
    return rows


def measure(backend, row: dict, clip: Path, args, tmp: Path) -> dict:
    """One row: ``rtseg bench --streams N --batch N`` on the loaded engine."""
    n = row["streams"]
    output = None
    if row["video"]:
        output = tmp / f"video{n}" / ("{stream}.mp4" if n > 1 else "o.mp4")
        output.parent.mkdir(exist_ok=True)
    result = bench(backend, str(clip), [row["batch"]], args.iters, warmup=args.warmup,
                   max_frames=args.max_frames, output=output,
                   streams=n if n > 1 else None, on_progress=print,
                   run_options={"device_frames": row["device_frames"]})
    return {**row, "engine_fps": result["engine_fps"], "pipeline_fps": result["pipeline_fps"],
            "ratio": result["pipeline_ratio"], "bound_by": result["bound_by"],
            "stage_ms": result["stage_ms"], "stream_fps": result.get("stream_fps"),
            "frames": result["pipeline_frames"], "latency_ms": result["pipeline_latency_ms"],
            "precision": result["precision"], "input_size": result["input_size"]}


def to_markdown(report: dict) -> str:
    lines = [f"Several streams: {report['model']} {report['precision']} at "
             f"{report['size']}, clip {report['clip']}, on {report['device']}", "",
             "| engine | streams | batch | device frames | video | engine alone FPS | "
             "pipeline FPS | ratio | min stream FPS | bound by | infer ms/frame |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---|---:|"]
    for r in report["rows"]:
        low = min(r["stream_fps"]) if r.get("stream_fps") else r["pipeline_fps"]
        lines.append(f"| {r['engine']} | {r['streams']} | {r['batch']} | "
                     f"{'yes' if r['device_frames'] else 'no'} | {'mp4' if r['video'] else '-'} "
                     f"| {r['engine_fps']:.1f} | {r['pipeline_fps']:.1f} | {r['ratio']:.3f} | "
                     f"{low:.1f} | {r['bound_by']} | {r['stage_ms']['infer']:.3f} |")
    lines += [f"| {s['engine']} | {s['streams']} | | | | skipped: {s['why']} |||||"
              for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="unet_vgg16")
    p.add_argument("--size", default="352x480")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--streams", default="1,4,8,16")
    p.add_argument("--video-streams", type=int, default=8)
    p.add_argument("--bundled", type=Path, default=BUNDLED, help="one stream of this engine")
    p.add_argument("--max-frames", type=int, default=None, help="per stream (the whole clip)")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=420)
    p.add_argument("--source", type=Path, default=None, help="default: the dashcam clip")
    p.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    p.add_argument("--dry-run", action="store_true",
                   help="on the CPU: unet_resnet18 at 64x96 fp32, streams 1,2, 6 frames each")
    args = p.parse_args()
    if args.dry_run:
        args.model, args.size, args.precision, args.device = "unet_resnet18", "64x96", "fp32", "cpu"
        args.streams, args.video_streams, args.max_frames = "1,2", 2, 6
        args.iters, args.warmup, args.bundled = 2, 1, None
    args.streams = [int(v) for v in args.streams.split(",")]
    clip = args.source or default_clip()
    size = tuple(int(v) for v in args.size.split("x"))
    started = time.monotonic()
    report = {"command": "python bench/gpu_multistream.py", "model": args.model,
              "size": args.size, "precision": args.precision, "device": args.device,
              "clip": clip.name, "dry_run": args.dry_run, "rows": [], "skipped": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_json(args.out.with_suffix(".json"), report)
        atomic_write(args.out.with_suffix(".md"), to_markdown(report))

    with tempfile.TemporaryDirectory() as tmp:
        engines = {"model": untrained_engine(args.model, size, tmp), "bundled": args.bundled}
        took = 0.0
        for engine_name in ("model", "bundled"):
            rows = [r for r in plan(args) if r["engine"] == engine_name]
            if not rows:
                continue
            with open_engine(engines[engine_name], args.device, args.precision
                             if engine_name == "model" else "auto") as backend:
                report.setdefault("machine", machine(backend.device))
                for row in rows:
                    left = args.max_seconds - (time.monotonic() - started)
                    if left < took:
                        report["skipped"].append({**row, "why": f"{left:.0f} s left"})
                        continue
                    t0 = time.monotonic()
                    report["rows"].append(measure(backend, row, clip, args, Path(tmp)))
                    took = time.monotonic() - t0
                    save()
    report["seconds"] = time.monotonic() - started
    save()
    print(to_markdown(report))
    print(f"written {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
