"""The ViT quickstarts run from the command line, on real CIFAR-10 with their own recipe (3 tiny steps each)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from hallucinator.cli import main
from hallucinator.engine import load_config, load_pretrained

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# the recipe stays the config's; only the amount of work shrinks (small heads, 16-image batches)
TINY = [
    "--batch-size=16",
    "--data.limit=64",
    "--trainer.max_steps=3",
    "--trainer.log_every_n_steps=1",
    "--trainer.progress_bar=false",
    "--trainer.cpu_threads=1",
    "--no-knn",
]


def logged(run: Path) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    for path in sorted((run / "csv").glob("version_*/metrics.csv")):
        with path.open() as file:
            for row in csv.DictReader(file):
                for key, value in row.items():
                    if value:
                        columns.setdefault(key, []).append(float(value))
    return columns


@pytest.mark.parametrize("hallucinator", [True], ids=["hal"])  # without it: test_quickstart_dino[plain]
def test_quickstart_mocov3_vit(cifar10_archive: Path, tmp_path: Path, hallucinator: bool) -> None:
    config = load_config(CONFIGS / "quickstart_mocov3_vit.yaml")
    assert (config.model.backbone, config.optimizer.name, config.model.hparams["proj_layers"]) == (
        "vit_tiny",
        "adamw",
        3,
    )
    heads = ["--model.hparams.hidden_dim=32", "--model.hparams.pred_hidden_dim=32", "--model.hparams.dim=16"]
    switch = [] if hallucinator else ["--no-hallucinator"]
    args = ["pretrain", str(CONFIGS / "quickstart_mocov3_vit.yaml"), "--data-dir", str(cifar10_archive)]
    assert main([*args, "--output-dir", str(tmp_path), *TINY, *heads, *switch]) == 0
    columns = logged(tmp_path)
    assert len(columns["train/loss"]) == 3 and ("train/loss_hallucinated" in columns) == hallucinator
    backbone, _ = load_pretrained(tmp_path / "checkpoints" / "last.ckpt")
    assert backbone.num_features == 192


@pytest.mark.parametrize("hallucinator", [True, False], ids=["hal", "plain"])
def test_quickstart_dino(cifar10_archive: Path, tmp_path: Path, hallucinator: bool) -> None:
    config = load_config(CONFIGS / "quickstart_dino.yaml")
    assert (config.model.method, config.model.backbone, config.data.local_crops.number) == ("dino", "vit_tiny", 4)
    assert (config.optimizer.final_weight_decay, config.optimizer.grad_clip) == (0.4, 3.0)
    heads = ["--model.hparams.out_dim=64", "--model.hparams.hidden_dim=32", "--model.hparams.bottleneck_dim=16"]
    switch = [] if hallucinator else ["--no-hallucinator"]
    args = ["pretrain", str(CONFIGS / "quickstart_dino.yaml"), "--data-dir", str(cifar10_archive)]
    assert main([*args, "--output-dir", str(tmp_path), *TINY, *heads, *switch]) == 0
    columns = logged(tmp_path)
    assert len(columns["train/loss"]) == 3 and ("train/loss_hallucinated" in columns) == hallucinator
    assert all(0 < h < math.log(64) for h in columns["train/teacher_entropy"])  # the collapse monitors are logged
    assert len(columns["train/teacher_student_kl"]) == 3
    wd = columns["train/weight_decay"]  # DINO's cosine from 0.04 towards 0.4 over the 3 steps
    assert wd[0] == pytest.approx(0.04) and wd[0] < wd[1] < wd[2] < 0.4
    backbone, _ = load_pretrained(tmp_path / "checkpoints" / "last.ckpt")
    assert backbone.num_features == 192
