"""What the methods with a memory share: momentum (EMA) encoders and queues of past features.

Example:
    >>> target = momentum_copy(projector)                       # frozen copy, no gradient
    >>> ema_update([projector], [target], cosine_momentum(0.99, progress=0.3))
    >>> enqueue(queue, queue_ptr, keys)                           # a (K, D) ring buffer, keys of all processes
    >>> byol.update_target(cosine_momentum(byol.momentum, progress, byol.final_momentum))  # a MomentumTarget, each step
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from hallucinator import distributed


class MomentumTarget:
    """A method whose target (key, teacher) encoder is an exponential moving average of its online encoder.

    The training loop calls :meth:`update_target` once per training step, before the method's ``forward``:
    the target then follows the online weights the previous optimiser step left (MoCo's code does the same
    at the start of its ``forward``; the first call, with both equal, changes nothing). The momentum rises
    from ``momentum`` to ``final_momentum`` over training on BYOL's cosine (:func:`cosine_momentum`; the
    engine's ``Schedules`` computes it), constant when the two are equal (MoCo).

    Subclasses set ``momentum``, ``final_momentum`` and define :meth:`momentum_pairs`.
    """

    momentum: float
    final_momentum: float

    def momentum_pairs(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The online modules and their targets, in the same order."""
        raise NotImplementedError

    def update_target(self, momentum: float) -> None:
        """``target = momentum * target + (1 - momentum) * online`` for every pair of :meth:`momentum_pairs`."""
        ema_update(*self.momentum_pairs(), momentum)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that takes no gradient: the start of a momentum (target) encoder."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def ema_update(online: Sequence[nn.Module], target: Sequence[nn.Module], momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online``, parameter by parameter (buffers are not averaged)."""
    online_params = [p for module in online for p in module.parameters()]
    target_params = [p for module in target for p in module.parameters()]
    for p_online, p_target in zip(online_params, target_params):
        p_target.lerp_(p_online.detach(), 1.0 - momentum)


def cosine_momentum(base: float, progress: float, final: float = 1.0) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * progress) + 1) / 2``, ``progress`` in [0, 1].

    Example:
        >>> cosine_momentum(0.99, 0.0), cosine_momentum(0.99, 1.0)
        (0.99, 1.0)
    """
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def check_momentum_schedule(momentum: float, final_momentum: float) -> None:
    """A momentum schedule rises from ``momentum`` to ``final_momentum``, both in [0, 1]."""
    if not 0.0 <= momentum <= final_momentum <= 1.0:
        raise ValueError(
            f"need 0 <= momentum <= final_momentum <= 1 (the target's EMA momentum rises over training), "
            f"got momentum={momentum}, final_momentum={final_momentum}"
        )


def check_queue_batch(queue_size: int, batch: int) -> None:
    """The global batch must divide the queue, so every enqueue writes one contiguous block."""
    world = distributed.world_size()
    global_batch = batch * world
    if queue_size % global_batch:
        raise ValueError(
            f"queue_size={queue_size} is not a multiple of the global batch size {global_batch} "
            f"({batch} per process x {world} processes); use a batch size that divides {queue_size} "
            f"(e.g. a power of 2, with drop_last=True) or set queue_size to a multiple of {global_batch}"
        )


@torch.no_grad()
def enqueue(queue: torch.Tensor, queue_ptr: torch.Tensor, features: torch.Tensor) -> None:
    """Write the features of all processes into the ring buffer ``queue`` at ``queue_ptr`` and advance it."""
    features = distributed.all_gather_no_grad(features)
    # the pointer stays on the device: reading it into Python would make the host wait for the GPU
    size = queue.shape[0]
    slots = (queue_ptr + torch.arange(features.shape[0], device=queue_ptr.device)) % size
    queue.index_copy_(0, slots, features.to(queue.dtype))
    queue_ptr.copy_((queue_ptr + features.shape[0]) % size)
