"""Batch statistics under DDP: 2 gloo processes == 1 process on the global batch, loss and gradients.

Barlow Twins' cross-correlation and VICReg's variance / covariance are computed over the global
batch, MoCo v3's and NNCLR's negatives are the global batch, NNCLR's support queue receives
the embeddings of both processes and DINO's centre is the mean teacher output of the global batch. Each method runs in training mode (enqueue, centre update)
with its BatchNorm layers in eval mode: per-process BatchNorm statistics would otherwise make
the forward pass itself differ (a property of DDP without SyncBatchNorm, not of the losses).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from hallucinator import Hallucinator, methods
from tests.conftest import TinyNet, run_ranks

WORLD, GLOBAL_BATCH = 2, 8
SMALL = {
    "barlowtwins": {"dim": 5, "hidden_dim": 7},
    "vicreg": {"dim": 5, "hidden_dim": 7},
    "mocov3": {"dim": 5, "hidden_dim": 7, "pred_hidden_dim": 7},
    "nnclr": {"dim": 5, "hidden_dim": 7, "pred_hidden_dim": 7, "queue_size": 16},
    "dino": {"out_dim": 7, "hidden_dim": 7, "bottleneck_dim": 5},
}


def _model(name: str) -> methods.SSLMethod:
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=5, num_layers=2, extrapolation=(0.1, 0.1))  # fixed lam: the same in every process
    model = methods.build(name, TinyNet(), hallucinator=hallucinator, **SMALL[name]).double().train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eval()
    return model


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return tuple(torch.randn(GLOBAL_BATCH, 3, 6, 6, generator=generator, dtype=torch.float64) for _ in range(2))


def _step(model: nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
    out = model(view1, view2)
    out["loss"].backward()
    return torch.stack([out["loss"], out["loss_original"], out["loss_hallucinated"]]).detach()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        local = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        view1, view2 = _views()
        results = {}
        for name in SMALL:
            model = nn.parallel.DistributedDataParallel(_model(name))
            losses = _step(model, view1[local], view2[local])
            dist.all_reduce(losses)
            results[name] = {
                "losses": losses / WORLD,
                "grads": {key: p.grad for key, p in model.module.named_parameters() if p.requires_grad},
                "buffers": dict(model.module.named_buffers()),
            }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks(_worker, tmp_path_factory.mktemp("ddp_methods"), WORLD)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_two_processes_equal_one_process_on_the_global_batch(name: str, ddp_results: list[dict]) -> None:
    model = _model(name)
    losses = _step(model, *_views())
    for result in ddp_results:
        torch.testing.assert_close(result[name]["losses"], losses)
        for key, parameter in model.named_parameters():
            if parameter.requires_grad:
                assert parameter.grad.abs().sum() > 0, key
                torch.testing.assert_close(result[name]["grads"][key], parameter.grad, msg=key)
        for key, buffer in model.named_buffers():  # NNCLR's queue holds both processes' embeddings, in rank order
            torch.testing.assert_close(result[name]["buffers"][key], buffer, msg=key)
        if name == "dino":  # the centre moved from 0 by the global batch's mean, the same in both processes
            assert result[name]["buffers"]["center"].abs().sum() > 0
