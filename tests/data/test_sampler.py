"""StepSampler: the one batch order (engine, batch_loader, benchmarks), checked against its formula."""

from __future__ import annotations

import pytest
import torch

from hallucinator.data import StepSampler


def _documented(num: int, batch: int, seed: int, step: int, rank: int, world: int) -> list[list[int]]:
    """Independently, as docs/training.md states it (and StepBatches drew it before the sampler existed):
    epoch e = randperm(N) seeded by seed * 1_000_003 + e; global batch i = order[i*B:(i+1)*B], last partial
    dropped; process r of W takes order[i*B + r*B/W : i*B + (r+1)*B/W]; a pass starts at the step's batch."""
    per_epoch = num // batch
    epoch, first = step // per_epoch, step % per_epoch
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    local = batch // world
    return [order[i * batch + rank * local : i * batch + (rank + 1) * local] for i in range(first, per_epoch)]


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 2), (3, 4)])
@pytest.mark.parametrize("step", [0, 5, 13])
def test_batches_from_a_step_are_the_documented_order(seed: int, rank: int, world: int, step: int) -> None:
    sampler = StepSampler(50, 8, seed=seed, rank=rank, world_size=world, position=lambda: step)
    assert len(sampler) == 6
    assert [batch.tolist() for batch in sampler] == _documented(50, 8, seed, step, rank, world)


def test_the_processes_split_each_global_batch_and_a_resumed_pass_is_the_tail() -> None:
    world = 4
    split = [list(StepSampler(50, 8, seed=2, rank=r, world_size=world, position=lambda: 6)) for r in range(world)]
    whole = list(StepSampler(50, 8, seed=2, position=lambda: 6))  # one process: epoch 1 from its batch 0
    for number, global_batch in enumerate(whole):
        assert torch.equal(torch.cat([split[r][number] for r in range(world)]), global_batch)
    resumed = list(StepSampler(50, 8, seed=2, position=lambda: 9))
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[3:])) and len(resumed) == 3


def test_epochs_without_a_position_follow_set_epoch_or_advance() -> None:
    walked = StepSampler(50, 8, seed=2)
    first, second = [b.tolist() for b in walked], [b.tolist() for b in walked]
    assert first == [b.tolist() for b in StepSampler(50, 8, seed=2, position=lambda: 0)]
    assert second == [b.tolist() for b in StepSampler(50, 8, seed=2, position=lambda: 6)]
    chosen = StepSampler(50, 8, seed=2)
    chosen.set_epoch(1)
    assert [b.tolist() for b in chosen] == second


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="rank 2 is not in"):
        StepSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="multiple of the 4 processes"):
        StepSampler(10, 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match="drop_last=False"):
        StepSampler(10, 2, drop_last=False, rank=0, world_size=2)
    with pytest.raises(ValueError, match="larger than the 3 samples"):
        list(StepSampler(3, 4, position=lambda: 0))
