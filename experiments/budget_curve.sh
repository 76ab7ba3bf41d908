#!/usr/bin/env bash
# docs/RESULTS.md, "Budget curve": does the Hallucinator's cost shrink as training gets longer?
# SimCLR with the quickstart's recipe (ResNet-18 width 16, CIFAR stem, 24 px crops, batch 128; the lr's
# warm-up and cosine stretched over the run by trainer.max_steps) at 4, 16 and 48 epochs (1,600, 6,400
# and 18,750 steps of 128 pairs). Arms: without the Hallucinator; the paper's from step 0; the paper's
# with the loss-weight warm-up over the first half (the quickstart); at 16 epochs also the authors'
# loss form (one NT-Xent over [q; q_hat] against [k; k]) from step 0. Each run: pre-training, kNN,
# online linear, the fast linear probe; the hardness cosines are in every run's metrics.
#
# One `hallucinator sweep` per budget and seed set, so the script resumes where it stopped (finished runs
# skipped, an interrupted one continued from its last.ckpt). Order: what answers the question first.
#
#   bash experiments/budget_curve.sh [DATA] [OUT]
set -euo pipefail
data=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
out=${2:-runs/budget}
arms='hallucinator={enabled: false},{warmup_fraction: 0},{warmup_fraction: 0.5}'
concat='{warmup_fraction: 0, loss_form: concat}'
common=(--data-dir "$data" --evaluate linear --json --trainer.progress_bar=false)

sweep() {  # EPOCHS STEPS GRID SEEDS...
  local epochs=$1 steps=$2 grid=$3
  shift 3
  hallucinator sweep configs/quickstart.yaml --seeds "$@" --output-dir "$out/e$epochs" --grid "$grid" \
    --trainer.max_steps="$steps" "${common[@]}"
}

sweep 16 6400 "$arms,$concat" 0
sweep 4 1600 "$arms" 0          # the quickstart's budget, on the same machine as the longer runs
sweep 16 6400 "$arms,$concat" 1
sweep 48 18750 "$arms" 0
sweep 4 1600 "$arms" 1

hallucinator report "$out"/e*/hallucinator=*-s*/ --out docs/results/budget --budget-curve docs/results/budget_curve.png
