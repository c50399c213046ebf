"""INT8 on an AVX2-only CPU, emulated: do 7-bit weights keep the int8 graphs' labels the same on
every x86 CPU?

ONNX Runtime picks its int8 kernels by the CPU's features: VNNI (``vpdpbusd``, 32-bit sums) where
present, AVX2's ``vpmaddubsw`` (pairs of uint8 x int8 products summed in 16 bits, saturating)
elsewhere. This script runs the same graphs natively and under QEMU's user-mode emulation of an
AVX2-only CPU (``qemu-x86_64 -cpu Haswell``: ONNX Runtime then reads Haswell's features and
takes its AVX2 kernels) and compares each int8 graph's labels with the fp32 graph's, for both
``--int8-target`` layouts and 7- and 8-bit weights.

The networks are the small ones of the test suite (64x96, real batch-norm statistics, a
classifier fitted on CamVid frames: ``tests/small_models.py``), on 8 CamVid val frames:
emulation runs about 70x slower than the host, so a trained 320x448 model would take hours.

    apt-get install qemu-user
    python bench/int8_avx2.py --out bench/results/int8_avx2_emulated

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_data import DATA, REPO

sys.path.insert(0, str(REPO / "tests"))  # the test suite's small real networks

TARGETS = ("tensorrt", "cpu")
BITS = (7, 8)


def make_graphs(work: Path, models: list[str], camvid: Path) -> list[str]:
    """The fp32 graph and the four int8 graphs of each model in ``work``; their stems."""
    import onnx
    from small_models import CALIB_FRAMES, Graphs, load_frames

    from rtseg.deploy.calibration import Calibration, read_calibration_frames
    from rtseg.deploy.quantize import quantize_graph

    graphs = Graphs(work, camvid)
    np.save(work / "frames.npy", load_frames(camvid, "val", 8, stride=12)[0])
    stems = []
    for model in models:
        fp32 = graphs.fp32(model)
        for target in TARGETS:
            for bits in BITS:
                calib = Calibration(camvid / "val", CALIB_FRAMES, "minmax", target, bits)
                frames = read_calibration_frames(calib, (64, 96))
                stem = f"{model}_{target}_w{bits}"
                onnx.save(quantize_graph(onnx.load(str(fp32)), frames, calib),
                          str(work / f"{stem}.onnx"))
                stems.append(stem)
        stems.append(fp32.stem)
    return stems


def labels_of(work: Path, out: Path) -> None:
    """Every graph in ``work`` on its frames, labels saved to ``out`` (run in the emulator)."""
    import onnxruntime as ort

    frames = np.load(work / "frames.npy")
    labels = {}
    for path in sorted(work.glob("*.onnx")):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        labels[path.stem] = session.run(None, {"frames": frames})[0]
    np.savez(out, **labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="unet_r50,segnet_vgg16")
    p.add_argument("--data-root", type=Path, default=DATA / "camvid")
    p.add_argument("--qemu", default="qemu-x86_64")
    p.add_argument("--qemu-cpu", default="Haswell", help="QEMU CPU model: Haswell is AVX2 + FMA")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "int8_avx2_emulated")
    p.add_argument("--labels-of", type=Path, help=argparse.SUPPRESS)  # the emulated half
    p.add_argument("--labels-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.labels_of:
        labels_of(args.labels_of, args.labels_out)
        return
    if shutil.which(args.qemu) is None:
        sys.exit(f"{args.qemu} not found: apt-get install qemu-user")
    from rtseg.bench import machine

    work = Path(tempfile.mkdtemp(prefix="rtseg-int8-avx2-"))
    try:
        stems = make_graphs(work, [m for m in args.models.split(",") if m], args.data_root)
        runs = {}
        for name, prefix in (("host", []), ("emulated", [args.qemu, "-cpu", args.qemu_cpu])):
            t0 = time.perf_counter()
            subprocess.run([*prefix, sys.executable, __file__, "--labels-of", str(work),
                            "--labels-out", str(work / f"{name}.npz")], check=True,
                           stderr=subprocess.DEVNULL if prefix else None)
            runs[name] = (dict(np.load(work / f"{name}.npz")), time.perf_counter() - t0)
            print(f"{name}: {runs[name][1]:.0f} s", flush=True)
        rows = []
        for stem in stems:
            if stem.endswith("_fp32"):
                continue
            model, target, bits = stem.rsplit("_", 2)
            fp32 = f"{model}_fp32"
            row = {"model": model, "target": target, "weight_bits": int(bits[1:])}
            for name, (labels, _) in runs.items():
                row[f"agreement_{name}"] = float((labels[stem] == labels[fp32]).mean())
            host, emulated = runs["host"][0], runs["emulated"][0]
            row["labels_equal_host_emulated"] = bool(np.array_equal(host[stem], emulated[stem]))
            rows.append(row)
            print(json.dumps(row), flush=True)
        report = {"command": "python bench/int8_avx2.py " + " ".join(sys.argv[1:]),
                  "date": time.strftime("%Y-%m-%d %H:%M"), "host": machine("cpu"),
                  "emulated_cpu": f"{args.qemu} -cpu {args.qemu_cpu} (AVX2, FMA; no AVX-512)",
                  "seconds": {k: v[1] for k, v in runs.items()}, "rows": rows}
        from rtseg.files import atomic_write, write_json

        write_json(args.out.with_suffix(".json"), report)
        lines = ["# INT8 labels on an emulated AVX2-only CPU against the host", "",
                 f"Host: {report['host']['cpu_model']} ({', '.join(report['host']['cpu_features'])}); "
                 f"emulated: {report['emulated_cpu']}. Small test-suite networks at 64x96, 8 "
                 f"CamVid val frames; agreement = fraction of pixels labelled as the fp32 graph "
                 f"labels them on the same CPU. {report['date']}.", "",
                 f"Command: `{report['command']}`", "",
                 "| model | target | weight bits | agreement, host | agreement, emulated AVX2 "
                 "| same labels on both |", "|---|---|---:|---:|---:|---|"]
        lines += [f"| {r['model']} | {r['target']} | {r['weight_bits']} | "
                  f"{100 * r['agreement_host']:.2f} % | {100 * r['agreement_emulated']:.2f} % | "
                  f"{'yes' if r['labels_equal_host_emulated'] else 'no'} |" for r in rows]
        atomic_write(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
        print(f"wrote {args.out.with_suffix('.json')} and .md")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
