"""LARS against a NumPy computation of its update, and the parameter groups ``build_optimizer`` makes."""

from __future__ import annotations

import math

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
    from hallucinator.engine.optim import set_lr
    from hallucinator.engine.schedules import lr_factor

    class WithPredictor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.predictor = nn.Linear(3, 4), nn.Linear(4, 4)

    model = WithPredictor()
    config = Config()
    config.optimizer.name, config.optimizer.fix_predictor_lr, config.optimizer.min_lr_ratio = name, True, 0.1
    optimizer = build_optimizer(config, model)
    fixed = [g for g in optimizer.param_groups if g["fixed_lr"]]
    assert {id(p) for g in fixed for p in g["params"]} == {id(p) for p in model.predictor.parameters()}
    assert optimizer.param_groups[0]["params"][0] is model.encoder.weight  # group 0 (the one logged) is scheduled
    peak = config.lr()
    for step in range(40):
        set_lr(optimizer, peak, lr_factor(config, step, 10, 40))  # what the training step does
        cosine = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 40)))
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(peak if group["fixed_lr"] else cosine)
        optimizer.step()
    config.optimizer.fix_predictor_lr = True
    with pytest.raises(ConfigError, match="optimizer.fix_predictor_lr: Sequential has no predictor"):
        build_optimizer(config, nn.Sequential(nn.Linear(2, 2)))


class TinyViT(nn.Module):
    """The parameter kinds of a ViT: a patch projection, position and class tokens, a norm, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 4, 2)
        self.pos_embed = nn.Parameter(torch.randn(1, 5, 4))
        self.cls_token = nn.Parameter(torch.randn(1, 1, 4))
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3)


def test_adamw_decays_weights_only_not_norms_biases_or_vit_tokens() -> None:
    model = TinyViT()
    config = Config()
    config.optimizer.name, config.optimizer.weight_decay = "adamw", 0.1
    optimizer = build_optimizer(config, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    # written out by hand: the two weight matrices decay, the rest does not
    assert {id(p) for p in decayed["params"]} == {id(model.patch_embed.weight), id(model.head.weight)}
    expected_plain = [
        model.patch_embed.bias,
        model.head.bias,
        model.pos_embed,
        model.cls_token,
        *model.norm.parameters(),
    ]
    assert {id(p) for p in plain["params"]} == {id(p) for p in expected_plain}
    assert (decayed["weight_decay"], plain["weight_decay"], decayed["decay"], plain["decay"]) == (0.1, 0.0, True, False)
    # one step with zero gradients: Adam's update is 0, so only the decoupled decay moves a parameter
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    lr = config.lr()
    for name, p in model.named_parameters():
        factor = 1 - lr * 0.1 if name in ("patch_embed.weight", "head.weight") else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)


def test_weight_decay_follows_dinos_cosine_and_spares_the_groups_without_decay() -> None:
    from hallucinator.engine.optim import set_weight_decay
    from hallucinator.engine.schedules import weight_decay_at

    config = Config()
    config.optimizer.name, config.optimizer.weight_decay, config.optimizer.final_weight_decay = "adamw", 0.04, 0.4
    total = 50
    for step in (0, 10, 25, 40, 50, 80):
        t = min(step, total) / total
        expected = 0.4 - (0.4 - 0.04) * (math.cos(math.pi * t) + 1) / 2  # DINO's cosine_scheduler(0.04, 0.4)
        assert weight_decay_at(config, step, total) == pytest.approx(expected)
    assert weight_decay_at(config, 25, total) == pytest.approx(0.22)
    optimizer = build_optimizer(config, TinyViT())
    set_weight_decay(optimizer, 0.3)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.3, 0.0]
    config.optimizer.final_weight_decay = None
    assert weight_decay_at(config, 25, total) == 0.04


def test_grad_clip_scales_the_total_gradient_norm_down_to_the_limit() -> None:
    import lightning.pytorch as pl

    from hallucinator.engine.module import PretrainModule

    config = Config()
    config.model.width, config.model.hparams = 16, {"dim": 4}
    config.hallucinator.enabled, config.data.preset, config.trainer.max_steps = False, "none", 1
    config.optimizer.grad_clip = 0.5
    module = PretrainModule(config, steps_per_epoch=1)
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    optimizer = build_optimizer(config, module.method)
    params = [p for p in module.method.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) for p in params]
    total = math.sqrt(sum(float((g**2).sum()) for g in grads))
    assert total > 0.5
    for p, g in zip(params, grads):
        p.grad = g.clone()
    module.configure_gradient_clipping(optimizer)
    for p, g in zip(params, grads):
        torch.testing.assert_close(p.grad, g * 0.5 / (total + 1e-6))
    config.optimizer.grad_clip = 0.0  # off: the gradients stay as they are
    for p, g in zip(params, grads):
        p.grad = g.clone()
    module.configure_gradient_clipping(optimizer)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--optimizer.name=adam", "optimizer.name: 'adam' is not one of \\['sgd', 'lars', 'adamw'\\]"),
        ("--optimizer.betas=[0.9, 1.5]", "optimizer.betas: each must be in \\[0, 1\\)"),
        ("--optimizer.grad_clip=-1", "optimizer.grad_clip: must be >= 0"),
        ("--optimizer.final_weight_decay=-0.1", "optimizer.final_weight_decay: must be >= 0"),
    ],
)
def test_bad_adamw_keys_name_the_key(override: str, message: str) -> None:
    from hallucinator.engine.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def sgd_by_hand(w: np.ndarray, grads: list[np.ndarray], lrs: list[float], momentum: float, wd: float) -> np.ndarray:
    velocity = None
    for g, lr in zip(grads, lrs):
        d = g + wd * w
        velocity = d.copy() if velocity is None else momentum * velocity + d
        w = w - lr * velocity
    return w


@pytest.mark.parametrize("implementation", ["auto", "for-loop", "foreach", "fused"])
def test_every_sgd_implementation_takes_the_steps_computed_by_hand(implementation: str) -> None:
    from hallucinator.engine.optim import set_lr

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    start = [p.detach().double().numpy().copy() for p in model.parameters()]
    config = Config()
    config.optimizer.implementation, config.optimizer.weight_decay = implementation, 0.01
    optimizer = build_optimizer(config, model)
    (group,) = optimizer.param_groups
    assert (bool(group["foreach"]), bool(group["fused"])) == {
        "auto": (False, False),  # PyTorch's default on the CPU: the for-loop
        "for-loop": (False, False),
        "foreach": (True, False),
        "fused": (False, True),
    }[implementation]
    rng = np.random.default_rng(0)
    grads = [[rng.normal(size=w.shape) for w in start] for _ in range(3)]
    factors = [1.0, 0.5, 0.25]  # a schedule: set_lr writes each step's lr into the group, as the engine does
    for step_grads, factor in zip(grads, factors):
        set_lr(optimizer, config.lr(), factor)
        for p, g in zip(model.parameters(), step_grads):
            p.grad = torch.tensor(g, dtype=p.dtype)
        optimizer.step()
    lrs = [config.lr() * f for f in factors]
    for p, w, g in zip(model.parameters(), start, zip(*grads)):
        expected = sgd_by_hand(w, list(g), lrs, momentum=0.9, wd=0.01)
        np.testing.assert_allclose(p.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["foreach", "fused"])
def test_adamw_implementations_take_the_for_loop_steps(implementation: str) -> None:
    torch.manual_seed(0)
    models = {name: TinyViT() for name in ("for-loop", implementation)}
    models[implementation].load_state_dict(models["for-loop"].state_dict())
    for name, model in models.items():
        config = Config()
        config.optimizer.name, config.optimizer.implementation = "adamw", name
        optimizer = build_optimizer(config, model)
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=generator)
            optimizer.step()
    for a, b in zip(models["for-loop"].parameters(), models[implementation].parameters()):
        torch.testing.assert_close(a, b)


def test_a_resumed_optimizer_keeps_this_runs_implementation() -> None:
    model = nn.Linear(3, 2)
    config = Config()
    saved = build_optimizer(config, model)
    model.weight.grad, model.bias.grad = torch.ones(2, 3), torch.ones(2)
    saved.step()
    config.optimizer.implementation = "fused"
    resumed = build_optimizer(config, model)
    resumed.load_state_dict(saved.state_dict())  # the checkpoint's groups say fused=None
    assert resumed.param_groups[0]["fused"] is True
    assert torch.equal(resumed.state[model.weight]["momentum_buffer"], saved.state[model.weight]["momentum_buffer"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--optimizer.implementation=fast"], r"optimizer\.implementation: 'fast' is not one of \['auto', 'for-loop'"),
        (
            ["--optimizer.name=lars", "--optimizer.implementation=fused"],
            r"optimizer\.implementation: lars has only the for-loop update, got 'fused'; set it to auto",
        ),
    ],
)
def test_bad_optimizer_implementations_name_the_key(overrides: list[str], message: str) -> None:
    from hallucinator.engine.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
