#!/usr/bin/env bash
# The exact commands that trained the four models of engines/README.md's comparison table on a
# 2-core CPU, without a GPU. Reduced recipe, identical for all four:
# 192×256 crops and input, batch 8, AdamW lr 2e-3 with poly decay, ENet class weights,
# bf16 autocast on the CPU (AVX-512 BF16: 1.9–2.3× an fp32 step here), 6 epochs, seed 0.
# Two queues run side by side at one thread each, at low priority, balanced by cost
# (measured bf16 step, batch 8, 2 threads: segnet_vgg16 4.5 s, unet_vgg16 2.6 s,
# segnet_r50 ~2 s, unet_r50 1.3 s): segnet_vgg16 alone in one, the other three in the other.
# A run with OUT/train_state.pt is resumed.
#
# What actually happened: the VGG runs were started with --epochs 10, and on seeing the
# machine's load the recipe was cut to 6 epochs — segnet_vgg16 after its epoch 1, unet_vgg16
# after its epoch 2, were stopped and resumed with --epochs 6 (poly LR follows the step count,
# so their schedules compress from there on). unet_r50 and segnet_r50 ran 6 epochs from the start
# (unet_r50 was first queued after segnet_vgg16 and moved to the other queue to finish sooner).
#
#   bash bench/train_four_cpu.sh            # both queues, then rtseg eval of each best model
#   QUEUE=A bash bench/train_four_cpu.sh    # one queue only
set -euo pipefail
DATA=${DATA:-../shared/data/camvid}
RUNS=${RUNS:-runs/cpu10}
EPOCHS=${EPOCHS:-6}
QUEUE=${QUEUE:-both}
train() {  # model
    local resume=()
    [ -f "$RUNS/$1/train_state.pt" ] && resume=(--resume)
    OMP_NUM_THREADS=1 nice -n 19 rtseg train --model "$1" --dataset camvid --data-root "$DATA" \
        --batch-size 8 --crop 192x256 --input-size 192x256 --lr 2e-3 --epochs "$EPOCHS" \
        --amp --workers 1 --seed 0 --out "$RUNS/$1" "${resume[@]}" >> "$RUNS/$1.log" 2>&1
    rtseg eval --engine "$RUNS/$1/best.safetensors" --dataset camvid --data-root "$DATA" \
        --split val --json "$RUNS/$1.eval.json" --device cpu >> "$RUNS/$1.log" 2>&1
}
mkdir -p "$RUNS"
case "$QUEUE" in
    A) train segnet_vgg16 ;;
    B) train unet_vgg16; train segnet_r50; train unet_r50 ;;
    both) train segnet_vgg16 & (train unet_vgg16; train segnet_r50; train unet_r50) & wait ;;
esac
