"""``hallucinator transfer``'s config (hallucinator.transfer.config): the recipes, MoCo's schedules, bad values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hallucinator.engine.config import ConfigError
from hallucinator.transfer.config import load_transfer_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "transfer").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads(path: Path) -> None:
    config = load_transfer_config(path, ["--model.checkpoint=x.ckpt"])
    assert config.solver.steps[-1] < config.solver.max_steps


def test_the_paper_recipes_are_mocos_schedules_and_the_defaults() -> None:
    voc = load_transfer_config(ROOT / "configs/transfer/voc_r50c4_24k.yaml", ["--model.checkpoint=x"])
    assert (voc.data.format, voc.model.arch, voc.solver.batch_size, voc.solver.base_lr) == ("voc", "c4", 16, 0.02)
    assert (voc.solver.max_steps, voc.solver.steps, voc.solver.warmup_steps) == (24_000, [18_000, 22_000], 100)
    assert voc.data.train_sizes == list(range(480, 801, 32)) and voc.data.test_size == 800
    coco = load_transfer_config(ROOT / "configs/transfer/coco_r50c4_2x.yaml", ["--model.checkpoint=x"])
    assert (coco.model.task, coco.solver.max_steps, coco.solver.steps, coco.solver.warmup_steps) == (
        "instance-segmentation",
        180_000,
        [120_000, 160_000],
        1000,
    )
    assert coco.data.train_sizes == [640, 672, 704, 736, 768, 800] and coco.data.test_size == 800
    # without a file, each format gets its recipe
    assert load_transfer_config(None, ["--model.checkpoint=x"]) == voc
    plain_coco = load_transfer_config(None, ["--model.checkpoint=x", "--data.format=coco"])
    assert plain_coco == replace(coco, model=replace(coco.model, task="detection"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "model.checkpoint: pass the pre-training checkpoint"),
        (["--model.checkpoint=x", "--solver.bacth_size=2"], "solver.bacth_size: unknown key"),
        (["--model.checkpoint=x", "--model.arch=c5"], "model.arch: 'c5' is not one of ['c4', 'fpn']"),
        (["--model.checkpoint=x", "--model.task=instance-segmentation"], "VOC's detection layout has none"),
        (
            ["--model.checkpoint=x", "--solver.steps=[20, 10]"],
            "solver.steps: iterations must be positive and ascending",
        ),
        (["--model.checkpoint=x", "--data.train_sizes=[]"], "data.train_sizes: give at least one"),
    ],
)
def test_bad_config_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_transfer_config(None, overrides)
