"""LARS against a NumPy computation of its update, and the parameter groups ``build_optimizer`` makes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hallucinator.engine.config import Config
from hallucinator.engine.optim import LARS, build_optimizer


def lars_by_hand(
    w: np.ndarray, grads: list[np.ndarray], lr: float, momentum: float, wd: float, eta: float, adapt: bool
):
    velocity = None
    for g in grads:
        d = g + wd * w
        if adapt:
            w_norm, d_norm = np.sqrt((w**2).sum()), np.sqrt((d**2).sum())
            d = d * (eta * w_norm / d_norm if w_norm > 0 and d_norm > 0 else 1.0)
        velocity = d.copy() if velocity is None else momentum * velocity + d
        w = w - lr * velocity
    return w


@pytest.mark.parametrize("adapt", [True, False], ids=["lars", "plain"])
def test_lars_steps_match_numpy(adapt: bool) -> None:
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(3)]
    wd = 0.1 if adapt else 0.0
    param = nn.Parameter(torch.tensor(w0))
    optimizer = LARS([{"params": [param], "lars": adapt, "weight_decay": wd}], lr=0.5, momentum=0.9, eta=0.02)
    for g in grads:
        param.grad = torch.tensor(g)
        optimizer.step()
    expected = lars_by_hand(w0, grads, lr=0.5, momentum=0.9, wd=wd, eta=0.02, adapt=adapt)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-12)


def test_lars_zero_weights_take_a_plain_step() -> None:
    param = nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    param.grad = torch.full((3, 2), 2.0, dtype=torch.float64)
    LARS([param], lr=0.1, momentum=0.9).step()
    assert torch.equal(param.detach(), torch.full((3, 2), -0.2, dtype=torch.float64))


def test_build_optimizer_adapts_weights_only_and_spares_biases_and_batchnorm_the_decay() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 5, 5))
    config = Config()
    config.optimizer.name, config.optimizer.weight_decay = "lars", 1e-4
    adapted, plain = build_optimizer(config, model).param_groups
    assert {id(p) for p in adapted["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert adapted["lars"] and adapted["weight_decay"] == 1e-4
    assert (
        not plain["lars"] and plain["weight_decay"] == 0.0 and len(plain["params"]) == 4
    )  # 2 biases, BN weight + bias
    config.optimizer.name = "sgd"
    (group,) = build_optimizer(config, model).param_groups
    assert isinstance(build_optimizer(config, model), torch.optim.SGD) and group["weight_decay"] == 1e-4
    assert len(group["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["sgd", "lars"])
def test_fix_predictor_lr_keeps_the_predictor_at_the_peak_lr_while_the_rest_follows_the_cosine(name: str) -> None:
    import math

    from hallucinator.engine.config import ConfigError
    from hallucinator.engine.optim import lr_lambdas

    class WithPredictor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.predictor = nn.Linear(3, 4), nn.Linear(4, 4)

    model = WithPredictor()
    config = Config()
    config.optimizer.name, config.optimizer.fix_predictor_lr, config.optimizer.min_lr_ratio = name, True, 0.1
    optimizer = build_optimizer(config, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambdas(config, optimizer, 10, 40))
    fixed = [g for g in optimizer.param_groups if g["fixed_lr"]]
    assert {id(p) for g in fixed for p in g["params"]} == {id(p) for p in model.predictor.parameters()}
    assert optimizer.param_groups[0]["params"][0] is model.encoder.weight  # group 0 (the one logged) is scheduled
    peak = config.lr()
    for step in range(40):
        cosine = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 40)))
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(peak if group["fixed_lr"] else cosine)
        optimizer.step()
        scheduler.step()
    config.optimizer.fix_predictor_lr = True
    with pytest.raises(ConfigError, match="optimizer.fix_predictor_lr: Sequential has no predictor"):
        build_optimizer(config, nn.Sequential(nn.Linear(2, 2)))
