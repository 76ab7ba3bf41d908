#!/usr/bin/env bash
# docs/RESULTS.md, "Beyond the paper": BYOL, Barlow Twins, VICReg, MoCo v3 and NNCLR at the CPU quickstart's
# budget (configs/quickstart_<method>.yaml: 1,600 steps, the quickstart recipe, the Hallucinator's weight
# warm-up), without the Hallucinator and with it, seed 0; seed 1 for both arms of a method whose kNN or
# online-linear top-1 differs by more than 1.5 points. One sweep per method (two runs at once, one thread
# each): pre-training with the final kNN and the online linear probe (RUN/evaluation.json), then `hallucinator
# metrics` (positive similarity, uniformity). About 20 minutes per pair on an idle 2-core CPU. The sweeps
# resume: finished runs are skipped, interrupted ones continue from their last checkpoint.
#
#   bash experiments/beyond_the_paper.sh [DATA] [OUT]
set -euo pipefail
data=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
out=${2:-runs/beyond}
methods=(byol barlowtwins vicreg mocov3 nnclr)

sweep() {  # method seeds...
  local method=$1; shift
  hallucinator sweep "configs/quickstart_$method.yaml" --grid hallucinator.enabled=false,true --seeds "$@" \
    --output-dir "$out/$method" --parallel 2 --evaluate metrics --json --data-dir "$data" --trainer.progress_bar=false
}

differs() {  # method: exit 0 when the two seed-0 arms differ by more than 1.5 points in kNN or online linear
  python - "$out/$1/enabled=false-s0/evaluation.json" "$out/$1/enabled=true-s0/evaluation.json" <<'PY'
import json, sys
off, on = (json.load(open(path)) for path in sys.argv[1:])
gaps = [abs(on["knn"]["top1"] - off["knn"]["top1"])]
if "top1" in on.get("online_linear", {}) and "top1" in off.get("online_linear", {}):
    gaps.append(abs(on["online_linear"]["top1"] - off["online_linear"]["top1"]))
sys.exit(0 if max(gaps) > 1.5 else 1)
PY
}

for method in "${methods[@]}"; do
  sweep "$method" 0
done
for method in "${methods[@]}"; do
  if differs "$method"; then
    sweep "$method" 0 1
  fi
done
hallucinator report "$out"/*/enabled=*/ --out "$out/report"
