#!/usr/bin/env bash
# docs/RESULTS.md, "ViTs": MoCo v3 and DINO with a ViT-Tiny on CIFAR-10 at a 2-core CPU's budget, without and
# with the Hallucinator, seed 0. A ViT-Tiny step costs 10-20x the ResNet quickstart's 0.4 s (4.1 s for MoCo v3's,
# 9.0 s for DINO's with 32 px globals, idle, 2 threads), and the final kNN (50,000-image bank at 32 px) costs
# minutes per run, so each method gets about ten minutes of training per pair: 64 MoCo v3 steps (2 x 24 px views)
# and 48 DINO steps (2 x 24 px global + 4 x 16 px local crops) of 128 images, against the ResNet's 1,600; the lr
# warm-up is shortened to match (0.05 epoch, ~20 steps). Both arms of a method at once (one thread each), then
# the final kNN and the online linear probe (RUN/evaluation.json). About 45 minutes in all.
# The sweeps resume: finished runs are skipped, interrupted ones continue from their last checkpoint.
#
#   bash experiments/vit_cpu_budget.sh [DATA] [OUT]
set -euo pipefail
data=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
out=${2:-runs/vit}
common=(--grid hallucinator.enabled=false,true --seeds 0 --parallel 2 --json --data-dir "$data"
  --trainer.progress_bar=false --optimizer.warmup_epochs=0.05)

hallucinator sweep configs/quickstart_mocov3_vit.yaml "${common[@]}" --output-dir "$out/mocov3" --trainer.max_steps=64
hallucinator sweep configs/quickstart_dino.yaml "${common[@]}" --output-dir "$out/dino" --trainer.max_steps=48 \
  --data.global_crops.size=24
hallucinator report "$out"/mocov3/enabled=*/ "$out"/dino/enabled=*/ --out "$out/report"
