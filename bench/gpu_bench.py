"""The four models on one GPU in one short run: FP16/BF16/TF32/FP32 (TF32 off), eager
channels_last and CUDA graphs, batch 1 and the best batch — FPS, p50/p99 latency, FLOPs per
frame and the fraction of the dtype's own dense peak (issue "bench", GPU part).

Each model runs as deployed (``Segmenter``: uint8 BGR frames in, uint8 labels out, BatchNorm
folded, channels_last), seeded untrained weights (speed does not depend on them), frames
already on the device. Latency per call from CUDA events around every call; FPS from the
first to the last event; FLOPs counted once per model and size on the ``meta`` device.

    python bench/gpu_bench.py --max-seconds 240                  # default plan, all four
    python bench/gpu_bench.py --models segnet_r50 --sizes 352x480 --sweep 352x480=8,32
    python bench/gpu_bench.py --dry-run --out /tmp/gb/dry        # every CPU code path, 20-30 s

Order of work (most important first, so that a spent ``--max-seconds`` budget loses the
least; the first ``--sizes`` entry is the target size, 1024×2048 by default):
  1. target size, batch 1, eager: fp16 then fp32 (TF32 off) per model — the target
     "fp16 ≥ 2× fp32 for every model at 1024×2048";
  2. the other sizes (352×480), batch 1, eager, fp16 and fp32;
  3. batch sweep, eager, fp16 and fp32, smaller sizes first: grow the batch along
     ``--sweep`` until FPS gains < 5 % or memory runs out;
  4. TF32 (fp32 with TF32 on), batch 1, eager;
  5. CUDA graphs, fp16 and fp32, batch 1 and the best eager batch of step 3;
  6. bf16, batch 1, eager;
  7. ``torch.compile`` (only with ``--compile``: minutes of compilation), fp16, batch 1.
Within a step models alternate, so a cut-off run still covers all four evenly. A row is
skipped when the time left is less than a similar row took. JSON (atomically replaced) and
markdown are rewritten after every row, so nothing measured is lost.

As of this writing the script has run only on the CPU (``--dry-run``), not yet on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rtseg.data import get_spec
from rtseg.data.classes import IMAGENET_MEAN, IMAGENET_STD
from rtseg.devices import cudnn_autotune
from rtseg.errors import BadInput
from rtseg.files import atomic_write, write_json
from rtseg.models import Segmenter, build_model, canonical_name
from rtseg.models.flops import count_flops_meta
from rtseg.models.fusion import fold_batchnorm
from rtseg.models.registry import check_input_size

MODELS = ("unet_vgg16", "unet_r50", "segnet_vgg16", "segnet_r50")
# precision → (parameter/activation dtype, TF32 allowed for fp32 matmuls and convolutions)
PRECISIONS = {"fp16": (torch.float16, False), "fp32": (torch.float32, False),
              "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False)}
MODES = ("eager", "graph", "compile")
DEFAULT_SWEEPS = {"352x480": (4, 8, 16, 32), "1024x2048": (2, 4)}
DRY_RUN_SWEEPS = {"64x96": (2,), "32x32": (2,)}
GAIN_TO_GROW = 1.05  # a bigger batch must raise FPS by more than 5 % to keep growing
# Errors after which the CUDA context is unusable: every later row would fail the same way.
STICKY_CUDA_ERRORS = ("illegal memory access", "unspecified launch failure",
                      "device-side assert", "misaligned address", "illegal instruction")

# Dense (no 2:4 sparsity) peaks in TFLOP/s, keyed by precision. NVIDIA's datasheets quote the
# tensor-core figures with sparsity; dense is half: H100 SXM FP16/BF16 1979 → 989.4, TF32
# 989 → 494.7, FP32 (CUDA cores) 66.9; H100 PCIe 1513 → 756.5, 756 → 378, FP32 51.2.
# Sources: NVIDIA H100 Tensor Core GPU datasheet (mirrored at
# https://archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html) and the Hopper whitepaper's
# table as reproduced at https://glennklockwood.com/garden/processors/h100. The H200 (and
# GH200) is the same GH100 compute at the SXM clocks: only its memory differs.
H100_SXM_PEAKS = {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}
H100_PCIE_PEAKS = {"fp16": 756.5, "bf16": 756.5, "tf32": 378.0, "fp32": 51.2}


def dense_peaks(device_name: str) -> dict[str, float] | None:
    """Dense TFLOP/s per precision for a ``torch.cuda.get_device_name()``; None if unknown
    (NVL boards run other clocks and are not in the table)."""
    if "NVL" in device_name:
        return None
    if "H100 PCIe" in device_name:
        return H100_PCIE_PEAKS
    if "H200" in device_name or ("H100" in device_name and ("SXM" in device_name
                                                            or "HBM3" in device_name)):
        return H100_SXM_PEAKS
    return None


def environment(device: torch.device) -> dict:
    """Device name, memory and the software versions that decide the kernels."""
    env = {"device": "cpu", "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
           else None, "python": platform.python_version(), "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device=props.name, memory_gb=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}",
                   sms=props.multi_processor_count)
    return env


@contextmanager
def tf32(enabled: bool):
    """TF32 for fp32 matmuls and cuDNN convolutions on (or off) inside the block only."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def matmul_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float | None:
    """Measured bf16 TFLOP/s of an n×n×n product: the achievable tensor-core peak as a
    sanity check on the datasheet figure. None on the CPU."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds, _ = time_calls(lambda: a @ b, iters, device)
    return 2 * n**3 / statistics.median(seconds) / 1e12


def build_segmenter(name: str, num_classes: int) -> Segmenter:
    """The deployed module on the CPU in fp32: seeded weights, BatchNorm folded."""
    torch.manual_seed(0)
    segmenter = Segmenter(build_model(name, num_classes), IMAGENET_MEAN, IMAGENET_STD).eval()
    fold_batchnorm(segmenter.net)
    return segmenter


class ModelCache:
    """Each model built once, then one channels_last copy per (dtype, device) kept."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes, self.device = num_classes, device
        self._base: dict[str, Segmenter] = {}
        self._placed: dict[tuple[str, torch.dtype], Segmenter] = {}

    def get(self, name: str, dtype: torch.dtype) -> Segmenter:
        if (name, dtype) not in self._placed:
            if name not in self._base:
                self._base[name] = build_segmenter(name, self.num_classes)
            placed = copy.deepcopy(self._base[name]).to(self.device, dtype)
            self._placed[name, dtype] = placed.to(memory_format=torch.channels_last)
        return self._placed[name, dtype]


def time_calls(fn, iters: int, device: torch.device) -> tuple[list[float], float]:
    """Seconds of each of ``iters`` calls of ``fn`` and of all of them together (CUDA events
    around every call on a GPU — no host sync in between; perf_counter on the CPU)."""
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        per_call = [start.elapsed_time(end) / 1000 for start, end in events]
        return per_call, events[0][0].elapsed_time(events[-1][1]) / 1000
    per_call, t0 = [], time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        per_call.append(time.perf_counter() - t)
    return per_call, time.perf_counter() - t0


def capture_graph(segmenter: Segmenter, frames: torch.Tensor, warmup: int):
    """``segmenter(frames)`` captured in a CUDA graph; returns (replay, output buffer).
    ``frames`` is the static input: refill it in place to run new frames."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, 1)):  # cuDNN autotuning and allocations outside the graph
            segmenter(frames)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = segmenter(frames)
    return graph.replay, out


@dataclass(frozen=True)
class Settings:
    """Per-row timing: warm-up calls, then between min_iters and max_iters timed calls,
    as many as fit in row_seconds."""
    warmup: int = 3
    min_iters: int = 5
    max_iters: int = 20
    row_seconds: float = 1.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_mode(segmenter: Segmenter, frames: torch.Tensor, mode: str, settings: Settings,
              device: torch.device) -> dict:
    """Latency statistics of ``segmenter(frames)`` run eagerly, graph-replayed or compiled."""
    with torch.inference_mode():
        if mode == "graph":
            call, _out = capture_graph(segmenter, frames, settings.warmup)
        else:
            model = torch.compile(segmenter, dynamic=False) if mode == "compile" else segmenter
            call = lambda: model(frames)  # noqa: E731
            for _ in range(settings.warmup):
                call()
        sync(device)
        t = time.perf_counter()
        call()
        sync(device)
        one = time.perf_counter() - t
        iters = math.ceil(settings.row_seconds / one)
        iters = min(settings.max_iters, max(settings.min_iters, iters))
        per_call, total = time_calls(call, iters, device)
    ordered = sorted(per_call)
    return {"iters": iters, "fps": frames.shape[0] * iters / total,
            "latency_ms_p50": statistics.median(per_call) * 1000,
            "latency_ms_p99": ordered[math.ceil(0.99 * iters) - 1] * 1000,  # nearest rank
            "latency_ms_mean": total / iters * 1000}


@dataclass(frozen=True)
class Job:
    """Rows to measure: one per batch; a sweep stops growing when FPS stops improving.
    ``batches=()`` means "the best eager batch found for this model, size and precision"."""
    step: str
    model: str
    size: str
    precision: str
    mode: str
    batches: tuple[int, ...] = (1,)
    sweep: bool = False


def plan(models, sizes, precisions, modes, sweeps) -> list[Job]:
    """The jobs in the documented order (see the module docstring), filtered to the
    precisions and modes asked for."""
    target, others = sizes[0], sizes[1:]
    base = [p for p in ("fp16", "fp32") if p in precisions]
    jobs = [Job("1 target b1", m, target, p, "eager") for m in models for p in base]
    jobs += [Job("2 other sizes b1", m, s, p, "eager")
             for s in others for m in models for p in base]
    jobs += [Job("3 batch sweep", m, s, p, "eager", tuple(sweeps.get(s, (2, 4))), sweep=True)
             for s in [*others, target] for p in base for m in models]
    if "tf32" in precisions:
        jobs += [Job("4 tf32 b1", m, s, "tf32", "eager") for s in sizes for m in models]
    if "graph" in modes:
        for s in sizes:
            for p in base:
                jobs += [Job("5 graph b1", m, s, p, "graph") for m in models]
                jobs += [Job("5 graph best batch", m, s, p, "graph", ()) for m in models]
    if "bf16" in precisions:
        jobs += [Job("6 bf16 b1", m, s, "bf16", "eager") for s in sizes for m in models]
    if "compile" in modes and "fp16" in precisions:
        jobs += [Job("7 compile b1", m, s, "fp16", "compile") for s in sizes for m in models]
    return [j for j in jobs if j.mode in modes]


@dataclass
class Results:
    """Everything measured so far; ``save`` rewrites the JSON and markdown atomically."""
    out: Path
    header: dict
    start: float  # time.monotonic() at the start of the run
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def row(self, model: str, size: str, precision: str, mode: str, batch: int) -> dict | None:
        key = (model, size, precision, mode, batch)
        return next((r for r in self.rows if (r["model"], r["size"], r["precision"], r["mode"],
                                              r["batch"]) == key), None)

    def best_batch(self, model: str, size: str, precision: str, mode: str) -> dict | None:
        rows = [r for r in self.rows if (r["model"], r["size"], r["precision"], r["mode"])
                == (model, size, precision, mode)]
        return max(rows, key=lambda r: r["fps"], default=None)

    def document(self) -> dict:
        self.header["elapsed_s"] = round(time.monotonic() - self.start, 1)
        return {**self.header, "rows": self.rows, "best_batches": self.best_batches(),
                "summary": self.summary(), "skipped": self.skipped, "failed": self.failed}

    def best_batches(self) -> list[dict]:
        keys = dict.fromkeys((r["model"], r["size"], r["precision"], r["mode"]) for r in self.rows)
        return [{"model": m, "size": s, "precision": p, "mode": mode,
                 "batch": (best := self.best_batch(m, s, p, mode))["batch"], "fps": best["fps"]}
                for m, s, p, mode in keys]

    def summary(self) -> list[dict]:
        """Per model at the target size: fp16/fp32 speed-up (eager batch 1, and best row of
        each), and the fastest configuration with its fraction of peak."""
        target, out = self.header["target_size"], []
        for model in self.header["models"]:
            rows = [r for r in self.rows if r["model"] == model and r["size"] == target]
            if not rows:
                continue
            fp16 = self.row(model, target, "fp16", "eager", 1)
            fp32 = self.row(model, target, "fp32", "eager", 1)
            best = max(rows, key=lambda r: r["fps"])
            best16 = max((r["fps"] for r in rows if r["precision"] == "fp16"), default=None)
            best32 = max((r["fps"] for r in rows if r["precision"] == "fp32"), default=None)
            speedup = fp16["fps"] / fp32["fps"] if fp16 and fp32 else None
            out.append({"model": model, "size": target, "fp16_over_fp32_eager_b1": speedup,
                        "meets_2x": None if speedup is None else speedup >= 2.0,
                        "fp16_over_fp32_best": best16 / best32 if best16 and best32 else None,
                        "best": {k: best[k] for k in ("precision", "mode", "batch", "fps", "tflops",
                                                      "fraction_of_peak")}})
        return out

    def save(self) -> None:
        document = self.document()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.out.with_suffix(".json"), document)
        atomic_write(self.out.with_suffix(".md"), to_markdown(document))


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def to_markdown(doc: dict) -> str:
    """The JSON document as markdown: header, summary, rows, skipped and failed."""
    lines = [f"# GPU bench — {doc['device']}", "",
             f"torch {doc['torch']}, CUDA {doc['cuda']}, cuDNN {doc['cudnn']}; peaks (dense "
             f"TFLOP/s) {doc['peaks_tflops'] or 'unknown'}; measured bf16 8192³ matmul "
             f"{_fmt(doc['matmul_bf16_tflops'], '.1f')} TFLOP/s; {doc['elapsed_s']:.0f} s of "
             f"a {doc['max_seconds']:.0f} s budget.", *[f"- {n}" for n in doc["notes"]], "",
             f"## Summary at {doc['target_size']}", "",
             "| model | fp16/fp32 (eager b1) | ≥ 2× | fp16/fp32 (best rows) | best config | "
             "FPS | TFLOP/s | of peak |", "|---|---|---|---|---|---|---|---|"]
    for s in doc["summary"]:
        b, meets = s["best"], {True: "yes", False: "no", None: "–"}[s["meets_2x"]]
        lines.append(f"| {s['model']} | {_fmt(s['fp16_over_fp32_eager_b1'], '.2f')} | {meets} | "
                     f"{_fmt(s['fp16_over_fp32_best'], '.2f')} | "
                     f"{b['precision']} {b['mode']} b{b['batch']} | {b['fps']:.1f} | "
                     f"{b['tflops']:.1f} | {_fmt(b['fraction_of_peak'], '.1%')} |")
    lines += ["", "## Rows", "", "| model | size | precision | mode | batch | FPS | p50 ms | "
              "p99 ms | GFLOPs/frame | TFLOP/s | of peak | peak mem GB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['model']} | {r['size']} | {r['precision']} | {r['mode']} | "
                     f"{r['batch']} | {r['fps']:.1f} | {r['latency_ms_p50']:.2f} | "
                     f"{r['latency_ms_p99']:.2f} | {r['gflops_per_frame']:.1f} | "
                     f"{r['tflops']:.2f} | {_fmt(r['fraction_of_peak'], '.1%')} | "
                     f"{_fmt(r['peak_memory_gb'], '.1f')} |")
    for title, items in (("Skipped", doc["skipped"]), ("Failed", doc["failed"])):
        if items:
            lines += ["", f"## {title}", ""] + [
                f"- {i['model']} {i['size']} {i['precision']} {i['mode']} b{i['batch']}: "
                f"{i['reason']}" for i in items]
    return "\n".join(lines) + "\n"


@dataclass
class Bench:
    """What every row needs: the device, models, FLOP counts, peaks, budget and results."""
    device: torch.device
    models: ModelCache
    settings: Settings
    peaks: dict[str, float] | None
    results: Results
    deadline: float
    flops: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # last row's cost
    broken: str | None = None  # set when the CUDA context is lost: later rows can't run

    def frame_flops(self, model: str, size: str) -> int:
        if (model, size) not in self.flops:
            self.flops[model, size] = count_flops_meta(model, self.models.num_classes,
                                                       parse_size(size))
        return self.flops[model, size]

    def skip_reason(self, job: Job) -> str | None:
        """Why this row can't run now (lost CUDA context, budget spent), or None."""
        if self.broken:
            return self.broken
        left = self.deadline - time.monotonic()
        similar = self.seconds.get((job.size, job.precision), 0.0)
        if left <= 0 or left < similar:
            return f"budget: {max(left, 0):.0f} s left, a similar row took {similar:.0f} s"
        return None

    def measure(self, job: Job, batch: int) -> dict | None:
        """One row (recorded and saved), or None when skipped or failed (recorded too)."""
        what = {"model": job.model, "size": job.size, "precision": job.precision,
                "mode": job.mode, "batch": batch}
        reason = self.skip_reason(job)
        if reason:
            self.results.skipped.append({**what, "reason": reason})
            return None
        t0 = time.monotonic()
        try:
            row = self._row(job, batch, what)
        except torch.cuda.OutOfMemoryError:
            row, reason = None, "out of memory"
        except Exception as exc:  # noqa: BLE001 — a bench records failures and goes on
            row, reason = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            if any(sticky in reason for sticky in STICKY_CUDA_ERRORS):
                self.broken = f"skipped after an earlier CUDA error ({reason[:120]})"
        if row is None:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.results.failed.append({**what, "reason": reason})
            print(f"FAILED {what}: {reason}", flush=True)
        else:
            self.seconds[job.size, job.precision] = row["seconds"] = time.monotonic() - t0
            self.results.rows.append(row)
            print(f"{job.model:13s} {job.size:>9s} {job.precision} {job.mode:7s} b{batch:<3d} "
                  f"{row['fps']:9.1f} FPS  p50 {row['latency_ms_p50']:8.2f} ms  "
                  f"{row['tflops']:7.2f} TFLOP/s  {_fmt(row['fraction_of_peak'], '.1%')} of peak",
                  flush=True)
        self.results.save()
        return row

    def _row(self, job: Job, batch: int, what: dict) -> dict:
        dtype, allow_tf32 = PRECISIONS[job.precision]
        flops = self.frame_flops(job.model, job.size)  # before the timing: cheap, can't waste it
        segmenter = self.models.get(job.model, dtype)
        frames = torch.randint(0, 256, (batch, *parse_size(job.size), 3), dtype=torch.uint8,
                               device=self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        with tf32(allow_tf32):
            timing = time_mode(segmenter, frames, job.mode, self.settings, self.device)
        tflops = flops * timing["fps"] / 1e12
        peak = self.peaks.get(job.precision) if self.peaks else None
        notes = ["TF32 flags have no effect on the CPU"] if allow_tf32 and not cuda else []
        return {**what, "step": job.step, **timing, "gflops_per_frame": flops / 1e9,
                "tflops": tflops, "peak_tflops": peak,
                "fraction_of_peak": tflops / peak if peak else None,
                "peak_memory_gb": (torch.cuda.max_memory_allocated(self.device) / 2**30
                                   if cuda else None),
                "note": "; ".join(notes) or None}

    def run(self, job: Job) -> None:
        """All rows of a job: batch 1, a sweep (growth stops below +5 % FPS or on OOM), or
        the best eager batch already found."""
        if not job.batches:
            best = self.results.best_batch(job.model, job.size, job.precision, "eager")
            if best is None or best["batch"] == 1:
                return  # batch 1 is its own job
            self.measure(job, best["batch"])
            return
        if not job.sweep:
            for batch in job.batches:
                self.measure(job, batch)
            return
        base = self.results.row(job.model, job.size, job.precision, job.mode, 1)
        best_fps = base["fps"] if base else 0.0
        for batch in job.batches:
            row = self.measure(job, batch)
            if row is None or row["fps"] <= best_fps * GAIN_TO_GROW:
                return
            best_fps = row["fps"]


def parse_size(text: str) -> tuple[int, int]:
    """``"352x480"`` → (352, 480), checked to be divisible by 32."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInput(f"size {text!r} is not HxW, e.g. 352x480") from None
    return check_input_size((h, w), "size")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sizes", default="1024x2048,352x480",
                        help="HxW list; the first is the target size of the summary "
                             "(CamVid's 360x480 runs as 352x480, a multiple of 32)")
    parser.add_argument("--precisions", default="fp16,fp32,tf32,bf16",
                        help=f"subset of {','.join(PRECISIONS)} (fp32 = TF32 off)")
    parser.add_argument("--modes", default="eager,graph", help="subset of eager,graph,compile")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (minutes)")
    parser.add_argument("--sweep", action="append", default=[], metavar="HxW=B,B,...",
                        help="batches to try beyond 1 at a size (repeatable); defaults: "
                             + "; ".join(f"{s}={','.join(map(str, b))}"
                                         for s, b in DEFAULT_SWEEPS.items()))
    parser.add_argument("--warmup", type=int, default=Settings.warmup)
    parser.add_argument("--min-iters", type=int, default=Settings.min_iters)
    parser.add_argument("--iters", type=int, default=Settings.max_iters,
                        help="most timed calls per row")
    parser.add_argument("--row-seconds", type=float, default=Settings.row_seconds,
                        help="timed calls per row: as many as fit in this, "
                             "within --min-iters..--iters")
    parser.add_argument("--max-seconds", type=float, default=180.0,
                        help="wall-clock budget from the end of imports (which take ~5-10 s)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, 64x96 and 32x32, batches 1-2, 2 calls: every CPU code path")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_bench",
                        help="writes OUT.json (after every row) and OUT.md")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.sizes = "cpu", "64x96,32x32"
        args.warmup, args.min_iters, args.iters = 1, 2, 2
    return args


def resolve(args: argparse.Namespace):
    """(models, sizes, precisions, modes, sweeps) from the CLI, checked; BadInput or
    ValueError naming the bad value."""
    models = [canonical_name(name) for name in args.models.split(",")]
    precisions = args.precisions.split(",")
    modes = args.modes.split(",") + (["compile"] if args.compile else [])
    bad = [p for p in precisions if p not in PRECISIONS] + [m for m in modes if m not in MODES]
    if bad:
        raise BadInput(f"unknown precision/mode {bad}; "
                       f"choose from {list(PRECISIONS)} / {list(MODES)}")
    canonical = lambda text: "x".join(map(str, parse_size(text)))  # noqa: E731
    sizes = [canonical(s) for s in args.sizes.split(",")]
    sweeps = dict(DRY_RUN_SWEEPS if args.dry_run else DEFAULT_SWEEPS)
    for item in args.sweep:
        size, _, batches = item.partition("=")
        sweeps[canonical(size)] = tuple(int(b) for b in batches.split(","))
    return models, sizes, precisions, modes, sweeps


def main(argv=None) -> None:
    start = time.monotonic()
    args = parse_args(argv)
    try:
        models, sizes, precisions, modes, sweeps = resolve(args)
    except (BadInput, ValueError) as exc:
        raise SystemExit(f"gpu_bench: {exc}") from None
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device here; --dry-run checks the logic on the CPU")
    if args.dry_run:  # a logic check: one thread stays fast on a shared, busy CPU
        torch.set_num_threads(1)
    env = environment(device)
    peaks = dense_peaks(env["device"]) if device.type == "cuda" else None
    notes = ["p99 is the nearest-rank value: the slowest call when a row has < 100 calls"]
    if device.type != "cuda":
        notes.append("CPU run: CUDA-graph rows not planned, TF32 flags inert, timing by "
                     "perf_counter (no CUDA events), no matmul sanity check, fraction of peak null")
        modes = [m for m in modes if m != "graph"]
    elif peaks is None:
        notes.append(f"no peak table for {env['device']!r}: fraction of peak null")
    settings = Settings(args.warmup, args.min_iters, args.iters, args.row_seconds)
    header = {**env, "peaks_tflops": peaks, "matmul_bf16_tflops": None, "models": models,
              "target_size": sizes[0], "sizes": sizes, "precisions": precisions, "modes": modes,
              "sweeps": {s: list(b) for s, b in sweeps.items() if s in sizes},
              "settings": vars(settings), "max_seconds": args.max_seconds, "elapsed_s": 0.0,
              "notes": notes}
    results = Results(args.out, header, start)
    bench = Bench(device, ModelCache(get_spec("camvid").num_classes, device), settings, peaks,
                  results, deadline=start + args.max_seconds)
    with cudnn_autotune():
        try:
            header["matmul_bf16_tflops"] = matmul_tflops(device)
        except Exception as exc:  # noqa: BLE001 — a sanity figure is not worth the run
            notes.append(f"matmul sanity check failed: {type(exc).__name__}: {exc}")
        results.save()
        for job in plan(models, sizes, precisions, modes, sweeps):
            bench.run(job)
    results.save()
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')} "
          f"({len(results.rows)} rows, {len(results.skipped)} skipped, {len(results.failed)} "
          f"failed, {header['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
