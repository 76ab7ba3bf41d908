"""The paper's augmentation recipes (its Sec. 4.1, with the authors' public configs) as two-view pipelines.

A preset is ``<dataset>-<style>`` (or just ``<dataset>``, meaning MoCo v2 style), with
``dataset`` a name of :data:`hallucinator.data.DATASETS` and ``style`` one of
``mocov1 | mocov2 | simclr | simsiam``:

- small datasets (CIFAR-10/100 32 px, Tiny ImageNet 64 px, STL-10 96 px): RandomResizedCrop
  scale (0.2, 1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, no blur, for
  every method as in the paper; MoCo v1 style uses its original jitter (0.4, 0.4, 0.4, 0.4)
  always applied.
- ImageNet-1K / ImageNet-200 (224 px) and ``imagefolder``: each method's original recipe: MoCo v2
  and SimSiam add Gaussian blur (sigma 0.1..2, p 0.5); SimCLR crops scale (0.08, 1) with jitter
  (0.8, 0.8, 0.8, 0.2) and blur; MoCo v1 jitters (0.4, 0.4, 0.4, 0.4) always, no blur.

View 1 (the hallucinated branch) gets the center-suppressed crop with the paper's central box
``center_fraction = 0.5`` (the paper's ``p``) and ``alpha = 0.6``; view 2 a plain RandomResizedCrop. Every :class:`Recipe` field is an override,
e.g. ``build("cifar10-mocov2", alpha=0.1)`` (the public CIFAR configs),
``build("imagenet200", center_fraction=0.6)`` (box 0.2..0.8 of the public ImageNet configs),
``center_crop_views=()`` (no center crop: the baseline), ``jitter_strength=0.5``, ``blur=True``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hallucinator.data import augment as A
from hallucinator.data.datasets import DATASETS

__all__ = ["PRESETS", "STYLES", "EvalTransform", "Recipe", "build", "eval_transform", "recipe"]

STYLES = ("mocov1", "mocov2", "simclr", "simsiam")
SMALL = {"cifar10": 32, "cifar100": 32, "tiny-imagenet": 64, "stl10": 96}
LARGE_SIZE = 224
PRESETS = tuple(f"{dataset}-{style}" for dataset in DATASETS for style in STYLES)


@dataclass(frozen=True)
class Recipe:
    """Everything a two-view pipeline is built from; any field can be overridden in :func:`build`."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_strength: float = 1.0
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur: bool = False
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    solarize_p: float = 0.0
    center_crop_views: tuple[int, ...] = (1,)
    center_fraction: float = 0.5
    """Share of each side the central box of the center-suppressed crop covers (the paper's ``p``)."""
    alpha: float = 0.6

    @property
    def blur_kernel(self) -> int:
        """An odd kernel about 10% of the image side (SimCLR's choice)."""
        return 2 * max(1, round(0.05 * self.image_size)) + 1


def _split_name(name: str) -> tuple[str, str]:
    for style in STYLES:
        if name.endswith("-" + style):
            return name[: -len(style) - 1], style
    return name, "mocov2"


def recipe(name: str, image_size: int | None = None, **overrides: Any) -> Recipe:
    """The :class:`Recipe` of preset ``name`` with ``overrides`` applied."""
    dataset, style = _split_name(name)
    if dataset not in DATASETS:
        raise ValueError(
            f"unknown preset {name!r}: expected <dataset>[-<style>] with dataset in "
            f"{', '.join(DATASETS)} and style in {', '.join(STYLES)}"
        )
    info = DATASETS[dataset]
    small = dataset in SMALL
    fields: dict[str, Any] = {"image_size": SMALL.get(dataset, LARGE_SIZE), "mean": info.mean, "std": info.std}
    if style == "mocov1":
        fields.update(jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0)
    elif not small:
        fields.update(blur=True)
        if style == "simclr":
            fields.update(scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2))
    if image_size is not None:
        fields["image_size"] = image_size
    if "p" in overrides:  # the field's name until 2026-11-30
        warnings.warn(
            "augmentation override 'p' is now 'center_fraction' (data.augment.center_fraction): p was read as it",
            FutureWarning,
            stacklevel=2,
        )
        overrides["center_fraction"] = overrides.pop("p")
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown augmentation override(s) {unknown}; known: {', '.join(sorted(known))}")
    fields.update(overrides)
    for key in ("scale", "ratio", "jitter", "blur_sigma", "center_crop_views", "mean", "std"):
        fields[key] = tuple(fields[key]) if key in fields else getattr(Recipe, key)
    bad_views = set(fields["center_crop_views"]) - {1, 2}
    if bad_views:
        raise ValueError(f"center_crop_views must contain only 1 and/or 2, got {fields['center_crop_views']}")
    return Recipe(**fields)


def view(r: Recipe, center_crop: bool) -> A.Compose:
    """One view's pipeline for recipe ``r``."""
    crop: nn.Module
    if center_crop:
        crop = A.CenterSuppressedResizedCrop(
            r.image_size, r.scale, r.ratio, center_fraction=r.center_fraction, alpha=r.alpha
        )
    else:
        crop = A.RandomResizedCrop(r.image_size, r.scale, r.ratio)
    ops: list[nn.Module] = [crop, A.RandomHorizontalFlip(r.flip_p)]
    b, c, s, h = (r.jitter_strength * value for value in r.jitter)
    if r.jitter_p > 0 and any((b, c, s, h)):
        ops.append(A.ColorJitter(b, c, s, min(h, 0.5), p=r.jitter_p))
    if r.grayscale_p > 0:
        ops.append(A.RandomGrayscale(r.grayscale_p))
    if r.blur and r.blur_p > 0:
        ops.append(A.GaussianBlur(r.blur_kernel, r.blur_sigma, p=r.blur_p))
    if r.solarize_p > 0:
        ops.append(A.RandomSolarize(0.5, p=r.solarize_p))
    ops.append(A.Normalize(r.mean, r.std))
    return A.Compose(ops)


def build(name: str, image_size: int | None = None, **overrides: object) -> A.TwoViews:
    """The two-view pipeline of preset ``name``; view 1 is the hallucinated branch.

    Example:
        >>> two = build("cifar10-mocov2", alpha=0.1)
        >>> v1, v2 = two(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
        >>> type(two.view1.ops[0]).__name__, type(two.view2.ops[0]).__name__
        ('CenterSuppressedResizedCrop', 'RandomResizedCrop')
    """
    r = recipe(name, image_size, **overrides)
    return A.TwoViews(view(r, 1 in r.center_crop_views), view(r, 2 in r.center_crop_views))


class EvalTransform(nn.Module):
    """uint8 batch -> normalised float at ``size``: images whose shorter side is not ``size`` are
    resized (antialiased) so it is ``size / 0.875`` (256 for 224), then the centre is cropped.
    """

    def __init__(self, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.size = size
        self.normalize = A.Normalize(mean, std)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        images = A.to_float(images)
        height, width = images.shape[-2:]
        if min(height, width) != self.size:
            short = round(self.size / 0.875)
            scale = short / min(height, width)
            images = F.interpolate(
                images,
                size=(max(short, round(height * scale)), max(short, round(width * scale))),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).clamp_(0.0, 1.0)
            height, width = images.shape[-2:]
        top, left = (height - self.size) // 2, (width - self.size) // 2
        images = images[..., top : top + self.size, left : left + self.size]
        return self.normalize(images)


def eval_transform(dataset_name: str, image_size: int | None = None) -> EvalTransform:
    """The evaluation transform of ``dataset_name`` (a dataset or preset name).

    Small datasets at their native size are only normalised; ImageNet (stored at 256) is
    centre-cropped to 224.

    Example:
        >>> eval_transform("cifar10")(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([2, 3, 32, 32])
    """
    r = recipe(dataset_name, image_size)
    return EvalTransform(r.image_size, r.mean, r.std)
