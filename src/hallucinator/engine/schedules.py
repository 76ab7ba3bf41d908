"""Every value that changes from step to step, in one place: each a pure function of the global step.

:class:`Schedules` gives a training step its :class:`StepValues` (as DINO's ``train_one_epoch`` reads its
precomputed schedules): the learning rate's factor (linear warm-up, then cosine / step / constant), the weight
decay (DINO's cosine, when ``optimizer.final_weight_decay`` is set), the hallucinated loss's weight (its warm-up,
``hallucinator.warmup_*``), the EMA momentum of a method with a momentum target (BYOL's cosine from ``momentum``
to ``final_momentum``; constant for MoCo) and DINO's teacher temperature (a linear warm-up). Being functions of
the step, a resumed run gets the values the uninterrupted run had.

Example:
    >>> schedules = Schedules(config, method, steps_per_epoch=97, total_steps=1600)
    >>> values = schedules.at(step)   # lr_factor, weight_decay, hallucination_weight, momentum, teacher_temperature
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hallucinator.engine.config import Config
from hallucinator.methods import DINO, SSLMethod
from hallucinator.methods.memory import MomentumTarget, cosine_momentum


@dataclass(frozen=True)
class StepValues:
    """The scheduled values of one optimisation step (``None``: the method or the config has no such schedule)."""

    lr_factor: float
    """Multiplier of the peak lr (``Config.lr()``); parameter groups with ``fixed_lr`` keep the peak lr."""
    weight_decay: float | None
    """DINO's cosine weight decay; ``None`` when ``optimizer.final_weight_decay`` is unset (it stays constant)."""
    hallucination_weight: float
    """``w`` of ``(1 - w) * loss_original + w * loss_hallucinated``."""
    momentum: float | None
    """The EMA momentum of the method's target encoder (:class:`~hallucinator.methods.memory.MomentumTarget`)."""
    teacher_temperature: float | None
    """DINO's teacher temperature."""


class Schedules:
    """The :class:`StepValues` of every step of a run of ``total_steps`` steps (``steps_per_epoch`` per epoch).

    The method's own recipe (its momentum range, DINO's temperatures) is read from ``method``; the rest from
    ``config``.
    """

    def __init__(self, config: Config, method: SSLMethod, steps_per_epoch: int, total_steps: int) -> None:
        self.config = config
        self.method = method
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps

    def at(self, step: int) -> StepValues:
        """The values of optimisation ``step`` (0-based)."""
        config, method = self.config, self.method
        progress = step / max(1, self.total_steps)  # fraction of training done, in [0, 1]
        return StepValues(
            lr_factor=lr_factor(config, step, self.steps_per_epoch, self.total_steps),
            weight_decay=None
            if config.optimizer.final_weight_decay is None
            else weight_decay_at(config, step, self.total_steps),
            hallucination_weight=warmup_weight(config, step, self.steps_per_epoch, self.total_steps),
            momentum=cosine_momentum(method.momentum, progress, method.final_momentum)
            if isinstance(method, MomentumTarget)
            else None,
            teacher_temperature=method.teacher_temperature_at(progress) if isinstance(method, DINO) else None,
        )


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


def warmup_weight(config: Config, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Hallucinated-loss weight at ``step``: ``weight`` ramped linearly from 0 when a warm-up is set."""
    h = config.hallucinator
    ramp = h.warmup_epochs * steps_per_epoch if h.warmup_epochs > 0 else h.warmup_fraction * total_steps
    if ramp <= 0:
        return h.weight
    return h.weight * min(1.0, step / ramp)
