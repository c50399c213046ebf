"""Flicker of the bundled model: temporal consistency (TC) with and without ``--smooth``, its
mIoU effect, the FPS cost of ``--consistency``, and a picture of what flickers.

Every number comes from ``rtseg run`` itself (``rtseg.pipeline.run``, the same engine loaded
once), one run each:

* the dashcam clip (no labels): TC without and with ``--smooth K``;
* the CamVid val clip (0016E5, labelled): TC and mIoU without and with ``--smooth K``;
* the pipeline's FPS with ``--consistency`` against without, on the dashcam clip (plain and
  ``--consistency`` runs alternate ``--rounds`` times; the ratio of the median FPS, and of
  the median CPU time per frame, which other jobs on a shared machine disturb less);
* the CPU time of the filter per frame and of TC per pair, outside the pipeline (the
  process's CPU time over the picture's frames).

The picture (``--png``): two consecutive dashcam frames' overlays and, in red, the pixels
whose label changes between them once the motion is taken out (what TC counts), without and
with the filter; the pair shown is the one where the unfiltered model flickers most.

    python bench/flicker.py                       # bench/results/flicker_cpu.json and .png
    python bench/flicker.py --smooth 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from bench_data import DATA, REPO, default_clip
from side_by_side import legend as swatches
from rtseg.backends import open_engine
from rtseg.engines import default_engine
from rtseg.imageops import resize_frame
from rtseg.pipeline import run
from rtseg.pipeline.smooth import FlowSmoother
from rtseg.scoring.flow import NO_LABEL, DenseFlow, grey
from rtseg.scoring.temporal import TemporalConsistency
from rtseg.visualize import blend, colorize, palette_lut

KEYS = ("frames", "fps", "miou", "tc", "tc_per_class", "tc_pairs", "tc_skipped",
        "tc_flow_rejected", "smooth_ms", "stage_ms")


def one_run(backend, source: Path, **options) -> dict:
    """``rtseg run`` on ``source``; the keys this benchmark reports, and the CPU time of the
    whole process (every thread) per frame written."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = run(source, backend, **options)
    out = {k: result.get(k) for k in KEYS}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["cpu_ms_per_frame"] = 1000 * (time.process_time() - cpu0) / max(result["frames"], 1)
    print(f"  {source.name} {options}: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in out.items() if k not in ("stage_ms", "tc_per_class")), flush=True)
    return out


def fps_ratio(backend, clip: Path, rounds: int, max_frames: int | None) -> dict:
    """Pipeline FPS with ``--consistency`` against without, runs alternating: the ratio of
    the median FPS, and the ratio of the median CPU time per frame (without / with: what the
    FPS ratio is on a CPU the pipeline keeps busy, and robust to other jobs' load)."""
    runs: dict[str, list[dict]] = {"without": [], "with_consistency": []}
    for _ in range(rounds):
        runs["without"].append(one_run(backend, clip, max_frames=max_frames))
        runs["with_consistency"].append(one_run(backend, clip, max_frames=max_frames,
                                                consistency=True))

    def median(key: str, which: str) -> float:
        return statistics.median(r[key] for r in runs[which])

    return {"frames_per_run": max_frames, "rounds": rounds,
            "fps_without": [r["fps"] for r in runs["without"]],
            "fps_with_consistency": [r["fps"] for r in runs["with_consistency"]],
            "cpu_ms_per_frame_without": [r["cpu_ms_per_frame"] for r in runs["without"]],
            "cpu_ms_per_frame_with_consistency": [r["cpu_ms_per_frame"]
                                                  for r in runs["with_consistency"]],
            "ratio": median("fps", "with_consistency") / median("fps", "without"),
            "cpu_ratio": (median("cpu_ms_per_frame", "without")
                          / median("cpu_ms_per_frame", "with_consistency"))}


def clip_frames(clip: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def flips(flow: DenseFlow, frame_a, frame_b, labels_a, labels_b) -> np.ndarray:
    """Pixels of frame a whose label differs from frame b's at the same point of the scene
    (b's labels warped onto a; pixels whose flow is rejected are not flips)."""
    warped = flow.align(grey(frame_a), grey(frame_b)).warp(labels_b)
    return (warped != NO_LABEL) & (warped != labels_a)


def legend(width: int, class_names, lut: np.ndarray) -> np.ndarray:
    """Two rows under the picture: what red means, and the class colours."""
    note = np.full((30, width, 3), 255, np.uint8)
    cv2.putText(note, "red: pixels whose class changes from one frame to the next once the "
                "camera's motion is taken out (what TC counts)", (6, 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 200), 1, cv2.LINE_AA)
    return np.concatenate([note, swatches(width, class_names, lut)])


def picture(backend, clip: Path, k: int, count: int, out: Path) -> dict:
    """The PNG described in the module docstring; the pair shown and its flip shares."""
    size = tuple(backend.input_size)
    images = clip_frames(clip, count)
    nets = [resize_frame(i, size) for i in images]
    raw = [backend.infer(n[None])[0] for n in nets]
    smooth = FlowSmoother(k)
    cpu0 = time.process_time()
    smoothed = [smooth(n, lbl) for n, lbl in zip(nets, raw)]
    smooth_cpu = 1000 * (time.process_time() - cpu0) / len(nets)
    tc = TemporalConsistency(backend.metadata.class_names)
    cpu0 = time.process_time()
    for n, lbl in zip(nets, raw):
        tc.add(n, lbl)
    tc_cpu = 1000 * (time.process_time() - cpu0) / (len(nets) - 1)
    flow = DenseFlow()
    share = [flips(flow, nets[t], nets[t + 1], raw[t], raw[t + 1]).mean()
             for t in range(len(nets) - 1)]
    t = k + int(np.argmax(share[k:]))  # a pair the filter has a full history for
    lut = palette_lut(backend.metadata.palette)

    def panel(image, title):
        bar = np.full((30, image.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
        return np.concatenate([bar, image])

    rows, shares = [], {}
    for name, labels in (("model alone", raw), (f"--smooth {k}", smoothed)):
        changed = flips(flow, nets[t], nets[t + 1], labels[t], labels[t + 1])
        shares[name] = float(changed.mean())
        red = cv2.cvtColor(cv2.cvtColor(nets[t], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) // 2
        red[changed] = (0, 0, 255)
        rows.append(np.concatenate([
            panel(blend(nets[t], colorize(labels[t], lut), 0.5), f"{name}: frame {t}"),
            panel(blend(nets[t + 1], colorize(labels[t + 1], lut), 0.5),
                  f"{name}: frame {t + 1}"),
            panel(red, f"flipped between them: {100 * changed.mean():.1f}% of pixels")], axis=1))
    width = rows[0].shape[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows + [legend(width, backend.metadata.class_names,
                                                       lut)]))
    return {"png": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
            "pair": [t, t + 1], "flipped_share": shares,
            "cpu_ms": {"smooth_per_frame": smooth_cpu, "tc_per_pair": tc_cpu,
                       "frames": len(nets)},
            "mean_flipped_share_raw": float(np.mean(share))}


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", type=Path, default=None, help="default: the bundled model")
    p.add_argument("--smooth", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="plain/--consistency FPS pairs")
    p.add_argument("--fps-frames", type=int, default=60,
                   help="frames of the dashcam clip per FPS run")
    p.add_argument("--skip", nargs="*", default=[], choices=["dashcam", "camvid", "fps"],
                   help="parts not to run again (their numbers are kept from --json)")
    p.add_argument("--picture-frames", type=int, default=60)
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "flicker_cpu.json")
    p.add_argument("--png", type=Path, default=REPO / "bench" / "results" / "flicker_dashcam.png")
    args = p.parse_args()
    clip, camvid = default_clip(), DATA / "camvid"
    engine = args.engine or default_engine(device="cpu")
    report: dict = json.loads(args.json.read_text()) if args.skip else {}
    report.update(engine=str(engine.relative_to(REPO) if engine.is_relative_to(REPO)
                             else engine),
                  cpu=f"{cpu_name()}, {os.cpu_count()} cores, shared with other jobs",
                  smooth=args.smooth)
    with open_engine(engine, "cpu") as backend:
        report["backend"], report["input_size"] = backend.name, list(backend.input_size)
        if "dashcam" not in args.skip:
            print("dashcam clip:", clip)
            report["dashcam"] = {
                "raw": one_run(backend, clip, consistency=True),
                "smooth": one_run(backend, clip, consistency=True, smooth=args.smooth)}
        if "camvid" not in args.skip:
            print("CamVid val:", camvid / "val")
            report["camvid_val"] = {
                "raw": one_run(backend, camvid / "val", labels=camvid / "valannot",
                               consistency=True),
                "smooth": one_run(backend, camvid / "val", labels=camvid / "valannot",
                                  consistency=True, smooth=args.smooth)}
        if "fps" not in args.skip:
            print("FPS with --consistency against without:")
            report["fps_ratio"] = fps_ratio(backend, clip, args.rounds, args.fps_frames)
        report["picture"] = picture(backend, clip, args.smooth, args.picture_frames, args.png)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    d, c = report["dashcam"], report["camvid_val"]
    print(f"\nTC dashcam {d['raw']['tc']:.4f} -> {d['smooth']['tc']:.4f} with --smooth "
          f"{args.smooth}; CamVid val TC {c['raw']['tc']:.4f} -> {c['smooth']['tc']:.4f}, mIoU "
          f"{c['raw']['miou']:.4f} -> {c['smooth']['miou']:.4f}; FPS ratio with --consistency "
          f"{report['fps_ratio']['ratio']:.3f} (CPU time per frame: "
          f"{report['fps_ratio']['cpu_ratio']:.3f})\nwrote {args.json} and {args.png}")


if __name__ == "__main__":
    main()
