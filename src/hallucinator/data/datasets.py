"""The registry of named datasets and the two dataset classes that ``build_dataset(name, root, split)`` returns.

Where a dataset lives (``root``) may be, for any name:
- a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive or a directory in ImageFolder layout with
  ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``), optionally ``unlabeled/*`` (added to
  ``pretrain`` with label -1), e.g. ``cifar10`` at ``../shared/datasets/cifar10-jpeg.tar.gz``;
- the dataset's native format: the torchvision layouts for CIFAR-10/100 (``cifar-10-batches-py``,
  ``cifar-100-python``) and STL-10 (``stl10_binary``), read with torchvision's own classes
  (``download=True`` uses their downloaders); Tiny ImageNet's ``tiny-imagenet-200`` folder
  (``val/val_annotations.txt`` gives the validation labels); ImageNet as torchvision's
  ``ImageNet`` folder (devkit + ``train``/``val``) or plain ``train/<wnid>``/``val/<wnid>``.

Splits: ``pretrain`` (train, plus STL-10's unlabeled images), ``train``, ``test`` (Tiny ImageNet
and ImageNet: the labelled validation set).

Small datasets (everything but ImageNet) are decoded once into a memory-mapped uint8 cache (see
:mod:`hallucinator.data.cache`) and returned as :class:`ImageDataset`. ImageNet and ImageNet-200
stream from their files through :class:`FileImageDataset` (decoded with ``torchvision.io`` in
DataLoader workers).

Image sizes: named datasets store images at their native size (CIFAR 32, Tiny ImageNet 64,
STL-10 96): an image of another size is resized (shorter side) and centre-cropped to it;
``imagefolder`` archives keep the images' own size, which must be the same for all of them unless
``image_size`` is given (otherwise the first mismatching file is named in the error);
``imagefolder`` directories are one's own photos, read by :mod:`hallucinator.data.folder`
(mixed sizes, unlabeled folders, broken files, streaming). All images are converted to RGB
(grayscale replicated, alpha dropped, palettes expanded, 16-bit scaled to 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hallucinator.data import cache
from hallucinator.data.decode import read_file

__all__ = ["DATASETS", "SPLITS", "DatasetInfo", "FileImageDataset", "ImageDataset"]

SPLITS = ("pretrain", "train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    """What the library knows about a named dataset.

    ``image_size`` is the stored size (native size for small datasets, decode size for the
    streamed ImageNet); ``None`` keeps the images' own size. ``files`` says where the files go.
    """

    name: str
    num_classes: int | None
    image_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    streamed: bool
    files: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "cifar10",
            10,
            32,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            False,
            "ROOT/cifar-10-batches-py/ (torchvision's CIFAR10: data_batch_1..5, test_batch, batches.meta from "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted), or ROOT = an ImageFolder "
            "directory or .tar/.tar.gz archive with train/<class>/ and test/<class>/",
        ),
        DatasetInfo(
            "cifar100",
            100,
            32,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            False,
            "ROOT/cifar-100-python/ (torchvision's CIFAR100: train, test, meta from "
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extracted), or an ImageFolder directory/archive",
        ),
        DatasetInfo(
            "stl10",
            10,
            96,
            (0.4467, 0.4398, 0.4066),
            (0.2603, 0.2566, 0.2713),
            False,
            "ROOT/stl10_binary/ (torchvision's STL10: train_X.bin, train_y.bin, test_X.bin, test_y.bin, "
            "unlabeled_X.bin, class_names.txt from http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz, "
            "extracted), or an ImageFolder directory/archive (unlabeled/ optional)",
        ),
        DatasetInfo(
            "tiny-imagenet",
            200,
            64,
            (0.4802, 0.4481, 0.3975),
            (0.2770, 0.2691, 0.2821),
            False,
            "ROOT/tiny-imagenet-200/ or ROOT itself with wnids.txt, train/<wnid>/images/*.JPEG and "
            "val/images/*.JPEG + val/val_annotations.txt (http://cs231n.stanford.edu/tiny-imagenet-200.zip, "
            "unzipped; no download here), or an ImageFolder directory/archive",
        ),
        DatasetInfo(
            "imagenet",
            1000,
            256,
            _IMAGENET_MEAN,
            _IMAGENET_STD,
            True,
            "ROOT with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ImageFolder layout), or torchvision's ImageNet "
            "layout (ILSVRC2012_devkit_t12.tar.gz + ILSVRC2012_img_train.tar + ILSVRC2012_img_val.tar in ROOT; "
            "manual download from https://image-net.org)",
        ),
        DatasetInfo(
            "imagenet200",
            200,
            256,
            _IMAGENET_MEAN,
            _IMAGENET_STD,
            True,
            "as imagenet; the 200 classes are the authors' list (imagenet200_classes()), or class_list (a file "
            "with one wnid per line), or class_list='random': a seeded random choice (seed) of ImageNet's classes",
        ),
        DatasetInfo(
            "imagefolder",
            None,
            None,
            _IMAGENET_MEAN,
            _IMAGENET_STD,
            False,
            "ROOT = a folder of your own images in any layout (docs/data.md, 'Your own images'), or a .tar/.tar.gz "
            "archive with train/<class>/* and test/<class>/* (or val/), optionally unlabeled/*",
        ),
    )
}


def missing_error(info: DatasetInfo, root: Path, reason: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{info.name} not found at {root} ({reason}). Put the files here: {info.files}. "
        "With internet access, --data.download=true (download=True) fetches the torchvision-downloadable datasets "
        "(CIFAR, STL-10)."
    )


@dataclass
class FolderReport:
    """What :func:`hallucinator.data.folder.load_folder` did with a folder; ``lines()`` is what a run prints."""

    root: str
    split: str
    num_images: int
    num_classes: int
    ignored_files: int
    unreadable: list[str]
    image_size: str
    size_reason: str
    streamed: bool
    decoded_bytes: int
    budget_bytes: int

    def lines(self) -> list[str]:
        classes = f"{self.num_classes} classes" if self.num_classes else "unlabeled"
        gb = f"{self.decoded_bytes / 1e6:,.1f} MB decoded ({self.image_size} per image)"
        budget = f"data.memory_budget_gb={self.budget_bytes / 1e9:g}"
        path = (
            f"streaming from the files, decoded in DataLoader workers: {gb} is over {budget}"
            if self.streamed
            else f"decoded once into the memory-mapped cache: {gb}, within {budget}"
        )
        lines = [
            f"{self.root} ({self.split}): {self.num_images:,} images, {classes}; {path}",
            f"image size: {self.size_reason}",
        ]
        if self.ignored_files:
            lines.append(f"ignored {self.ignored_files} files that are not images (hidden files, other extensions)")
        if self.unreadable:
            lines.append(f"skipped {len(self.unreadable)} unreadable images (data.skip_unreadable=true)")
        return lines


class ImageDataset(torch.utils.data.Dataset):
    """An in-memory split: uint8 images ``(N, 3, H, W)`` (memory-mapped cache), int64 labels.

    ``dataset[i]`` gives one ``(image, label)``; ``dataset[index_tensor]`` gives a whole batch
    with one tensor gather. Labels are -1 for unlabeled images.

    Example:
        >>> from hallucinator.data import build_dataset
        >>> train = build_dataset("cifar10", "../shared/datasets/cifar10-jpeg.tar.gz", "train")  # doctest: +SKIP
        >>> images, labels = train[torch.arange(256)]  # (256, 3, 32, 32) uint8, (256,) int64  # doctest: +SKIP
    """

    def __init__(self, images: Tensor, labels: Tensor, classes: Sequence[str], images_path: Path | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)
        self._images_path = images_path
        self.report: FolderReport | None = None  # what hallucinator.data.folder did, for folders of one's own images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int | slice | Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        if not isinstance(index, (int, np.integer, slice)):
            index = torch.as_tensor(index, dtype=torch.long)
        return self.images[index], self.labels[index]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.images.shape[-2], self.images.shape[-1])

    def __getstate__(self) -> dict:
        # Workers started by spawn/forkserver re-open the memory map instead of receiving a pickled copy.
        state = self.__dict__.copy()
        if self._images_path is not None:
            state["images"] = state["labels"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.images is None:
            split = cache.open_split(self._images_path)
            self.images, self.labels = split.images, split.labels

    def __repr__(self) -> str:
        return f"ImageDataset({len(self)} images {tuple(self.images.shape[1:])}, {len(self.classes)} classes)"


class FileImageDataset(torch.utils.data.Dataset):
    """A streamed split: images decoded from their files on access, for datasets too big for memory.

    Same indexing as :class:`ImageDataset`; each image is decoded with ``torchvision.io`` (PIL
    for formats it cannot read), resized so its shorter side is ``image_size`` and centre-cropped
    to ``image_size x image_size``, so a batch is one uint8 tensor. Meant to be read by
    :func:`hallucinator.data.batch_loader` with ``num_workers > 0``.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        labels: Sequence[int],
        classes: Sequence[str],
        image_size: int,
    ) -> None:
        self.files = [str(f) for f in files]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.classes = list(classes)
        self.image_size = (image_size, image_size)
        self.report: FolderReport | None = None  # what hallucinator.data.folder did, for folders of one's own images

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> Tensor:
        return torch.from_numpy(read_file(self.files[i], self.image_size[0])).permute(2, 0, 1)

    def __getitem__(self, index: int | Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        if isinstance(index, (int, np.integer)):
            return self.load(int(index)), self.labels[index]
        index = torch.as_tensor(index, dtype=torch.long)
        loaded = [self.load(i) for i in index.tolist()]
        return torch.stack(loaded), self.labels[index]

    def __repr__(self) -> str:
        return f"FileImageDataset({len(self)} files, {len(self.classes)} classes, size {self.image_size})"
