"""Collectives without a process group, and a real 2-process DDP run on CPU (gloo).

The DDP test shows that SimCLR's loss and gradients with the global batch split over two
processes equal those of one process holding the whole batch: NT-Xent gathers the negatives
with gradient and DDP averages the gradients, which together give the gradient of the mean
loss over the global batch.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from hallucinator import Hallucinator, distributed
from hallucinator.methods import SimCLR
from tests.conftest import TinyNet, run_ranks

WORLD = 2
GLOBAL_BATCH = 8


def test_without_a_process_group_everything_is_the_identity() -> None:
    x = torch.randn(4, 3)
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.gather_with_grad(x) is x
    assert distributed.all_gather_no_grad(x) is x
    shuffled, index = distributed.batch_shuffle(x)
    assert shuffled is x and index is None
    assert distributed.batch_unshuffle(x, None) is x


def _simclr() -> SimCLR:
    torch.manual_seed(0)
    hallucinator = Hallucinator(dim=5, extrapolation=(0.1, 0.1))  # fixed lam: the same draw in every process
    model = SimCLR(TinyNet(), hallucinator=hallucinator, dim=5, hidden_dim=7, temperature=0.3).double()
    # eval mode: the head's BatchNorm then uses its running statistics. In training mode each process
    # would normalise its half-batch with its own statistics, so the forward pass itself would differ
    # from one process's (a property of DDP without SyncBatchNorm, not of the loss)
    return model.eval()


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return tuple(torch.randn(GLOBAL_BATCH, 3, 6, 6, generator=generator, dtype=torch.float64) for _ in range(2))


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results: dict[str, object] = {"world_size": distributed.world_size(), "rank": distributed.rank()}
        local = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)

        # gather_with_grad: process p's loss is sum(weights_p * gathered); the gradient reaching this
        # process's slice must be the sum of all processes' weights on that slice
        x = (torch.arange(3.0, dtype=torch.float64) + 10 * rank).requires_grad_()
        gathered = distributed.gather_with_grad(x)
        (gathered * (torch.arange(6.0, dtype=torch.float64) + 1) * (rank + 1)).sum().backward()
        results["gathered"], results["gather_grad"] = gathered.detach(), x.grad

        everything = torch.arange(GLOBAL_BATCH * 2.0).reshape(GLOBAL_BATCH, 2)
        torch.manual_seed(rank)  # different seeds: rank 0's permutation must still win everywhere
        shuffled, index = distributed.batch_shuffle(everything[local])
        results["shuffled"] = shuffled
        results["unshuffled"] = distributed.batch_unshuffle(shuffled * 1, index)

        model = nn.parallel.DistributedDataParallel(_simclr())
        view1, view2 = _views()
        out = model(view1[local], view2[local])
        out["loss"].backward()
        losses = torch.stack([out["loss"], out["loss_original"], out["loss_hallucinated"]]).detach()
        dist.all_reduce(losses)
        results["losses"] = losses / WORLD
        results["grads"] = {name: p.grad for name, p in model.module.named_parameters()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _killed_once(rank: int, port: int, out_dir: str) -> None:
    marker = Path(out_dir) / f"killed{rank}"
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)  # as gloo's transport aborting the process
    torch.save({"rank": rank}, Path(out_dir) / f"rank{rank}.pt")


def _raises(rank: int, port: int, out_dir: str) -> None:
    raise ValueError("the code under test failed")


def test_run_ranks_retries_a_killed_rank_but_not_a_failing_one(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="SIGKILL"):
        assert [result["rank"] for result in run_ranks(_killed_once, tmp_path, WORLD)] == [0, 1]
    with pytest.raises(mp.ProcessRaisedException, match="the code under test failed"):
        run_ranks(_raises, tmp_path, WORLD)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks(_worker, tmp_path_factory.mktemp("ddp"), WORLD)


def test_world_size_rank_and_gather_with_grad(ddp_results: list[dict]) -> None:
    for rank, result in enumerate(ddp_results):
        assert (result["world_size"], result["rank"]) == (WORLD, rank)
        torch.testing.assert_close(result["gathered"], torch.tensor([0.0, 1, 2, 10, 11, 12], dtype=torch.float64))
        # weights (1..6) * (p + 1) summed over p = 0, 1 -> 3 * (1..6), sliced for this rank
        expected = 3 * (torch.arange(3.0, dtype=torch.float64) + 1 + 3 * rank)
        torch.testing.assert_close(result["gather_grad"], expected)


def test_batch_shuffle_is_a_global_permutation_and_unshuffle_inverts_it(ddp_results: list[dict]) -> None:
    everything = torch.arange(GLOBAL_BATCH * 2.0).reshape(GLOBAL_BATCH, 2)
    shuffled = torch.cat([r["shuffled"] for r in ddp_results])
    assert sorted(shuffled[:, 0].tolist()) == everything[:, 0].tolist()  # each sample exactly once
    assert not torch.equal(shuffled, everything)
    for rank, result in enumerate(ddp_results):
        local = everything[rank * GLOBAL_BATCH // WORLD : (rank + 1) * GLOBAL_BATCH // WORLD]
        torch.testing.assert_close(result["unshuffled"], local)


def test_simclr_loss_and_gradients_over_two_processes_equal_one_process(ddp_results: list[dict]) -> None:
    model = _simclr()
    out = model(*_views())
    out["loss"].backward()
    single_losses = torch.stack([out["loss"], out["loss_original"], out["loss_hallucinated"]]).detach()
    for result in ddp_results:
        torch.testing.assert_close(result["losses"], single_losses)
        for name, parameter in model.named_parameters():
            assert parameter.grad.abs().sum() > 0, name
            torch.testing.assert_close(result["grads"][name], parameter.grad, msg=name)
