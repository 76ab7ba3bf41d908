"""The evaluation commands end to end on a fabricated checkpoint and a tiny image-folder dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hallucinator.cli import main
from tests.evaluation.conftest import fabricate_checkpoint, write_metrics


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """train/ and test/ with two classes that any encoder separates: dark and bright 32x32 images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 10)):
        for label, (low, high) in enumerate(((0, 90), (165, 255))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(low, high, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def run(tmp_path, folder_dataset):
    run_dir = tmp_path / "run"
    fabricate_checkpoint(run_dir, data_dir=str(folder_dataset))
    write_metrics(run_dir, 1.0)
    return run_dir


def call(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def common(run, tmp_path):
    return (run / "checkpoints" / "last.ckpt", "--cache-dir", tmp_path / "cache", "--json", "--no-progress")


def test_knn_linear_metrics_and_report(run, tmp_path, capsys):
    args = common(run, tmp_path)
    code, out, err = call(capsys, "knn", *args, "--k", "5")
    assert code == 0, err
    knn = last_json(out)
    assert knn["k"] == 5 and knn["top1"] > 90  # dark vs bright: trivially separable even for random weights

    # a random net's features are far larger than a trained one's: the protocol's lr 10 would overshoot
    code, out, err = call(capsys, "linear", *args, "--fast", "--lr", "0.01")
    assert code == 0, err
    fast = last_json(out)
    assert fast["mode"] == "fast" and fast["epochs"] == 100 and fast["top1"] > 90
    assert fast["final_top1"] == fast["top1"] <= fast["best_top1"] and 1 <= fast["best_epoch"] <= 100

    code, out, err = call(capsys, "linear", *args, "--lr", "0.01")  # 100 epochs of one 48-image step each
    assert code == 0, err
    full = last_json(out)
    # augmented training (crops and flips keep brightness) still separates dark from bright
    assert full["mode"] == "full" and full["epochs"] == 100 and full["top1"] > 90

    code, out, err = call(capsys, "metrics", *args, "--preset", "cifar10-simclr")
    assert code == 0, err
    figures = last_json(out)
    assert -1 <= figures["pos_similarity"] <= 1 and 0 < figures["g2"] <= 1 and figures["uniformity"] <= 0
    assert figures["alignment"] == pytest.approx(2 - 2 * figures["pos_similarity"], rel=1e-4)  # unit vectors

    saved = json.loads((run / "evaluation.json").read_text())
    assert saved["knn"]["top1"] == knn["top1"] and saved["linear_fast"]["top1"] == fast["top1"]
    assert set(saved) == {"knn", "linear_fast", "linear_full", "metrics"}

    code, out, err = call(capsys, "report", run, "--out", tmp_path / "report")
    assert code == 0, err
    assert f"{knn['top1']:.2f}" in (tmp_path / "report" / "report.md").read_text()


def test_plot_with_distribution(run, tmp_path, capsys):
    code, out, err = call(
        capsys,
        "plot",
        run,
        run,
        "--names",
        "a",
        "b",
        "--out",
        tmp_path / "plots",
        "--distribution",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert code == 0, err
    for name in ("positive_similarity", "training_curves", "feature_distribution"):
        for suffix in (".png", ".svg"):
            assert (tmp_path / "plots" / f"{name}{suffix}").stat().st_size > 1000


def test_bad_input_is_reported(run, tmp_path, capsys):
    code, _, err = call(capsys, "knn", tmp_path / "missing.ckpt")
    assert code == 2 and "checkpoint not found" in err
    code, _, err = call(capsys, "knn", run / "checkpoints" / "last.ckpt", "--dataset", "stl10")
    assert code == 2 and "--data-dir is required" in err
    code, _, err = call(capsys, "report", run, run, "--names", "only-one")
    assert code == 2 and "--names" in err
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:4096])
    for broken in (truncated, tmp_path / "notes.txt"):
        broken.write_bytes(broken.read_bytes() if broken.exists() else b"not a checkpoint")
        for command in ("knn", "export"):
            code, _, err = call(capsys, command, broken, *([tmp_path / "out.pth"] if command == "export" else []))
            assert code == 2 and f"{broken} cannot be read as a checkpoint" in err and "Traceback" not in err


def test_evaluation_options_are_the_parsed_arguments() -> None:
    from hallucinator.cli import build_parser
    from hallucinator.cli.evaluate import _options
    from hallucinator.evaluation.loading import EvaluationOptions

    args = build_parser().parse_args(
        ["knn", "run/last.ckpt", "--data-dir", "d", "--test-limit", "7", "--no-save", "--no-progress", "--threads", "2"]
    )
    assert _options(args) == EvaluationOptions(
        "run/last.ckpt", data_dir="d", test_limit=7, save=False, progress=False, threads=2
    )
