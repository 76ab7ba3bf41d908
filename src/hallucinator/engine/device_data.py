"""Pre-training batches on the GPU: the whole uint8 dataset resident there, or pinned-memory prefetch.

:func:`on_device` picks one for the CPU batches of :func:`hallucinator.data.batch_loader`
(a :class:`~hallucinator.data.loader.StepBatches`, without ``transform``) and the training device:

- :class:`ResidentBatches` when the decoded dataset fits in a fraction of the free GPU memory
  (CIFAR-10/100: 150 MB, STL-10 at 96 px: 2.9 GB, Tiny ImageNet: 1.2 GB): the uint8 images are
  copied to the GPU once and every batch is one gather there, with the epoch's order also on the
  GPU. No host-to-device copy per step, no DataLoader, nothing that waits for the GPU.
- :class:`PinnedPrefetch` otherwise (streamed ImageNet, or too little memory): each CPU batch is
  pinned and its copy to the GPU is issued one batch ahead, without blocking.
- the CPU batches unchanged on the CPU.

Both GPU forms yield the very batches of the CPU form, in the same order (the order of epoch
``e`` is ``StepSampler.order(e)``), so a run's random stream does not depend on the data path.

Example:
    >>> cpu = batch_loader(dataset, 512, shuffle=True, drop_last=True, position=lambda: trainer.global_step)
    >>> batches = on_device(cpu, device)
    >>> images, labels = next(iter(batches))  # (512, 3, 32, 32) uint8 and (512,) int64, on the GPU
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from hallucinator.data.loader import StepBatches

# the rest of the GPU memory is the model's, its activations and the augmentation's
RESIDENT_FRACTION = 0.25


class ResidentBatches:
    """The batches of ``batches`` gathered from a copy of its uint8 images (and labels) in ``device`` memory.

    Example:
        >>> resident = ResidentBatches(step_batches, torch.device("cuda"))
        >>> images, labels = next(iter(resident))  # one index_select each on the GPU
    """

    def __init__(self, batches: StepBatches, device: torch.device) -> None:
        self.batches = batches
        self.device = device
        dataset: Any = batches.dataset  # in memory: on_device checked its .images
        images, labels = dataset.images, dataset.labels
        if batches.subset is not None:  # data.limit: the epoch order permutes the subset's positions
            images, labels = images[batches.subset], labels[batches.subset]
        self.images, self.labels = images.to(device), labels.to(device)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = self.batches.sampler
        epoch, start = sampler.start()
        order = sampler.order(epoch)  # drawn on the CPU as the CPU batches draw it: the same batches
        if self.device.type == "cuda":
            order = order.pin_memory()
        order = order.to(self.device, non_blocking=True)  # once per epoch
        for number in range(start, len(sampler)):
            index = sampler.batch(order, number)
            yield self.images.index_select(0, index), self.labels.index_select(0, index)


class PinnedPrefetch:
    """CPU batches pinned and copied to ``device`` one batch ahead with ``non_blocking`` copies.

    Example:
        >>> for images, labels in PinnedPrefetch(step_batches, torch.device("cuda")):
        ...     ...  # already on the GPU; the next batch's copy is under way
    """

    def __init__(self, batches: StepBatches, device: torch.device) -> None:
        self.batches = batches
        self.device = device

    def __len__(self) -> int:
        return len(self.batches)

    def _copy(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        upcoming = None
        for images, labels in self.batches:
            ready, upcoming = upcoming, (self._copy(images), self._copy(labels))
            if ready is not None:
                yield ready
        if upcoming is not None:
            yield upcoming


def fits_on_device(images: torch.Tensor, device: torch.device, fraction: float = RESIDENT_FRACTION) -> bool:
    """Whether ``images`` take at most ``fraction`` of ``device``'s free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= fraction * free


def on_device(batches: StepBatches, device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The fastest form of ``batches`` for training on ``device`` (see the module's docstring)."""
    if device.type != "cuda":
        return batches
    images = getattr(batches.dataset, "images", None)
    if isinstance(images, torch.Tensor) and fits_on_device(images, device):
        return ResidentBatches(batches, device)
    return PinnedPrefetch(batches, device)
