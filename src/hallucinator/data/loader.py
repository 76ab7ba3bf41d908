"""Batches of a dataset as single tensor gathers, wrapped in a standard ``torch.utils.data.DataLoader``.

The loader's sampler is a :class:`~hallucinator.data.sampler.StepSampler` yielding one index tensor
per batch; the DataLoader (``batch_size=None``) hands it to ``dataset[indices]``, which gathers the
whole batch in one tensor op. The loader is a plain DataLoader, so Lightning and any training loop
can use it.

DDP: ``rank`` / ``world_size`` default to the initialised ``torch.distributed`` process group (when
the loader is built after ``init_process_group``, as in Lightning's ``*_dataloader`` hooks); pass
them explicitly otherwise. Every process draws the same order and takes its slice of each global
batch of ``batch_size`` (as the engine's pre-training does). With Lightning, give the Trainer
``use_distributed_sampler=False`` (the sampler already splits) and let it call ``set_epoch(epoch)``,
which it does on ``loader.sampler``; without ``set_epoch``, every new pass over the loader moves to
the next epoch. ``position=lambda: step`` starts a pass at a global step instead (resuming mid-epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hallucinator.data.sampler import StepSampler, batch_seed

__all__ = ["BatchDataset", "batch_loader"]


class BatchDataset(Protocol):
    """What the batch pipeline reads: a length and ``dataset[index_tensor]`` returning a whole batch."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


class _KeyedBatchSampler(Sampler[tuple[int, int, Tensor]]):
    """A :class:`StepSampler` whose batches carry ``(epoch, batch number)`` to seed their augmentation."""

    def __init__(self, batches: StepSampler) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, Tensor]]:
        return self.batches.numbered()

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
        generator = torch.Generator().manual_seed(batch_seed(self.seed, self.rank, epoch, number))
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
    position: Callable[[], int] | None = None,
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
    batches = StepSampler(
        len(dataset),
        batch_size,
        seed=seed,
        shuffle=shuffle,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        position=position,
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
