"""Multi-crop (Caron et al., SwAV 2020; DINO 2021): N global and M local views of each image, batched on its device.

A :class:`MultiCrop` is a list of view pipelines (:func:`hallucinator.data.presets.view`, i.e. the
batched ops of :mod:`hallucinator.data.augment`) applied one after the other to the whole batch
with one generator: the global views first, then the local ones. It draws its random numbers
exactly as :class:`~hallucinator.data.augment.TwoViews` does, so two global crops and no local
ones give the very views of the two-view pipeline from the same seed. Global and local crops have
their own side and area range; any crop, global or local, can be the center-suppressed one
(``center_crop_views`` numbers the crops from 1, globals first).

Example:
    >>> two_plus_six = build("cifar10-simclr", CropSpec(2, 32, (0.4, 1.0)), CropSpec(6, 16, (0.05, 0.4)))
    >>> views = two_plus_six(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
    >>> [tuple(v.shape[-2:]) for v in views]
    [(32, 32), (32, 32), (16, 16), (16, 16), (16, 16), (16, 16), (16, 16), (16, 16)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hallucinator.data import augment as A
from hallucinator.data import presets

__all__ = ["CropSpec", "MultiCrop", "build"]


@dataclass(frozen=True)
class CropSpec:
    """``number`` crops resized to ``size`` px whose area is a fraction in ``scale`` of the image
    (``size`` / ``scale`` ``None``: the preset's)."""

    number: int
    size: int | None = None
    scale: tuple[float, float] | None = None


class MultiCrop(nn.Module):
    """The global views, then the local views, of one batch: ``forward(images, generator) -> list[Tensor]``.

    ``num_global`` tells a method where the local views start.

    Example:
        >>> crops = MultiCrop([presets.view(recipe, True), presets.view(recipe, False)], [presets.view(small, False)])
        >>> global1, global2, local1 = crops(images, generator=generator)
    """

    def __init__(self, global_views: Sequence[nn.Module], local_views: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        if not global_views:
            raise ValueError("a multi-crop needs at least one global view")
        self.global_views = nn.ModuleList(global_views)
        self.local_views = nn.ModuleList(local_views)

    @property
    def num_global(self) -> int:
        return len(self.global_views)

    @property
    def views(self) -> list[nn.Module]:
        """Every view pipeline, in the order of the output."""
        return [*self.global_views, *self.local_views]

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        if images.ndim != 4:
            raise ValueError(f"expected an image batch (N, C, H, W), got shape {tuple(images.shape)}")
        images = A.to_float(images)
        return [view(images, generator=generator) for view in self.views]


def build(
    name: str,
    global_crops: CropSpec,
    local_crops: CropSpec = CropSpec(0),
    center_crop_views: Sequence[int] = (1,),
    **overrides: object,
) -> MultiCrop:
    """The multi-crop pipeline of preset ``name`` (its colour ops, flip and blur on every crop).

    Args:
        name: a preset of :mod:`hallucinator.data.presets` (e.g. ``cifar10-simclr``).
        global_crops, local_crops: how many crops of which side and area range.
        center_crop_views: the crops (numbered from 1, globals first) that get the center-suppressed crop.
        **overrides: :class:`~hallucinator.data.presets.Recipe` fields for every crop (e.g. ``alpha``).
    """
    total = global_crops.number + local_crops.number
    if global_crops.number < 1 or local_crops.number < 0:
        raise ValueError(f"need at least 1 global crop and no negative count, got {global_crops} and {local_crops}")
    bad = sorted(set(center_crop_views) - set(range(1, total + 1)))
    if bad:
        raise ValueError(
            f"center_crop_views {list(center_crop_views)} names crops {bad} that do not exist: the crops are "
            f"numbered 1..{total} ({global_crops.number} global, then {local_crops.number} local)"
        )
    views: list[list[nn.Module]] = [[], []]
    for kind, spec in enumerate((global_crops, local_crops)):
        own = {"scale": spec.scale} if spec.scale is not None else {}
        recipe = presets.recipe(name, spec.size, **{**overrides, **own, "center_crop_views": ()})
        first = 1 + kind * global_crops.number
        views[kind] = [
            presets.view(recipe, number in center_crop_views) for number in range(first, first + spec.number)
        ]
    return MultiCrop(views[0], views[1])
