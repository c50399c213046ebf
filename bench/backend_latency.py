"""Export time, ONNX sizes and batch-1 latency of each model on each CPU backend.

For every model (seeded, untrained — speed does not depend on the weights): export fp32 and
fp16 ONNX, then time PyTorch (.safetensors), ONNX Runtime fp32 and fp16 at batch 1 with
``rtseg.bench`` (worker thread, warm-up, median), all in one process run.

    python bench/backend_latency.py --size 352x480 --iters 5 --json bench/results/backend_latency_cpu.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rtseg.backends import open_engine
from rtseg.bench import bench, machine
from rtseg.engines import untrained_engine
from rtseg.deploy.export import export_onnx
from rtseg.models import MODELS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="352x480")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            weights = untrained_engine(model, size, tmp)
            row = {"model": model}
            engines = {"pytorch": weights}
            for precision in ("fp32", "fp16"):
                out = Path(tmp) / f"{model}_{precision}.onnx"
                t0 = time.perf_counter()
                export_onnx(weights, out, fp16=precision == "fp16")
                row[f"export_s_{precision}"] = round(time.perf_counter() - t0, 1)
                row[f"onnx_mib_{precision}"] = round(out.stat().st_size / 2**20, 1)
                engines[f"onnxruntime_{precision}"] = out
            for name, path in engines.items():
                with open_engine(path, "cpu") as backend:
                    result = bench(backend, batches=(1,), iters=args.iters, warmup=2)
                row[f"{name}_p50_ms"] = round(result["results"][0]["latency_ms"]["p50"], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    payload = {"size": list(size), "batch": 1, "iters": args.iters, "machine": machine("cpu"),
               "results": rows}
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
