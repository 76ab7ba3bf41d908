"""Pre-training batches on the GPU: the whole uint8 dataset resident there, or pinned-memory prefetch.

:func:`on_device` picks one for a :class:`~hallucinator.engine.datamodule.StepBatches` and the
training device:

- :class:`ResidentBatches` when the decoded dataset fits in a fraction of the free GPU memory
  (CIFAR-10/100: 150 MB, STL-10 at 96 px: 2.9 GB, Tiny ImageNet: 1.2 GB): the uint8 images are
  copied to the GPU once and every batch is one gather there, with the epoch's order also on the
  GPU. No host-to-device copy per step, no DataLoader, nothing that waits for the GPU.
- :class:`PinnedPrefetch` otherwise (streamed ImageNet, or too little memory): each CPU batch is
  pinned and its copy to the GPU is issued one batch ahead, without blocking.
- the CPU batches unchanged on the CPU.

Both GPU forms yield the very batches of the CPU form, in the same order (the order of epoch
``e`` is ``StepBatches.order(e)``), so a run's random stream does not depend on the data path.

Example:
    >>> batches = on_device(StepBatches(dataset, 512, seed=0, position=lambda: trainer.global_step), device)
    >>> images = next(iter(batches))  # (512, 3, 32, 32) uint8 on the GPU
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hallucinator.engine.datamodule import StepBatches

# the rest of the GPU memory is the model's, its activations and the augmentation's
RESIDENT_FRACTION = 0.25


class ResidentBatches:
    """The batches of ``batches`` gathered from a copy of its uint8 images in ``device`` memory.

    Example:
        >>> resident = ResidentBatches(step_batches, torch.device("cuda"))
        >>> images = next(iter(resident))  # one index_select on the GPU
    """

    def __init__(self, batches: StepBatches, device: torch.device) -> None:
        self.batches = batches
        self.device = device
        images = batches.dataset.images
        if batches.subset is not None:  # data.limit: the epoch order permutes the subset's positions
            images = images[batches.subset]
        self.images = images.to(device, non_blocking=False) if images.device != device else images

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        b = self.batches
        epoch, start = divmod(b.position(), len(b))
        order = b.order(epoch)  # drawn on the CPU as StepBatches does: the same batches
        if self.device.type == "cuda":
            order = order.pin_memory()
        order = order.to(self.device, non_blocking=True)  # once per epoch
        local = b.batch_size // b.world_size
        for number in range(start, len(b)):
            first = number * b.batch_size + b.rank * local
            yield self.images.index_select(0, order[first : first + local])


class PinnedPrefetch:
    """CPU batches pinned and copied to ``device`` one batch ahead with ``non_blocking`` copies.

    Example:
        >>> for images in PinnedPrefetch(step_batches, torch.device("cuda")):
        ...     ...  # images already on the GPU; the next batch's copy is under way
    """

    def __init__(self, batches: Iterable[torch.Tensor], device: torch.device) -> None:
        self.batches = batches
        self.device = device

    def __len__(self) -> int:
        return len(self.batches)

    def _copy(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()
        return images.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[torch.Tensor]:
        upcoming = None
        for images in self.batches:
            ready, upcoming = upcoming, self._copy(images)
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


def on_device(batches: StepBatches, device: torch.device) -> Iterable[torch.Tensor]:
    """The fastest form of ``batches`` for training on ``device`` (see the module's docstring)."""
    if device.type != "cuda":
        return batches
    images = getattr(batches.dataset, "images", None)
    if isinstance(images, torch.Tensor) and fits_on_device(images[: batches.num_images], device):
        return ResidentBatches(batches, device)
    return PinnedPrefetch(batches, device)
