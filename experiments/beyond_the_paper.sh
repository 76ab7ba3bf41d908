#!/usr/bin/env bash
# docs/RESULTS.md, "Beyond the paper": BYOL, Barlow Twins, VICReg, MoCo v3 and NNCLR at the CPU quickstart's
# budget (configs/quickstart_<method>.yaml: 1,600 steps, the quickstart recipe, the Hallucinator's weight
# warm-up), without the Hallucinator and with it, seed 0; a second seed for both arms of a method whose
# kNN or online-linear top-1 differs by more than 1.5 points. Each run: pre-training with the final kNN and
# the online linear probe's test top-1 (RUN/evaluation.json), then positive similarity and uniformity.
# About 15 minutes per run on an idle 2-core CPU (10 runs at least). Runs already evaluated are skipped,
# so the script resumes where it stopped.
#
#   bash experiments/beyond_the_paper.sh [DATA] [OUT]
set -euo pipefail
data=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
out=${2:-runs/beyond}
mkdir -p "$out"

run() {  # method arm seed
  local method=$1 arm=$2 seed=$3 dir="$out/${1}_${2}_s${3}"
  grep -qs '"metrics"' "$dir/evaluation.json" && { echo "skip $dir (done)"; return; }
  local extra=(); [[ $arm == off ]] && extra+=(--no-hallucinator)
  [[ -f "$dir/checkpoints/last.ckpt" ]] && extra+=(--resume)
  hallucinator pretrain "configs/quickstart_$method.yaml" --data-dir "$data" --output-dir "$dir" --seed "$seed" \
    --trainer.progress_bar=false "${extra[@]}"
  hallucinator metrics "$dir/checkpoints/last.ckpt" --data-dir "$data" --no-progress --json
}

differs() {  # method: exit 0 when the two seed-0 arms differ by more than 1.5 points in kNN or online linear
  python - "$out/${1}_off_s0/evaluation.json" "$out/${1}_on_s0/evaluation.json" <<'PY'
import json, sys
off, on = (json.load(open(path)) for path in sys.argv[1:])
gaps = [abs(on["knn"]["top1"] - off["knn"]["top1"])]
if "top1" in on.get("online_linear", {}) and "top1" in off.get("online_linear", {}):
    gaps.append(abs(on["online_linear"]["top1"] - off["online_linear"]["top1"]))
sys.exit(0 if max(gaps) > 1.5 else 1)
PY
}

methods=(byol barlowtwins vicreg mocov3 nnclr)
for method in "${methods[@]}"; do
  run "$method" off 0
  run "$method" on 0
done
for method in "${methods[@]}"; do
  if differs "$method"; then
    run "$method" off 1
    run "$method" on 1
  fi
done
hallucinator report "$out"/*/ --out "$out/report"
