"""Your own images: a folder of photos of any sizes, modes and layout as a dataset.

Three layouts (``FolderOptions.labels`` = ``data.labels``)::

    photos/**/*.jpg                          unlabeled (auto: no class folders; or labels "none":
                                             sub-folders are plain sub-directories)
    photos/cats/*.jpg, photos/dogs/*.png     labeled by the first-level folder (auto, or "folders")
    photos/train/<class>/*, test/<class>/*   ImageFolder layout (val/ for test; unlabeled/* joins pretrain)

A labeled folder without ``test/`` holds out a seeded, class-stratified ``holdout_fraction``
of its images as the test split (0: it has no test split). Hidden files (``.DS_Store``) and
files that are not images (``.txt``) are ignored and counted. Every image is probed once
(header and a reduced-scale decode, cached by the folder's fingerprint): unreadable files
stop the run, all named, unless ``skip_unreadable``. Images are stored at ``image_size``
(shorter side resized, centre crop); unset, equal square images up to 224 px keep their size and
anything else gets the median shorter side, at most 224. A split whose decoded pixels (``N x 3 x S x S`` bytes) fit in ``memory_budget_gb`` is
decoded once into the memory-mapped cache; a bigger one streams from its files
(:class:`FileImageDataset`, decoded in DataLoader workers). ``dataset.report`` says what was done.

Example:
    >>> from hallucinator.data import build_dataset
    >>> photos = build_dataset("imagefolder", "~/photos", "pretrain", image_size=64,
    ...                        folder=FolderOptions(skip_unreadable=True))  # doctest: +SKIP
    >>> print("\\n".join(photos.report.lines()))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hallucinator.data import cache
from hallucinator.data.datasets import IMAGE_EXTENSIONS, FileImageDataset, FolderReport, ImageDataset
from hallucinator.data.listing import Listing, cached_listing
from hallucinator.data.subset import stratified_subset

__all__ = [
    "LABEL_MODES",
    "FolderOptions",
    "FolderReport",
    "choose_image_size",
    "load_folder",
    "missing_test_split",
    "probe",
    "readable",
    "scan_folder",
    "subfolder_labels",
    "unreadable_error",
]

LABEL_MODES = ("auto", "folders", "none")
# Default size on mixed sizes: the median shorter side, but never above the ImageNet recipes' crop.
MAX_DEFAULT_SIZE = 224


@dataclass(frozen=True)
class FolderOptions:
    """How a folder of one's own images becomes a dataset (the ``data.*`` keys of the same names)."""

    labels: str = "auto"
    holdout_fraction: float = 0.0
    skip_unreadable: bool = False
    memory_budget_gb: float = 4.0
    holdout_seed: int = 0

    def __post_init__(self) -> None:
        if self.labels not in LABEL_MODES:
            raise ValueError(f"data.labels: {self.labels!r} is not one of {list(LABEL_MODES)}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"data.holdout_fraction: must be in [0, 1), got {self.holdout_fraction}")


@dataclass
class FolderScan:
    """The image files of one split: paths, names relative to the root, labels (-1: unlabeled), classes."""

    root: Path
    files: list[Path]
    names: list[str]
    labels: list[int]
    classes: list[str]
    ignored_files: int


# ---------------------------------------------------------------------------------------------
# Listing


def _walk(folder: Path) -> tuple[list[Path], int]:
    """Image files under ``folder`` (sorted) and the number of entries ignored (hidden, not images)."""
    images, ignored = [], 0
    for directory, subdirs, filenames in os.walk(folder):
        ignored += sum(name.startswith(".") for name in subdirs)
        subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                ignored += 1
            else:
                images.append(Path(directory, name))
    return sorted(images), ignored


def _class_of(file: Path, folder: Path) -> str | None:
    parts = file.relative_to(folder).parts
    return parts[0] if len(parts) > 1 else None


def _labeled(files: list[Path], folder: Path, mode: str, imagefolder: bool) -> bool:
    if mode != "auto":
        return mode == "folders"
    if imagefolder:
        return True
    classes = {_class_of(f, folder) for f in files}
    return None not in classes and len(classes) >= 2


def _label(files: list[Path], folder: Path, classes: list[str] | None, where: str) -> tuple[list[int], list[str]]:
    found = [_class_of(f, folder) for f in files]
    loose = [f for f, name in zip(files, found) if name is None]
    if loose:
        raise ValueError(
            f"{where}: {len(loose)} images are not in a class folder (e.g. {loose[0].name}); move them into "
            "<class>/ folders, or set --data.labels=none to train without labels"
        )
    names = [name for name in found if name is not None]  # all of them, after the check above
    classes = classes if classes is not None else sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"{where}: class folders {unknown[:5]} are not in train/ (classes {classes[:5]}...)")
    return [index[name] for name in names], classes


def scan_folder(root: str | Path, split: str, options: FolderOptions = FolderOptions()) -> FolderScan:
    """Lists the images of ``split`` (``pretrain`` | ``train`` | ``test``) in ``root``; decodes nothing.

    Raises ``FileNotFoundError`` when there is no such folder, no image or (for ``test``) no test split.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {root}: no such folder")
    imagefolder = options.labels != "none" and (root / "train").is_dir()
    pool = root / "train" if imagefolder else root
    files, ignored = _walk(pool)
    if not files:
        raise FileNotFoundError(f"--data-dir {root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {pool}")
    labeled = _labeled(files, pool, options.labels, imagefolder)
    labels, classes = _label(files, pool, None, str(pool)) if labeled else ([-1] * len(files), [])
    test_dir = next((root / name for name in ("test", "val") if imagefolder and (root / name).is_dir()), None)
    if options.holdout_fraction and test_dir is None:
        if not labeled:
            raise ValueError(
                f"data.holdout_fraction: {root} has no class folders, so a held-out split has no labels to "
                "evaluate; set it to 0 (or put the images into <class>/ folders)"
            )
        held = torch.zeros(len(files), dtype=torch.bool)
        size = max(1, round(options.holdout_fraction * len(files)))
        held[stratified_subset(torch.tensor(labels), size, options.holdout_seed)] = True
        keep = held if split == "test" else ~held
        files = [f for f, k in zip(files, keep.tolist()) if k]
        labels = [y for y, k in zip(labels, keep.tolist()) if k]
    elif split == "test":
        if test_dir is None:
            raise FileNotFoundError(f"{root} has no test split: {missing_test_split(root, options)}")
        files, ignored = _walk(test_dir)
        labels, classes = _label(files, test_dir, classes, str(test_dir))
    if split == "pretrain" and imagefolder and (root / "unlabeled").is_dir():
        extra, extra_ignored = _walk(root / "unlabeled")
        files, labels, ignored = files + extra, labels + [-1] * len(extra), ignored + extra_ignored
    names = [f.relative_to(root).as_posix() for f in files]
    return FolderScan(root, files, names, labels, classes, ignored)


def subfolder_labels(root: str | Path, files: list[Path]) -> tuple[list[int], list[str]]:
    """Labels of ``files`` by their first-level folder under ``root`` (``photos/cats/*.jpg``: class ``cats``), by
    ``data.labels: auto``'s rule: when every image is in one and there are at least two; else all -1 and no classes.
    """
    root = Path(root).expanduser()
    if not _labeled(files, root, "auto", imagefolder=False):
        return [-1] * len(files), []
    return _label(files, root, None, str(root))


def missing_test_split(root: str | Path, options: FolderOptions = FolderOptions()) -> str | None:
    """Why ``root`` has no labeled test split for kNN (``None`` when it has one): the line a run prints."""
    root = Path(root).expanduser()
    scan = scan_folder(root, "pretrain", options)
    if not scan.classes:
        return f"{root} has no labels (no class folders, or data.labels=none)"
    has_test = (root / "train").is_dir() and any((root / name).is_dir() for name in ("test", "val"))
    if has_test or options.holdout_fraction:
        return None
    return f"{root} has no test/ folder; set --data.holdout_fraction=0.1 to hold out 10% of the images for kNN"


# ---------------------------------------------------------------------------------------------
# Probing: which files decode, and their sizes


def _probe_file(path: Path) -> list[int] | str:
    """``[width, height]`` of an image that decodes, else the reason it does not."""
    try:
        with Image.open(path) as image:
            size = list(image.size)
            image.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG: decode at 1/8 scale
            image.load()
        return size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"


def probe(scan: FolderScan, cache_dir: str | Path | None = None) -> dict[str, list[int] | str]:
    """``{name: [width, height] or error}`` for every file of ``scan``, cached by the files' fingerprint."""
    identity = {**cache.fingerprint(scan.root, scan.files), "names": scan.names}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = (Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()) / f"imagefolder-probe-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = dict(zip(scan.names, pool.map(_probe_file, scan.files, chunksize=64)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(results))
    os.replace(tmp, path)
    return results


def unreadable_error(
    root: Path, failures: dict[str, str], skip_flag: str = "--data.skip_unreadable=true"
) -> ValueError:
    """One line naming every unreadable file (``{name: reason}``), the first reason, and the flag that skips them."""
    first = next(iter(failures.values()))
    return ValueError(
        f"{len(failures)} unreadable images in {root}: {', '.join(failures)} (the first: {first}); delete or "
        f"replace them, or pass {skip_flag} to go on without them"
    )


def readable(
    scan: FolderScan, probed: dict[str, list[int] | str], skip: bool, skip_flag: str = "--data.skip_unreadable=true"
) -> tuple[FolderScan, list[str]]:
    """``scan`` without its unreadable files and their sorted names; unless ``skip``, one error naming them all."""
    failures = {name: result for name, result in probed.items() if isinstance(result, str)}
    if failures and not skip:
        raise unreadable_error(scan.root, failures, skip_flag)
    keep = [i for i, name in enumerate(scan.names) if name not in failures]
    if not keep:
        raise ValueError(f"{scan.root}: none of its {len(scan.names)} images can be read")
    kept = FolderScan(
        scan.root,
        [scan.files[i] for i in keep],
        [scan.names[i] for i in keep],
        [scan.labels[i] for i in keep],
        scan.classes,
        scan.ignored_files,
    )
    return kept, sorted(failures)


def choose_image_size(sizes: list[list[int]], image_size: int | None) -> tuple[int | None, str]:
    """The stored size (``None``: the images' own) and the sentence saying why.

    Unset, a folder of equal square images of at most 224 px (a CIFAR-like set) keeps their size;
    anything else (mixed sizes, or all large or non-square, e.g. one camera's 4032 x 3024 photos)
    gets the median shorter side, at most 224.
    """
    if image_size is not None:
        return image_size, f"{image_size} x {image_size} (data.image_size)"
    distinct = {tuple(size) for size in sizes}
    width, height = next(iter(distinct))
    if len(distinct) == 1 and width == height <= MAX_DEFAULT_SIZE:
        return None, f"{width} x {height}, the size of every image (set --data.image_size=S to resize)"
    shorter = [min(size) for size in sizes]
    median = int(statistics.median(shorter))
    chosen = min(median, MAX_DEFAULT_SIZE)
    found = (
        f"have {len(distinct)} different sizes (shorter sides {min(shorter)}-{max(shorter)} px)"
        if len(distinct) > 1
        else f"are all {width} x {height}"
    )
    return chosen, (
        f"{chosen} x {chosen}: data.image_size is unset and the images {found}, so the median shorter side "
        f"({median} px), at most {MAX_DEFAULT_SIZE}, with the shorter side resized and the centre cropped; "
        "set --data.image_size=S to choose"
    )


# ---------------------------------------------------------------------------------------------


def load_folder(
    root: str | Path,
    split: str,
    *,
    image_size: int | None = None,
    options: FolderOptions = FolderOptions(),
    cache_dir: str | Path | None = None,
) -> ImageDataset | FileImageDataset:
    """``split`` of a folder of one's own images, in memory or streamed; ``dataset.report`` says which and why."""
    everything = scan_folder(root, split, options)
    probed = probe(everything, cache_dir)
    scan, unreadable = readable(everything, probed, options.skip_unreadable)
    files, names, labels = scan.files, scan.names, scan.labels
    sizes = cast("list[list[int]]", [probed[name] for name in names])  # readable ones: each [width, height]
    size, reason = choose_image_size(sizes, image_size)
    width, height = (size, size) if size else sizes[0]
    decoded = len(files) * 3 * width * height
    budget = int(options.memory_budget_gb * 1e9)
    streamed = decoded > budget
    dataset: ImageDataset | FileImageDataset
    if streamed:
        dataset = FileImageDataset(files, labels, scan.classes, size or min(width, height))
    else:
        listing = Listing(
            [(str(f), partial(Path.read_bytes, f)) for f in files],
            np.asarray(labels, dtype=np.int64),
            scan.classes,
            {**cache.fingerprint(scan.root, files), "listing": _digest(names, labels)},
        )
        dataset = cached_listing("imagefolder", split, lambda: listing, listing.identity, size, cache_dir)
    dataset.report = FolderReport(
        root=str(scan.root),
        split=split,
        num_images=len(files),
        num_classes=len(scan.classes),
        ignored_files=scan.ignored_files,
        unreadable=unreadable,
        image_size=f"{width} x {height}",
        size_reason=reason,
        streamed=streamed,
        decoded_bytes=decoded,
        budget_bytes=budget,
    )
    return dataset


def _digest(names: list[str], labels: list[int]) -> str:
    return hashlib.sha256(json.dumps([names, labels]).encode()).hexdigest()[:16]
