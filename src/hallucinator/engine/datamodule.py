"""Pre-training batches whose order is a pure function of (seed, step): resumable mid-epoch, DDP-aware."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from hallucinator.engine.config import Config, ConfigError


class StepBatches:
    """``(uint8 images, labels)`` batches of epoch ``step // steps_per_epoch``, starting at the current step.

    The order of epoch ``e`` is ``randperm(N)`` seeded by ``(seed, e)``; global batch ``i``
    is ``order[i * B:(i + 1) * B]`` (the last partial batch is dropped) and process ``r`` of
    ``W`` takes its ``r``-th slice of ``B / W`` images. ``__iter__`` asks ``position()``
    for the global step, so after a restore it resumes at the next unseen batch. The images
    are gathered with one index operation per batch (no per-image Python); with
    ``num_workers`` > 0 (streamed datasets such as ImageNet) batches are gathered in worker processes.

    Example:
        >>> batches = StepBatches(dataset, batch_size=512, seed=0, position=lambda: trainer.global_step)
        >>> images, labels = next(iter(batches))  # (512, 3, 32, 32) uint8, (512,) int64 (-1: unlabelled)
    """

    def __init__(
        self,
        dataset: object,
        batch_size: int,
        seed: int,
        position: Callable[[], int],
        rank: int = 0,
        world_size: int = 1,
        limit: int | None = None,
        num_workers: int = 0,
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size: the global batch {batch_size} does not split over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        self.dataset = dataset
        self.num_images = min(len(dataset), limit) if limit else len(dataset)
        if self.num_images < batch_size:
            raise ConfigError(
                f"data.batch_size: {batch_size} is larger than the {self.num_images} pre-training images"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.position = position
        self.rank, self.world_size = rank, world_size
        self.num_workers = num_workers

    def __len__(self) -> int:
        return self.num_images // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_images, generator=generator)

    def batch(self, epoch_order: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's slice of global batch ``number`` of the epoch with ``epoch_order``: images and labels."""
        local = self.batch_size // self.world_size
        first = number * self.batch_size + self.rank * local
        return self.dataset[epoch_order[first : first + local]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = divmod(self.position(), len(self))
        order = self.order(epoch)
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


class PretrainDataModule(pl.LightningDataModule):
    """The pre-training split of ``config.data.dataset`` as :class:`StepBatches`.

    Example:
        >>> datamodule = PretrainDataModule(config)
        >>> datamodule.prepare_data()  # decode / cache once
    """

    def __init__(self, config: Config, dataset: object | None = None) -> None:
        super().__init__()
        self.config = config
        self.dataset = dataset

    def load(self) -> object:
        if self.dataset is None:
            from hallucinator.data import build_dataset

            d = self.config.data
            try:
                self.dataset = build_dataset(d.dataset, d.data_dir, "pretrain", download=d.download, cache_dir=d.cache_dir)
            except (ValueError, KeyError) as error:
                raise ConfigError(f"data.dataset / data.data_dir: {error}") from error
        return self.dataset

    def steps_per_epoch(self) -> int:
        d = self.config.data
        num = len(self.load())
        return (min(num, d.limit) if d.limit else num) // d.batch_size

    def train_dataloader(self) -> StepBatches:
        trainer = self.trainer
        return StepBatches(
            self.load(),
            self.config.data.batch_size,
            self.config.seed,
            position=lambda: trainer.global_step,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            limit=self.config.data.limit,
            num_workers=self.config.data.num_workers,
        )
