"""Every shipped config builds (method, Hallucinator, augmentation), the paper's configs resolve to
the values docs/methods.md's "Paper, authors' code and ours" table states, and every method of the registry has
its CIFAR-10/100 configs (with and without the Hallucinator) and a quickstart-size one."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from hallucinator import methods
from hallucinator.data import augment
from hallucinator.engine.config import Config, load_config, to_dict
from hallucinator.engine.module import build_augmentation, build_method

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# pre-training configs; configs/transfer/ holds `hallucinator transfer`'s recipes (tests/transfer/test_config.py)
ALL = sorted(path for path in CONFIGS.rglob("*.yaml") if path.parent.name != "transfer")
PAPER = sorted([*CONFIGS.glob("table1/*.yaml"), *CONFIGS.glob("table2/*.yaml")])
CLAIM = re.compile(r"`([\w*?\[\]./-]+/[\w*?\[\]./-]*): ([\w.]+)=([^`]+)`")


def table_claims() -> list[tuple[str, str, Any]]:
    """``(glob under configs/, dotted key, value)`` for every checked cell of the docs table."""
    text = (ROOT / "docs" / "methods.md").read_text()
    section = text.split("## Paper, authors' code and ours", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [(g, key, yaml.safe_load(value)) for row in rows for g, key, value in CLAIM.findall(row)]


@cache
def resolved(path: Path) -> Config:
    return load_config(path)


def value_of(path: Path, key: str) -> Any:
    """The resolved value of ``key``: method hyper-parameters include the registry's defaults (a ``None`` default,
    which the constructor resolves, e.g. MoCo's temperature by version, is read from the built method) and
    ``augment.*`` is read from the built view-1 crop."""
    config = resolved(path)
    if key.startswith("model.hparams."):
        name = key.split(".", 2)[2]
        value = {**methods.METHODS[config.model.method].hparams, **config.model.hparams}[name]
        if value is None:
            with torch.device("meta"):
                value = getattr(build_method(config), name, None)
        return value
    if key.startswith("augment."):
        crop = build_augmentation(config).view1.ops[0]
        assert isinstance(crop, augment.CenterSuppressedResizedCrop), f"{path}: view 1 has no center-suppressed crop"
        return getattr(crop, key.split(".", 1)[1])
    node: Any = to_dict(config)
    for part in key.split("."):
        node = node[part]
    return node


def test_the_docs_table_states_values_and_every_one_holds() -> None:
    claims = table_claims()
    assert len(claims) >= 50, "the docs table lost its checked cells"
    for pattern, key, expected in claims:
        matched = sorted(CONFIGS.glob(pattern))
        assert matched, f"docs/methods.md: `{pattern}` matches no config"
        for path in matched:
            actual = value_of(path, key)
            actual = list(actual) if isinstance(actual, tuple) else actual
            assert actual == pytest.approx(expected) if isinstance(expected, float) else actual == expected, (
                f"{path.relative_to(ROOT)}: {key} = {actual!r}, docs/methods.md says {expected!r}"
            )


def test_the_table_covers_every_method_hyper_parameter_of_tables_1_and_2() -> None:
    covered = {(path, key) for pattern, key, _ in table_claims() for path in CONFIGS.glob(pattern)}
    for path in PAPER:
        method = resolved(path).model.method
        for name in sorted(set(methods.METHODS[method].hparams) - {"hallucination_weight"}):
            assert (path, f"model.hparams.{name}") in covered, f"docs/methods.md states no {name} for {path.name}"


def test_simsiam_heads_by_table() -> None:
    """Independent of the docs: ImageNet SimSiam has SimSiam's 3-layer projector (the issue-12 bug), and
    the small-data SimSiam the authors' 512-d heads, with H mapping 1024 -> 1024 -> 1024 -> 512."""
    for path in CONFIGS.glob("table*/*simsiam*.yaml"):
        with torch.device("meta"):
            model = build_method(resolved(path))
        linears = [m for m in model.projector if isinstance(m, nn.Linear)]
        widths = [m.out_features for m in linears]
        imagenet = path.parent.name == "table2"
        assert widths == ([2048, 2048, 2048] if imagenet else [512, 512, 512]), path.name
        assert model.predictor[0].out_features == (512 if imagenet else 128), path.name
        if path.name.endswith("_hal.yaml") and not imagenet:
            shapes = [(m.in_features, m.out_features) for m in model.hallucinator.net if isinstance(m, nn.Linear)]
            assert shapes == [(1024, 1024), (1024, 1024), (1024, 512)]


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(CONFIGS)) for p in ALL])
def test_every_shipped_config_builds_its_method_hallucinator_and_augmentation(path: Path) -> None:
    config = resolved(path)
    with torch.device("meta"):  # the structure without the cost of initialising a ResNet-50
        model = build_method(config)
    h = config.hallucinator
    assert (model.hallucinator is not None) == h.enabled
    if h.enabled:
        assert sum(isinstance(m, nn.Linear) for m in model.hallucinator.net) == h.num_layers
        assert model.hallucinator.extrapolation == h.extrapolation
    two = build_augmentation(config)
    global_views = (two.view1, two.view2) if isinstance(two, augment.TwoViews) else two.views[:2]  # multi-crop: globals
    center = [isinstance(v.ops[0], augment.CenterSuppressedResizedCrop) for v in global_views]
    assert center == [1 in config.data.augment.get("center_crop_views", (1,) if h.enabled else ()), False]
    side = {"cifar10": 32, "cifar100": 32, "stl10": 96, "tiny-imagenet": 64}.get(config.data.dataset, 256)
    pipeline = (side, config.model.method, tuple(center), config.data.crop_size, config.data.local_crops.number)
    if pipeline in _RUN:  # running a 224 px pipeline costs seconds on this CPU: once per kind of pipeline
        return
    _RUN.add(pipeline)
    crop = config.data.global_crops.size or config.data.training_crop_size or min(side, 224)
    view1, view2, *local_views = two(torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8))
    assert len(local_views) == config.data.local_crops.number
    assert all(v.shape == (2, 3, config.data.local_crops.size, config.data.local_crops.size) for v in local_views)
    assert view1.shape == view2.shape == (2, 3, crop, crop)


_RUN: set[tuple] = set()


BEYOND = ["byol", "barlowtwins", "vicreg", "mocov3", "nnclr"]


@pytest.mark.parametrize("method", BEYOND)
def test_cifar_and_quickstart_configs_of_the_methods_beyond_the_paper(method: str) -> None:
    assert method in methods.METHODS
    for dataset in ("cifar10", "cifar100"):
        for arm, enabled in (("base", False), ("hal", True)):
            config = load_config(CONFIGS / "beyond" / f"{dataset}_{method}_{arm}.yaml")
            assert (config.model.method, config.data.dataset, config.hallucinator.enabled) == (method, dataset, enabled)
            assert config.optimizer.name == "lars" and config.data.batch_size == 256
    quick, reference = load_config(CONFIGS / f"quickstart_{method}.yaml"), load_config(CONFIGS / "quickstart.yaml")
    assert quick.model.method == method
    # the quickstart's recipe, only the method and its heads differ
    for section in ("hallucinator", "data", "optimizer", "trainer"):
        assert getattr(quick, section) == getattr(reference, section), section
    assert (quick.model.width, quick.seed) == (reference.model.width, reference.seed)
