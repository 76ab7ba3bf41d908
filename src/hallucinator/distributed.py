"""Collective helpers for multi-process training; every one is the identity without a process group.

The methods call these unconditionally, so the same code runs on one CPU, one GPU or under
DistributedDataParallel (any backend, gloo on CPU included). All collectives assume every
process holds a batch of the same size, which is what DistributedSampler with
``drop_last=True`` gives.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    """Rank of this process in the default group (0 without a process group)."""
    return dist.get_rank() if _initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each process the summed gradient of its own slice.

    Every process's loss depends on every process's features, so the gradient w.r.t. this
    process's slice is the sum over all processes' losses: all_reduce(SUM), then slice.
    Combined with DDP's gradient averaging this gives exactly the single-process gradient
    of the mean loss over the global batch.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.batch = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes along dim 0, differentiably (rank order)."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over all processes (a new tensor; ``x`` itself is left as it was), without gradient."""
    if world_size() == 1:
        return x.clone()
    total = x.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size()


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes along dim 0 (rank order), without gradient."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shuffle the global batch across processes (MoCo's shuffle-BN); returns ``(x, unshuffle_index)``.

    Each process receives a random slice of the concatenated global batch, so the
    BatchNorm statistics of its keys come from other samples than its queries. Without a
    process group this is the identity and the index is ``None``.

    Example:
        >>> x = torch.randn(8, 3)
        >>> shuffled, index = batch_shuffle(x)
        >>> torch.equal(batch_unshuffle(shuffled, index), x)
        True
    """
    if world_size() == 1:
        return x, None
    gathered = all_gather_no_grad(x)
    # rank 0 draws the permutation and broadcasts it, so all processes agree on it
    permutation = torch.randperm(gathered.shape[0], device=x.device)
    dist.broadcast(permutation, src=0)
    unshuffle = torch.argsort(permutation)
    start = rank() * x.shape[0]
    return gathered[permutation[start : start + x.shape[0]]], unshuffle


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, unshuffle: torch.Tensor | None) -> torch.Tensor:
    """Undo :func:`batch_shuffle`: return this process's original samples in their original order."""
    if unshuffle is None:
        return x
    gathered = all_gather_no_grad(x)
    start = rank() * x.shape[0]
    return gathered[unshuffle[start : start + x.shape[0]]]
