"""The fine-tuning step (hallucinator.transfer.module): the schedule, weight decay, the backbone's weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from hallucinator.transfer.config import SolverConfig
from hallucinator.transfer.models import backbone_state
from hallucinator.transfer.module import build_model, lr_factor, parameter_groups
from tests.transfer.conftest import config_for, fast_recipe


def test_lr_factor_is_a_linear_warm_up_times_step_decay() -> None:
    solver = SolverConfig(steps=[7, 11], gamma=0.1, warmup_steps=5, warmup_factor=0.001)
    # the same schedule by torch's own schedulers: LinearLR from warmup_factor over the warm-up, times MultiStepLR
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    chained = torch.optim.lr_scheduler.ChainedScheduler(
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, end_factor=1.0, total_iters=5),
            torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[7, 11], gamma=0.1),
        ]
    )
    for step in range(15):
        assert lr_factor(solver, step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), step
        optimizer.step()
        chained.step()


def test_normalisation_layers_take_no_weight_decay() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.GroupNorm(1, 2))
    decayed, plain = parameter_groups(model, 1e-4)
    assert plain["weight_decay"] == 0.0 and decayed["weight_decay"] == 1e-4
    norm_ids = {id(p) for i in (1, 3) for p in model[i].parameters()}
    assert {id(p) for p in plain["params"]} == norm_ids
    assert {id(p) for p in decayed["params"]} == {id(p) for p in model.parameters()} - norm_ids


def test_backbone_comes_from_the_checkpoint_or_is_random(small_set, r18_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(r18_checkpoint, weights_only=True)["state_dict"]
    stored = {key.removeprefix("method.backbone."): value for key, value in checkpoint.items()}
    config = config_for(fast_recipe(tmp_path / "r.yaml"), r18_checkpoint, small_set.root, tmp_path)
    detector, loaded = build_model(config, num_classes=10)
    assert loaded == len(stored) == len(backbone_state(detector))
    for name, tensor in backbone_state(detector).items():
        assert torch.equal(tensor, stored[name]), name
    torch.manual_seed(1)
    scratch, none = build_model(replace(config, model=replace(config.model, init="random")), num_classes=10)
    assert none == 0
    assert not torch.equal(backbone_state(scratch)["conv1.weight"], stored["conv1.weight"])
