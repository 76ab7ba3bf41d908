"""The benchmark scripts run and end with one JSON line of figures (tiny settings: no timing claims).

Width 4 is the case that once hung CI for 300 s: channels_last on a net this narrow corrupts the heap
in oneDNN (see ``backbones.channels_last_safe``), which the benchmark must avoid as the engine does.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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


def test_precision_parity_trains_both_precisions_and_compares_them(
    cifar10_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--model.width=8", "--batch-size=16", "--data.limit=64", "--trainer.max_steps=2", "--trainer.cpu_threads=1"]
    arguments = ["configs/base/small.yaml", "--data-dir", str(cifar10_archive), "--output-dir", str(tmp_path),
                 "--seeds", "0", "1", "--knn-limit", "64", "--", *tiny]
    figures = load_benchmark("precision_parity").main(arguments)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(figures))
    for precision in ("32", "bf16"):
        assert len(figures[f"knn_top1_{precision}"]) == 2
        for seed in (0, 1):
            run = tmp_path / f"{precision}_s{seed}"
            config = (run / "config.yaml").read_text()
            assert f"precision: {'32-true' if precision == '32' else 'bf16-mixed'}" in config and f"seed: {seed}" in config
    difference = figures["knn_top1_bf16_mean"] - figures["knn_top1_32_mean"]
    assert figures["knn_top1_difference"] == pytest.approx(difference)
    assert figures["speedup"] == pytest.approx(figures["pairs_per_s_bf16"] / figures["pairs_per_s_32"])
    assert isinstance(figures["within_seed_spread"], bool) and figures["device"].startswith("CPU")
    # finished runs are not trained again: a second call only reads their figures
    mtime = (tmp_path / "32_s0" / "checkpoints" / "last.ckpt").stat().st_mtime
    assert load_benchmark("precision_parity").main(arguments) == figures
    assert (tmp_path / "32_s0" / "checkpoints" / "last.ckpt").stat().st_mtime == mtime


def test_online_linear_cost_times_both_arms(capsys: pytest.CaptureFixture[str]) -> None:
    figures = load_benchmark("online_linear_cost").main(
        ["--width", "4", "--batch", "8", "--size", "8", "--steps", "2", "--warmup", "0", "--threads", "1"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    assert figures["step_ms_plain"] > 0 and figures["step_ms_probe"] > 0 and figures["threads"] == 1
