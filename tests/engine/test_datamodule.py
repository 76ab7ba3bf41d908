"""The pre-training batches of a config: ``data.limit`` (a seeded, class-stratified subset, not the first N
images), the documented order per step and process, and errors that name ``data.batch_size``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hallucinator.data import ImageDataset
from hallucinator.data.subset import stratified_subset
from hallucinator.engine.config import ConfigError, load_config
from hallucinator.engine.datamodule import PretrainDataModule


def test_limit_trains_on_a_stratified_subset_of_a_class_sorted_dataset() -> None:
    labels = torch.arange(3).repeat_interleave(20)  # sorted by class, as archive caches are
    images = torch.arange(60, dtype=torch.uint8).view(60, 1, 1, 1).expand(60, 3, 2, 2).contiguous()
    dataset = ImageDataset(images, labels, ["a", "b", "c"])
    config = load_config(None, ["--data.limit=12", "--data.batch_size=4", "--seed=7"])
    datamodule = PretrainDataModule(config, dataset)
    subset = datamodule.subset()
    assert torch.equal(subset, stratified_subset(labels, 12, seed=7))
    assert torch.bincount(labels[subset]).tolist() == [4, 4, 4]  # the first 12 would all be class 0
    assert datamodule.steps_per_epoch() == 3
    batches = datamodule.batches(0, 1, position=lambda: 0)
    seen = torch.cat([images[:, 0, 0, 0].long() for images, _ in batches])
    assert sorted(seen.tolist()) == subset.tolist()  # one epoch = every image of the subset once
    assert all(torch.equal(batch_labels, labels[images[:, 0, 0, 0].long()]) for images, batch_labels in batches)
    assert PretrainDataModule(load_config(None, ["--data.batch_size=4"]), dataset).subset() is None


def test_a_streamed_dataset_decodes_in_workers_by_default() -> None:
    import os

    from hallucinator.data import FileImageDataset
    from hallucinator.engine.config import DataConfig
    from hallucinator.engine.datamodule import streaming_workers

    streamed = FileImageDataset(["a.jpg"], [0], ["a"], 8)
    in_memory = ImageDataset(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1), ["a"])
    assert streaming_workers(DataConfig(), streamed) == min(4, os.cpu_count() or 1)
    assert streaming_workers(DataConfig(), in_memory) == 0
    assert streaming_workers(DataConfig(num_workers=3), streamed) == 3


def _labelled(n: int = 60) -> ImageDataset:
    labels = torch.arange(3).repeat_interleave(n // 3)
    images = torch.randint(0, 256, (n, 3, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageDataset(images, labels, ["a", "b", "c"])


@pytest.mark.parametrize("limit", [None, 24])
@pytest.mark.parametrize(("rank", "world", "step"), [(0, 1, 0), (1, 2, 4), (0, 2, 7)])
def test_the_trainers_batches_are_the_documented_order_of_the_limit(limit, rank: int, world: int, step: int) -> None:
    """Independently: epoch e = randperm(N) seeded by seed * 1_000_003 + e over the subset's positions; global
    batch i = order[i*B:(i+1)*B]; process r of W takes its r-th slice of B/W; a pass starts at the step's batch."""
    dataset = _labelled()
    overrides = ["--data.batch_size=8", "--seed=5", *([f"--data.limit={limit}"] if limit else [])]
    datamodule = PretrainDataModule(load_config(None, overrides), dataset)
    trainer = SimpleNamespace(
        global_step=step, global_rank=rank, world_size=world, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    datamodule.trainer = trainer  # type: ignore[assignment]  # what train_dataloader reads of Lightning's
    used = torch.arange(60) if limit is None else stratified_subset(dataset.labels, limit, seed=5)
    per_epoch = len(used) // 8
    epoch, first = divmod(step, per_epoch)
    order = torch.randperm(len(used), generator=torch.Generator().manual_seed(5 * 1_000_003 + epoch))
    local = 8 // world
    expected = [used[order[i * 8 + rank * local : i * 8 + (rank + 1) * local]] for i in range(first, per_epoch)]
    got = list(datamodule.train_dataloader())
    assert datamodule.steps_per_epoch() == per_epoch and len(got) == len(expected) > 0
    for (images, labels), index in zip(got, expected):
        assert torch.equal(images, dataset.images[index]) and torch.equal(labels, dataset.labels[index])


def test_batch_sizes_that_do_not_fit_name_data_batch_size() -> None:
    datamodule = PretrainDataModule(load_config(None, ["--data.batch_size=8"]), _labelled())
    with pytest.raises(ConfigError, match=r"^data.batch_size: the global batch 8 does not split over 3 processes"):
        datamodule.batches(0, 3, position=lambda: 0)
    small = PretrainDataModule(load_config(None, ["--data.batch_size=64"]), _labelled())
    with pytest.raises(ConfigError, match=r"^data.batch_size: 64 is larger than the 60 pre-training images"):
        small.batches(0, 1, position=lambda: 0)
