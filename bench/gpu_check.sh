#!/usr/bin/env bash
# Every CUDA check of rtseg in one command, for a fresh NVIDIA GPU machine: the environment,
# the `gpu` tests, bench/gpu_bench.py (the four models, fp32 / TF32 / fp16, eager and CUDA
# graphs, FLOPs and fraction of peak) and `rtseg bench --device cuda` on the dashcam clip
# (pipeline against the engine alone, per-stage ms, the bounding stage). Everything lands in
# one folder as JSON + Markdown (check.md is the summary); each step has its own time limit
# and a failing step does not stop the others.
#
#   bash bench/gpu_check.sh OUT_DIR [MODEL.safetensors]     # on the GPU machine (≈ 4 min)
#   bash bench/gpu_check.sh --dry-run OUT_DIR               # on a CPU: every step, tiny sizes
#
# Data: the `gpu` tests read real CamVid frames and the dashcam clip through $RTSEG_DATA (or
# ../shared/data); the model is the second argument, else $RTSEG_GPU_MODEL, else the bundled
# one. rtseg is imported from this checkout (PYTHONPATH), so nothing has to be installed.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: bench/gpu_check.sh [--dry-run] OUT_DIR [MODEL]}
MODEL=${2:-${RTSEG_GPU_MODEL:-engines/unet_vgg16_camvid.safetensors}}
PY=${PYTHON:-python3}
DATA=${RTSEG_DATA:-../shared/data}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RTSEG_GPU_MODEL="$MODEL"
mkdir -p "$OUT"
: > "$OUT/steps.tsv"

if [ $DRY = 1 ]; then
    DEVICE=cpu
    TESTS_S=120; BENCH_ARGS=(--dry-run); BENCH_S=120
    PIPE_ARGS=(--device cpu --batch 1 --iters 2 --warmup 1 --max-frames 8)
else
    DEVICE=cuda
    TESTS_S=${TESTS_S:-130}; BENCH_S=${BENCH_S:-100}
    BENCH_ARGS=(--max-seconds $((BENCH_S - 15)))
    PIPE_ARGS=(--device cuda --batch 1,4,8 --iters 30 --warmup 5 --rounds 2)
fi

step() {  # name seconds command...: run with a time limit, log, record status and duration
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
    echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
}

step environment 60 "$PY" - "$OUT/environment.json" <<'EOF'
import json, platform, subprocess, sys
import torch
env = {"python": sys.version.split()[0], "platform": platform.platform(),
       "torch": torch.__version__, "cuda": torch.version.cuda,
       "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    props = torch.cuda.get_device_properties(0)
    env.update(gpu=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
               multiprocessors=props.multi_processor_count, memory_gib=round(total / 2**30, 1),
               free_gib=round(free / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    try:
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        env["nvidia_smi"] = f"unavailable: {exc}"
for name in ("segmentation_models_pytorch", "onnx", "onnxruntime", "cv2", "timm"):
    try:
        env[name] = __import__(name).__version__
    except Exception as exc:
        env[name] = f"missing: {exc}"
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env, indent=2))
EOF

step gpu_tests "$TESTS_S" "$PY" -m pytest -q -rs -m gpu tests/test_gpu.py \
    --junitxml "$OUT/gpu_tests.xml" -p no:cacheprovider

step gpu_bench "$BENCH_S" "$PY" bench/gpu_bench.py "${BENCH_ARGS[@]}" --out "$OUT/gpu_bench"

step pipeline 90 "$PY" -m rtseg bench --engine "$MODEL" --source "$DATA/video/solidWhiteRight.mp4" \
    "${PIPE_ARGS[@]}" --json "$OUT/pipeline.json" --markdown "$OUT/pipeline.md"

# The summary: which steps passed, and the headline numbers of each.
"$PY" - "$OUT" "$DEVICE" <<'EOF'
import json, sys
from pathlib import Path
out, device = Path(sys.argv[1]), sys.argv[2]
lines = [f"# GPU check ({device})", ""]
env = out / "environment.json"
if env.is_file():
    e = json.loads(env.read_text())
    lines += [f"- device: {e.get('gpu', 'CPU')} ({e.get('nvidia_smi', '')}); torch {e['torch']}, "
              f"CUDA {e['cuda']}, cuDNN {e['cudnn']}; free memory {e.get('free_gib', '-')} GiB", ""]
lines += ["| step | exit | seconds |", "|---|---:|---:|"]
for row in (out / "steps.tsv").read_text().splitlines():
    name, rc, secs = row.split("\t")
    lines.append(f"| {name} | {rc} | {secs} |")
for name in ("gpu_bench.md", "pipeline.md"):
    if (out / name).is_file():
        lines += ["", f"## {name}", "", (out / name).read_text()]
tests = out / "gpu_tests.log"
if tests.is_file():
    lines += ["", "## gpu tests", "", "```", *tests.read_text().splitlines()[-15:], "```"]
(out / "check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines[:12]))
EOF
echo "results in $OUT"
