"""Where ONNX Runtime spends a deploy graph's time on this CPU, per operator type: ONNX
Runtime's own profiler over a few batch-1 calls, summed by op type (and, for an int8 graph,
which operators still run in float). Answers "why is the int8 graph no faster here".

    python bench/ort_nodes.py engines/unet_vgg16_camvid_int8.onnx FP32.onnx \\
        --out bench/results/ort_nodes_cpu

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from rtseg.bench import machine
from rtseg.files import atomic_write, write_json



def profile(path: Path, calls: int, threads: int) -> dict:
    """Per op type: total ms over ``calls`` runs (after 2 warm-ups), node count, share."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "prof")
        runtime = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in runtime.get_inputs()[0].shape]
        frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        name = runtime.get_inputs()[0].name
        for _ in range(2):
            runtime.run(None, {name: frames})
        options.enable_profiling = True
        runtime = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(calls):
            runtime.run(None, {name: frames})
        events = json.loads(Path(runtime.end_profiling()).read_text())
    ms: dict[str, float] = defaultdict(float)
    nodes: dict[str, set] = defaultdict(set)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            ms[op] += event["dur"] / 1000.0 / calls
            nodes[op].add(event["name"])
    total = sum(ms.values())
    ops = {op: {"ms": ms[op], "nodes": len(nodes[op]), "share": ms[op] / total}
           for op in sorted(ms, key=ms.get, reverse=True)}
    graph_ops = defaultdict(int)
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        graph_ops[node.op_type] += 1
    return {"total_ms": total, "ops": ops, "graph_ops": dict(graph_ops)}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# ONNX Runtime time per operator type on {m['cpu_model']} ({m['cpu_class']})", "",
             f"{result['threads']} threads, batch 1, mean of {result['calls']} profiled calls "
             "(ONNX Runtime's profiler: kernel time only).", ""]
    for name, prof in result["graphs"].items():
        lines += [f"## {name} — {prof['total_ms']:.1f} ms of kernels per frame", "",
                  "| op type | nodes | ms/frame | share |", "|---|---:|---:|---:|"]
        for op, row in prof["ops"].items():
            lines.append(f"| {op} | {row['nodes']} | {row['ms']:.2f} | {100 * row['share']:.1f} % |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("graphs", nargs="+", type=Path)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {"machine": machine("cpu"), "threads": args.threads, "calls": args.calls,
              "graphs": {p.name: profile(p, args.calls, args.threads) for p in args.graphs}}
    write_json(args.out.with_suffix(".json"), result)
    atomic_write(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
