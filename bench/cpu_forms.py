"""Each CPU form of the bundled models on this CPU: engine-alone FPS, the GFLOP/s it reaches as
a fraction of this CPU's fp32 matrix-product GFLOP/s, and val mIoU — the numbers that let a
user predict their own speed from their CPU's matrix-product rate (``rtseg run`` picks among
these forms by the CPU's features: ``rtseg.engines.cpu_choice``).

One process run: the forms are timed in alternating rounds (a change of load on a shared
machine hits them all), the matrix product (2048³ fp32, PyTorch, this process's threads)
before and after them.

    python bench/cpu_forms.py --out bench/results/cpu_forms_avx512_vnni
    # PyTorch limited to AVX2 (ONNX Runtime has no such switch: its forms are skipped)
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python bench/cpu_forms.py --torch-only \\
        --out bench/results/cpu_forms_torch_avx2

A form is ``LABEL=FILE[@PRECISION]``: a deploy graph (.onnx, ONNX Runtime) or weights
(.safetensors, PyTorch). The defaults are the bundled files. val mIoU is the one each file's
metadata records (``rtseg eval`` on all 101 CamVid val frames at bundling time).
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench_data import REPO, default_clip
from rtseg.backends import open_engine
from rtseg.bench import machine, on_worker, time_engine
from rtseg.files import atomic_write, write_json
from rtseg.models.flops import frame_gflops

ENGINES = REPO / "engines"
DEFAULT_FORMS = [
    f"full int8 (ONNX Runtime)={ENGINES / 'unet_vgg16_camvid_int8.onnx'}",
    f"full fp32 (PyTorch)={ENGINES / 'unet_vgg16_camvid.safetensors'}@fp32",
    f"light fp32 (ONNX Runtime)={ENGINES / 'light' / 'unet_vgg16_light_camvid_fp32.onnx'}",
    f"light fp32 (PyTorch)={ENGINES / 'light' / 'unet_vgg16_light_camvid.safetensors'}@fp32",
]
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """fp32 matrix-product GFLOP/s of this CPU (PyTorch, this process's threads): best of
    ``repeats`` after one warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def parse_form(text: str) -> tuple[str, Path, str]:
    label, _, rest = text.partition("=")
    path, _, precision = rest.partition("@")
    return label, Path(path), precision or "auto"


def clip_frames(size: tuple[int, int], count: int = 16) -> np.ndarray:
    """``count`` dashcam frames at the network's input size (what the pipeline feeds it)."""
    import cv2

    frames, video = [], cv2.VideoCapture(str(default_clip()))
    try:
        while len(frames) < count:
            ok, image = video.read()
            if not ok:
                break
            frames.append(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    finally:
        video.release()
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--form", action="append", help="LABEL=FILE[@PRECISION] (repeat)")
    parser.add_argument("--torch-only", action="store_true",
                        help="only the .safetensors forms (for a run with PyTorch's ISA limited)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    forms = [parse_form(f) for f in (args.form or DEFAULT_FORMS)]
    if args.torch_only:
        forms = [f for f in forms if f[1].suffix == ".safetensors"]
    missing = [str(p) for _, p, _ in forms if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such engine file: {', '.join(missing)}")
    backends = {label: open_engine(path, "cpu", precision) for label, path, precision in forms}
    matmul = [matmul_gflops()]
    try:
        size = tuple(next(iter(backends.values())).metadata.input_size)
        pool = clip_frames(size)
        for backend in backends.values():
            if tuple(backend.metadata.input_size) != size:
                raise SystemExit("error: the forms must share one input size")
            on_worker(lambda b=backend: time_engine(b, pool, 1, 1, warmup=2))
        fps: dict[str, list[float]] = {label: [] for label in backends}
        for r in range(args.rounds):
            for label, backend in backends.items():
                fps[label].append(on_worker(
                    lambda b=backend: time_engine(b, pool, 1, args.iters))["fps"])
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:.2f}" for k, v in fps.items()), flush=True)
        matmul.append(matmul_gflops())
        peak = statistics.mean(matmul)
        rows = {}
        for (label, path, precision), backend in zip(forms, backends.values()):
            gflops = frame_gflops(backend.metadata)
            median = float(np.median(fps[label]))
            rows[label] = {
                "engine": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
                "runtime": "onnxruntime" if path.suffix == ".onnx" else "pytorch",
                "precision": backend.metadata.precision if precision == "auto" else precision,
                "fps": median, "fps_rounds": fps[label], "gflops_per_frame": gflops,
                "gflop_s": median * gflops, "fraction_of_matmul": median * gflops / peak,
                "val_miou": backend.metadata.extra.get("val_miou")}
    finally:
        for backend in backends.values():
            backend.close()
    result = {"machine": machine("cpu"), "input_size": list(size),
              "isa_limits": {k: os.environ[k] for k in ISA_LIMITS if k in os.environ},
              "matmul_gflop_s": peak, "matmul_gflop_s_runs": matmul, "threads":
              torch.get_num_threads(), "forms": rows,
              "command": "python bench/cpu_forms.py " + " ".join(
                  f"--form '{f}'" for f in (args.form or [])) + f" --out {args.out}"}
    write_json(args.out.with_suffix(".json"), result)
    atomic_write(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    m = result["machine"]
    limits = ", ".join(f"{k}={v}" for k, v in result["isa_limits"].items()) or "none"
    lines = [f"# CPU forms on {m['cpu_model']} ({m['cpu_count']} CPUs, class "
             f"{m['cpu_class']})", "",
             f"Features: {', '.join(m['cpu_features'])}. ISA limits: {limits}. fp32 matrix "
             f"product (2048³, PyTorch, {result['threads']} threads): "
             f"**{result['matmul_gflop_s']:.1f} GFLOP/s**. Input "
             f"{result['input_size'][0]}×{result['input_size'][1]}, batch 1, engine alone, "
             "median of alternating rounds.", "",
             "| form | GFLOPs/frame | FPS | GFLOP/s | × matrix product | val mIoU |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, row in result["forms"].items():
        miou = "—" if row["val_miou"] is None else f"{row['val_miou']:.4f}"
        lines.append(f"| {label} | {row['gflops_per_frame']:.1f} | {row['fps']:.2f} | "
                     f"{row['gflop_s']:.1f} | {row['fraction_of_matmul']:.2f} | {miou} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
