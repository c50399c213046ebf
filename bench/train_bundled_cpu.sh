#!/usr/bin/env bash
# The exact commands that produced engines/segnet_r50_camvid.safetensors on a 2-core CPU
# (no GPU was available): a reduced recipe — 192×256 input and crops, 12 epochs.
# The first epoch ran under a 40-epoch schedule, then the run was resumed with a shorter one
# (poly LR continues from the step count, so the schedule simply compresses).
set -euo pipefail
DATA=${DATA:-../shared/data/camvid}
OUT=${OUT:-runs/segnet_r50_cpu}
common=(--model segnet_r50 --dataset camvid --data-root "$DATA" --batch-size 8
        --crop 192x256 --input-size 192x256 --workers 1 --lr 2e-3 --out "$OUT")
rtseg train "${common[@]}" --epochs 40 &   # stopped by hand after epoch 1 (~250 s/epoch here)
wait
rtseg train "${common[@]}" --epochs 12 --resume
python bench/bundle_model.py --checkpoint "$OUT/best.safetensors" --history "$OUT/history.json" \
    --data-root "$DATA" --out engines/segnet_r50_camvid.safetensors \
    --hardware "2-core AMD EPYC CPU (shared), PyTorch 2.15 fp32"
