"""The pre-training data of a run: the configured split, its ``data.limit`` subset and its batches.

The batches are :func:`hallucinator.data.batch_loader`'s (order a pure function of seed and step:
resumable mid-epoch, sliced per DDP process), on the training device (:func:`on_device`); this
module adds what the config decides and errors that name its keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from hallucinator.data.loader import StepBatches, batch_loader
from hallucinator.engine.config import Config, ConfigError, DataConfig
from hallucinator.engine.device_data import on_device


def dataset_options(d: DataConfig) -> dict[str, Any]:
    """The ``build_dataset`` keywords that ``data.*`` sets beyond name, root, split, download and cache.

    ``image_size`` is the stored size only for ``imagefolder`` (one's own photos): named datasets keep
    their native storage (ImageNet its 256 px decode) and the transforms resize. ``class_list``
    chooses ImageNet-200's classes (other datasets ignore it).
    """
    from hallucinator.data.folder import FolderOptions

    folder = FolderOptions(
        labels=d.labels,
        holdout_fraction=d.holdout_fraction,
        skip_unreadable=d.skip_unreadable,
        memory_budget_gb=d.memory_budget_gb,
    )
    return {
        "folder": folder,
        "image_size": d.image_size if d.dataset == "imagefolder" else None,
        "class_list": d.class_list,
    }


def build_split(d: DataConfig, split: str) -> Any:
    """``split`` of the configured dataset; bad data is a ``ConfigError`` naming the keys to fix."""
    from hallucinator.data import build_dataset

    try:
        return build_dataset(
            d.dataset, d.data_dir, split, download=d.download, cache_dir=d.cache_dir, **dataset_options(d)
        )
    except (ValueError, KeyError) as error:
        message = str(error)
        named = "--data" in message or message.startswith("data.")  # already names the flag that fixes it
        raise ConfigError(message if named else f"data.dataset / data.data_dir: {message}") from error


def streaming_workers(d: DataConfig, dataset: object) -> int:
    """``data.num_workers``; 0 on a streamed dataset becomes one worker per core, at most 4 (decoding is per image)."""
    from hallucinator.data import FileImageDataset

    if d.num_workers or not isinstance(dataset, FileImageDataset):
        return d.num_workers
    return min(4, os.cpu_count() or 1)


@rank_zero_only
def _announce_folder(config: Config, dataset: Any) -> None:
    """Says what was done with a folder of one's own images; lists skipped files in ``RUN/unreadable.txt``."""
    report = dataset.report
    for line in report.lines():
        print(line, flush=True)
    if report.streamed:
        print(
            f"decoding in {streaming_workers(config.data, dataset)} DataLoader workers (data.num_workers)", flush=True
        )
    if report.unreadable:
        listing = Path(config.output_dir) / "unreadable.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{name}\n" for name in report.unreadable))
        print(f"the skipped images are listed in {listing}", flush=True)


class PretrainDataModule(pl.LightningDataModule):
    """The pre-training split of ``config.data.dataset`` as :func:`~hallucinator.data.batch_loader` batches.

    Example:
        >>> datamodule = PretrainDataModule(config)
        >>> datamodule.prepare_data()  # decode / cache once
    """

    def __init__(self, config: Config, dataset: Any = None) -> None:
        super().__init__()
        self.config = config
        self.dataset = dataset

    def load(self) -> Any:
        if self.dataset is None:
            self.dataset = build_split(self.config.data, "pretrain")
            if getattr(self.dataset, "report", None) is not None:
                _announce_folder(self.config, self.dataset)
        return self.dataset

    def subset(self) -> torch.Tensor | None:
        """``data.limit``: a seeded (``seed``), class-stratified subset of the pre-training images."""
        from hallucinator.data.subset import stratified_subset

        dataset, limit = self.load(), self.config.data.limit
        if not limit or limit >= len(dataset):
            return None
        return stratified_subset(dataset.labels, limit, self.config.seed)

    def steps_per_epoch(self) -> int:
        subset = self.subset()
        return (len(self.load()) if subset is None else len(subset)) // self.config.data.batch_size

    def batches(self, rank: int, world_size: int, position: Callable[[], int]) -> StepBatches:
        """Process ``rank`` of ``world_size``'s pre-training batches (on the CPU), from global step ``position()``.

        Example:
            >>> batches = datamodule.batches(0, 1, position=lambda: 0)
            >>> images, labels = next(iter(batches))  # (B, 3, 32, 32) uint8, (B,) int64 (-1: unlabelled)
        """
        d, dataset, subset = self.config.data, self.load(), self.subset()
        if d.batch_size % world_size:
            raise ConfigError(
                f"data.batch_size: the global batch {d.batch_size} does not split over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        images = len(dataset) if subset is None else len(subset)
        if images < d.batch_size:
            raise ConfigError(f"data.batch_size: {d.batch_size} is larger than the {images} pre-training images")
        return batch_loader(
            dataset,
            d.batch_size,
            shuffle=True,
            drop_last=True,
            seed=self.config.seed,
            rank=rank,
            world_size=world_size,
            position=position,
            subset=subset,
            num_workers=streaming_workers(d, dataset),
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        trainer = self.trainer
        assert trainer is not None  # Lightning attaches the trainer before asking for the loader
        batches = self.batches(trainer.global_rank, trainer.world_size, position=lambda: trainer.global_step)
        return on_device(batches, trainer.strategy.root_device)  # on a GPU: resident or prefetched
