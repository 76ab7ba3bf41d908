"""The kNN monitor: a Lightning callback that logs weighted-kNN accuracy during pre-training.

Kept apart from :mod:`hallucinator.evaluation.knn` so that the plain kNN code imports no Lightning.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from hallucinator.evaluation.features import Transform, random_subset
from hallucinator.evaluation.knn import KNNResult, knn_evaluate
from hallucinator.evaluation.metrics import uniformity_metrics


def _module_backbone(pl_module: nn.Module) -> nn.Module:
    """The online encoder of a LightningModule: ``.backbone`` or ``.method.backbone``."""
    for owner in (pl_module, getattr(pl_module, "method", None)):
        backbone = getattr(owner, "backbone", None)
        if isinstance(backbone, nn.Module):
            return backbone
    raise AttributeError(
        f"{type(pl_module).__name__} has neither .backbone nor .method.backbone: KNNMonitor cannot find the encoder"
    )


class KNNMonitor(pl.Callback):
    """Logs weighted-kNN accuracy (``knn_top1``, ``knn_top5``) and feature uniformity every N epochs.

    Features of a labelled bank and of a test set are extracted with the module's
    backbone (eval mode, no grad) on the module's device; only global rank 0 computes.

    Example:
        >>> monitor = KNNMonitor(train.images, train.labels, test.images, test.labels,
        ...                      transform=eval_transform("cifar10", 32), every_n_epochs=5)
        >>> trainer = pl.Trainer(callbacks=[monitor])
    """

    def __init__(
        self,
        train_images: Tensor,
        train_labels: Tensor,
        test_images: Tensor,
        test_labels: Tensor,
        *,
        transform: Transform | None = None,
        every_n_epochs: int = 1,
        k: int = 200,
        temperature: float = 0.1,
        batch_size: int = 512,
        precision: str = "32",
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.train_images, self.train_labels = train_images, train_labels
        self.test_images, self.test_labels = test_images, test_labels
        self.transform = transform
        self.every_n_epochs = every_n_epochs
        self.k, self.temperature = k, temperature
        self.batch_size, self.precision = batch_size, precision
        self.last: KNNResult | None = None
        self.last_test_features: Tensor | None = None

    @classmethod
    def from_dataset(
        cls,
        dataset: str,
        data_dir: str,
        *,
        bank_size: int | None = None,
        test_size: int | None = None,
        image_size: int | None = None,
        cache_dir: str | None = None,
        dataset_options: dict[str, Any] | None = None,
        **kwargs,
    ) -> KNNMonitor:
        """Monitor on ``dataset``'s train split (bank) and test split, optionally fixed random subsets of them.

        ``dataset_options``: more ``build_dataset`` keywords (``folder``, ``image_size``).
        """
        from hallucinator.data import build_dataset, eval_transform

        train = build_dataset(dataset, data_dir, "train", cache_dir=cache_dir, **(dataset_options or {}))
        test = build_dataset(dataset, data_dir, "test", cache_dir=cache_dir, **(dataset_options or {}))
        image_size = image_size or train.image_size[-1]
        # a streamed split (a big folder of one's own images) has no .images: batches are gathered from it
        return cls(
            *random_subset(getattr(train, "images", train), train.labels, bank_size),
            *random_subset(getattr(test, "images", test), test.labels, test_size),
            transform=eval_transform(dataset, image_size),
            **kwargs,
        )

    def evaluate(self, backbone: nn.Module, device: torch.device, progress: bool = False) -> tuple[KNNResult, Tensor]:
        """kNN of ``backbone`` over the bank and test set; ``progress`` shows a bar per extraction."""
        return knn_evaluate(
            backbone,
            self.train_images,
            self.train_labels,
            self.test_images,
            self.test_labels,
            transform=self.transform,
            k=self.k,
            temperature=self.temperature,
            batch_size=self.batch_size,
            device=device,
            precision=self.precision,
            progress=progress,
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        due = epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs
        if not due or trainer.sanity_checking:
            return
        if trainer.global_rank == 0:
            self.last, test_features = self.evaluate(_module_backbone(pl_module), pl_module.device)
            self.last_test_features = test_features  # the final evaluation reuses them (online linear probe)
            figures = {"knn_top1": self.last.top1, "knn_top5": self.last.top5}
            figures.update(uniformity_metrics(test_features))
            for name, value in figures.items():
                pl_module.log(name, value, on_step=False, on_epoch=True, rank_zero_only=True, sync_dist=False)
