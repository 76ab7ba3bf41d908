"""NaiveSyncBatchNorm (hallucinator.transfer.sync_batchnorm): over 2 processes, BatchNorm of the global batch."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from hallucinator.transfer.sync_batchnorm import NaiveSyncBatchNorm, convert_sync_batchnorm
from tests.conftest import run_ranks

WORLD = 2


def _sync_bn_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x = torch.randn(6, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        norm = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3).double()))[0]
        with torch.no_grad():
            norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5])), norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
        # unequal halves (the RoIs of two processes differ in number): rank 0 takes 2 images, rank 1 four
        part = (x[:2] if rank == 0 else x[2:]).clone().requires_grad_(True)
        out = norm(part)
        (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads = {"input": part.grad, "weight": norm.weight.grad.clone(), "bias": norm.bias.grad.clone()}
        for g in ("weight", "bias"):  # DDP would average these over the processes; here summed by hand
            dist.all_reduce(grads[g])
        torch.save(
            {
                "type": type(norm).__name__,
                "out": out.detach(),
                "grads": grads,
                "running": (norm.running_mean, norm.running_var),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_naive_sync_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path: Path) -> None:
    rank0, rank1 = run_ranks(_sync_bn_worker, tmp_path, WORLD)
    assert rank0["type"] == NaiveSyncBatchNorm.__name__
    # one process with the whole batch, in plain BatchNorm
    x = torch.randn(6, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    norm = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5])), norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    outs = norm(x)
    weights = torch.cat(
        [torch.arange(outs[:2].numel()).reshape(outs[:2].shape), torch.arange(outs[2:].numel()).reshape(outs[2:].shape)]
    )
    (outs * weights.double()).sum().backward()
    torch.testing.assert_close(torch.cat([rank0["out"], rank1["out"]]), outs.detach())
    torch.testing.assert_close(torch.cat([rank0["grads"]["input"], rank1["grads"]["input"]]), x.grad)
    for name in ("weight", "bias"):
        torch.testing.assert_close(rank0["grads"][name], getattr(norm, name).grad)
    for ours, theirs in zip(rank0["running"], (norm.running_mean, norm.running_var)):
        torch.testing.assert_close(ours, theirs)
    assert torch.equal(rank0["running"][0], rank1["running"][0])


def test_without_a_process_group_naive_sync_batchnorm_is_batchnorm() -> None:
    x = torch.randn(4, 3, 5, 5)
    plain = nn.BatchNorm2d(3)
    synced = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    assert isinstance(synced, NaiveSyncBatchNorm)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced.running_var, plain.running_var)
