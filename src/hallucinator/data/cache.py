"""Decode once, memory-map forever: the on-disk uint8 cache of in-memory datasets.

A split is decoded into ``<cache_dir>/<name>-<split>-<key>.images.npy`` (uint8 ``N x 3 x H x W``)
plus ``.labels.npy`` (int64) and ``.json`` (class names and the fingerprint of the source). The
key hashes the source path, its size and modification time and the decoding options, so a
changed source is decoded again and an unchanged one is never read again; the decode of its old
version, which no key can reach any more, is then deleted. Files are written under a temporary
name and renamed, so an interrupted decode leaves no half-written cache; their blocks are
allocated before decoding, so a full disk is a one-line error, not a SIGBUS from the memory map.

The cache directory is ``cache_dir`` when given, else ``$HALLUCINATOR_CACHE``, else
``~/.cache/hallucinator``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["CachedSplit", "default_cache_dir", "fingerprint", "load_or_build", "open_split"]

# Bump when the decoding itself changes (resize policy, colour conversion): old caches are then ignored.
FORMAT_VERSION = 1
# The fields of ``fingerprint`` that change when the source is rewritten in place.
_CONTENT_FIELDS = ("files", "bytes", "mtime_ns")


def default_cache_dir() -> Path:
    """``$HALLUCINATOR_CACHE`` if set, else ``~/.cache/hallucinator``."""
    return Path(os.environ.get("HALLUCINATOR_CACHE") or Path.home() / ".cache" / "hallucinator")


def fingerprint(source: Path, files: Iterable[str | Path] | None = None) -> dict[str, object]:
    """Identity of a data source: its absolute path, total size and newest modification time.

    A file (an archive, a pickled batch) is its own size and mtime; for a directory pass the
    ``files`` that make up the split, whose sizes and mtimes are summed and maximised, so adding,
    removing or rewriting an image changes the key.
    """
    source = Path(source).resolve()
    stats = [source.stat()] if files is None else [Path(f).stat() for f in files]
    return {
        "source": str(source),
        "files": len(stats),
        "bytes": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


@dataclass(frozen=True)
class CachedSplit:
    """A decoded split: memory-mapped images ``(N, 3, H, W)`` uint8, labels ``(N,)`` int64, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    images_path: Path


def open_split(images_path: Path) -> CachedSplit:
    """Memory-maps a cached split from the path of its ``.images.npy``."""
    images_path = Path(images_path)
    stem = str(images_path)[: -len(".images.npy")]
    meta = json.loads(Path(stem + ".json").read_text())
    # Copy-on-write mapping: a writable array for torch, whose writes never reach the file.
    images = torch.from_numpy(np.load(images_path, mmap_mode="c"))
    labels = torch.from_numpy(np.load(stem + ".labels.npy"))
    return CachedSplit(images, labels, list(meta["classes"]), images_path)


def load_or_build(
    name: str,
    split: str,
    identity: dict[str, object],
    shape: tuple[int, int, int, int] | Callable[[], tuple[int, int, int, int]],
    fill: Callable[[np.ndarray], tuple[np.ndarray, list[str]]],
    cache_dir: str | Path | None = None,
) -> CachedSplit:
    """Returns the cached split for ``identity``, decoding it first if it is not cached yet.

    ``shape`` is the ``(N, 3, H, W)`` of the decoded split (or a function computing it, called
    only on a cache miss); ``fill(images)`` writes every image into the writable memory-mapped
    ``images`` and returns ``(labels, classes)``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key_fields = {"name": name, "split": split, "version": FORMAT_VERSION, **identity}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    stem = cache_dir / f"{name}-{split}-{key}"
    images_path = Path(f"{stem}.images.npy")
    if Path(f"{stem}.json").is_file() and images_path.is_file():
        return open_split(images_path)

    cache_dir.mkdir(parents=True, exist_ok=True)
    shape = shape() if callable(shape) else shape
    suffix = f".tmp{os.getpid()}"
    tmp_images = Path(f"{stem}.images{suffix}.npy")
    try:
        images = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8, shape=shape)
        _allocate(tmp_images, f"the decoded {name} {split} split")
        labels, classes = fill(images)
        images.flush()
        del images
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (shape[0],):
            raise ValueError(f"{name}/{split}: {labels.shape[0]} labels for {shape[0]} images")
        np.save(f"{stem}.labels{suffix}.npy", labels)
        Path(f"{stem}.json{suffix}").write_text(json.dumps({"classes": list(classes), **key_fields}, indent=1))
        os.replace(tmp_images, images_path)
        os.replace(f"{stem}.labels{suffix}.npy", f"{stem}.labels.npy")
        os.replace(f"{stem}.json{suffix}", f"{stem}.json")  # written last: its presence marks a complete cache
    finally:
        for leftover in (tmp_images, Path(f"{stem}.labels{suffix}.npy"), Path(f"{stem}.json{suffix}")):
            leftover.unlink(missing_ok=True)
    _delete_older_versions(cache_dir, key_fields)
    return open_split(images_path)


def _allocate(path: Path, what: str) -> None:
    """Reserves the disk blocks of the (sparse) memory-mapped file ``path``, or says there is no room.

    Writing into a memory map whose file cannot grow kills the process with SIGBUS, with no
    message; ``posix_fallocate`` fails up front with ENOSPC instead.
    """
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: no portable way to reserve, write as before
        return
    size = path.stat().st_size
    try:
        with open(path, "r+b") as file:
            os.posix_fallocate(file.fileno(), 0, size)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        free = shutil.disk_usage(path.parent).free
        raise ValueError(
            f"no room in the cache directory {path.parent} for {what} ({size / 1e6:.0f} MB, "
            f"{free / 1e6:.0f} MB free): free some disk space there, or set --data.cache_dir "
            "(or $HALLUCINATOR_CACHE) to a disk with room"
        ) from None


def _delete_older_versions(cache_dir: Path, key_fields: dict[str, object]) -> None:
    """Deletes this split's caches made from an earlier version of its source (same path, other content).

    No key can reach them again, whatever their decoding options, and each is a full decoded copy
    (150 MB for CIFAR-10's train split): a source rewritten now and then (a dataset copied afresh)
    would otherwise fill the disk. A process still reading one keeps its mapping, as an unlinked
    file lives on until it is unmapped.
    """
    current = {k: key_fields.get(k) for k in ("version", *_CONTENT_FIELDS)}
    for meta_path in cache_dir.glob(f"{key_fields['name']}-{key_fields['split']}-*.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue  # being replaced by another process, or not ours
        same_source = all(meta.get(k) == key_fields.get(k) for k in ("name", "split", "source"))
        if not same_source or {k: meta.get(k) for k in current} == current:
            continue
        old_stem = str(meta_path)[: -len(".json")]
        meta_path.unlink(missing_ok=True)  # first: without it the cache counts as incomplete, never half-read
        for suffix in (".images.npy", ".labels.npy"):
            Path(old_stem + suffix).unlink(missing_ok=True)
