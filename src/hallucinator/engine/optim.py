"""Optimisers and schedules: the paper's recipes (SGD or LARS; cosine or step lr, with warm-up) and the ViT recipe
of MoCo v3 / DINO (AdamW, no weight decay on norms, biases and position / class tokens, a cosine weight-decay schedule).

The schedules (what the lr and the weight decay are at each step) are ``engine.schedules``; the optimiser's
parameter groups say which of them each group follows.

Example:
    >>> optimizer = build_optimizer(config, method)          # optimizer.name: sgd | lars | adamw
    >>> values = Schedules(config, method, steps_per_epoch, total_steps).at(step)
    >>> set_lr(optimizer, config.lr(), values.lr_factor)     # each step, before optimizer.step()
    >>> set_weight_decay(optimizer, values.weight_decay)     # DINO's schedule (optimizer.final_weight_decay)
"""

from __future__ import annotations

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
    # SGD keeps the parameters without a gradient too (it skips them): the groups of every SGD checkpoint
    # written so far hold them, and a resumed run's groups must match its checkpoint's
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

    Every parameter group has a ``fixed_lr`` flag (:func:`set_lr` keeps such a group at the peak lr) and a
    ``decay`` flag (:func:`set_weight_decay` schedules only those groups). SGD and AdamW update the parameters
    as ``optimizer.implementation`` says (a for-loop, ``foreach`` or ``fused`` kernels; ``auto``: PyTorch's choice).
    """
    o = config.optimizer
    groups = _param_groups(config, model)
    if o.name == "lars":
        return LARS(groups, lr=config.lr(), momentum=o.momentum, weight_decay=o.weight_decay, eta=o.lars_eta)
    implementation, lr = _IMPLEMENTATIONS[o.implementation], config.lr()
    if o.name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay, **implementation
        )
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=o.betas, weight_decay=o.weight_decay, **implementation)
    optimizer.register_load_state_dict_pre_hook(_keep_implementation)
    return optimizer


# optimizer.implementation -> torch.optim's keyword arguments ("auto": none, PyTorch's choice)
_IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "auto": {},
    "for-loop": {"foreach": False, "fused": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def _keep_implementation(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """A checkpoint's groups carry the ``foreach`` / ``fused`` flags they were saved with, which
    ``load_state_dict`` would restore: a resumed run keeps this run's ``optimizer.implementation`` instead."""
    groups = [
        {**saved, **{key: group[key] for key in ("foreach", "fused")}}
        for saved, group in zip(state_dict["param_groups"], optimizer.param_groups)
    ]
    return {**state_dict, "param_groups": groups}


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Sets the weight decay of every group that takes it (``decay``); the others keep 0."""
    for group in optimizer.param_groups:
        if group.get("decay", True):
            group["weight_decay"] = weight_decay


def set_lr(optimizer: torch.optim.Optimizer, peak_lr: float, factor: float) -> None:
    """Sets each group's lr to ``peak_lr * factor`` (a schedule's factor); ``fixed_lr`` groups keep ``peak_lr``."""
    for group in optimizer.param_groups:
        group["lr"] = peak_lr if group.get("fixed_lr") else peak_lr * factor
