"""Optimisers and schedules: the paper's recipes (SGD or LARS; cosine or step lr, with warm-up) and the ViT recipe
of MoCo v3 / DINO (AdamW, no weight decay on norms, biases and position / class tokens, a cosine weight-decay schedule).

Example:
    >>> optimizer = build_optimizer(config, method)          # optimizer.name: sgd | lars | adamw
    >>> set_weight_decay(optimizer, weight_decay_at(config, step, total_steps))  # each step, before optimizer.step()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from hallucinator.engine.config import Config, ConfigError


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), for large batches.

    Each step, for a parameter ``w`` with gradient ``g``::

        d = g + weight_decay * w
        d = trust * d,  trust = eta * |w| / |d|   (1 where |w| or |d| is 0)
        v = momentum * v + d                      (v = d at the first step)
        w = w - lr * v

    Parameter groups with ``lars=False`` (biases and BatchNorm, by convention) skip the trust
    ratio: plain SGD with momentum and weight decay. The learning rate multiplies the buffer, as
    in ``torch.optim.SGD``; SimCLR's and BYOL's LARS put it inside (``v = momentum * v + lr * d``,
    ``w = w - v``), which gives the same steps while the lr is constant and differs while it
    changes (warm-up, cosine decay).

    Example:
        >>> optimizer = LARS(model.parameters(), lr=4.8, momentum=0.9, weight_decay=1e-6)
    """

    def __init__(
        self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> torch.Tensor | None:  # type: ignore[override]  # torch's overload pair
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


# ViT parameters that are not weights of a layer: DINO's and MoCo v3's recipes exempt them from weight decay
_NO_DECAY_SUFFIXES = ("pos_embed", "cls_token")


def decays(name: str, param: nn.Parameter) -> bool:
    """Whether AdamW decays ``param``: not biases and norm scales (1-d) nor ViT position / class tokens.

    Example:
        >>> decays("blocks.0.attn.qkv.weight", nn.Parameter(torch.zeros(3, 2))), decays("pos_embed", nn.Parameter(torch.zeros(1, 5, 2)))
        (True, False)
    """
    return param.ndim > 1 and not name.endswith(_NO_DECAY_SUFFIXES)


def _param_groups(config: Config, model: nn.Module) -> list[dict]:
    """Parameter groups; with ``fix_predictor_lr`` the predictor's parameters come last, tagged ``fixed_lr``.

    Each group says whether it takes weight decay (``decay``): every parameter for SGD, weights only for LARS,
    :func:`decays` for AdamW.
    """
    o = config.optimizer
    # SGD keeps every parameter (its groups then match checkpoints written before fix_predictor_lr existed)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad or o.name == "sgd"]
    fixed: set[int] = set()
    if o.fix_predictor_lr:
        predictor = getattr(model, "predictor", None)
        if not isinstance(predictor, nn.Module):
            raise ConfigError(f"optimizer.fix_predictor_lr: {type(model).__name__} has no predictor; set it to false")
        fixed = {id(p) for p in predictor.parameters()}
    groups: list[dict] = []
    for is_fixed in (False, True):
        chosen = [(n, p) for n, p in named if (id(p) in fixed) == is_fixed]
        if o.name == "sgd":
            groups.append({"params": [p for _, p in chosen], "fixed_lr": is_fixed, "decay": True})
            continue
        decayed = (lambda n, p: p.ndim > 1) if o.name == "lars" else decays
        groups += [
            {"params": [p for n, p in chosen if decayed(n, p)], "fixed_lr": is_fixed, "decay": True},
            {
                "params": [p for n, p in chosen if not decayed(n, p)],
                "fixed_lr": is_fixed,
                "decay": False,
                "weight_decay": 0.0,
                **({"lars": False} if o.name == "lars" else {}),
            },
        ]
    return [g for g in groups if g["params"] or not g["fixed_lr"]]


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (weight decay on every parameter, as in MoCo/SimCLR/SimSiam code), LARS (none on biases and norms) or
    AdamW (none on biases, norms and ViT position / class tokens, as in MoCo v3's and DINO's code).

    Every parameter group has a ``fixed_lr`` flag (:func:`lr_lambdas` keeps such a group at the peak lr) and a
    ``decay`` flag (:func:`set_weight_decay` schedules only those groups).
    """
    o = config.optimizer
    groups = _param_groups(config, model)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr(), momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr(), betas=o.betas, weight_decay=o.weight_decay)
    return LARS(groups, lr=config.lr(), momentum=o.momentum, weight_decay=o.weight_decay, eta=o.lars_eta)


def weight_decay_at(config: Config, step: int, total_steps: int) -> float:
    """The weight decay at optimisation ``step``: ``weight_decay``, or DINO's cosine from it to ``final_weight_decay``.

    Example:
        >>> config.optimizer.weight_decay, config.optimizer.final_weight_decay = 0.04, 0.4
        >>> weight_decay_at(config, 0, 100), weight_decay_at(config, 100, 100)
        (0.04, 0.4)
    """
    o = config.optimizer
    if o.final_weight_decay is None:
        return o.weight_decay
    progress = min(1.0, step / max(1, total_steps))
    return o.final_weight_decay + (o.weight_decay - o.final_weight_decay) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Sets the weight decay of every group that takes it (``decay``); the others keep 0."""
    for group in optimizer.param_groups:
        if group.get("decay", True):
            group["weight_decay"] = weight_decay


def lr_lambdas(config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_steps: int) -> list:
    """One ``LambdaLR`` multiplier per parameter group: :func:`lr_factor`, or 1 for a ``fixed_lr`` group."""
    return [
        (lambda step: 1.0)
        if group.get("fixed_lr")
        else (lambda step: lr_factor(config, step, steps_per_epoch, total_steps))
        for group in optimizer.param_groups
    ]


def lr_factor(config: Config, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the peak lr at optimisation ``step`` (0-based): linear warm-up, then the schedule."""
    o = config.optimizer
    warmup = o.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "step":
        epoch = step / steps_per_epoch
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    progress = min(1.0, (step - warmup) / max(1.0, total_steps - warmup))
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_weight(config: Config, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Hallucinated-loss weight at ``step``: ``weight`` ramped linearly from 0 when a warm-up is set."""
    h = config.hallucinator
    ramp = h.warmup_epochs * steps_per_epoch if h.warmup_epochs > 0 else h.warmup_fraction * total_steps
    if ramp <= 0:
        return h.weight
    return h.weight * min(1.0, step / ramp)
