"""Batched feature extraction from a frozen backbone over an in-memory image tensor."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.optimization import fuse as fuse_batchnorm

from hallucinator.data.subset import stratified_subset
from hallucinator.evaluation.progress import progress_bar

Transform = Callable[[Tensor], Tensor]
# An in-memory uint8 tensor (N, C, H, W), or a dataset indexed by a tensor of indices that
# returns (images, labels) batches (hallucinator.data.FileImageDataset for ImageNet).
ImageSource = Tensor | Any

_AUTOCAST_DTYPES = {"32": None, "fp32": None, "bf16": torch.bfloat16, "16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available; pass --device cpu")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` in ``{"32", "bf16", "16"}`` (``"32"`` is a no-op)."""
    if precision not in _AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {sorted(_AUTOCAST_DTYPES)}, got {precision!r}")
    dtype = _AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def input_memory_format(backbone: nn.Module) -> torch.memory_format:
    """The memory format of ``backbone``'s spatial conv kernels, which its input batches should share.

    A model converted with ``.to(memory_format=torch.channels_last)`` runs fast only on channels-last
    input: on a 2-core AVX2 CPU a ResNet-18 (width 16) extracted 1,265 images/s with both
    channels-last, 575 with both contiguous and 657-699 with only one of them (docs/evaluation.md).
    """
    for parameter in backbone.parameters():
        if parameter.ndim == 4 and parameter.shape[-2] * parameter.shape[-1] > 1:
            channels_last = parameter.is_contiguous(memory_format=torch.channels_last)
            return torch.channels_last if channels_last and not parameter.is_contiguous() else torch.contiguous_format
    return torch.contiguous_format


@contextlib.contextmanager
def frozen(backbone: nn.Module) -> Iterator[nn.Module]:
    """``backbone`` ready for inference: eval mode, each BatchNorm folded into the conv before it.

    In eval mode a BatchNorm is a fixed affine map, so it folds into the preceding conv's
    weights and bias (``torch.fx.experimental.optimization.fuse``, on a copy): one pass over
    the activations fewer per layer, the same features up to float rounding. A backbone that
    ``torch.fx`` cannot trace (data-dependent control flow, a compiled module) is used as it
    is. The copy keeps the backbone's memory format; ``backbone`` itself is left untouched,
    and its training mode is restored on exit.

    Example (``backbone``: e.g. ``backbones.build("resnet18", cifar_stem=True)``; ``images``: a float batch):
        >>> with frozen(backbone) as model:
        ...     features = model(images.float() / 255)
        >>> features.shape == (len(images), backbone.num_features)
        True
    """
    was_training = backbone.training
    backbone.eval()
    try:
        try:
            model = fuse_batchnorm(backbone).to(memory_format=input_memory_format(backbone))
        except Exception:  # noqa: BLE001 - not traceable; the unfolded model computes the same features
            model = backbone
        yield model
    finally:
        backbone.train(was_training)


def to_unit_float(images: Tensor) -> Tensor:
    """Default transform: uint8 ``[0, 255]`` -> float ``[0, 1]``; float input is passed through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def check_images(images: ImageSource, name: str = "images") -> None:
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(
                f"{name} must be a (N, C, H, W) tensor (e.g. ImageDataset.images), got {tuple(images.shape)}"
            )
    elif not (hasattr(images, "__getitem__") and hasattr(images, "__len__")):
        raise ValueError(f"{name} must be a (N, C, H, W) tensor or a dataset, got {type(images).__name__}")


def gather(images: ImageSource, index: slice | Tensor) -> Tensor:
    """A batch of ``images``: a tensor is indexed directly; a dataset (``FileImageDataset``) with
    ``dataset[index_tensor] -> (images, labels)``, one call per batch."""
    if isinstance(images, Tensor):
        return images[index]
    if isinstance(index, slice):
        index = torch.arange(len(images))[index]
    return images[index][0]


def random_subset(images: ImageSource, labels: Tensor, limit: int | None, seed: int = 0) -> tuple[ImageSource, Tensor]:
    """A fixed, class-stratified random subset of ``limit`` images (kept in dataset order); all of them when
    ``limit`` is ``None``. The draw is ``hallucinator.data.subset.stratified_subset``, as for ``data.limit``.

    Not the first ``limit``: stored splits are usually sorted by class.
    """
    if limit is None or limit >= len(labels):
        return images, labels
    index = stratified_subset(labels, limit, seed)
    if not isinstance(images, Tensor):
        raise ValueError("a subset needs an in-memory dataset (ImageDataset.images), not a streamed one")
    return images[index], labels[index]


def iterate_batches(num: int, batch_size: int, progress: bool, desc: str) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts: Iterable[int] = range(0, num, batch_size)
    if progress:
        starts = progress_bar(starts, desc=desc, unit="batch", leave=False)
    for start in starts:
        yield slice(start, min(start + batch_size, num))


@torch.no_grad()
def _extract(
    backbone: nn.Module,
    images: ImageSource,
    transform: Callable[[Tensor], Tensor | tuple[Tensor, ...]],
    batch_size: int,
    device: str | torch.device | None,
    precision: str,
    progress: bool,
) -> list[Tensor]:
    """Features of every tensor ``transform`` returns per batch, concatenated over batches."""
    check_images(images)
    device = resolve_device(device)
    memory_format = input_memory_format(backbone)
    outputs: list[list[Tensor]] = []
    with frozen(backbone) as model:
        for batch in iterate_batches(len(images), batch_size, progress, "features"):
            views = transform(gather(images, batch).to(device, non_blocking=True))
            views = views if isinstance(views, tuple | list) else (views,)
            with autocast(device, precision):
                outputs.append([model(view.contiguous(memory_format=memory_format)).float() for view in views])
    if not outputs:
        raise ValueError("images is empty: nothing to extract features from")
    features = [torch.cat(column) for column in zip(*outputs)]
    if features[0].ndim != 2:
        raise ValueError(f"backbone must map images to (N, D) features, got shape {tuple(features[0].shape)}")
    return features


def extract_features(
    backbone: nn.Module,
    images: ImageSource,
    *,
    transform: Transform | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    precision: str = "32",
    progress: bool = False,
) -> Tensor:
    """Features ``(N, D)`` (float32, on ``device``) of ``backbone`` over ``images``.

    The backbone runs in eval mode with its BatchNorms folded (:func:`frozen`; its previous
    mode is restored), without gradients. Each batch is moved to the device before
    ``transform`` runs, so preprocessing happens on the accelerator. ``transform`` defaults to
    uint8 -> float in ``[0, 1]``.

    Example (``images``: uint8 ``(N, 3, 32, 32)``, e.g. a CIFAR-10 dataset's ``.images``):
        >>> from hallucinator.data import eval_transform
        >>> feats = extract_features(backbone, images, transform=eval_transform("cifar10", 32))
        >>> feats.shape == (len(images), backbone.num_features) and feats.dtype == torch.float32
        True
    """
    transform = transform or to_unit_float
    return _extract(backbone, images, transform, batch_size, device, precision, progress)[0]


def extract_pair_features(
    backbone: nn.Module,
    images: ImageSource,
    two_views: Callable[[Tensor], tuple[Tensor, Tensor]],
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    precision: str = "32",
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Features of two augmented views of each image: ``two_views`` maps a batch to ``(view1, view2)``.

    Example:
        >>> from hallucinator.data import presets
        >>> q, k = extract_pair_features(backbone, images, presets.build("cifar10-simclr", 32))
        >>> q.shape == k.shape == (len(images), backbone.num_features)
        True
    """
    features = _extract(backbone, images, two_views, batch_size, device, precision, progress)
    if len(features) != 2:
        raise ValueError(f"two_views must return two views per batch, got {len(features)}")
    return features[0], features[1]
