"""batch_loader: coverage, order, workers, subset, transform, Lightning (its StepSampler: tests/data/test_sampler.py)."""

from __future__ import annotations

import pytest
import torch

from hallucinator.data import ImageDataset, StepSampler, batch_loader, presets


def _dataset(n: int = 37, size: int = 8) -> ImageDataset:
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageDataset(images, torch.arange(n) % 5, [str(i) for i in range(5)])


def _epoch(loader) -> list[torch.Tensor]:
    return [labels for *_, labels in loader]


def test_batches_cover_every_sample_once_and_match_the_dataset():
    data = _dataset()
    data.labels = torch.arange(37) * 10  # unique labels: each one names its image's row
    loader = batch_loader(data, 8, shuffle=True, drop_last=False, seed=3)
    seen = []
    for images, labels in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 8, 8)
        assert torch.equal(images, data.images[labels // 10])  # every image travels with its own label
        seen.append(labels)
    assert [len(b) for b in seen] == [8, 8, 8, 8, 5]
    order = StepSampler(37, 8, shuffle=True, drop_last=False, seed=3).order(0)
    assert sorted(order.tolist()) == list(range(37))
    assert torch.equal(torch.cat(seen), data.labels[order])


def test_deterministic_per_seed_new_order_per_epoch_and_set_epoch():
    data = _dataset()
    a = batch_loader(data, 8, shuffle=True, drop_last=True, seed=0)
    b = batch_loader(data, 8, shuffle=True, drop_last=True, seed=0)
    epoch0 = [x.tolist() for x in _epoch(a)]
    assert len(epoch0) == 4 and all(len(x) == 8 for x in epoch0)
    assert epoch0 == [x.tolist() for x in _epoch(b)]
    s1 = StepSampler(37, 8, shuffle=True, drop_last=True, seed=0)
    e0, e1 = [x.tolist() for x in s1], [x.tolist() for x in s1]
    assert e0 != e1  # the next pass is the next epoch: a new permutation
    s2 = StepSampler(37, 8, shuffle=True, drop_last=True, seed=0)
    s2.set_epoch(1)
    assert [x.tolist() for x in s2] == e1
    s2.set_epoch(1)  # what Lightning does: the same epoch gives the same batches
    assert [x.tolist() for x in s2] == e1
    assert [x.tolist() for x in StepSampler(37, 8, shuffle=True, drop_last=True, seed=1)] != e0
    unshuffled = [x.tolist() for x in StepSampler(10, 4, shuffle=False, drop_last=False)]
    assert unshuffled == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_transform_in_workers_is_deterministic_and_independent_of_worker_count():
    data = _dataset(n=48, size=16)
    two = presets.build("cifar10", image_size=16)
    kwargs = dict(shuffle=True, drop_last=True, seed=11, transform=two)
    in_main = list(batch_loader(data, 16, **kwargs))
    in_workers = list(batch_loader(data, 16, num_workers=2, **kwargs))
    assert len(in_main) == 3
    for (a1, a2, la), (b1, b2, lb) in zip(in_main, in_workers):
        assert torch.equal(la, lb) and torch.equal(a1, b1) and torch.equal(a2, b2)
        assert a1.shape == (16, 3, 16, 16) and a1.dtype == torch.float32
    loader = batch_loader(data, 16, **kwargs)
    epoch0, epoch1 = list(loader), list(loader)
    assert not torch.equal(epoch0[0][0], epoch1[0][0])


def test_lightning_consumes_the_loader_and_sets_its_epoch(tmp_path):
    import lightning as L

    base = _dataset(n=24)
    data = ImageDataset(base.images, torch.arange(24), base.classes)  # labels = indices: batches identify themselves
    seen: list[list[int]] = []

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_index):
            images, labels = batch
            assert images.dtype == torch.uint8 and images.shape == (8, 3, 8, 8)
            seen.append(labels.tolist())
            return (self.weight * images.float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    loader = batch_loader(data, 8, shuffle=True, drop_last=True, seed=2)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Recorder(), loader)
    expected = []
    for epoch in range(2):
        sampler = StepSampler(24, 8, shuffle=True, drop_last=True, seed=2)
        sampler.set_epoch(epoch)
        expected += [data.labels[batch].tolist() for batch in sampler]
    assert seen == expected
    assert seen[:3] != seen[3:]  # epoch 1 is a new permutation: Lightning called set_epoch


# --------------------------------------------------------------------------- the one gatherer, independently


def _documented(num: int, batch: int, seed: int, step: int, rank: int, world: int) -> list[list[int]]:
    """As StepSampler documents it: epoch e = randperm(N) seeded by seed * 1_000_003 + e; global batch i =
    order[i*B:(i+1)*B], last partial dropped; process r of W takes its r-th slice of B/W; a pass starts at
    the step's batch. The positions index the subset when there is one."""
    per_epoch = num // batch
    epoch, first = divmod(step, per_epoch)
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    local = batch // world
    return [order[i * batch + rank * local : i * batch + (rank + 1) * local] for i in range(first, per_epoch)]


@pytest.mark.parametrize(("rank", "world", "step", "workers"), [(0, 1, 0, 0), (1, 2, 5, 0), (0, 2, 3, 2)])
def test_subset_batches_are_the_documented_slices_of_the_permuted_subset(rank, world, step, workers) -> None:
    data = _dataset(n=50)
    data.labels = torch.arange(50)  # each label names its image
    subset = torch.randperm(50, generator=torch.Generator().manual_seed(1))[:40]  # data.limit: any order
    batches = batch_loader(
        data,
        8,
        shuffle=True,
        drop_last=True,
        seed=4,
        rank=rank,
        world_size=world,
        position=lambda: step,
        subset=subset,
        num_workers=workers,
    )
    got = [(images, labels) for images, labels in batches]
    expected = [subset[positions].tolist() for positions in _documented(40, 8, 4, step, rank, world)]
    assert len(batches) == 5 and [labels.tolist() for _, labels in got] == expected
    assert all(torch.equal(images, data.images[labels]) for images, labels in got)


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_batches_are_the_dataset_in_order_with_the_last_partial_batch(workers: int) -> None:
    data = _dataset(n=37)
    batches = batch_loader(data, 8, shuffle=False, drop_last=False, rank=0, world_size=1, num_workers=workers)
    got = list(batches)
    assert [len(labels) for _, labels in got] == [8, 8, 8, 8, 5] and len(batches) == 5
    assert torch.equal(torch.cat([images for images, _ in got]), data.images)
    assert [labels.tolist() for _, labels in got] == [data.labels[i : i + 8].tolist() for i in range(0, 37, 8)]


def test_a_transform_sees_the_subset_batch_and_its_own_seed() -> None:
    from hallucinator.data.sampler import batch_seed

    data = _dataset(n=48, size=16)
    subset = torch.arange(47, -1, -2)  # 24 images, reversed
    two = presets.build("cifar10", image_size=16)
    batches = batch_loader(data, 8, shuffle=True, drop_last=True, seed=5, transform=two, subset=subset)
    (view1, view2, labels), *_ = list(batches)  # epoch 0, batch 0
    index = subset[_documented(24, 8, 5, 0, 0, 1)[0]]
    expected = two(data.images[index], generator=torch.Generator().manual_seed(batch_seed(5, 0, 0, 0)))
    assert torch.equal(labels, data.labels[index])
    assert torch.equal(view1, expected[0]) and torch.equal(view2, expected[1])
