"""The datasets' native formats: CIFAR-10/100 and STL-10 through torchvision's classes, Tiny ImageNet's
``tiny-imagenet-200`` folder, and ImageNet (torchvision's layout or ``train``/``val`` class folders, streamed)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from hallucinator.data import cache
from hallucinator.data.datasets import DatasetInfo, FileImageDataset, ImageDataset, missing_error
from hallucinator.data.listing import Listing, cached_listing, image_files


def _from_arrays(
    name: str, split: str, source: Path, load: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]], cache_dir
) -> ImageDataset:
    """Caches arrays already decoded by a torchvision dataset class (``load`` -> NCHW uint8, labels, classes)."""
    get = functools.cache(load)  # torchvision reads the files at most once, and only on a cache miss

    def fill(out: np.ndarray) -> tuple[np.ndarray, list[str]]:
        images, labels, classes = get()
        out[:] = images
        return labels, classes

    files = sorted(p for p in source.rglob("*") if p.is_file())
    split_cache = cache.load_or_build(
        name, split, cache.fingerprint(source, files), lambda: get()[0].shape, fill, cache_dir
    )
    return ImageDataset(split_cache.images, split_cache.labels, split_cache.classes, split_cache.images_path)


def _torchvision(info: DatasetInfo, factory: Callable[..., object], root: Path, download: bool, **kwargs):
    try:
        return factory(root=str(root), download=download, **kwargs)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise missing_error(info, root, str(error)) from error
    except OSError as error:  # no network while downloading
        raise missing_error(info, root, f"download failed: {error}") from error


def cifar(info: DatasetInfo, root: Path, split: str, download: bool, cache_dir) -> ImageDataset:
    from torchvision import datasets as tvd

    factory, folder = (
        (tvd.CIFAR10, "cifar-10-batches-py") if info.name == "cifar10" else (tvd.CIFAR100, "cifar-100-python")
    )
    if root.name == folder:
        root = root.parent
    if not (root / folder).is_dir() and not download:
        raise missing_error(info, root, f"no {folder}/ folder")
    train = split != "test"

    def load():
        data = _torchvision(info, factory, root, download, train=train)
        return data.data.transpose(0, 3, 1, 2), np.asarray(data.targets, dtype=np.int64), list(data.classes)

    if download:
        load()  # fetch before fingerprinting the folder
    return _from_arrays(info.name, "test" if split == "test" else "train", root / folder, load, cache_dir)


def stl10(info: DatasetInfo, root: Path, split: str, download: bool, cache_dir) -> ImageDataset:
    from torchvision import datasets as tvd

    if root.name == "stl10_binary":
        root = root.parent
    if not (root / "stl10_binary").is_dir() and not download:
        raise missing_error(info, root, "no stl10_binary/ folder")
    tv_split = {"pretrain": "train+unlabeled", "train": "train", "test": "test"}[split]

    def load():
        data = _torchvision(info, tvd.STL10, root, download, split=tv_split)
        labels = np.asarray(data.labels, dtype=np.int64)  # torchvision already uses -1 for unlabeled
        return np.ascontiguousarray(data.data), labels, list(data.classes)

    if download:
        load()
    return _from_arrays(info.name, split, root / "stl10_binary", load, cache_dir)


def _tiny_imagenet_root(root: Path) -> Path | None:
    for candidate in (root, root / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file() and (candidate / "train").is_dir():
            return candidate
    return None


def tiny_imagenet(info: DatasetInfo, root: Path, split: str, download: bool, cache_dir) -> ImageDataset:
    native = _tiny_imagenet_root(root)
    if native is None:
        reason = "no wnids.txt and train/ (and no ImageFolder train/ + test/)"
        raise missing_error(info, root, reason + ("; torchvision has no downloader for it" if download else ""))
    wnids = sorted(native.joinpath("wnids.txt").read_text().split())
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if split == "test":
        annotations = native / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise missing_error(info, native, "no val/val_annotations.txt")
        rows = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
        files = [native / "val" / "images" / row[0] for row in rows]
        labels = [index[row[1]] for row in rows]
    else:
        files, labels = [], []
        for wnid in wnids:
            found = image_files(native / "train" / wnid)
            files += found
            labels += [index[wnid]] * len(found)
    items = [(str(f), partial(Path.read_bytes, f)) for f in files]
    listing = Listing(
        items,
        np.asarray(labels, dtype=np.int64),
        wnids,
        cache.fingerprint(native, files),
    )
    return cached_listing(
        info.name, "test" if split == "test" else "train", lambda: listing, listing.identity, info.image_size, cache_dir
    )


def _imagenet_samples(info: DatasetInfo, root: Path, split: str) -> tuple[list[str], list[int], list[str]]:
    """(files, labels, wnids) of ImageNet's train or val split."""
    folder = "val" if split == "test" else "train"
    if (root / "meta.bin").is_file() or (root / "ILSVRC2012_devkit_t12.tar.gz").is_file():
        from torchvision import datasets as tvd

        try:
            data = tvd.ImageNet(str(root), split=folder)
        except (RuntimeError, OSError) as error:
            raise missing_error(info, root, str(error)) from error
        return [file for file, _ in data.samples], [label for _, label in data.samples], list(data.wnids)
    split_dir = root / folder
    if not split_dir.is_dir():
        raise missing_error(info, root, f"no {folder}/ folder")
    wnids = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if split == "test":  # label order must be train's
        train_dir = root / "train"
        wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir()) if train_dir.is_dir() else wnids
    files: list[str] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        found = image_files(split_dir / wnid) if (split_dir / wnid).is_dir() else []
        files += [str(f) for f in found]
        labels += [label] * len(found)
    return files, labels, wnids


def imagenet200_classes() -> list[str]:
    """The 200 WordNet ids of the authors' ImageNet-200 (their ``imagenet200.class``), ImageNet-200's default."""
    return _read_class_list(Path(__file__).with_name("imagenet200.class"))


def _read_class_list(class_list: str | Path | Sequence[str]) -> list[str]:
    if isinstance(class_list, (str, Path)):
        if not Path(class_list).is_file():
            raise ValueError(f"no class list file {class_list} (one wnid per line; data.class_list, --class-list)")
        return [line.strip() for line in Path(class_list).read_text().splitlines() if line.strip()]
    return list(class_list)


def imagenet(
    info: DatasetInfo,
    root: Path,
    split: str,
    image_size: int | None,
    class_list: str | Path | Sequence[str] | None,
    seed: int,
) -> FileImageDataset:
    files, labels, wnids = _imagenet_samples(info, root, split)
    if info.name == "imagenet200":
        if class_list == "random":
            if len(wnids) < 200:
                raise ValueError(f"imagenet200 needs at least 200 classes, {root} has {len(wnids)}")
            chosen = sorted(random.Random(seed).sample(wnids, 200))
        else:
            chosen = imagenet200_classes() if class_list is None else _read_class_list(class_list)
            unknown = sorted(set(chosen) - set(wnids))
            if unknown:
                raise ValueError(
                    f"the class list names {len(unknown)} classes not in {root}: {unknown[:5]}; "
                    "set data.class_list to a file of wnids that are there, or to random"
                )
        remap = {wnids.index(wnid): i for i, wnid in enumerate(chosen)}
        keep = [i for i, label in enumerate(labels) if label in remap]
        files = [files[i] for i in keep]
        labels = [remap[labels[i]] for i in keep]
        wnids = chosen
    if not files:
        raise missing_error(info, root, "no images found")
    size = image_size or info.image_size
    assert size is not None  # ImageNet's entries name their decode size
    return FileImageDataset(files, labels, wnids, size)
