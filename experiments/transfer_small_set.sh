#!/usr/bin/env bash
# docs/RESULTS.md, "Transfer": the quickstart's SimCLR encoders (ResNet-18 width 16, CIFAR stem, 1,600 steps)
# with the Hallucinator (the quickstart's weight warm-up) and without, fine-tuned as Faster R-CNN R18-C4 on the
# small detection set (CIFAR-10 test objects on 128 x 128 noise, `hallucinator make-detection-set`), against the
# same network from random weights. Recipe: configs/transfer/cifar_det_r18c4.yaml (300 iterations of batch 8).
# Finished steps are skipped: the pre-training sweep resumes, and a transfer run whose evaluation.json exists is
# not run again (an interrupted one continues with --resume).
#
#   bash experiments/transfer_small_set.sh [DATA] [OUT] [SEEDS...]
set -euo pipefail
data=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
out=${2:-runs/transfer}
shift $(($# < 2 ? $# : 2))
seeds=("${@:-0}")

[ -d "$out/cifar-det" ] || hallucinator make-detection-set --data-dir "$data" --output "$out/cifar-det"
hallucinator sweep configs/quickstart.yaml --seeds "${seeds[@]}" --output-dir "$out/encoders" \
  --grid 'hallucinator={enabled: false},{warmup_fraction: 0.5}' --data-dir "$data" --trainer.progress_bar=false

transfer() {  # RUN_NAME CHECKPOINT SEED [FLAGS...]
  local run=$out/detection/$1 checkpoint=$2 seed=$3
  shift 3
  [ -f "$run/evaluation.json" ] && return
  local resume=()
  [ -f "$run/checkpoints/last.ckpt" ] && resume=(--resume)
  hallucinator transfer "$checkpoint" --config configs/transfer/cifar_det_r18c4.yaml --format voc \
    --data-dir "$out/cifar-det" --output-dir "$run" --seed "$seed" --json "${resume[@]}" "$@"
}

for seed in "${seeds[@]}"; do
  for arm in enabled_false warmup_fraction_0.5; do
    transfer "$arm-s$seed" "$out/encoders/hallucinator=$arm-s$seed/checkpoints/last.ckpt" "$seed"
  done
  transfer "random-s$seed" "$out/encoders/hallucinator=enabled_false-s$seed/checkpoints/last.ckpt" "$seed" --init random
done
