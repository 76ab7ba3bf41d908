"""The batch order of every loop in the library: a pure function of ``(seed, epoch, batch number)``.

Epoch ``e``'s order is ``randperm(N)`` seeded by :func:`epoch_seed` ``(seed, e)`` (``arange(N)``
without shuffling); global batch ``i`` is ``order[i * B:(i + 1) * B]``, and process ``r`` of ``W``
takes its ``r``-th slice of ``B / W`` indices. Because a batch depends only on its number, a
loop can start anywhere: :class:`StepSampler` resumes at a global step (``position``), which is
how the engine continues an interrupted run mid-epoch, or walks whole epochs (``set_epoch``, as
Lightning and ``DistributedSampler`` do). :func:`hallucinator.data.batch_loader`, which the engine,
the evaluation and transfer loaders and the benchmarks read their batches from, draws them here.

Example:
    >>> sampler = StepSampler(10, 4, seed=0, drop_last=False, shuffle=False)
    >>> [batch.tolist() for batch in sampler]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    >>> resumed = StepSampler(50_000, 512, seed=0, position=lambda: 150)  # global step 150: epoch 1, batch 53
    >>> len(list(resumed)) == len(resumed) - 53
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler

__all__ = ["StepSampler", "batch_seed", "epoch_seed"]

_MIX = 1_000_003  # a prime: distinct (seed, epoch, ...) give distinct seeds in any realistic range


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation: the one place the batch order's seed is computed."""
    return seed * _MIX + epoch


def batch_seed(seed: int, rank: int, epoch: int, number: int) -> int:
    """The seed of the augmentation ``batch_loader(transform=...)`` draws for one batch of one process."""
    return (((seed * _MIX + rank) * _MIX + epoch) * _MIX + number) % 2**63


class StepSampler(Sampler[Tensor]):
    """Index tensors of this process's batches, from a global step or for a whole epoch.

    Args:
        num_samples: size of what is indexed (a dataset, or the positions of a ``data.limit`` subset).
        batch_size: the global batch ``B``; each of ``world_size`` processes gets ``B / world_size``.
        seed, shuffle: the order of each epoch (see the module docstring).
        drop_last: drop the last partial global batch (always, with more than one process: every
            process must see the same number of equal batches).
        rank, world_size: default to the initialised ``torch.distributed`` process group, else 0 and 1.
        position: the global step to start from (e.g. ``lambda: trainer.global_step``); iterating
            yields the batches of epoch ``step // len(self)`` from batch ``step % len(self)``.
            Without it, iteration walks epoch ``set_epoch(e)``, or the next epoch on each new pass.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        position: Callable[[], int] | None = None,
    ) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.world_size = (
            world_size if world_size is not None else (torch.distributed.get_world_size() if distributed else 1)
        )
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if batch_size < 1 or batch_size % self.world_size:
            raise ValueError(
                f"the global batch {batch_size} must be a positive multiple of the {self.world_size} processes"
            )
        if not drop_last and self.world_size > 1:
            raise ValueError("drop_last=False keeps a partial batch, which does not split evenly over processes")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.position = position
        self.epoch = 0
        self._epoch_set = False

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Iterate epoch ``epoch`` next (what ``DistributedSampler.set_epoch`` does; Lightning calls it)."""
        self.epoch = epoch
        self._epoch_set = True

    def order(self, epoch: int) -> Tensor:
        """The order of epoch ``epoch``: a permutation of ``range(num_samples)`` (on the CPU)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))

    def batch(self, order: Tensor, number: int) -> Tensor:
        """This process's slice of global batch ``number`` of the epoch whose order is ``order`` (any device)."""
        local = self.batch_size // self.world_size
        first = number * self.batch_size + self.rank * local
        return order[first : min(first + local, self.num_samples)]

    def start(self) -> tuple[int, int]:
        """``(epoch, first batch number)`` of the next pass."""
        if self.position is not None:
            if len(self) == 0:
                raise ValueError(f"the batch of {self.batch_size} is larger than the {self.num_samples} samples")
            epoch, first = divmod(self.position(), len(self))
            return epoch, first
        epoch = self.epoch
        if not self._epoch_set:
            self.epoch += 1  # the next pass without set_epoch gets the next epoch
        self._epoch_set = False
        return epoch, 0

    def numbered(self) -> Iterator[tuple[int, int, Tensor]]:
        """``(epoch, batch number, indices)`` of the next pass: what seeds a per-batch augmentation."""
        epoch, first = self.start()
        order = self.order(epoch)
        for number in range(first, len(self)):
            yield epoch, number, self.batch(order, number)

    def __iter__(self) -> Iterator[Tensor]:
        return (indices for _, _, indices in self.numbered())
