#!/usr/bin/env bash
# docs/RESULTS.md: CIFAR-10, ResNet-18 (CIFAR stem, width 16), the quickstart's recipe and time
# budget (about 10 CPU-minutes per run on an idle 2-core machine) on all 50,000 images.
# Arms: without the Hallucinator, with it, with it + the loss-weight warm-up; SimCLR seeds 0 and 1,
# MoCo v2 seed 0. Each run: pre-train and kNN, fast linear probe, representation metrics; then the
# report table and the figures. Two `hallucinator sweep`s, so the script resumes where it stopped
# (finished runs skipped, an interrupted one continued from its last checkpoint).
#
# The SimCLR sweep's folder is shared with docs/study.md: its first three arms are the study's
# "no Hallucinator", "paper" and "paper with weight warm-up" arms, written the same way so that the
# study's sweep skips them.
#
#   bash experiments/cifar10_cpu_budget.sh [DATA] [OUT]
set -euo pipefail
data=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
out=${2:-runs/results}
arms='hallucinator={enabled: false},{warmup_fraction: 0},{warmup_fraction: 0.5}'
common=(--data-dir "$data" --evaluate linear metrics --json --trainer.progress_bar=false)

# seed-major: every arm's seed 0 first, so a script stopped early has already compared the arms
hallucinator sweep configs/quickstart.yaml --seeds 0 1 --output-dir "$out/simclr" --grid "$arms" "${common[@]}"

# MoCo v2 (queue 4,096, momentum 0.99, 2,200 steps for the same minutes: configs/quickstart_mocov2.yaml)
hallucinator sweep configs/quickstart_mocov2.yaml --seeds 0 --output-dir "$out/mocov2" --grid "$arms" "${common[@]}"

# these runs only: the study (docs/study.md) adds arms to the SimCLR folder
runs=("$out"/{simclr,mocov2}/hallucinator={enabled_false,warmup_fraction_0,warmup_fraction_0.5}-s*/)
hallucinator report "${runs[@]}" --out docs/results
hallucinator plot "${runs[@]}" --out docs/results --distribution --data-dir "$data"
