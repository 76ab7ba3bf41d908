"""The benchmark scripts run and end with one JSON line of figures (tiny settings: no timing claims).

Width 4 is the case that once hung CI for 300 s: channels_last on a net this narrow corrupts the heap
in oneDNN (see ``backbones.channels_last_safe``), which the benchmark must avoid as the engine does.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_cost_prints_figures_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    step_cost = load_benchmark("step_cost")
    step_cost.main(["--width", "4", "--shapes", "4x16", "8x8", "--steps", "1", "--warmup", "0", "--threads", "1"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["width"] == 4 and figures["method"] == "simclr" and figures["threads"] == 1
    assert figures["4x16_ms"] > 0 and figures["8x8_pairs_per_s"] > 0


def test_evaluation_speed_times_both_memory_formats(capsys: pytest.CaptureFixture[str]) -> None:
    load_benchmark("evaluation_speed").main(
        ["--extract-only", "--extract-images", "16", "--threads", "1", "--fold-widths", "16"]
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["threads"] == 1 and "knn_s" not in figures
    assert all(figures[f"extract_images_per_s_{name}"] > 0 for name in ("32", "32_channels_last", "bf16"))
    assert figures["forward_w16_images_per_s_plain"] > 0 and figures["fold_speedup_w16"] > 0
    assert "forward_w64_images_per_s_plain" not in figures
