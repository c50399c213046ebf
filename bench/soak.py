"""Soak: 10 000 frames through the full pipeline — memory stays flat, queues stay bounded.

A source that loops the real dashcam clip (decoded afresh on every lap, as a long drive
would be) feeds capture → preprocess → infer → overlay → write with a tiny, fast engine
(untrained, seeded ``unet_resnet18`` at 64×96 by default); every overlay is encoded into a
real mp4 (and class-id PNGs with ``--masks``). A probe sink on the writer thread samples the
process RSS and the depth of every pipeline queue every ``--every`` frames.

Criteria (exit status 1 when one fails):

* ``rss_flat``: from the warm-up frame on (``--warmup``, 1000) the RSS stays within
  ±``--tolerance`` (5 %) of its value at that frame;
* ``queues_bounded``: no queue ever held more than its bound (the run's ``queue_max`` —
  the deepest each queue was seen right after a put — against ``queue_bounds``);
* ``all_frames_written``: the run wrote every frame and the mp4 holds them all.

Writes ``bench/results/soak.json`` and ``soak.md`` (the curve and the machine).

    python bench/soak.py                      # 10 000 frames, a sample every 500
    python bench/soak.py --frames 2000 --every 100 --warmup 500 --masks
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_data import REPO, default_clip
from rtseg.backends import Backend, open_engine
from rtseg.bench import machine
from rtseg.engines import untrained_engine
from rtseg.files import write_json
from rtseg.pipeline import Pipeline, RunConfig, Sink, Source
from rtseg.pipeline.sinks import decodable_frames
from rtseg.pipeline.sources import VideoFileSource

RESULTS = REPO / "bench" / "results"

Sample = dict
OnSample = Callable[[Sample], None]


def rss_bytes() -> int:
    """Resident set size of this process: psutil when installed, else /proc/self/statm."""
    try:
        import psutil
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


class LoopingVideo(Source):
    """A video file played in a loop, for ever: reopened at its end; frames are named by
    their running index, so masks of different laps never overwrite each other."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.video = VideoFileSource(self.path)
        self.fps, self.size = self.video.fps, self.video.size
        self.description = f"{self.path} (looped)"
        self.index, self.laps = 0, 1

    def read(self, stop):
        got = self.video.read(stop)
        if got is None:  # end of a lap: decode the file again from the start
            self.video.close()
            self.video = VideoFileSource(self.path)
            self.laps += 1
            got = self.video.read(stop)
            if got is None:
                return None
        name = f"{self.index:06d}"
        self.index += 1
        return got[0], name, None

    def close(self):
        self.video.close()


class Probe(Sink):
    """Every ``every`` frames written: frames, seconds since start, RSS and queue depths."""

    def __init__(self, every: int, on_sample: OnSample | None = None):
        self.every, self.on_sample = every, on_sample
        self.count = 0
        self.samples: list[Sample] = []
        self.pipeline: Pipeline | None = None  # set once built, for its queue depths
        self.t0 = time.perf_counter()

    def write(self, item) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.sample()

    def sample(self) -> None:
        """Record one point of the curve (on the writer thread, between two frames)."""
        queues = self.pipeline.queue_depths() if self.pipeline is not None else {}
        point = {"frame": self.count, "seconds": time.perf_counter() - self.t0,
                 "rss_mib": rss_bytes() / 2**20, "queues": queues}
        self.samples.append(point)
        if self.on_sample is not None:
            self.on_sample(point)


def validate(frames: int, every: int, warmup: int, tolerance: float) -> None:
    """ValueError for settings that cannot give a verdict."""
    if every < 1 or frames < every:
        raise ValueError(f"--every {every} must be between 1 and --frames {frames}")
    if not 0 <= warmup <= frames - every:
        raise ValueError(f"--warmup {warmup} must leave at least one sample after it "
                         f"(0 to {frames - every})")
    if tolerance <= 0:
        raise ValueError(f"--tolerance {tolerance} must be positive")


def with_window_fps(samples: list[Sample]) -> list[Sample]:
    """Each sample plus ``fps``: frames per second since the previous sample."""
    out, prev = [], {"frame": 0, "seconds": 0.0}
    for s in samples:
        dt = s["seconds"] - prev["seconds"]
        out.append({**s, "fps": (s["frame"] - prev["frame"]) / dt if dt > 0 else None})
        prev = s
    return out


def rss_summary(curve: list[Sample], warmup: int, start_mib: float) -> dict:
    """RSS at the start, at the warm-up sample and at the end; spread after warm-up."""
    ref = next(s for s in curve if s["frame"] >= warmup)
    after = [s["rss_mib"] for s in curve if s["frame"] >= ref["frame"]]
    base = ref["rss_mib"]
    return {"start": start_mib, "at_warmup": base, "warmup_frame": ref["frame"],
            "end": curve[-1]["rss_mib"], "min_after_warmup": min(after),
            "max_after_warmup": max(after),
            "max_deviation_pct": 100.0 * max(abs(v - base) for v in after) / base,
            "end_drift_pct": 100.0 * (curve[-1]["rss_mib"] - base) / base}


def judge(rss: dict, queue_max: dict, bounds: dict, frames: int, written: int,
          video_frames: int, tolerance: float) -> dict:
    """Each criterion: passed, and what was measured."""
    over = {k: (queue_max.get(k, 0), b) for k, b in bounds.items() if queue_max.get(k, 0) > b}
    return {
        "rss_flat": {"passed": rss["max_deviation_pct"] <= 100.0 * tolerance,
                     "detail": f"max deviation {rss['max_deviation_pct']:.2f} % of "
                               f"{rss['at_warmup']:.1f} MiB (limit {100 * tolerance:g} %)"},
        "queues_bounded": {"passed": not over and all(b > 0 for b in bounds.values()),
                           "detail": "; ".join(f"{k} {m}/{bounds[k]}"
                                               for k, m in sorted(queue_max.items()))},
        "all_frames_written": {"passed": written == frames == video_frames,
                               "detail": f"{written} written, {video_frames} in the mp4, "
                                         f"{frames} asked"},
    }


def soak(backend: Backend, clip: Path | str, workdir: Path | str, frames: int = 10_000,
         every: int = 500, warmup: int = 1000, tolerance: float = 0.05, batch: int = 1,
         masks: bool = False, on_sample: OnSample | None = None) -> dict:
    """Run ``frames`` frames of ``clip`` (looped) through the full pipeline, writing the mp4
    (and masks) into ``workdir``; the report: curve, RSS summary, queues, criteria."""
    validate(frames, every, warmup, tolerance)
    workdir = Path(workdir)
    output = workdir / "soak.mp4"
    config = RunConfig(output=output, masks=workdir / "masks" if masks else None,
                       max_frames=frames, batch=batch, status_interval=1.0)
    start_mib = rss_bytes() / 2**20
    probe = Probe(every, on_sample)
    pipeline = Pipeline(LoopingVideo(clip), backend, config, sinks=[probe])
    probe.pipeline = pipeline
    t0 = time.perf_counter()
    result = pipeline.run()
    wall = time.perf_counter() - t0
    if not probe.samples or probe.samples[-1]["frame"] != probe.count:
        probe.sample()  # the end of a run that is not a multiple of ``every``
    curve = with_window_fps(probe.samples)
    rss = rss_summary(curve, warmup, start_mib)
    video_frames = decodable_frames(output)
    criteria = judge(rss, result["queue_max"], result["queue_bounds"], frames,
                     result["frames"], video_frames, tolerance)
    return {"frames": frames, "every": every, "warmup": warmup, "tolerance": tolerance,
            "batch": batch, "masks": masks, "source": str(clip), "backend": backend.name,
            "model": backend.metadata.model, "input_size": list(backend.input_size),
            "wall_s": wall, "fps": result["fps"], "video_frames": video_frames,
            "rss_mib": rss, "queue_max": result["queue_max"],
            "queue_bounds": result["queue_bounds"], "curve": curve, "criteria": criteria,
            "passed": all(c["passed"] for c in criteria.values()), "run": result,
            "machine": describe_machine(backend.device)}


def describe_machine(device: str = "cpu") -> dict:
    """rtseg.bench's machine description plus the load when measured."""
    info = machine(device)
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    return info


def format_sample(s: Sample, base: float | None = None) -> str:
    """``  1500 frames   52.1 s   31.2 FPS   RSS  612.4 MiB (+0.31 %)  q 1/0/0/0``."""
    fps = "-" if s.get("fps") is None else f"{s['fps']:.1f}"
    delta = "" if base is None else f" ({100 * (s['rss_mib'] - base) / base:+.2f} %)"
    queues = "/".join(str(v) for v in s["queues"].values())
    return (f"{s['frame']:6d} frames {s['seconds']:7.1f} s {fps:>6} FPS   "
            f"RSS {s['rss_mib']:7.1f} MiB{delta}   q {queues}")


def to_markdown(report: dict) -> str:
    """The report as Markdown: verdicts, the machine, the curve."""
    m, rss = report["machine"], report["rss_mib"]
    h, w = report["input_size"]
    lines = [f"# Soak: {report['frames']} frames — {'PASS' if report['passed'] else 'FAIL'}", "",
             (f"{report['model']} ({report['backend']}, untrained) at {h}x{w}, batch "
              f"{report['batch']}, on `{report['source']}` looped; overlay + mp4"
              f"{' + masks' if report['masks'] else ''}. {report['wall_s']:.0f} s wall, "
              f"{report['fps']:.1f} FPS."), "",
             (f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores, "
              f"load {m.get('loadavg_1_5_15', '?')}; Python {m['python']}, torch "
              f"{m.get('torch', '-')} ({m.get('torch_threads', '?')} threads), OpenCV "
              f"{m['opencv']}; {m['platform']}."), "",
             "| criterion | passed | measured |", "|---|---|---|"]
    lines += [f"| {k} | {'yes' if c['passed'] else 'NO'} | {c['detail']} |"
              for k, c in report["criteria"].items()]
    lines += ["", (f"RSS: {rss['start']:.1f} MiB before the run, {rss['at_warmup']:.1f} MiB "
                   f"at frame {rss['warmup_frame']}, {rss['end']:.1f} MiB at the end "
                   f"({rss['end_drift_pct']:+.2f} %); range after warm-up "
                   f"{rss['min_after_warmup']:.1f}–{rss['max_after_warmup']:.1f} MiB."), "",
              "| frame | s | FPS (window) | RSS MiB | Δ vs warm-up | queues now |",
              "|---:|---:|---:|---:|---:|---|"]
    base = rss["at_warmup"]
    for s in report["curve"]:
        fps = "-" if s["fps"] is None else f"{s['fps']:.1f}"
        queues = " ".join(f"{k} {v}" for k, v in s["queues"].items())
        lines.append(f"| {s['frame']} | {s['seconds']:.1f} | {fps} | {s['rss_mib']:.1f} | "
                     f"{100 * (s['rss_mib'] - base) / base:+.2f} % | {queues} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--every", type=int, default=500, help="frames between two samples")
    p.add_argument("--warmup", type=int, default=1000, help="RSS reference frame")
    p.add_argument("--tolerance", type=float, default=0.05, help="allowed RSS deviation")
    p.add_argument("--engine", type=Path, default=None, help="default: an untrained --model")
    p.add_argument("--model", default="unet_resnet18")
    p.add_argument("--size", default="64x96", help="HxW of the untrained engine")
    p.add_argument("--source", type=Path, default=None, help="default: the dashcam clip")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--masks", action="store_true", help="also write class-id PNGs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=RESULTS / "soak.json")
    p.add_argument("--markdown", type=Path, default=RESULTS / "soak.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print the curve, write the JSON and Markdown; 1 if a criterion fails."""
    args = parse_args(argv)
    clip = args.source or default_clip()
    validate(args.frames, args.every, args.warmup, args.tolerance)
    seen: list[Sample] = []

    def show(s: Sample) -> None:
        seen.append(s)
        base = next((p["rss_mib"] for p in seen if p["frame"] >= args.warmup), None)
        print(format_sample(with_window_fps(seen)[-1], base), flush=True)

    with tempfile.TemporaryDirectory(prefix="rtseg-soak-") as tmp:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        engine = args.engine or untrained_engine(args.model, size, tmp)
        print(f"soak: {args.frames} frames of {clip} (looped), sample every {args.every}",
              flush=True)
        with open_engine(engine, args.device) as backend:
            report = soak(backend, clip, tmp, args.frames, args.every, args.warmup,
                          args.tolerance, args.batch, args.masks, on_sample=show)
    report = {"engine": str(args.engine or f"untrained {args.model} {args.size}"), **report}
    for path, text in ((args.json, None), (args.markdown, to_markdown(report))):
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            write_json(path, report)
        else:
            path.write_text(text)
    for name, c in report["criteria"].items():
        print(f"{name}: {'PASS' if c['passed'] else 'FAIL'} — {c['detail']}")
    print(f"written {args.json} and {args.markdown}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
