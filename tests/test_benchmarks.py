"""The benchmark scripts run and end with one JSON line of figures (tiny settings: no timing claims)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_step_cost_prints_figures_as_json() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "step_cost.py"), "--width", "4", "--shapes", "4x16", "8x8",
         "--steps", "1", "--warmup", "0"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["width"] == 4 and figures["method"] == "simclr"
    assert figures["4x16_ms"] > 0 and figures["8x8_pairs_per_s"] > 0
