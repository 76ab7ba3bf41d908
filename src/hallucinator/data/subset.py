"""Seeded, class-stratified subsets: ``data.limit``, kNN limits and held-out splits draw from one helper.

Stored splits are sorted by class (archive caches, ImageFolder listings), so the first ``N``
images are often a single class; a stratified draw keeps every class at its share.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["stratified_subset"]


def stratified_subset(labels: Tensor, size: int, seed: int = 0) -> Tensor:
    """Sorted indices of ``size`` images drawn at random per class, each class at its share of ``labels``.

    Class ``c`` with ``n_c`` of the ``N`` images gets ``floor(size * n_c / N)`` images; the
    images left over go one each to the classes with the largest fractional parts (ties: the
    smaller label). Unlabeled images (-1) are a class of their own. The draw is a pure
    function of ``(labels, size, seed)``.

    Example:
        >>> labels = torch.tensor([0] * 6 + [1] * 3 + [2])
        >>> index = stratified_subset(labels, 5, seed=0)
        >>> torch.bincount(labels[index]).tolist()  # 6:3:1 of 5 images -> 3, 1.5, 0.5 -> 3, 2, 0
        [3, 2]
    """
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    total = labels.numel()
    if not 0 <= size <= total:
        raise ValueError(f"a subset of {size} images cannot be drawn from {total}")
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    exact = counts.double() * size / total
    quotas = exact.floor().long()
    remainder = size - int(quotas.sum())
    if remainder:
        # stable sort of the fractional parts, largest first: ties keep the smaller label first
        order = torch.sort(exact - quotas, descending=True, stable=True).indices
        quotas[order[:remainder]] += 1
    generator = torch.Generator().manual_seed(seed)
    members = torch.sort(inverse, stable=True).indices  # images grouped by class, in dataset order
    starts = torch.cumsum(counts, 0) - counts
    chosen = [
        members[start + torch.randperm(int(count), generator=generator)[: int(quota)]]
        for start, count, quota in zip(starts.tolist(), counts.tolist(), quotas.tolist())
    ]
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)
