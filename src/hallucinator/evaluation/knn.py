"""Weighted k-nearest-neighbour classification (the InstDisc protocol).

Wu et al. (CVPR 2018), "Unsupervised feature learning via non-parametric instance
discrimination": features are L2-normalised, the ``k`` most cosine-similar training
features vote for their class with weight ``exp(s / T)``; the class with the largest
summed weight wins. Defaults ``k = 200``, ``T = 0.1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hallucinator.evaluation.features import ImageSource, Transform, extract_features, resolve_device
from hallucinator.evaluation.metrics import topk_accuracy


@dataclass(frozen=True)
class KNNResult:
    """Top-1 / top-5 accuracy in percent."""

    top1: float
    top5: float
    k: int
    temperature: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _check_bank(train_features: Tensor, train_labels: Tensor, test_features: Tensor) -> None:
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(
            f"features must be 2-D (N, D); got train {tuple(train_features.shape)}, test {tuple(test_features.shape)}"
        )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test features differ in dimension ({train_features.shape[1]} vs {test_features.shape[1]}): "
            "extract both with the same backbone"
        )
    if train_labels.shape != (len(train_features),):
        raise ValueError(f"train_labels must have shape ({len(train_features)},), got {tuple(train_labels.shape)}")
    if len(train_features) == 0:
        raise ValueError("the kNN bank is empty: pass at least one training feature")
    if (train_labels < 0).any():
        raise ValueError(
            "train_labels contains negative (unlabeled) entries: kNN needs a labeled bank, e.g. split='train'"
        )


@torch.no_grad()
def topk_neighbours(bank: Tensor, queries: Tensor, k: int, bank_chunk_size: int = 65536) -> tuple[Tensor, Tensor]:
    """Cosine similarities and indices of the ``k`` nearest bank rows for each (normalised) query.

    The bank is scanned in chunks; each chunk's top-k is merged into a running top-k, so
    memory is ``O(len(queries) * bank_chunk_size)`` however large the bank is.
    """
    best_sim = queries.new_empty(len(queries), 0)
    best_idx = torch.empty(len(queries), 0, dtype=torch.long, device=queries.device)
    for start in range(0, len(bank), bank_chunk_size):
        sim = queries @ bank[start : start + bank_chunk_size].T
        chunk_sim, chunk_idx = sim.topk(min(k, sim.shape[1]), dim=1)
        merged_sim = torch.cat([best_sim, chunk_sim], dim=1)
        merged_idx = torch.cat([best_idx, chunk_idx + start], dim=1)
        best_sim, order = merged_sim.topk(min(k, merged_sim.shape[1]), dim=1)
        best_idx = merged_idx.gather(1, order)
    return best_sim, best_idx


@torch.no_grad()
def knn_scores(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    bank_chunk_size: int = 65536,
) -> Tensor:
    """Class scores ``(M, C)``: for each test feature, the summed weights ``exp(s / T)`` per class.

    Features are L2-normalised here; labels are ``0 .. C-1``. Test features are processed
    ``chunk_size`` at a time on their device (move everything to a GPU first to run there).
    """
    _check_bank(train_features, train_labels, test_features)
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    num_classes = num_classes or int(train_labels.max()) + 1
    device = test_features.device
    bank = F.normalize(train_features.float(), dim=1).to(device)
    labels = train_labels.to(device)
    scores = []
    for start in range(0, len(test_features), chunk_size):
        queries = F.normalize(test_features[start : start + chunk_size].float(), dim=1)
        sim, idx = topk_neighbours(bank, queries, k, bank_chunk_size)
        weights = (sim / temperature).exp()
        votes = torch.zeros(len(queries), num_classes, device=device)
        scores.append(votes.scatter_add_(1, labels[idx], weights))
    return torch.cat(scores)


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    bank_chunk_size: int = 65536,
) -> KNNResult:
    """Weighted kNN top-1 / top-5 (percent) of ``test_features`` against a labelled bank.

    Example:
        >>> result = knn_classify(train_feats, train_labels, test_feats, test_labels)
        >>> result.top1, result.top5
    """
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_scores(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
        bank_chunk_size=bank_chunk_size,
    )
    top1, top5 = topk_accuracy(scores, test_labels)
    return KNNResult(top1=top1, top5=top5, k=k, temperature=temperature)


def knn_evaluate(
    backbone: nn.Module,
    train_images: ImageSource,
    train_labels: Tensor,
    test_images: ImageSource,
    test_labels: Tensor,
    *,
    transform: Transform | None = None,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    precision: str = "32",
    progress: bool = False,
) -> tuple[KNNResult, Tensor]:
    """Extract features of both image sets with ``backbone`` and run :func:`knn_classify`.

    Returns the result and the test features (reused e.g. for the uniformity metrics).
    """
    device = resolve_device(device)
    extract: dict[str, Any] = dict(
        transform=transform, batch_size=batch_size, device=device, precision=precision, progress=progress
    )
    train_features = extract_features(backbone, train_images, **extract)
    test_features = extract_features(backbone, test_images, **extract)
    result = knn_classify(train_features, train_labels, test_features, test_labels, k=k, temperature=temperature)
    return result, test_features
