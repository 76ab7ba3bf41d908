"""The images of a split in ImageFolder layout, from a directory or a tar archive, decoded once into the cache.

``train/<class>/*`` and ``test/<class>/*`` (or ``val/``), optionally ``unlabeled/*`` (added to
``pretrain`` with label -1), as a directory or a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive
(optionally under one top folder). Labels index the sorted class folders of ``train/``.
"""

from __future__ import annotations

import functools
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from hallucinator.data import cache
from hallucinator.data.datasets import ARCHIVE_SUFFIXES, IMAGE_EXTENSIONS, ImageDataset
from hallucinator.data.decode import decode_into, first_image_shape


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _split_folders(split: str, available: set[str]) -> list[str]:
    """Folders making up ``split`` in an ImageFolder layout (``unlabeled`` joins ``pretrain``)."""
    if split == "test":
        folder = "test" if "test" in available else "val"
        return [folder] if folder in available else []
    folders = ["train"] if "train" in available else []
    if split == "pretrain" and "unlabeled" in available:
        folders.append("unlabeled")
    return folders


@dataclass
class Listing:
    """The image files of one split: ``(name, bytes getter)``, labels, classes and source identity."""

    items: Sequence[tuple[str, Callable[[], bytes]]]
    labels: np.ndarray
    classes: list[str]
    identity: dict[str, object]


def _returning(blob: bytes) -> Callable[[], bytes]:
    """A getter of bytes already read (an archive member), like the file readers of a folder."""
    return lambda: blob


def _label_entries(
    entries: list[tuple[str, str, str]], folders: list[str], train_classes: set[str], where: str
) -> tuple[list[int], list[str], list[int]]:
    """``entries`` = (folder, class or '', name) -> order (sorted), classes (train's), labels.

    Labels index the sorted class folders of ``train/`` whatever the split, so train and test agree.
    """
    classes = sorted(train_classes) or sorted({cls for _, cls, _ in entries if cls})
    index = {name: i for i, name in enumerate(classes)}
    order = sorted(range(len(entries)), key=lambda i: (folders.index(entries[i][0]), entries[i][1], entries[i][2]))
    labels = []
    for i in order:
        folder, cls, name = entries[i]
        if folder == "unlabeled":
            labels.append(-1)
        elif cls not in index:
            raise ValueError(
                f"{where}: class folder {folder}/{cls} does not exist in train/ (classes {classes[:5]}...)"
            )
        else:
            labels.append(index[cls])
    return order, classes, labels


def _list_archive(path: Path, split: str) -> Listing:
    """Reads the images of ``split`` from a tar archive in ImageFolder layout (optionally under one top folder)."""
    entries: list[tuple[str, str, str]] = []
    blobs: list[bytes] = []
    with tarfile.open(path) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.lower().endswith(IMAGE_EXTENSIONS)]
        folders_seen: set[str] = set()
        train_classes: set[str] = set()
        for member in members:
            parts = Path(member.name).parts
            if len(parts) >= 3 and parts[-3] == "train":
                train_classes.add(parts[-2])
            for depth in (-3, -2):  # <split>/<class>/<file> or unlabeled/<file>
                if len(parts) >= -depth and parts[depth] in ("train", "test", "val", "unlabeled"):
                    folders_seen.add(parts[depth])
                    break
        folders = _split_folders(split, folders_seen)
        if not folders:
            raise FileNotFoundError(
                f"archive {path} has no {split} images: expected train/<class>/*, test/<class>/* (or val/) inside, "
                f"found top-level folders {sorted(folders_seen) or 'none'}"
            )
        for member in members:
            parts = Path(member.name).parts
            if len(parts) >= 3 and parts[-3] in folders and parts[-3] != "unlabeled":
                entries.append((parts[-3], parts[-2], member.name))
            elif len(parts) >= 2 and parts[-2] == "unlabeled" and "unlabeled" in folders:
                entries.append(("unlabeled", "", member.name))
            else:
                continue
            handle = archive.extractfile(member)
            assert handle is not None  # members are regular files (isfile() above)
            blobs.append(handle.read())
    order, classes, labels = _label_entries(entries, folders, train_classes, str(path))
    items = [(f"{path}:{entries[i][2]}", _returning(blobs[i])) for i in order]
    return Listing(items, np.asarray(labels, dtype=np.int64), classes, cache.fingerprint(path))


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))


def _list_folder(root: Path, split: str) -> Listing:
    """Lists the images of ``split`` in an ImageFolder directory."""
    available = {p.name for p in root.iterdir() if p.is_dir()}
    folders = _split_folders(split, available)
    if not folders:
        raise FileNotFoundError(f"{root} has no {split} images: expected train/<class>/*, test/<class>/* (or val/)")
    entries: list[tuple[str, str, str]] = []
    for folder in folders:
        if folder == "unlabeled":
            entries += [(folder, "", str(f)) for f in image_files(root / folder)]
            continue
        for class_dir in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
            entries += [(folder, class_dir.name, str(f)) for f in image_files(class_dir)]
    if not entries:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/{'+'.join(folders)}")
    train_classes = {p.name for p in (root / "train").iterdir() if p.is_dir()} if (root / "train").is_dir() else set()
    order, classes, labels = _label_entries(entries, folders, train_classes, str(root))
    files = [entries[i][2] for i in order]
    items = [(f, partial(Path.read_bytes, Path(f))) for f in files]
    return Listing(items, np.asarray(labels, dtype=np.int64), classes, cache.fingerprint(root, files))


def is_image_folder(root: Path) -> bool:
    """``train/<class>/<image>`` directly (Tiny ImageNet's native ``train/<wnid>/images/`` has ``wnids.txt``)."""
    train = root / "train"
    if not train.is_dir() or (root / "wnids.txt").is_file():
        return False
    return any(
        f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS)
        for class_dir in train.iterdir()
        if class_dir.is_dir()
        for f in class_dir.iterdir()
    )


def cached_listing(
    name: str, split: str, listing_fn: Callable[[], Listing], identity: dict[str, object], size: int | None, cache_dir
) -> ImageDataset:
    """Decodes a listing into the cache (only on a cache miss, when ``listing_fn`` is called at all)."""
    get = functools.cache(listing_fn)  # listed at most once, and only on a cache miss

    def shape() -> tuple[int, int, int, int]:
        h, w = first_image_shape(get().items, size)
        return (len(get().items), 3, h, w)

    def fill(out: np.ndarray) -> tuple[np.ndarray, list[str]]:
        decode_into(out, get().items, size)
        return get().labels, get().classes

    split_cache = cache.load_or_build(name, split, {**identity, "image_size": size}, shape, fill, cache_dir)
    return ImageDataset(split_cache.images, split_cache.labels, split_cache.classes, split_cache.images_path)


def image_folder_dataset(name: str, root: Path, split: str, size: int | None, cache_dir) -> ImageDataset:
    if is_archive(root):
        return cached_listing(name, split, lambda: _list_archive(root, split), cache.fingerprint(root), size, cache_dir)
    # A directory's identity needs its file list; listing is cheap next to decoding.
    listing = _list_folder(root, split)
    return cached_listing(name, split, lambda: listing, listing.identity, size, cache_dir)
