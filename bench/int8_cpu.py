"""INT8 on the CPU: calibration method, accuracy against fp32, speed against fp32 and bf16,
and the live pipeline with the int8 engine — one process run, any checkpoint.

1. The checkpoint is exported to the fp32 deploy graph and quantized once per calibration
   method and ``--int8-target`` (tensorrt: symmetric int8 Q/DQ; cpu: ONNX Runtime's CPU
   layout) (``rtseg.deploy.export.export_onnx(..., calib=...)``, what ``rtseg export --int8`` runs),
   on ``--calib-frames`` frames of ``--calib`` (CamVid *train* by default: the scores below
   are on val, so calibration never sees a scored frame).
2. fp32 and every int8 graph are scored together on all labelled frames of the split
   (``rtseg.compare.score_together``: the numbers ``rtseg eval`` gives, plus the fraction of
   pixels labelled as the fp32 graph labels them): the mIoU each method keeps.
3. Batch-1 speed, engine alone on a worker thread (``rtseg.bench.time_engine``), rounds
   alternating fp32 ONNX Runtime / bf16 PyTorch (the ``.safetensors@bf16`` path) / each int8
   target's graph on ONNX Runtime, medians reported: a change of load on the shared machine
   hits all of them.
4. The pipeline with the fastest int8 graph (the cpu target's, when made) writing an overlay
   mp4 of ``--source``, alternating with the engine alone (``rtseg.bench.bench``, what
   ``rtseg bench --source`` runs).

    python bench/int8_cpu.py --checkpoint engines/unet_vgg16_camvid.safetensors \\
        --out bench/results/int8_bundled_cpu

Writes ``<out>.json`` and ``<out>.md``; ``--keep DIR`` keeps the .onnx files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_data import DATA, REPO, default_clip
from rtseg.backends import open_engine
from rtseg.bench import bench, machine, on_worker, time_engine
from rtseg.compare import score_together, split_frames
from rtseg.deploy.export import export_onnx
from rtseg.files import atomic_write, write_json
from rtseg.deploy.calibration import (DEFAULT_FRAMES, DEFAULT_METHOD, DEFAULT_WEIGHT_BITS,
                                      METHODS, TARGETS, Calibration)



def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def accuracy(fp32: Path, int8: dict[str, Path], data_root: Path, split: str, say) -> dict:
    """Every graph scored on the same frames; ΔmIoU and agreement against fp32."""
    names = ["fp32", *int8]
    backends = [open_engine(fp32, "cpu"), *(open_engine(p, "cpu") for p in int8.values())]
    try:
        rows, images = score_together(backends, "camvid", data_root, split, on_progress=say)
    finally:
        for b in backends:
            b.close()
    out = {}
    for name, row in zip(names, rows):
        out[name] = {**row, "miou_delta_points": 100.0 * (row["miou"] - rows[0]["miou"])}
    return {"images": images, "scores": out}


def speed(engines: dict[str, tuple[Path, str]], pool: np.ndarray, rounds: int, iters: int,
          warmup: int, say) -> dict:
    """Batch-1 FPS per engine, rounds alternating between the engines; medians."""
    backends = {name: open_engine(path, "cpu", precision)
                for name, (path, precision) in engines.items()}
    fps: dict[str, list[float]] = {name: [] for name in engines}
    p50: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for name, backend in backends.items():  # first-call costs out of the way
            on_worker(lambda b=backend: time_engine(b, pool, 1, 1, warmup))
        for r in range(rounds):
            for name, backend in backends.items():
                got = on_worker(lambda b=backend: time_engine(b, pool, 1, iters))
                fps[name].append(got["fps"])
                p50[name].append(got["latency_ms"]["p50"])
            say("round %d/%d: %s" % (r + 1, rounds, ", ".join(
                f"{n} {v[-1]:.2f}" for n, v in fps.items())))
    finally:
        for b in backends.values():
            b.close()
    return {name: {"fps": float(np.median(fps[name])), "p50_ms": float(np.median(p50[name])),
                   "fps_rounds": fps[name]} for name in engines}


def graph_name(target: str, method: str, bits: int = DEFAULT_WEIGHT_BITS) -> str:
    """``int8 entropy`` for the tensorrt layout (the default), ``int8-cpu entropy`` for cpu;
    ``w8`` appended for 8-bit weights."""
    name = f"int8 {method}" if target == "tensorrt" else f"int8-{target} {method}"
    return name if bits == DEFAULT_WEIGHT_BITS else f"{name} w{bits}"


def markdown(report: dict) -> str:
    ck, acc, sp, pipe = (report["checkpoint"], report.get("accuracy"), report.get("speed"),
                         report.get("pipeline"))
    m = report["machine"]
    lines = [f"# INT8 on the CPU — `{ck['path']}`", "",
             f"{ck['model']} ({ck['dataset']}), input {ck['input_size'][0]}×"
             f"{ck['input_size'][1]}, sha256 {ck['sha256']}. Machine: {m['cpu_model']} "
             f"({m['cpu_count']} CPUs; {', '.join(m['cpu_features'])}), onnxruntime "
             f"{m['onnxruntime']}, torch {m.get('torch', '?')}. One process run; "
             f"{report['date']}.", "",
             f"Command: `{report['command']}`", ""]
    if acc:
        cal = report["calibration"]
        lines += [f"## Calibration method — {acc['images']} {report['split']} frames, "
                  f"calibrated on {cal['frames']} frames of `{cal['source']}`", "",
                  "| graph | mIoU | Δ mIoU (pt) | pixel agreement with fp32 | quantize s | MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, s in acc["scores"].items():
            extra = report["graphs"].get(name, {})
            lines.append(f"| {name} | {s['miou']:.4f} | {s['miou_delta_points']:+.2f} | "
                         f"{100 * s['pixel_agreement']:.2f} % | "
                         f"{extra.get('seconds', 0):.1f} | {extra.get('mib', 0):.1f} |")
        lines += ["", f"Best mIoU on this checkpoint: **{report['best']}**. Speed below uses "
                  f"{', '.join(f'**{v}**' for v in report['chosen'].values())}: each target "
                  f"with the default method of `rtseg export --int8` (chosen over all "
                  f"checkpoints tried: `rtseg/deploy/calibration.py`).", ""]
    if sp:
        lines += [f"## Speed, batch 1, engine alone — median of {report['rounds']} alternating "
                  f"rounds × {report['iters']} calls", "",
                  "| engine | FPS | p50 ms | × fp32 ONNX Runtime | fastest int8 × this |",
                  "|---|---:|---:|---:|---:|"]
        base, int8 = sp["fp32"]["fps"], max(v["fps"] for k, v in sp.items()
                                            if k.startswith("int8"))
        for name, s in sp.items():
            lines.append(f"| {name} | {s['fps']:.2f} | {s['p50_ms']:.1f} | "
                         f"{s['fps'] / base:.2f}× | {int8 / s['fps']:.2f}× |")
        lines.append("")
    if pipe:
        lines += [f"## Pipeline — `rtseg run` with {pipe['graph']} writing an mp4 of "
                  f"`{pipe['source']}`, {pipe['rounds_done']} rounds of "
                  f"{pipe['frames_per_round']} frames alternating with the engine alone", "",
                  "| | value |", "|---|---:|",
                  f"| engine alone FPS | {pipe['engine_fps']:.2f} |",
                  f"| pipeline FPS (decode, resize, infer, overlay, mp4) | "
                  f"{pipe['pipeline_fps']:.2f} |",
                  f"| pipeline ratio (median FPS / median FPS) | "
                  f"{pipe['pipeline_ratio']:.3f} |",
                  f"| median of the per-round ratios | {pipe['median_round_ratio']:.3f} |"]
        lines += [f"| {k} ms/frame | {'-' if v is None else f'{v:.2f}'} |"
                  for k, v in pipe["stage_ms"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=REPO / "engines" /
                   "unet_vgg16_camvid.safetensors", help="any rtseg .safetensors (CamVid)")
    p.add_argument("--data-root", type=Path, default=DATA / "camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--calib", type=Path, default=None, help="default: DATA-ROOT/train")
    p.add_argument("--calib-frames", type=int, default=DEFAULT_FRAMES)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="--int8-target layouts to make (tensorrt, cpu)")
    p.add_argument("--weight-bits", default=str(DEFAULT_WEIGHT_BITS),
                   help="comma list of 7, 8: the int8 weights' range (7: safe on AVX2)")
    p.add_argument("--source", type=Path, default=default_clip())
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--pipeline-rounds", type=int, default=7)
    p.add_argument("--pipeline-frames", type=int, default=80,
                   help="frames of the clip per pipeline round (short rounds, many of them: "
                        "the load of a shared machine changes less within one)")
    p.add_argument("--skip", default="", help="comma list of accuracy,speed,pipeline")
    p.add_argument("--keep", type=Path, default=None, help="keep the .onnx files here")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "int8_cpu")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    methods = [m for m in args.methods.split(",") if m]
    targets = [t for t in args.targets.split(",") if t]
    say = lambda m: print(m, flush=True)  # noqa: E731
    calib_src = args.calib or args.data_root / "train"

    work = Path(tempfile.mkdtemp(prefix="rtseg-int8-bench-"))
    try:
        fp32 = work / "fp32.onnx"
        meta = export_onnx(args.checkpoint, fp32, log=say)
        graphs, int8 = {"fp32": {"mib": fp32.stat().st_size / 2**20}}, {}
        all_bits = [int(b) for b in args.weight_bits.split(",") if b]
        for target, method, bits in ((t, m, b) for t in targets for m in methods
                                     for b in all_bits):
            name = graph_name(target, method, bits)
            path = work / f"{name.replace(' ', '_')}.onnx"
            t0 = time.perf_counter()
            export_onnx(fp32, path, log=say, calib=Calibration(
                calib_src, args.calib_frames, method, target, bits))
            graphs[name] = {"seconds": time.perf_counter() - t0,
                            "mib": path.stat().st_size / 2**20}
            int8[name] = path
        import onnxruntime
        import torch

        report = {"command": "python bench/int8_cpu.py " + " ".join(sys.argv[1:]),
                  "date": time.strftime("%Y-%m-%d %H:%M"),
                  "checkpoint": {"path": str(args.checkpoint), "sha256": sha256(args.checkpoint),
                                 "model": meta.model, "dataset": meta.dataset,
                                 "input_size": meta.input_size},
                  "machine": {**machine("cpu"),
                              "onnxruntime": onnxruntime.__version__,
                              "torch": torch.__version__},
                  "split": args.split,
                  "calibration": {"source": str(calib_src), "frames": args.calib_frames,
                                  "methods": methods, "targets": targets,
                                  "weight_bits": all_bits},
                  "graphs": graphs, "rounds": args.rounds, "iters": args.iters}
        # Speed and the pipeline: per target, the graph of rtseg export --int8's default method
        # (every method gives the same graph but for its scales, so the same speed).
        method = DEFAULT_METHOD if DEFAULT_METHOD in methods else methods[0]
        chosen = {graph_name(t, "", b).replace("  ", " ").strip(): graph_name(t, method, b)
                  for t in targets for b in all_bits}
        if "accuracy" not in skip:
            acc = accuracy(fp32, int8, args.data_root, args.split, say)
            report["accuracy"] = acc
            report["best"] = max(int8, key=lambda n: (acc["scores"][n]["miou"],
                                                      acc["scores"][n]["pixel_agreement"]))
        report["chosen"] = chosen
        if "speed" not in skip:
            pool = split_frames("camvid", args.data_root, args.split, tuple(meta.input_size), 16)
            report["speed"] = speed({"fp32": (fp32, "auto"),
                                     "bf16": (args.checkpoint, "bf16"),
                                     **{k: (int8[v], "auto") for k, v in chosen.items()}},
                                    pool, args.rounds, args.iters, args.warmup, say)
            s = report["speed"]
            report["ratios"] = {f"{k}_vs_{base}".replace("-", "_"): s[k]["fps"] / s[base]["fps"]
                                for k in chosen for base in ("fp32", "bf16")}
            say(json.dumps(report["ratios"]))
        if "pipeline" not in skip:
            fastest = chosen.get("int8-cpu") or next(iter(chosen.values()))
            with open_engine(int8[fastest], "cpu") as backend:
                got = bench(backend, args.source, [1], args.iters * 2,
                            rounds=args.pipeline_rounds, max_frames=args.pipeline_frames,
                            output=work / "overlay.mp4", on_progress=say)
            report["pipeline"] = {"graph": fastest, "source": str(args.source),
                                  "engine_fps": got["engine_fps"],
                                  "pipeline_fps": got["pipeline_fps"],
                                  "pipeline_ratio": got["pipeline_ratio"],
                                  "median_round_ratio": float(np.median(
                                      [r["ratio"] for r in got["rounds"]])),
                                  "frames_per_round": args.pipeline_frames,
                                  "stage_ms": got["stage_ms"],
                                  "rounds_done": len(got["rounds"]), "rounds": got["rounds"],
                                  "cpu_bound_ceiling": got.get("cpu_bound_ceiling")}
            say(f"pipeline ratio {got['pipeline_ratio']:.3f}")
        write_json(args.out.with_suffix(".json"), report)
        atomic_write(args.out.with_suffix(".md"), markdown(report))
        say(f"wrote {args.out.with_suffix('.json')} and .md")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in [fp32, *int8.values()]:
                shutil.copy2(path, args.keep / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
