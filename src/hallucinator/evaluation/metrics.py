"""Representation metrics: similarity of positives (paper Eq. 5), alignment, uniformity and G_t (Eq. 6).

- ``pos_similarity``: mean cosine ``S = q.k / (|q||k|)`` over positive pairs (paper Fig. 4).
- ``alignment``: mean ``|q - k|^2`` over positive pairs of L2-normalised features (Wang & Isola 2020).
- ``uniformity``: ``log`` of the mean Gaussian potential ``exp(-t |x_i - x_j|^2)`` over all
  pairs ``i < j`` of L2-normalised features, ``t = 2`` (Wang & Isola 2020).
- ``g_potential``: the paper's ``G_t`` figure (Fig. 5): the mean Gaussian potential itself
  (``exp(uniformity)``), computed on features reduced to 2-D and L2-normalised onto the
  circle. For points uniform on the circle it is ``e^{-2t} I_0(2t)`` = 0.2070 at ``t = 2``,
  the paper's "uniform" figure.

The two Wang & Isola formulas live in :mod:`hallucinator.losses` (which L2-normalises);
this module only reduces to 2-D and subsamples around them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hallucinator import losses
from hallucinator.evaluation.features import Transform, extract_features, extract_pair_features

PairTransform = Callable[[Tensor], tuple[Tensor, Tensor]]


def pos_similarity(q: Tensor, k: Tensor) -> Tensor:
    """Mean cosine similarity of the rows of ``q`` and ``k`` (paired by index)."""
    _check_pairs(q, k)
    return F.cosine_similarity(q.float(), k.float(), dim=1).mean()


def alignment(q: Tensor, k: Tensor, alpha: float = 2.0) -> Tensor:
    """Mean ``|q - k|^alpha`` over positive pairs after L2 normalisation."""
    _check_pairs(q, k)
    return losses.alignment(q.float(), k.float(), alpha=alpha)


def uniformity(features: Tensor, t: float = 2.0) -> Tensor:
    """``log`` mean Gaussian potential over all distinct pairs of L2-normalised ``features``."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"uniformity needs (N >= 2, D) features, got shape {tuple(features.shape)}")
    return losses.uniformity(features.float(), t=t)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """Top-k accuracies in percent (``k`` is capped at the number of classes)."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score rows but {len(labels)} labels")
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == labels.to(scores.device).view(-1, 1)
    return [100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks]


def reduce_to_2d(features: Tensor, method: str = "pca", seed: int = 0) -> Tensor:
    """Features reduced to 2-D and L2-normalised onto the unit circle.

    ``"pca"``: the two leading principal directions of the L2-normalised, centred features
    (deterministic; what the plots and ``g_potential`` use by default). ``"random"``: a
    Gaussian random projection seeded by ``seed`` (preserves the geometry in expectation).
    """
    x = F.normalize(features.float(), dim=1)
    if method == "pca":
        centred = x - x.mean(dim=0, keepdim=True)
        # torch.linalg.svd of the (D, D) covariance is cheaper than of the (N, D) data.
        _, _, vh = torch.linalg.svd(centred.T @ centred)
        projected = centred @ vh[:2].T
    elif method == "random":
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(x.shape[1], 2, generator=generator).to(x.device)
        projected = x @ projection
    else:
        raise ValueError(f"method must be 'pca' or 'random', got {method!r}")
    return F.normalize(projected, dim=1)


def g_potential(features: Tensor, t: float = 2.0, reduce: str | None = "pca") -> Tensor:
    """The paper's ``G_t``: mean Gaussian potential of the features on the circle (``reduce=None``: on the sphere)."""
    points = reduce_to_2d(features, reduce) if reduce else features
    return uniformity(points, t=t).exp()


def _subsample(features: Tensor, max_samples: int, seed: int = 0) -> Tensor:
    if len(features) <= max_samples:
        return features
    generator = torch.Generator().manual_seed(seed)
    return features[torch.randperm(len(features), generator=generator)[:max_samples].to(features.device)]


def uniformity_metrics(features: Tensor, t: float = 2.0, max_samples: int = 5000) -> dict[str, float]:
    """``uniformity`` (on the sphere) and the paper's ``g2`` (2-D PCA, circle) of up to ``max_samples`` features.

    Pairs grow quadratically, so a fixed random subset (seed 0) keeps this cheap enough to
    log during training.
    """
    subset = _subsample(features, max_samples)
    return {"uniformity": uniformity(subset, t).item(), f"g{t:g}": g_potential(subset, t).item()}


def representation_metrics(
    backbone: nn.Module,
    images: Tensor,
    *,
    two_views: PairTransform,
    transform: Transform | None = None,
    t: float = 2.0,
    max_samples: int = 5000,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    precision: str = "32",
    progress: bool = False,
) -> dict[str, float]:
    """Positive similarity and alignment on two augmented views of ``images``, uniformity and G_t on plain ``images``.

    All on backbone features (what downstream tasks see). ``two_views`` maps a uint8 batch to
    two normalised float views (e.g. ``hallucinator.data.presets.build(name, size)``);
    ``transform`` maps it to the plain normalised image (e.g. ``eval_transform``).

    Example (``images``: uint8 ``(N, 3, 32, 32)``, e.g. the CIFAR-10 test set's ``.images``):
        >>> from hallucinator.data import eval_transform, presets
        >>> figures = representation_metrics(
        ...     backbone, images, two_views=presets.build("cifar10-simclr", 32), transform=eval_transform("cifar10", 32)
        ... )
        >>> sorted(figures)  # e.g. {'pos_similarity': 0.61, 'alignment': 0.78, 'uniformity': -3.4, 'g2': 0.2089}
        ['alignment', 'g2', 'pos_similarity', 'uniformity']
    """
    extract: dict[str, Any] = dict(batch_size=batch_size, device=device, precision=precision, progress=progress)
    features = extract_features(backbone, images, transform=transform, **extract)
    q, k = extract_pair_features(backbone, images, two_views, **extract)
    figures = {"pos_similarity": pos_similarity(q, k).item(), "alignment": alignment(q, k).item()}
    figures.update(uniformity_metrics(features, t=t, max_samples=max_samples))
    return figures


def _check_pairs(q: Tensor, k: Tensor) -> None:
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(
            f"positive pairs need two (N, D) tensors of equal shape, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
