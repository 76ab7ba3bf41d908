"""The per-step schedules against their formulas written out here, and the training step that applies them."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from hallucinator import backbones, methods
from hallucinator.engine import load_config, pretrain
from hallucinator.engine.config import Config
from hallucinator.engine.schedules import Schedules
from hallucinator.methods.families import MomentumPredictor


def _config(*overrides: str) -> Config:
    return load_config(None, ["--model.width=8", *overrides])


def test_each_steps_values_follow_their_formulas() -> None:
    config = _config(
        "--optimizer.warmup_epochs=1",
        "--optimizer.min_lr_ratio=0.1",
        "--optimizer.weight_decay=0.04",
        "--optimizer.final_weight_decay=0.4",
        "--hallucinator.warmup_fraction=0.5",
    )
    byol = methods.build("byol", backbones.build("resnet18", cifar_stem=True, width=8), dim=8, hidden_dim=8)
    schedules = Schedules(config, byol, steps_per_epoch=10, total_steps=100)
    for step in (0, 5, 9, 10, 40, 99, 100):
        values = schedules.at(step)
        t = step / 100
        lr = (step + 1) / 10 if step < 10 else 0.1 + 0.9 * (1 + math.cos(math.pi * (step - 10) / 90)) / 2
        assert values.lr_factor == pytest.approx(lr)
        assert values.weight_decay == pytest.approx(0.4 - 0.36 * (1 + math.cos(math.pi * t)) / 2)
        assert values.hallucination_weight == pytest.approx(0.5 * min(1.0, step / 50))
        assert values.momentum == pytest.approx(1 - 0.01 * (1 + math.cos(math.pi * t)) / 2)  # BYOL: 0.99 -> 1
        assert values.teacher_temperature is None
    simclr = methods.build("simclr", backbones.build("resnet18", cifar_stem=True, width=8))
    plain = Schedules(_config(), simclr, 10, 100).at(30)
    assert (plain.weight_decay, plain.momentum, plain.hallucination_weight) == (None, None, 0.5)
    moco = methods.build("mocov2", backbones.build("resnet18", cifar_stem=True, width=8), queue_size=64)
    assert {Schedules(_config(), moco, 10, 100).at(step).momentum for step in (0, 50, 99)} == {0.999}  # constant
    dino = methods.build("dino", backbones.build("vit_tiny", image_size=16), out_dim=8, hidden_dim=8)
    temperatures = [Schedules(_config(), dino, 10, 100).at(step).teacher_temperature for step in (0, 5, 10, 60)]
    assert temperatures == pytest.approx([0.04, 0.055, 0.07, 0.07])  # 0.04 -> 0.07 over the first 0.1 of the run


class _Record(pl.Callback):
    """The optimiser's lr and weight decay as each step takes it."""

    def __init__(self) -> None:
        self.groups: list[tuple[float, float]] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer) -> None:
        self.groups.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"]))


def test_the_step_applies_each_value_and_moves_the_target_before_the_forward(
    cifar10_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Independently of ``Schedules``: the lr, weight decay and loss weight each step trains with, and the EMA
    target as each forward sees it: ``m_t * target_(t-1) + (1 - m_t) * online_t`` with BYOL's cosine ``m_t``."""
    steps = 4
    config = _config(
        "--model.method=byol",
        "--model.hparams.hidden_dim=16",
        "--model.hparams.pred_hidden_dim=16",
        f"--data.data_dir={cifar10_archive}",
        "--data.batch_size=16",
        "--data.limit=64",
        f"--trainer.max_steps={steps}",
        "--trainer.accelerator=cpu",
        "--trainer.progress_bar=false",
        "--trainer.cpu_threads=1",
        "--trainer.precision=32-true",
        "--optimizer.warmup_epochs=1",
        "--optimizer.final_weight_decay=0.01",
        "--hallucinator.warmup_fraction=0.5",
        f"--output_dir={tmp_path}",
    )
    seen: list[tuple[float, list[torch.Tensor], list[torch.Tensor]]] = []
    original = MomentumPredictor.forward

    def recording(self, *views):
        online = [p.detach().clone() for p in [*self.backbone.parameters(), *self.projector.parameters()]]
        target = [p.clone() for p in [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]]
        seen.append((self.hallucination_weight, online, target))
        return original(self, *views)

    monkeypatch.setattr(MomentumPredictor, "forward", recording)
    record = _Record()
    result = pretrain(config, callbacks=[record])
    assert result.global_step == steps and len(seen) == steps and len(record.groups) == steps
    peak, per_epoch = config.lr(), 64 // 16
    for step, ((weight, online, target), (lr, weight_decay)) in enumerate(zip(seen, record.groups)):
        t = step / steps
        assert lr == pytest.approx(peak * (step + 1) / per_epoch)  # the warm-up spans this whole run
        assert weight_decay == pytest.approx(0.01 - (0.01 - 1e-4) * (1 + math.cos(math.pi * t)) / 2)
        assert weight == pytest.approx(0.5 * min(1.0, step / (0.5 * steps)))
        m = 1 - 0.01 * (1 + math.cos(math.pi * t)) / 2
        previous = seen[step - 1][2] if step else online  # the target starts as a copy of the online encoder
        for now, before, source in zip(target, previous, online):
            torch.testing.assert_close(now, m * before + (1 - m) * source)
