"""Datasets of the paper behind one call: ``build_dataset(name, root, split)``.

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

import io
import os
import random
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from hallucinator.data import cache

if TYPE_CHECKING:
    from hallucinator.data.folder import FolderOptions, FolderReport

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "FileImageDataset",
    "ImageDataset",
    "SPLITS",
    "build_dataset",
    "decode_image",
]

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


def _missing(info: DatasetInfo, root: Path, reason: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{info.name} not found at {root} ({reason}). Put the files here: {info.files}. "
        "With internet access, --data.download=true (download=True) fetches the torchvision-downloadable datasets "
        "(CIFAR, STL-10)."
    )


# ---------------------------------------------------------------------------------------------
# Datasets


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
        return torch.from_numpy(_read_file(self.files[i], self.image_size[0])).permute(2, 0, 1)

    def __getitem__(self, index: int | Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        if isinstance(index, (int, np.integer)):
            return self.load(int(index)), self.labels[index]
        index = torch.as_tensor(index, dtype=torch.long)
        loaded = [self.load(i) for i in index.tolist()]
        return torch.stack(loaded), self.labels[index]

    def __repr__(self) -> str:
        return f"FileImageDataset({len(self)} files, {len(self.classes)} classes, size {self.image_size})"


# ---------------------------------------------------------------------------------------------
# Decoding


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (antialiased), then the central ``size x size`` square."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _scale_16_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale (PIL modes ``I;16*``, ``I``) to 8-bit ``L``: PIL's own conversion clips at 255."""
    pixels = np.asarray(image).astype(np.int64)
    return Image.fromarray(np.clip((pixels + 128) // 257, 0, 255).astype(np.uint8), mode="L")


def decode_image(data: bytes, name: str, size: int | None = None) -> np.ndarray:
    """Decodes image bytes to RGB uint8 ``(H, W, 3)``, resized by :func:`_fit` when ``size`` is set.

    Any mode is converted to RGB (palette with transparency via RGBA; alpha is dropped; 16-bit
    values divided by 257); an EXIF orientation is applied first. A file PIL cannot decode raises ``ValueError`` naming ``name``.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                image = ImageOps.exif_transpose(image)  # phone photos: upright, as image viewers show them
            if image.mode.startswith("I"):
                image = _scale_16_bit(image)
            if image.mode == "P":
                image = image.convert("RGBA")
            image = image.convert("RGB")
            if size is not None:
                image = _fit(image, size)
            return np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ValueError(
            f"cannot decode image {name}: {error} (corrupt or not an image: delete or replace it)"
        ) from error


def _read_file(path: str, size: int) -> np.ndarray:
    """Decodes one file for streaming: torchvision.io for JPEG/PNG, PIL for the rest or on failure."""
    from torchvision import io as tvio
    from torchvision.transforms.v2 import functional as TF

    if path.lower().endswith((".jpg", ".jpeg", ".png")):
        try:
            image = tvio.decode_image(tvio.read_file(path), mode=tvio.ImageReadMode.RGB, apply_exif_orientation=True)
            if image.dtype != torch.uint8:
                raise RuntimeError("16-bit PNG")  # PIL below scales it to 8 bits
            image = TF.center_crop(TF.resize(image, size, antialias=True), [size, size])
            return image.permute(1, 2, 0).numpy()
        except RuntimeError:
            pass  # CMYK JPEGs and other oddities: PIL below decodes them or names the file
    return np.array(decode_image(Path(path).read_bytes(), path, size))  # writable, for torch.from_numpy


def _decode_into(out: np.ndarray, items: Sequence[tuple[str, Callable[[], bytes]]], size: int | None) -> None:
    """Decodes ``items`` (name, bytes getter) into ``out`` (N, 3, H, W), in a few threads (PIL releases the GIL)."""
    expected = out.shape[2:]

    def work(i: int) -> None:
        name, read = items[i]
        pixels = decode_image(read(), name, size)
        if pixels.shape[:2] != expected:
            raise ValueError(
                f"image {name} is {pixels.shape[1]}x{pixels.shape[0]}, but the first image of the split is "
                f"{expected[1]}x{expected[0]}: set --data.image_size=S (build_dataset(image_size=S)) to resize every image to SxS"
            )
        out[i] = pixels.transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in pool.map(work, range(len(items)), chunksize=256):
            pass


def _first_image_shape(items: Sequence[tuple[str, Callable[[], bytes]]], size: int | None) -> tuple[int, int]:
    if size is not None:
        return size, size
    name, read = items[0]
    return decode_image(read(), name).shape[:2]


# ---------------------------------------------------------------------------------------------
# ImageFolder layout, as a directory or a tar archive


def _is_archive(path: Path) -> bool:
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
class _Listing:
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


def _list_archive(path: Path, split: str) -> _Listing:
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
    return _Listing(items, np.asarray(labels, dtype=np.int64), classes, cache.fingerprint(path))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))


def _list_folder(root: Path, split: str) -> _Listing:
    """Lists the images of ``split`` in an ImageFolder directory."""
    available = {p.name for p in root.iterdir() if p.is_dir()}
    folders = _split_folders(split, available)
    if not folders:
        raise FileNotFoundError(f"{root} has no {split} images: expected train/<class>/*, test/<class>/* (or val/)")
    entries: list[tuple[str, str, str]] = []
    for folder in folders:
        if folder == "unlabeled":
            entries += [(folder, "", str(f)) for f in _image_files(root / folder)]
            continue
        for class_dir in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
            entries += [(folder, class_dir.name, str(f)) for f in _image_files(class_dir)]
    if not entries:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/{'+'.join(folders)}")
    train_classes = {p.name for p in (root / "train").iterdir() if p.is_dir()} if (root / "train").is_dir() else set()
    order, classes, labels = _label_entries(entries, folders, train_classes, str(root))
    files = [entries[i][2] for i in order]
    items = [(f, partial(Path.read_bytes, Path(f))) for f in files]
    return _Listing(items, np.asarray(labels, dtype=np.int64), classes, cache.fingerprint(root, files))


def _is_image_folder(root: Path) -> bool:
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


def _cached_listing(
    name: str, split: str, listing_fn: Callable[[], _Listing], identity: dict[str, object], size: int | None, cache_dir
) -> ImageDataset:
    """Decodes a listing into the cache (only on a cache miss, when ``listing_fn`` is called at all)."""
    listing: list[_Listing] = []

    def get() -> _Listing:
        if not listing:
            listing.append(listing_fn())
        return listing[0]

    def shape() -> tuple[int, int, int, int]:
        h, w = _first_image_shape(get().items, size)
        return (len(get().items), 3, h, w)

    def fill(out: np.ndarray) -> tuple[np.ndarray, list[str]]:
        _decode_into(out, get().items, size)
        return get().labels, get().classes

    split_cache = cache.load_or_build(name, split, {**identity, "image_size": size}, shape, fill, cache_dir)
    return ImageDataset(split_cache.images, split_cache.labels, split_cache.classes, split_cache.images_path)


def _image_folder(name: str, root: Path, split: str, size: int | None, cache_dir) -> ImageDataset:
    if _is_archive(root):
        return _cached_listing(
            name, split, lambda: _list_archive(root, split), cache.fingerprint(root), size, cache_dir
        )
    # A directory's identity needs its file list; listing is cheap next to decoding.
    listing = _list_folder(root, split)
    return _cached_listing(name, split, lambda: listing, listing.identity, size, cache_dir)


# ---------------------------------------------------------------------------------------------
# Native formats


def _from_arrays(
    name: str, split: str, source: Path, load: Callable[[], tuple[np.ndarray, np.ndarray, list[str]]], cache_dir
) -> ImageDataset:
    """Caches arrays already decoded by a torchvision dataset class (``load`` -> NCHW uint8, labels, classes)."""
    loaded: list = []

    def get():
        if not loaded:
            loaded.append(load())
        return loaded[0]

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
        raise _missing(info, root, str(error)) from error
    except OSError as error:  # no network while downloading
        raise _missing(info, root, f"download failed: {error}") from error


def _cifar(info: DatasetInfo, root: Path, split: str, download: bool, cache_dir) -> ImageDataset:
    from torchvision import datasets as tvd

    factory, folder = (
        (tvd.CIFAR10, "cifar-10-batches-py") if info.name == "cifar10" else (tvd.CIFAR100, "cifar-100-python")
    )
    if root.name == folder:
        root = root.parent
    if not (root / folder).is_dir() and not download:
        raise _missing(info, root, f"no {folder}/ folder")
    train = split != "test"

    def load():
        data = _torchvision(info, factory, root, download, train=train)
        return data.data.transpose(0, 3, 1, 2), np.asarray(data.targets, dtype=np.int64), list(data.classes)

    if download:
        load()  # fetch before fingerprinting the folder
    return _from_arrays(info.name, "test" if split == "test" else "train", root / folder, load, cache_dir)


def _stl10(info: DatasetInfo, root: Path, split: str, download: bool, cache_dir) -> ImageDataset:
    from torchvision import datasets as tvd

    if root.name == "stl10_binary":
        root = root.parent
    if not (root / "stl10_binary").is_dir() and not download:
        raise _missing(info, root, "no stl10_binary/ folder")
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


def _tiny_imagenet(info: DatasetInfo, root: Path, split: str, download: bool, cache_dir) -> ImageDataset:
    native = _tiny_imagenet_root(root)
    if native is None:
        reason = "no wnids.txt and train/ (and no ImageFolder train/ + test/)"
        raise _missing(info, root, reason + ("; torchvision has no downloader for it" if download else ""))
    wnids = sorted(native.joinpath("wnids.txt").read_text().split())
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if split == "test":
        annotations = native / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise _missing(info, native, "no val/val_annotations.txt")
        rows = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
        files = [native / "val" / "images" / row[0] for row in rows]
        labels = [index[row[1]] for row in rows]
    else:
        files, labels = [], []
        for wnid in wnids:
            found = _image_files(native / "train" / wnid)
            files += found
            labels += [index[wnid]] * len(found)
    items = [(str(f), partial(Path.read_bytes, f)) for f in files]
    listing = _Listing(
        items,
        np.asarray(labels, dtype=np.int64),
        wnids,
        cache.fingerprint(native, files),
    )
    return _cached_listing(
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
            raise _missing(info, root, str(error)) from error
        return [file for file, _ in data.samples], [label for _, label in data.samples], list(data.wnids)
    split_dir = root / folder
    if not split_dir.is_dir():
        raise _missing(info, root, f"no {folder}/ folder")
    wnids = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if split == "test":  # label order must be train's
        train_dir = root / "train"
        wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir()) if train_dir.is_dir() else wnids
    files: list[str] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        found = _image_files(split_dir / wnid) if (split_dir / wnid).is_dir() else []
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


def _imagenet(
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
        raise _missing(info, root, "no images found")
    size = image_size or info.image_size
    assert size is not None  # ImageNet's entries name their decode size
    return FileImageDataset(files, labels, wnids, size)


# ---------------------------------------------------------------------------------------------


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
        return _imagenet(info, root, split, image_size, class_list, seed)
    if name == "imagefolder" and root.is_dir():
        from hallucinator.data.folder import FolderOptions, load_folder

        return load_folder(root, split, image_size=image_size, options=folder or FolderOptions(), cache_dir=cache_dir)
    if _is_archive(root) or (root.is_dir() and _is_image_folder(root)):
        return _image_folder(name, root, split, size, cache_dir)
    if not root.exists() and not download:
        raise _missing(info, root, "path does not exist")
    if name in ("cifar10", "cifar100"):
        return _cifar(info, root, split, download, cache_dir)
    if name == "stl10":
        return _stl10(info, root, split, download, cache_dir)
    if name == "tiny-imagenet":
        return _tiny_imagenet(info, root, split, download, cache_dir)
    raise _missing(info, root, "expected a directory or .tar/.tar.gz archive with train/ and test/ (or val/)")
