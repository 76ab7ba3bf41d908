"""``experiments/device_check.sh --dry-run``: every part of the GPU check, tiny, on the CPU (so the real run has no typo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PARTS = ["environment", "prepare", "cuda_tests", "throughput", "overhead", "data_path", "simclr_off", "simclr_on"]


def test_device_check_dry_run_runs_every_part_and_writes_its_report(cifar10_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            "bash",
            "experiments/device_check.sh",
            str(out),
            str(cifar10_archive),
            "--dry-run",
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads((out / "device_check.json").read_text())
    parts = report["parts"]
    assert list(parts) == PARTS
    assert done.returncode == 0, {name: part["note"] for name, part in parts.items() if part["status"] != "ok"}
    assert all(part["status"] == "ok" for part in parts.values())
    assert "8 of 8 parts ok" in done.stdout
    assert parts["environment"]["dry_run"] and "torch" in parts["environment"]
    assert parts["cuda_tests"].get("failed", 0) == 0 and parts["cuda_tests"]["skipped"] >= 4  # no CUDA here
    assert parts["throughput"]["ours-simclr-w8-32-true_peak_fraction"] > 0
    assert parts["overhead"]["methods"].keys() == {"mocov2", "simclr"}  # the GPU run times all four
    assert parts["data_path"]["data_sync_ops_per_step"] == 0
    for arm in ("simclr_off", "simclr_on"):
        assert 0 <= parts[arm]["knn_top1"] <= 100 and parts[arm]["planned_from_pairs_per_s"] > 0
        assert parts[arm]["planned_epochs"] >= 1 and parts[arm]["exit"] == 0
    markdown = (out / "device_check.md").read_text()
    assert "DRY RUN" in markdown and "| CUDA tests | ok |" in markdown
    assert (out / "device_check.log").stat().st_size > 0
    assert sorted(path.name for path in out.iterdir()) == ["device_check.json", "device_check.log", "device_check.md"]


def test_device_check_names_a_missing_dataset(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "experiments/device_check.sh", str(tmp_path), str(tmp_path / "none.tar.gz"), "--dry-run"],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no dataset at" in done.stderr and len(done.stderr.splitlines()) == 1


def test_simclr_epochs_fit_the_time_left_from_the_measured_throughput(tmp_path: Path, monkeypatch) -> None:
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_check", ROOT / "experiments" / "device_check.py")
    device_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "device_check", device_check)  # dataclasses look their module up
    spec.loader.exec_module(device_check)
    args = argparse.Namespace(
        dry_run=False, out=str(tmp_path / "o"), work_dir=str(tmp_path / "w"), data="x", budget=540.0
    )
    check = device_check.Check(args)
    check.simclr_pairs_key = "ours-simclr-w64-bf16-mixed_pairs_per_s"
    # no throughput measured: the deliberately low 2,000 pairs/s, Hallucinator ratio 1.1 -> 50,000 / 2,000 * 1.1 * 1.3 s
    assert check.epochs_that_fit(120) == 2  # (120 - 45) / 35.75
    check.parts += [
        device_check.Part("throughput", "", 0, figures={check.simclr_pairs_key: 26_000.0}),
        device_check.Part("overhead", "", 0, figures={"methods": {"simclr": {"ratio": 0.98}}}),
    ]
    assert (
        check.epochs_that_fit(120) == 30
    )  # an epoch: 50,000 / 26,000 * 1.0 (a ratio below 1 counts as 1) * 1.3 = 2.5 s
    assert check.epochs_that_fit(40) == 1  # never less than one
    assert check.reserve(after="overhead") == 20 + 150  # the data path's and SimCLR's minima
    check.log.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the real run is the one to do")
def test_device_check_without_a_gpu_asks_for_the_dry_run(cifar10_archive: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "experiments/device_check.sh", str(tmp_path), str(cifar10_archive)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "--dry-run" in done.stderr
