"""Momentum targets: the cosine momentum schedule and the EMA update of BYOL's and MoCo v3's target encoders."""

from __future__ import annotations

import math

import pytest
import torch

from hallucinator import methods
from hallucinator.methods.memory import cosine_momentum


def test_cosine_momentum_schedule_of_byol() -> None:
    for progress in (0.0, 0.25, 0.5, 1.0):
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * progress) + 1) / 2
        assert cosine_momentum(0.99, progress) == pytest.approx(expected, rel=1e-12)
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99) and cosine_momentum(0.99, 1.0) == 1.0
    assert cosine_momentum(0.9, 0.7, final=0.9) == pytest.approx(0.9)  # final = base: constant


@pytest.mark.parametrize("name", ["byol", "mocov3"])
def test_momentum_target_follows_the_cosine_schedule_and_takes_no_gradient(name: str, tiny_net, views) -> None:
    torch.manual_seed(0)
    model = methods.build(name, tiny_net(), dim=8, hidden_dim=16, pred_hidden_dim=16).train()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)  # the online encoder now differs from its copy
    m = 1 - 0.01 * (math.cos(math.pi * 0.5) + 1) / 2  # 0.995, half-way through training
    assert cosine_momentum(model.momentum, 0.5, model.final_momentum) == pytest.approx(m, rel=1e-12)
    online = [p.detach().clone() for p in [*model.backbone.parameters(), *model.projector.parameters()]]
    target = [p.clone() for p in [*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()]]
    model.update_target(m)  # what the training step does before the forward
    updated = [*model.momentum_backbone.parameters(), *model.momentum_projector.parameters()]
    after_update = [p.detach().clone() for p in updated]
    model(*views)["loss"].backward()
    for new, moved, old, source in zip(updated, after_update, target, online):
        torch.testing.assert_close(moved, m * old + (1 - m) * source)
        assert torch.equal(new, moved) and new.grad is None  # the forward moves no target weight
    for module in (model.backbone, model.projector, model.predictor, model.hallucinator):
        assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError, match="momentum <= final_momentum"):
        methods.build(name, tiny_net(), momentum=0.999, final_momentum=0.99)
