#!/usr/bin/env bash
# The GPU check in one command (docs/BENCHMARKS.md, "Device check"): CUDA tests, ours-vs-lightly throughput,
# the Hallucinator's overhead, the GPU-resident data path, SimCLR on CIFAR-10 without and with the Hallucinator.
# Writes OUT/device_check.json, OUT/device_check.md and OUT/device_check.log within 9 minutes.
#
#   bash experiments/device_check.sh OUT [DATA] [--dry-run]    # DATA: the CIFAR-10 archive (default ../shared/...)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$root/experiments/device_check.py" "$@"
