"""The one batch pipeline: a dataset's batches in :class:`~hallucinator.data.sampler.StepSampler` order.

:func:`batch_loader` gives every loop of the library its batches: the engine's pre-training, the
evaluation and transfer loaders and the benchmarks. The sampler yields one index tensor per batch
(the order: a pure function of seed, epoch and batch number) and ``dataset[indices]`` gathers the
whole batch in one tensor op (no per-image Python). With ``num_workers > 0`` (streamed datasets
decode files) the gathers run in the worker processes of a standard ``DataLoader``; without, in
the calling process. ``subset`` (the engine's ``data.limit``) restricts the batches to those
dataset indices: the epoch order permutes their positions.

DDP: ``rank`` / ``world_size`` default to the initialised ``torch.distributed`` process group (when
the loader is built after ``init_process_group``, as in Lightning's ``*_dataloader`` hooks); pass
them explicitly otherwise. Every process draws the same order and takes its slice of each global
batch of ``batch_size`` (as the engine's pre-training does). Lightning takes the batches as any
iterable and calls ``set_epoch(epoch)`` on their ``sampler``; without ``set_epoch``, every new pass
moves to the next epoch. ``position=lambda: step`` starts a pass at a global step instead (resuming
mid-epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from hallucinator.data.sampler import StepSampler, batch_seed

__all__ = ["BatchDataset", "StepBatches", "batch_loader"]


class BatchDataset(Protocol):
    """What the batch pipeline reads: a length and ``dataset[index_tensor]`` returning a whole batch."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


class _Numbered(Sampler[tuple[int, int, Tensor]]):
    """A :class:`StepSampler`'s batches with their ``(epoch, batch number)``, which seed their augmentation."""

    def __init__(self, batches: StepSampler) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[int, int, Tensor]]:
        return self.batches.numbered()

    def __len__(self) -> int:
        return len(self.batches)


class _Gather(Dataset):
    """``dataset[indices]`` of one numbered batch, then the optional ``transform(images, generator)``.

    The indices are ``subset[positions]`` with a subset. The generator's seed is a function of
    ``(seed, rank, epoch, batch number)``, so the views do not depend on which worker produced the
    batch or on the number of workers. No sampler here (its ``position`` may be a lambda): workers
    started by spawn or forkserver receive this object pickled.
    """

    def __init__(
        self, dataset: BatchDataset, subset: Tensor | None, transform: Callable | None, seed: int, rank: int
    ) -> None:
        self.dataset = dataset
        self.subset = subset
        self.transform = transform
        self.seed = seed
        self.rank = rank

    def __getitem__(self, key: tuple[int, int, Tensor]) -> Any:
        epoch, number, positions = key
        batch = self.dataset[positions if self.subset is None else self.subset[positions]]
        if self.transform is None:
            return batch
        images, labels = batch
        generator = torch.Generator().manual_seed(batch_seed(self.seed, self.rank, epoch, number))
        with torch.no_grad():
            out = self.transform(images, generator=generator)
        return (*out, labels) if isinstance(out, tuple) else (out, labels)


class StepBatches:
    """The batches :func:`batch_loader` returns: an iterable of ``len(sampler)`` batches per epoch.

    Each pass asks ``sampler`` where to start (its ``position``, or the epoch ``set_epoch`` chose)
    when its first batch is drawn. ``dataset``, ``subset`` and ``sampler`` are what the engine's GPU forms
    (:mod:`hallucinator.engine.device_data`) gather from; ``num_workers``, ``pin_memory`` and
    ``persistent_workers`` configure the ``DataLoader`` that runs the gathers in workers.

    Example:
        >>> from hallucinator.data import ImageDataset
        >>> data = ImageDataset(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10), [str(i) for i in range(10)])
        >>> batches = StepBatches(data, StepSampler(3, 2, shuffle=False), subset=torch.tensor([9, 4, 7]))
        >>> [labels.tolist() for _, labels in batches]
        [[9, 4]]
    """

    def __init__(
        self,
        dataset: BatchDataset,
        sampler: StepSampler,
        *,
        subset: Tensor | None = None,
        transform: Callable | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.subset = subset
        self._gather = _Gather(dataset, subset, transform, sampler.seed, sampler.rank)
        self._loader = None
        if num_workers > 0:
            self._loader = DataLoader(
                self._gather,
                batch_size=None,
                sampler=_Numbered(sampler),
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=persistent_workers,
            )

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        if self._loader is not None:
            return iter(self._loader)
        # gathered here, not by a DataLoader: each pass of one would draw its workers' seed from the
        # global torch RNG and so move a training run's random stream
        return map(self._gather.__getitem__, self.sampler.numbered())


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
    subset: Tensor | None = None,
) -> StepBatches:
    """The ``(uint8 images, labels)`` batches of ``dataset`` (or of its ``subset``), each gathered with one index op.

    ``dataset`` is anything indexable by an index tensor returning a batch: :class:`ImageDataset`
    (in memory: ``num_workers=0`` is fastest) or :class:`FileImageDataset` (streamed: use workers).
    ``subset``: the dataset indices to draw from (``data.limit``); the epoch order permutes them.
    ``transform`` (e.g. a :class:`~hallucinator.data.augment.TwoViews`) optionally augments each
    batch inside the loader (in the workers when ``num_workers > 0``, one thread each) with a
    generator seeded per batch: batches are then ``(view1, view2, labels)``. On a GPU, leave it
    ``None`` and augment on the device instead. ``pin_memory`` and ``persistent_workers`` apply to
    the workers' ``DataLoader``. The other arguments are :class:`StepSampler`'s.

    Example:
        >>> from hallucinator.data import ImageDataset
        >>> data = ImageDataset(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10), [str(i) for i in range(10)])
        >>> [labels.tolist() for _, labels in batch_loader(data, 4, shuffle=False, drop_last=True)]
        [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    sampler = StepSampler(
        len(dataset) if subset is None else len(subset),
        batch_size,
        seed=seed,
        shuffle=shuffle,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        position=position,
    )
    return StepBatches(
        dataset,
        sampler,
        subset=subset,
        transform=transform,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
    )
