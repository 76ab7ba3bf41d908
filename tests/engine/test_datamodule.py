"""``data.limit``: a seeded, class-stratified subset that the step batches permute (not the first N images)."""

from __future__ import annotations

import torch

from hallucinator.data import ImageDataset
from hallucinator.data.subset import stratified_subset
from hallucinator.engine.config import load_config
from hallucinator.engine.datamodule import PretrainDataModule, StepBatches


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
    batches = StepBatches(dataset, 4, seed=7, position=lambda: 0, subset=subset)
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
