"""Pre-training batches whose order is a pure function of (seed, step): resumable mid-epoch, DDP-aware."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from hallucinator.data.sampler import StepSampler
from hallucinator.engine.config import Config, ConfigError, DataConfig
from hallucinator.engine.device_data import on_device

if TYPE_CHECKING:
    from hallucinator.data.loader import BatchDataset


class StepBatches:
    """``(uint8 images, labels)`` batches of epoch ``step // steps_per_epoch``, starting at the current step.

    The order is :class:`hallucinator.data.StepSampler`'s: epoch ``e`` is ``randperm(N)`` seeded by
    ``epoch_seed(seed, e)``; global batch ``i`` is ``order[i * B:(i + 1) * B]`` (the last partial
    batch is dropped) and process ``r`` of ``W`` takes its ``r``-th slice of ``B / W`` images.
    ``__iter__`` asks ``position()`` for the global step, so after a restore it resumes at the next
    unseen batch. The images
    are gathered with one index operation per batch (no per-image Python); with
    ``num_workers`` > 0 (streamed datasets such as ImageNet) batches are gathered in worker processes.
    ``subset`` (``data.limit``): the dataset indices to train on; the epoch order permutes them.

    Example:
        >>> batches = StepBatches(dataset, batch_size=512, seed=0, position=lambda: trainer.global_step)
        >>> images, labels = next(iter(batches))  # (512, 3, 32, 32) uint8, (512,) int64 (-1: unlabelled)
    """

    def __init__(
        self,
        dataset: BatchDataset,
        batch_size: int,
        seed: int,
        position: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
        subset: torch.Tensor | None = None,
        num_workers: int = 0,
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size: the global batch {batch_size} does not split over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        self.dataset = dataset
        self.subset = subset
        self.num_images = len(subset) if subset is not None else len(dataset)
        if self.num_images < batch_size:
            raise ConfigError(f"data.batch_size: {batch_size} is larger than the {self.num_images} pre-training images")
        self.sampler = StepSampler(
            self.num_images, batch_size, seed=seed, rank=rank, world_size=world_size, position=position
        )
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.sampler)

    def batch(self, epoch_order: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's slice of global batch ``number`` of the epoch with ``epoch_order``: images and labels."""
        index = self.sampler.batch(epoch_order, number)
        return self.dataset[index if self.subset is None else self.subset[index]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.sampler.start()
        order = self.sampler.order(epoch)
        if self.num_workers == 0:
            return (self.batch(order, number) for number in range(start, len(self)))
        # streamed datasets decode files: gather whole batches in worker processes
        return iter(
            DataLoader(
                _EpochBatches(self, order),
                sampler=range(start, len(self)),
                batch_size=None,
                num_workers=self.num_workers,
                pin_memory=torch.cuda.is_available(),
            )
        )


class _EpochBatches(Dataset):
    def __init__(self, batches: StepBatches, order: torch.Tensor) -> None:
        self.batches, self.order = batches, order

    def __getitem__(self, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches.batch(self.order, number)

    def __len__(self) -> int:
        return len(self.batches)


def dataset_options(d: DataConfig) -> dict[str, Any]:
    """The ``build_dataset`` keywords that ``data.*`` sets beyond name, root, split, download and cache.

    ``image_size`` is the stored size only for ``imagefolder`` (one's own photos): named datasets keep
    their native storage (ImageNet its 256 px decode) and the transforms resize. ``class_list``
    chooses ImageNet-200's classes (other datasets ignore it).
    """
    from hallucinator.data.folder import FolderOptions

    folder = FolderOptions(
        labels=d.labels,
        holdout_fraction=d.holdout_fraction,
        skip_unreadable=d.skip_unreadable,
        memory_budget_gb=d.memory_budget_gb,
    )
    return {
        "folder": folder,
        "image_size": d.image_size if d.dataset == "imagefolder" else None,
        "class_list": d.class_list,
    }


def build_split(d: DataConfig, split: str) -> Any:
    """``split`` of the configured dataset; bad data is a ``ConfigError`` naming the keys to fix."""
    from hallucinator.data import build_dataset

    try:
        return build_dataset(
            d.dataset, d.data_dir, split, download=d.download, cache_dir=d.cache_dir, **dataset_options(d)
        )
    except (ValueError, KeyError) as error:
        message = str(error)
        named = "--data" in message or message.startswith("data.")  # already names the flag that fixes it
        raise ConfigError(message if named else f"data.dataset / data.data_dir: {message}") from error


def streaming_workers(d: DataConfig, dataset: object) -> int:
    """``data.num_workers``; 0 on a streamed dataset becomes one worker per core, at most 4 (decoding is per image)."""
    from hallucinator.data import FileImageDataset

    if d.num_workers or not isinstance(dataset, FileImageDataset):
        return d.num_workers
    return min(4, os.cpu_count() or 1)


@rank_zero_only
def _announce_folder(config: Config, dataset: Any) -> None:
    """Says what was done with a folder of one's own images; lists skipped files in ``RUN/unreadable.txt``."""
    report = dataset.report
    for line in report.lines():
        print(line, flush=True)
    if report.streamed:
        print(
            f"decoding in {streaming_workers(config.data, dataset)} DataLoader workers (data.num_workers)", flush=True
        )
    if report.unreadable:
        listing = Path(config.output_dir) / "unreadable.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{name}\n" for name in report.unreadable))
        print(f"the skipped images are listed in {listing}", flush=True)


class PretrainDataModule(pl.LightningDataModule):
    """The pre-training split of ``config.data.dataset`` as :class:`StepBatches`.

    Example:
        >>> datamodule = PretrainDataModule(config)
        >>> datamodule.prepare_data()  # decode / cache once
    """

    def __init__(self, config: Config, dataset: Any = None) -> None:
        super().__init__()
        self.config = config
        self.dataset = dataset

    def load(self) -> Any:
        if self.dataset is None:
            self.dataset = build_split(self.config.data, "pretrain")
            if getattr(self.dataset, "report", None) is not None:
                _announce_folder(self.config, self.dataset)
        return self.dataset

    def subset(self) -> torch.Tensor | None:
        """``data.limit``: a seeded (``seed``), class-stratified subset of the pre-training images."""
        from hallucinator.data.subset import stratified_subset

        dataset, limit = self.load(), self.config.data.limit
        if not limit or limit >= len(dataset):
            return None
        return stratified_subset(dataset.labels, limit, self.config.seed)

    def steps_per_epoch(self) -> int:
        subset = self.subset()
        return (len(self.load()) if subset is None else len(subset)) // self.config.data.batch_size

    def train_dataloader(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        trainer = self.trainer
        assert trainer is not None  # Lightning attaches the trainer before asking for the loader
        batches = StepBatches(
            self.load(),
            self.config.data.batch_size,
            self.config.seed,
            position=lambda: trainer.global_step,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            subset=self.subset(),
            num_workers=streaming_workers(self.config.data, self.load()),
        )
        return on_device(batches, trainer.strategy.root_device)  # on a GPU: resident or prefetched
