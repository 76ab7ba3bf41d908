"""Batches of a dataset as single tensor gathers, wrapped in a standard ``torch.utils.data.DataLoader``.

:class:`BatchSampler` yields one index tensor per batch; the DataLoader (``batch_size=None``)
hands it to ``dataset[indices]``, which gathers the whole batch in one tensor op. The loader is a
plain DataLoader, so Lightning and any training loop can use it.

DDP: each rank reads its own shard. ``rank`` / ``world_size`` default to the initialised
``torch.distributed`` process group (when the loader is built after ``init_process_group``, as
in Lightning's ``*_dataloader`` hooks); pass them explicitly otherwise. Every rank draws the same
permutation (seeded by ``seed`` and the epoch) and takes every ``world_size``-th index, so the
shards are disjoint and equally long. With Lightning, give the Trainer
``use_distributed_sampler=False`` (the sampler already shards) and let it call
``set_epoch(epoch)``, which it does on ``loader.sampler``; without ``set_epoch``, every new
iteration over the loader moves to the next epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["BatchDataset", "BatchSampler", "batch_loader"]


class BatchDataset(Protocol):
    """What the batch pipeline reads: a length and ``dataset[index_tensor]`` returning a whole batch."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


class BatchSampler(Sampler[Tensor]):
    """Index tensors of the batches of one rank's shard, deterministic for ``(seed, epoch)``.

    Example:
        >>> sampler = BatchSampler(10, 4, shuffle=True, drop_last=False, seed=0)
        >>> [len(batch) for batch in sampler]
        [4, 4, 2]
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.world_size = (
            world_size if world_size is not None else (torch.distributed.get_world_size() if distributed else 1)
        )
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self._epoch_set = False
        # Like DistributedSampler: shards are equal, padded by wrapping around unless drop_last trims them.
        if drop_last:
            self.shard_size = num_samples // self.world_size
        else:
            self.shard_size = -(-num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of ``epoch`` (what DistributedSampler's ``set_epoch`` does)."""
        self.epoch = epoch
        self._epoch_set = True

    def shard(self) -> Tensor:
        """This rank's indices for the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        total = self.shard_size * self.world_size
        if total > self.num_samples:
            order = order.repeat(-(-total // self.num_samples))
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Tensor]:
        indices = self.shard()
        if not self._epoch_set:
            self.epoch += 1  # the next iteration without set_epoch gets a new permutation
        self._epoch_set = False
        stop = len(self) * self.batch_size
        for start in range(0, stop, self.batch_size):
            yield indices[start : min(start + self.batch_size, stop)]

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size // self.batch_size
        return -(-self.shard_size // self.batch_size)


class _KeyedBatchSampler(Sampler[tuple[int, int, Tensor]]):
    """A :class:`BatchSampler` whose batches carry ``(epoch, batch number)`` to seed their augmentation."""

    def __init__(self, batches: BatchSampler) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, Tensor]]:
        epoch = self.batches.epoch
        for number, indices in enumerate(self.batches):
            yield epoch, number, indices

    def __len__(self) -> int:
        return len(self.batches)


class _TransformedBatches(Dataset):
    """``dataset[indices]`` followed by ``transform(images, generator)``, seeded per batch.

    The generator's seed is a function of ``(seed, rank, epoch, batch number)``, so the views do
    not depend on which worker produced the batch or on the number of workers.
    """

    def __init__(self, dataset: BatchDataset, transform: Callable, seed: int, rank: int) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.rank = rank

    def __getitem__(self, key: tuple[int, int, Tensor]) -> tuple:
        epoch, number, indices = key
        images, labels = self.dataset[indices]
        seed = (((self.seed * 1_000_003 + self.rank) * 1_000_003 + epoch) * 1_000_003 + number) % 2**63
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            out = self.transform(images, generator=generator)
        return (*out, labels) if isinstance(out, tuple) else (out, labels)

    def __len__(self) -> int:
        return len(self.dataset)


def batch_loader(
    dataset: BatchDataset,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    transform: Callable | None = None,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader of ``(uint8 images, labels)`` batches, each gathered with one index op.

    ``dataset`` is anything indexable by an index tensor returning a batch: :class:`ImageDataset`
    (in memory: ``num_workers=0`` is fastest) or :class:`FileImageDataset` (streamed: use workers).
    ``transform`` (e.g. a :class:`~hallucinator.data.augment.TwoViews`) optionally augments each
    batch inside the loader (in the workers when ``num_workers > 0``, one thread each) with a
    generator seeded per batch: batches are then ``(view1, view2, labels)``. On a GPU, leave it
    ``None`` and augment on the device instead.

    Example:
        >>> from hallucinator.data import ImageDataset
        >>> data = ImageDataset(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10), [str(i) for i in range(10)])
        >>> [labels.tolist() for _, labels in batch_loader(data, 4, shuffle=False, drop_last=True)]
        [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    batches = BatchSampler(
        len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size
    )
    sampler: Sampler = batches
    if transform is not None:
        dataset = _TransformedBatches(dataset, transform, seed, batches.rank)
        sampler = _KeyedBatchSampler(batches)
    return DataLoader(
        dataset,  # type: ignore[arg-type]  # torch types DataLoader's dataset as Dataset; any batch-indexable works
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )
