"""A pre-training checkpoint made ready for evaluation: its backbone on the device, and the evaluation data.

What ``hallucinator knn | linear | metrics | plot`` share: the options they take (:class:`EvaluationOptions`)
and what those options load (:class:`LoadedCheckpoint`).

Example:
    >>> loaded = LoadedCheckpoint(EvaluationOptions("runs/quickstart/checkpoints/last.ckpt", test_limit=1000))
    >>> (train_images, train_labels), (test_images, test_labels) = loaded.splits["train"], loaded.splits["test"]
    >>> features = extract_features(loaded.backbone, test_images, transform=loaded.transform, **loaded.extract)
    >>> loaded.save("knn", {"top1": 80.1})  # merged into RUN/evaluation.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hallucinator.backbones import channels_last_safe
from hallucinator.data import build_dataset, eval_transform
from hallucinator.engine.checkpoint import load_pretrained
from hallucinator.engine.datamodule import dataset_options
from hallucinator.evaluation.features import random_subset, resolve_device


@dataclass(frozen=True)
class EvaluationOptions:
    """Which checkpoint to evaluate, on what data and how (the evaluation commands' common arguments)."""

    checkpoint: str
    dataset: str | None = None  # None: the checkpoint's
    data_dir: str | None = None  # None: the checkpoint's data.data_dir (same dataset only)
    cache_dir: str | None = None
    device: str = "auto"
    precision: str = "32"
    batch_size: int = 512
    train_limit: int | None = None
    test_limit: int | None = None
    save: bool = True  # record the figures in RUN/evaluation.json
    progress: bool = True
    threads: int | None = None


class LoadedCheckpoint:
    """A checkpoint's backbone (on ``device``, channels-last where safe) and config, and the evaluation data the
    options select: ``splits[split] = (images, labels)``, ``transform`` (uint8 -> normalised float at
    ``image_size``) and ``extract``, the keywords of ``extract_features``.

    Raises ``ValueError`` naming the flag to set when the data cannot be found from the checkpoint alone.
    """

    def __init__(self, options: EvaluationOptions, splits: tuple[str, ...] = ("train", "test")) -> None:
        if options.threads:
            torch.set_num_threads(options.threads)
        self.device = resolve_device(options.device)
        self.backbone, self.config = load_pretrained(options.checkpoint)
        self.backbone.to(self.device)
        if channels_last_safe(self.backbone):  # about 2x faster feature extraction (docs/evaluation.md)
            self.backbone.to(memory_format=torch.channels_last)
        data = self.config.data
        self.dataset = options.dataset or data.dataset
        same = self.dataset == data.dataset
        data_dir = options.data_dir or (data.data_dir if same else None)
        if data_dir is None:
            raise ValueError(
                f"--data-dir is required for --dataset {self.dataset} (the checkpoint used {data.dataset})"
            )
        image_size = data.image_size if same else None
        limits = {"train": options.train_limit, "test": options.test_limit}
        self.splits = {}
        for split in splits:
            # the run's own data options (labels, held-out split, size of one's own images) when it is the same data
            shaping = dataset_options(data) if same else {}
            dataset = build_dataset(
                self.dataset, data_dir, split, cache_dir=options.cache_dir or data.cache_dir, **shaping
            )
            # a streamed dataset (ImageNet) has no .images: batches are gathered from it directly
            images = getattr(dataset, "images", dataset)
            self.splits[split] = random_subset(images, dataset.labels, limits[split])
            self.classes = list(dataset.classes)
            image_size = image_size or int(dataset[0][0].shape[-1])
        assert image_size is not None, "no split read and no data.image_size in the checkpoint's config"
        self.image_size = image_size
        self.transform = eval_transform(self.dataset, self.image_size)
        self.extract: dict[str, Any] = dict(
            batch_size=options.batch_size, device=self.device, precision=options.precision, progress=options.progress
        )
        self.run_dir = _run_dir(options.checkpoint) if options.save else None

    def save(self, key: str, figures: dict) -> None:
        """Merges ``figures`` into ``RUN/evaluation.json`` under ``key`` (unless the options said not to save)."""
        if self.run_dir is not None:
            from hallucinator.evaluation.report import save_evaluation

            save_evaluation(self.run_dir, key, {**figures, "dataset": self.dataset})


def _run_dir(checkpoint: str) -> Path | None:
    from hallucinator.evaluation.report import run_dir_of

    return run_dir_of(checkpoint)
