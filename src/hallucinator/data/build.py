"""``build_dataset(name, root, split)``: any named dataset from wherever it lives (see :mod:`hallucinator.data.datasets`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hallucinator.data import native
from hallucinator.data.datasets import DATASETS, SPLITS, FileImageDataset, ImageDataset, missing_error
from hallucinator.data.listing import image_folder_dataset, is_archive, is_image_folder

if TYPE_CHECKING:
    from hallucinator.data.folder import FolderOptions


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    download: bool = False,
    cache_dir: str | Path | None = None,
    image_size: int | None = None,
    class_list: str | Path | Sequence[str] | None = None,
    seed: int = 0,
    folder: FolderOptions | None = None,
) -> ImageDataset | FileImageDataset:
    """The ``split`` (``pretrain`` | ``train`` | ``test``) of dataset ``name`` found at ``root``.

    ``image_size`` overrides the stored size (``imagefolder``: resize every image to it; ImageNet:
    the decode size, default 256). ``class_list`` chooses ImageNet-200's classes: ``None`` = the
    authors' 200 (:func:`imagenet200_classes`), a file of wnids or a list, or ``"random"`` = 200
    drawn with ``seed`` (the chosen wnids are ``dataset.classes``). ``cache_dir``: see
    :mod:`hallucinator.data.cache`. ``folder``: how an ``imagefolder`` directory (one's own photos,
    :mod:`hallucinator.data.folder`) is labeled, split, checked and stored.

    Example:
        >>> train = build_dataset("cifar10", "../shared/datasets/cifar10-jpeg.tar.gz", "pretrain")  # doctest: +SKIP
        >>> len(train), train.images.shape  # doctest: +SKIP
        (50000, torch.Size([50000, 3, 32, 32]))
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    info = DATASETS[name]
    root = Path(root).expanduser()
    size = image_size if image_size is not None else info.image_size
    if info.streamed:
        return native.imagenet(info, root, split, image_size, class_list, seed)
    if name == "imagefolder" and root.is_dir():
        from hallucinator.data.folder import FolderOptions, load_folder

        return load_folder(root, split, image_size=image_size, options=folder or FolderOptions(), cache_dir=cache_dir)
    if is_archive(root) or (root.is_dir() and is_image_folder(root)):
        return image_folder_dataset(name, root, split, size, cache_dir)
    if not root.exists() and not download:
        raise missing_error(info, root, "path does not exist")
    if name in ("cifar10", "cifar100"):
        return native.cifar(info, root, split, download, cache_dir)
    if name == "stl10":
        return native.stl10(info, root, split, download, cache_dir)
    if name == "tiny-imagenet":
        return native.tiny_imagenet(info, root, split, download, cache_dir)
    raise missing_error(info, root, "expected a directory or .tar/.tar.gz archive with train/ and test/ (or val/)")
