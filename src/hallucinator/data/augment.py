"""Batched image augmentations with per-sample random parameters, on whatever device holds the batch.

Every op is an ``nn.Module`` whose ``forward(images, generator=None)`` takes a uint8 or float
batch ``(N, C, H, W)`` (uint8 is converted to float in ``[0, 1]``) and returns a float batch.
Random parameters are drawn for every sample of the batch at once from ``generator`` (or the
global RNG), so one seed gives the same views run after run. The ops follow torchvision's
semantics (same colour formulas, ColorJitter's random order of its four ops per sample,
3-channel grayscale); only the crop box is continuous instead of integer.

Example:
    >>> import torch
    >>> from hallucinator.data import augment as A
    >>> view = A.Compose([
    ...     A.CenterSuppressedResizedCrop(32, scale=(0.2, 1.0), center_fraction=0.5, alpha=0.6),
    ...     A.RandomHorizontalFlip(),
    ...     A.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
    ...     A.RandomGrayscale(0.2),
    ...     A.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
    ... ])
    >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    >>> view(images, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import roi_align

__all__ = [
    "CenterSuppressedResizedCrop",
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "Normalize",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomSolarize",
    "TwoViews",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "avoids_host_sync",
    "gaussian_blur",
    "grayscale",
    "sample_beta",
    "to_float",
]

# ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses.
_LUMA = (0.2989, 0.587, 0.114)


def avoids_host_sync(device: torch.device) -> bool:
    """Whether ops on ``device`` avoid data-dependent shapes (``nonzero``, ``tolist``), which stall the host.

    True on accelerators, where such a shape waits for the device to finish the work queued before
    it; then :class:`ColorJitter` and the ``p``-applied ops transform the whole batch and select
    per sample. On the CPU the subset form is cheaper and nothing waits. Both give the same views
    from the same generator (``tests/data/test_augment.py``).
    """
    return device.type != "cpu"


def to_float(images: Tensor) -> Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]``; float input is returned as is."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"expected a uint8 or floating-point image batch, got {images.dtype}")
    return images


def _check_batch(images: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"expected an image batch (N, C, H, W), got shape {tuple(images.shape)}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` draws of U(low, high), taken from ``generator`` on its own device, returned on ``device``."""
    source = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=source) * (high - low) + low).to(device)


def sample_beta(
    n: int,
    alpha: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) from ``generator`` (torch.distributions cannot take one).

    Drawn as G1 / (G1 + G2) with G_i ~ Gamma(alpha) in float64: for small alpha a float32 gamma
    draw underflows to 0 often enough to matter. (In float32 output, Beta(0.1, 0.1) puts about
    10% of its draws within rounding of 0 or 1: that is the distribution, not an artefact.)
    """
    source = generator.device if generator is not None else torch.device(device)
    gammas = torch._standard_gamma(torch.full((n, 2), float(alpha), dtype=torch.float64, device=source), generator)
    ratio = gammas[:, 0] / gammas.sum(1)
    return ratio.nan_to_num(0.5).to(device=device, dtype=dtype)


def _gray(images: Tensor) -> Tensor:
    """Luma ``(N, 1, H, W)`` of an RGB batch."""
    r, g, b = images.unbind(1)
    luma = r * _LUMA[0]
    return luma.add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def _per_sample(factor: Tensor | float, images: Tensor) -> Tensor:
    return torch.as_tensor(factor, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``clamp(factor * images + (1 - factor) * other)``, torchvision's ``_blend`` for float images."""
    return torch.addcmul(other * (1.0 - factor), images, factor).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor | float) -> Tensor:
    """torchvision's ``adjust_brightness`` with one factor per sample (float images in [0, 1])."""
    return (images * _per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend with the image's mean luma (one scalar per image), as torchvision does."""
    channel_means = images.mean(dim=(2, 3))
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device)
    mean = (channel_means @ weights).view(-1, 1, 1, 1)
    return _blend(images, mean, _per_sample(factor, images))


def adjust_saturation(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend with the per-pixel luma, as torchvision does."""
    return _blend(images, _gray(images), _per_sample(factor, images))


def adjust_hue(images: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the HSV hue by ``shift`` (a fraction of the colour wheel, in [-0.5, 0.5]) per sample.

    Exact HSV round trip, written in the closed form RGB = V - C * clamp(min(k, 4 - k), 0, 1)
    with k = (n + 6 H) mod 6 and n = 5, 3, 1 for R, G, B, which needs only V (max), the chroma
    C = max - min and the hue, never S itself. The hue sector is selected with 0/1 masks
    rather than ``torch.where``, which is several times slower on CPU.
    """
    r, g, b = images.unbind(1)
    value = images.amax(1)
    chroma = value - images.amin(1)
    # Sector of the maximum; ties resolved R before G before B, like torchvision.
    is_r = (value == r).to(images.dtype)
    is_g = (value == g).to(images.dtype).mul_(1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    hue6 = (g - b).mul_(is_r).addcmul_(b - r, is_g).addcmul_(r - g, is_b)
    hue6.div_(chroma.clamp(min=torch.finfo(images.dtype).tiny))  # grey pixels: C = 0 cancels below
    hue6.add_(is_g, alpha=2.0).add_(is_b, alpha=4.0).add_(6.0 * _per_sample(shift, images).view(-1, 1, 1))
    hue6.sub_(torch.floor(hue6 / 6.0).mul_(6.0))  # into [0, 6)
    offsets = torch.tensor((5.0, 3.0, 1.0), dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    k = hue6.unsqueeze(1) + offsets  # in [1, 11): one wrap brings it into [0, 6)
    k.sub_((k >= 6.0).to(images.dtype).mul_(6.0))
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(value.unsqueeze(1), chroma.unsqueeze(1), ramp, value=-1.0)


def grayscale(images: Tensor) -> Tensor:
    """Luma repeated on 3 channels (torchvision's ``rgb_to_grayscale(num_output_channels=3)``)."""
    return _gray(images).expand(-1, 3, -1, -1).contiguous()


def gaussian_blur(images: Tensor, kernel_size: int, sigma: Tensor | float) -> Tensor:
    """Separable Gaussian blur with one sigma per sample and reflect padding (torchvision's)."""
    n, c, h, w = images.shape
    half = kernel_size // 2
    if half >= min(h, w):
        raise ValueError(
            f"blur kernel {kernel_size} is too large for {h}x{w} images: use an odd size below {2 * min(h, w)}"
        )
    offsets = torch.arange(-half, half + 1, dtype=images.dtype, device=images.device)
    sigma = _per_sample(sigma, images).reshape(-1, 1).expand(n, 1)
    kernel = torch.softmax(-0.5 * (offsets / sigma) ** 2, dim=1)  # (N, k), rows sum to 1
    weight = kernel.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) group
    flat = F.pad(images.reshape(1, n * c, h, w), (half, half, half, half), mode="reflect")
    flat = F.conv2d(flat, weight.view(n * c, 1, 1, kernel_size), groups=n * c)
    flat = F.conv2d(flat, weight.view(n * c, 1, kernel_size, 1), groups=n * c)
    return flat.view(n, c, h, w)


class _RandomApply(nn.Module):
    """Applies ``transform`` to a random subset of the batch (each sample with probability ``p``).

    Parameters are drawn for every sample, applied or not, so the random stream consumed by a
    batch does not depend on which samples were picked.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability p must be in [0, 1], got {p}")
        self.p = p

    def sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> dict[str, Tensor]:
        return {}

    def transform(self, images: Tensor, *args: Any, **params: Any) -> Tensor:
        # (*args: Any, **params: Any): each subclass takes the keys its ``sample`` returns
        raise NotImplementedError

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(images)
        images = to_float(images)
        n = images.shape[0]
        chosen = _uniform(n, 0.0, 1.0, generator, images.device) < self.p
        params = self.sample(n, generator, images.device)
        if self.p >= 1.0:
            return self.transform(images, **params)
        if avoids_host_sync(images.device):
            # the subset's size would have to reach the host: transform all, keep the chosen
            return torch.where(chosen.view(-1, 1, 1, 1), self.transform(images, **params), images)
        index = chosen.nonzero().squeeze(1)
        if index.numel() == 0:
            return images
        out = images.clone()
        out[index] = self.transform(images[index], **{key: value[index] for key, value in params.items()})
        return out


class RandomHorizontalFlip(_RandomApply):
    """Mirrors each image with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def transform(self, images: Tensor) -> Tensor:
        return images.flip(-1)


class RandomGrayscale(_RandomApply):
    """Converts each image to 3-channel grayscale with probability ``p``."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__(p)

    def transform(self, images: Tensor) -> Tensor:
        return grayscale(images)


class RandomSolarize(_RandomApply):
    """Inverts the pixels at or above ``threshold`` (in [0, 1]) with probability ``p``."""

    def __init__(self, threshold: float = 0.5, p: float = 0.2) -> None:
        super().__init__(p)
        self.threshold = threshold

    def transform(self, images: Tensor) -> Tensor:
        return torch.where(images >= self.threshold, 1.0 - images, images)


class GaussianBlur(_RandomApply):
    """Gaussian blur with sigma ~ U(sigma) per sample, applied with probability ``p``.

    ``kernel_size`` must be odd; the usual choice is about 10% of the image side.
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> None:
        super().__init__(p)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.kernel_size = kernel_size
        self.sigma = tuple(sigma)

    def sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> dict[str, Tensor]:
        return {"sigma": _uniform(n, self.sigma[0], self.sigma[1], generator, device)}

    def transform(self, images: Tensor, sigma: Tensor) -> Tensor:
        return gaussian_blur(images, self.kernel_size, sigma)


def _jitter_range(value: float | Sequence[float], name: str, center: float, bound: float) -> tuple[float, float] | None:
    """torchvision's convention: a number v means [center - v, center + v]; a pair is taken as is."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"ColorJitter {name} must be non-negative, got {value}")
        low, high = center - value, center + value
        if name != "hue":
            low = max(low, 0.0)
    else:
        low, high = (float(v) for v in value)
    if not -bound <= low <= high <= bound:
        raise ValueError(f"ColorJitter {name} range ({low}, {high}) must lie within [{-bound}, {bound}]")
    return None if low == high == center else (low, high)


class ColorJitter(_RandomApply):
    """torchvision's ColorJitter, applied with probability ``p``, with per-sample factors and order.

    Each selected sample draws its brightness, contrast and saturation factors, its hue shift and
    its own random order of the four ops, exactly as ``torchvision.transforms.ColorJitter`` does
    per image.
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.0,
        contrast: float | Sequence[float] = 0.0,
        saturation: float | Sequence[float] = 0.0,
        hue: float | Sequence[float] = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        self.ranges = (
            _jitter_range(brightness, "brightness", 1.0, math.inf),
            _jitter_range(contrast, "contrast", 1.0, math.inf),
            _jitter_range(saturation, "saturation", 1.0, math.inf),
            _jitter_range(hue, "hue", 0.0, 0.5),
        )
        self.ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)

    def sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> dict[str, Tensor]:
        source = generator.device if generator is not None else device
        order = torch.rand(n, 4, generator=generator, device=source).argsort(dim=1).to(device)
        factors = [
            _uniform(n, *bounds, generator, device) if bounds is not None else torch.zeros(n, device=device)
            for bounds in self.ranges
        ]
        return {"order": order, "factors": torch.stack(factors, dim=1)}

    def transform(self, images: Tensor, order: Tensor, factors: Tensor) -> Tensor:
        if avoids_host_sync(images.device):
            # every op at every position on the whole batch, each sample keeping the one its order names
            for position in range(4):
                jittered = images
                for op_index, op in enumerate(self.ops):
                    if self.ranges[op_index] is not None:
                        picked = (order[:, position] == op_index).view(-1, 1, 1, 1)
                        jittered = torch.where(picked, op(images, factors[:, op_index]), jittered)
                images = jittered
            return images
        # Samples sharing an order (24 possible) are made contiguous so every op runs on slices of
        # one sorted copy: one gather in and one out instead of a gather and scatter per op and position.
        key = ((order[:, 0] * 4 + order[:, 1]) * 4 + order[:, 2]) * 4 + order[:, 3]
        key, sort = key.sort()
        images, order, factors = images[sort], order[sort], factors[sort]
        _, counts = torch.unique_consecutive(key, return_counts=True)
        bounds = [0, *counts.cumsum(0).tolist()]
        for start, stop, sample_order in zip(bounds[:-1], bounds[1:], order[bounds[:-1]].tolist()):
            segment = images[start:stop]
            for op_index in sample_order:
                if self.ranges[op_index] is not None:
                    segment = self.ops[op_index](segment, factors[start:stop, op_index])
            images[start:stop] = segment
        return images[sort.argsort()]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; uint8 input is first scaled to [0, 1]."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(images)
        images = to_float(images)
        scale = 1.0 / self.std.to(images)
        return torch.addcmul(-self.mean.to(images) * scale, images, scale)


class RandomResizedCrop(nn.Module):
    """Crops a random box of each image (area fraction in ``scale``, aspect ratio in ``ratio``)
    and resizes it to ``size``.

    The box is sampled like torchvision's (ten tries of log-uniform ratio and uniform area, then
    the whole image clamped to ``ratio``), but with continuous coordinates. Resampling is
    ``torchvision.ops.roi_align`` with ``aligned=True`` and adaptive sampling: bilinear with
    half-pixel centres (torchvision's resize) when enlarging, an area average when shrinking.
    The per-sample box positions are what subclasses change.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    ) -> None:
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def sample_sizes(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Per-sample crop heights and widths ``(n,)`` in pixels."""
        tries = 10
        source = generator.device if generator is not None else device
        draws = torch.rand(n, tries, 2, generator=generator, device=source).to(device)
        area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * draws[..., 0])
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_low + (log_high - log_low) * draws[..., 1])
        w = torch.sqrt(area * aspect)
        h = torch.sqrt(area / aspect)
        valid = (w <= width) & (h <= height)
        first = valid.float().argmax(dim=1, keepdim=True)  # index of the first valid try
        w = w.gather(1, first).squeeze(1)
        h = h.gather(1, first).squeeze(1)
        # No valid try: the whole image, trimmed to the nearest allowed aspect ratio.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fallback = (width / self.ratio[0], float(width))
        elif in_ratio > self.ratio[1]:
            fallback = (float(height), height * self.ratio[1])
        else:
            fallback = (float(height), float(width))
        none_valid = ~valid.any(dim=1)
        h = torch.where(none_valid, torch.full_like(h, fallback[0]), h)
        w = torch.where(none_valid, torch.full_like(w, fallback[1]), w)
        return h, w

    def sample_centers(
        self, h: Tensor, w: Tensor, height: int, width: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Per-sample box centres ``(cy, cx)``: uniform over the positions that keep the box inside."""
        source = generator.device if generator is not None else h.device
        u = torch.rand(h.shape[0], 2, generator=generator, device=source).to(h.device)
        return h / 2 + u[:, 0] * (height - h), w / 2 + u[:, 1] * (width - w)

    def sample_boxes(
        self,
        n: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Crop boxes ``(n, 4)`` as ``(x0, y0, x1, y1)`` in pixels, always inside the image."""
        device = torch.device(device)
        h, w = self.sample_sizes(n, height, width, generator, device)
        cy, cx = self.sample_centers(h, w, height, width, generator)
        y0 = (cy - h / 2).clamp(min=0.0).minimum(height - h)
        x0 = (cx - w / 2).clamp(min=0.0).minimum(width - w)
        return torch.stack((x0, y0, x0 + w, y0 + h), dim=1)

    def crop(self, images: Tensor, boxes: Tensor) -> Tensor:
        """Resamples ``boxes`` ``(N, 4)`` of ``images`` to ``self.size``."""
        images = to_float(images)
        index = torch.arange(images.shape[0], dtype=images.dtype, device=images.device).unsqueeze(1)
        rois = torch.cat((index, boxes.to(images)), dim=1)
        return roi_align(images, rois, self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(images)
        boxes = self.sample_boxes(images.shape[0], images.shape[-2], images.shape[-1], generator, images.device)
        return self.crop(images, boxes)


class CenterSuppressedResizedCrop(RandomResizedCrop):
    """RandomResizedCrop whose centre is drawn in the central box (the paper's Sec. 3.2), as ContrastiveCrop.

    The central box covers fraction ``center_fraction`` of each side (0.5: from 0.25 to 0.75; the
    paper's ``p``). Along
    each axis, ContrastiveCrop's sampler first limits the crop's start to the range that keeps
    its centre in the box AND the crop inside the image, ``[clamp(lo - h/2), clamp(hi - h/2)]``
    (``clamp`` to ``[0, side - h]``), then places it at ``start + range * Beta(alpha, alpha)``.
    ``alpha < 1`` puts more mass near the range's ends than at the image centre (hence
    "center-suppressed"), ``alpha = 1`` is uniform. A crop small enough never to meet the border
    has its centre at ``lo + center_fraction * side * Beta``; a large one is spread over the positions it can
    take instead of being pushed to the border (drawing the centre first and shifting the crop
    inside afterwards sends large crops to the border more often). Coordinates are continuous
    (ContrastiveCrop rounds to pixels). Scale and ratio are sampled as in :class:`RandomResizedCrop`.

    Example:
        >>> crop = CenterSuppressedResizedCrop(32, scale=(0.2, 1.0), center_fraction=0.5, alpha=0.6)
        >>> crop.sample_boxes(4, 32, 32, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 4])
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        center_fraction: float = 0.5,
        alpha: float = 0.6,
    ) -> None:
        super().__init__(size, scale, ratio)
        if not 0.0 < center_fraction <= 1.0:
            raise ValueError(
                f"center_fraction (the central box's share of each side) must be in (0, 1], got {center_fraction}"
            )
        if alpha <= 0.0:
            raise ValueError(f"Beta parameter alpha must be positive, got {alpha}")
        self.center_fraction = center_fraction
        self.alpha = alpha

    def central_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """The central box ``(x0, y0, x1, y1)`` in pixels where crop centres are drawn."""
        low, high = 0.5 - self.center_fraction / 2, 0.5 + self.center_fraction / 2
        return (low * width, low * height, high * width, high * height)

    def sample_centers(
        self, h: Tensor, w: Tensor, height: int, width: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        beta = sample_beta(2 * h.shape[0], self.alpha, generator, h.device).view(2, -1)
        low, high = 0.5 - self.center_fraction / 2, 0.5 + self.center_fraction / 2

        def centre(size: Tensor, side: int, draw: Tensor) -> Tensor:
            first = (low * side - size / 2).clamp(min=0.0).minimum(side - size)
            last = (high * side - size / 2).clamp(min=0.0).minimum(side - size)
            return first + (last - first) * draw + size / 2

        return centre(h, height, beta[0]), centre(w, width, beta[1])


class Compose(nn.Module):
    """Applies ``ops`` in order, handing each the same generator.

    Example:
        >>> view = Compose([RandomResizedCrop(32), RandomHorizontalFlip(), Normalize((0.5,) * 3, (0.25,) * 3)])
        >>> view(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).dtype
        torch.float32
    """

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(images)
        images = to_float(images)
        for op in self.ops:
            images = op(images, generator=generator)
        return images


class TwoViews(nn.Module):
    """Two independently augmented views of a batch; ``view1`` is the hallucinated branch.

    Example:
        >>> from hallucinator.data import presets
        >>> two = presets.build("cifar10-mocov2")
        >>> v1, v2 = two(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
        >>> v1.shape, v2.shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 3, 32, 32]))
    """

    def __init__(self, view1: nn.Module, view2: nn.Module) -> None:
        super().__init__()
        self.view1 = view1
        self.view2 = view2

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_batch(images)
        images = to_float(images)
        return self.view1(images, generator=generator), self.view2(images, generator=generator)
