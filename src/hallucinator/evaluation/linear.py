"""Linear classification on frozen features (the paper's Sec. 4.2).

Full protocol: a BN-free ``nn.Linear`` head on the frozen backbone (eval mode), 100 epochs,
SGD lr 10 (30 for ImageNet), momentum 0.9, weight decay 0, lr /10 at epochs 60 and 80,
batch 512 (256 for ImageNet); every training batch gets a fresh RandomResizedCrop + horizontal flip, test
images are plain. Fast mode: the same head and schedule on features pre-computed once from
plain images (no augmentation), which takes seconds instead of 100 backbone passes over
the training set.

The head is scored on the test set after every epoch: ``top1`` / ``final_top1`` is the last
epoch's (what this project reports), ``best_top1`` at ``best_epoch`` the best one (what the
authors' code reports).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hallucinator.evaluation.features import (
    ImageSource,
    Transform,
    autocast,
    extract_features,
    frozen,
    gather,
    input_memory_format,
    resolve_device,
)
from hallucinator.evaluation.metrics import topk_accuracy
from hallucinator.evaluation.progress import progress_bar

IMAGENET_LR = 30.0
IMAGENET_BATCH_SIZE = 256


@dataclass(frozen=True)
class LinearConfig:
    """Hyper-parameters of the linear protocol; defaults are the paper's small-dataset recipe."""

    epochs: int = 100
    lr: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (60, 80)
    gamma: float = 0.1
    batch_size: int = 512
    seed: int = 0

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> LinearConfig:
        """The paper's recipe for ``dataset`` (ImageNet variants: lr 30, batch 256; otherwise lr 10, batch 512).

        ``milestones`` scale with ``epochs`` when only ``epochs`` is overridden (60 % and 80 %).
        Overrides that are ``None`` (unset command-line options) are ignored.
        """
        imagenet = "imagenet" in dataset.lower() and "tiny" not in dataset.lower()
        config = cls(lr=IMAGENET_LR, batch_size=IMAGENET_BATCH_SIZE) if imagenet else cls()
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if "epochs" in overrides and "milestones" not in overrides:
            epochs = overrides["epochs"]
            overrides["milestones"] = (round(0.6 * epochs), round(0.8 * epochs))
        return replace(config, **overrides)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"linear probe needs epochs >= 1, batch_size >= 1 and lr > 0, got {self}")


@dataclass
class LinearResult:
    """Test top-1 / top-5 (percent) of the trained head after the last epoch, the best epoch's top-1
    (``best_epoch`` counts from 1), the per-epoch test top-1, the mode and timing."""

    top1: float
    top5: float
    mode: str
    epochs: int
    seconds: float
    train_loss: list[float] = field(default_factory=list)
    test_top1: list[float] = field(default_factory=list)

    @property
    def final_top1(self) -> float:
        return self.top1

    @property
    def best_epoch(self) -> int:
        return max(range(len(self.test_top1)), key=self.test_top1.__getitem__) + 1 if self.test_top1 else self.epochs

    @property
    def best_top1(self) -> float:
        return self.test_top1[self.best_epoch - 1] if self.test_top1 else self.top1

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "final_top1": self.final_top1,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
        }


def _train_head(
    head: nn.Linear,
    batch_features: Callable[[Tensor], Tensor],
    labels: Tensor,
    config: LinearConfig,
    progress: bool,
    score: Callable[[], float],
) -> tuple[list[float], list[float]]:
    """SGD on ``head`` over shuffled mini-batches; ``batch_features(indices)`` yields the (frozen) inputs.

    Returns the per-epoch training loss and ``score()`` (test top-1) after every epoch.
    """
    optimizer = torch.optim.SGD(
        head.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), gamma=config.gamma)
    generator = torch.Generator().manual_seed(config.seed)
    epochs: Iterable[int] = range(config.epochs)
    if progress:
        epochs = progress_bar(epochs, desc="linear", unit="epoch")
    history, scores = [], []
    for _ in epochs:
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        total = torch.zeros((), device=labels.device)
        for indices in order.split(config.batch_size):
            loss = F.cross_entropy(head(batch_features(indices)), labels[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(indices)
        schedule.step()
        history.append(total.item() / len(labels))
        if not math.isfinite(history[-1]):
            raise FloatingPointError(f"linear probe diverged (loss {history[-1]}); lower the learning rate (--lr)")
        scores.append(score())
    return history, scores


def _new_head(num_features: int, num_classes: int, seed: int, device: torch.device) -> nn.Linear:
    # MoCo's initialisation of the linear classifier: N(0, 0.01) weights, zero bias.
    head = nn.Linear(num_features, num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    return head.to(device)


@torch.no_grad()
def _evaluate(head: nn.Linear, test_features: Tensor, test_labels: Tensor) -> tuple[float, float]:
    top1, top5 = topk_accuracy(head(test_features), test_labels)
    return top1, top5


def _num_classes(*labels: Tensor) -> int:
    for label in labels:
        if (label < 0).any():
            raise ValueError("labels contain negative (unlabeled) entries: the linear probe needs labeled splits")
    return int(max(label.max() for label in labels)) + 1


def linear_probe_features(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    config: LinearConfig = LinearConfig(),
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> LinearResult:
    """Fast mode: train the linear head on pre-computed features (no augmentation).

    Example:
        >>> result = linear_probe_features(train_feats, train_labels, test_feats, test_labels)
        >>> result.top1
    """
    if train_features.ndim != 2 or test_features.shape[1:] != train_features.shape[1:]:
        raise ValueError(
            f"need (N, D) train and test features of equal D, got {tuple(train_features.shape)} and {tuple(test_features.shape)}"
        )
    device = resolve_device(device)
    start = time.perf_counter()
    train_features, test_features = train_features.float().to(device), test_features.float().to(device)
    train_labels, test_labels = train_labels.to(device), test_labels.to(device)
    head = _new_head(train_features.shape[1], _num_classes(train_labels, test_labels), config.seed, device)
    score = lambda: _evaluate(head, test_features, test_labels)[0]  # noqa: E731
    history, scores = _train_head(head, lambda indices: train_features[indices], train_labels, config, progress, score)
    top1, top5 = _evaluate(head, test_features, test_labels)
    return LinearResult(top1, top5, "fast", config.epochs, time.perf_counter() - start, history, scores)


def linear_probe(
    backbone: nn.Module,
    train_images: ImageSource,
    train_labels: Tensor,
    test_images: ImageSource,
    test_labels: Tensor,
    config: LinearConfig = LinearConfig(),
    *,
    train_transform: Transform,
    test_transform: Transform | None = None,
    device: str | torch.device | None = None,
    precision: str = "32",
    progress: bool = False,
) -> LinearResult:
    """Full protocol: augmented training images through the frozen backbone every step.

    ``train_transform`` maps a uint8 batch (on the device) to augmented, normalised floats
    (:func:`train_transform` builds the paper's); ``test_transform`` to plain normalised
    floats (``hallucinator.data.eval_transform``).

    Example:
        >>> result = linear_probe(backbone, train.images, train.labels, test.images, test.labels,
        ...                       train_transform=train_transform("cifar10", 32),
        ...                       test_transform=eval_transform("cifar10", 32))
    """
    device = resolve_device(device)
    start = time.perf_counter()
    backbone = backbone.to(device)
    extract: dict[str, Any] = dict(batch_size=config.batch_size, device=device, precision=precision, progress=progress)
    test_features = extract_features(backbone, test_images, transform=test_transform, **extract)
    train_labels, test_labels = train_labels.to(device), test_labels.to(device)
    head = _new_head(test_features.shape[1], _num_classes(train_labels, test_labels), config.seed, device)

    memory_format = input_memory_format(backbone)

    with frozen(backbone) as model:

        @torch.no_grad()
        def batch_features(indices: Tensor) -> Tensor:
            images = train_transform(gather(train_images, indices.cpu()).to(device, non_blocking=True))
            images = images.contiguous(memory_format=memory_format)
            with autocast(device, precision):
                return model(images).float()

        score = lambda: _evaluate(head, test_features, test_labels)[0]  # noqa: E731
        history, scores = _train_head(head, batch_features, train_labels, config, progress, score)
    top1, top5 = _evaluate(head, test_features, test_labels)
    return LinearResult(top1, top5, "full", config.epochs, time.perf_counter() - start, history, scores)


def train_transform(dataset: str, image_size: int) -> Transform:
    """The protocol's training augmentation: RandomResizedCrop + horizontal flip, then normalisation.

    Built from ``hallucinator.data.augment``'s batched ops (random per sample, on the
    batch's device) and ``hallucinator.data.eval_transform`` for the normalisation.
    """
    from hallucinator.data import augment, eval_transform

    crop_flip = nn.Sequential(augment.RandomResizedCrop(image_size), augment.RandomHorizontalFlip())
    normalise = eval_transform(dataset, image_size)
    return lambda images: normalise(crop_flip(images))
