"""Embeddings of a folder of images from a pre-training checkpoint: one row per image, with its path.

Every image under the folder (any depth; hidden and non-image files ignored) is decoded in
DataLoader workers at the run's ``data.image_size`` (shorter side resized, centre crop),
normalised as in the run's kNN evaluation, and passed through the frozen backbone (or the
backbone and the method's projector) in batches on the chosen device.

Example:
    >>> result = embed_folder("runs/photos/checkpoints/last.ckpt", "~/photos")  # doctest: +SKIP
    >>> save_embeddings("embeddings.npz", result.names, result.embeddings)  # doctest: +SKIP
    >>> data = np.load("embeddings.npz"); data["paths"][0], data["embeddings"].shape  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hallucinator.engine.config import Config
from hallucinator.evaluation.features import frozen, input_memory_format, resolve_device
from hallucinator.evaluation.progress import progress_bar

__all__ = ["HEADS", "Embeddings", "check_output", "embed_folder", "load_encoder", "save_embeddings"]

HEADS = ("backbone", "projector")
PROJECTOR_PREFIX = "method.projector."


@dataclass
class Embeddings:
    """``embeddings[i]`` (float32) is the image at ``names[i]`` (relative to the folder); ``unreadable`` were skipped.

    ``labels[i]`` indexes ``classes``, the first-level folders, when every image is in one of at least two
    (``photos/cats/*.jpg``, ``photos/dogs/*.jpg``); else every label is -1 and ``classes`` is empty.
    """

    names: list[str]
    embeddings: np.ndarray
    unreadable: list[str]
    ignored_files: int
    image_size: int
    labels: np.ndarray
    classes: list[str]


def load_encoder(checkpoint: str | Path, head: str = "backbone") -> tuple[nn.Module, Config]:
    """The checkpoint's backbone, or backbone followed by the method's projector, and the run's config."""
    from hallucinator.engine.checkpoint import load_pretrained
    from hallucinator.engine.module import build_method

    if head not in HEADS:
        raise ValueError(f"--head {head!r}: choose one of {', '.join(HEADS)}")
    backbone, config = load_pretrained(checkpoint)
    if head == "backbone":
        return backbone, config
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    projector = build_method(config).get_submodule("projector")
    projector.load_state_dict(
        {k[len(PROJECTOR_PREFIX) :]: v for k, v in state.items() if k.startswith(PROJECTOR_PREFIX)}
    )
    return nn.Sequential(backbone, projector), config


@torch.no_grad()
def embed_folder(
    checkpoint: str | Path,
    folder: str | Path,
    *,
    head: str = "backbone",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    skip_unreadable: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Embeddings:
    """One embedding per image of ``folder`` (see the module docstring); unreadable files raise unless skipped.

    ``num_workers`` (default: one per core, at most 4) decode the images; ``cache_dir`` keeps the
    probe of which files decode (see :mod:`hallucinator.data.folder`).
    """
    from hallucinator.data import FileImageDataset, batch_loader, eval_transform
    from hallucinator.data.folder import FolderOptions, probe, readable, scan_folder, subfolder_labels

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    encoder, config = load_encoder(checkpoint, head)
    size = config.data.image_size
    assert size is not None  # pretrain saves the resolved size in the checkpoint's config
    everything = scan_folder(folder, "pretrain", FolderOptions(labels="none"))
    scan, unreadable = readable(everything, probe(everything, cache_dir), skip_unreadable, "--skip-unreadable")
    dataset = FileImageDataset(scan.files, scan.labels, [], size)
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    loader: Iterable[Any] = batch_loader(
        dataset, batch_size, shuffle=False, drop_last=False, rank=0, world_size=1, num_workers=workers
    )
    if progress:
        loader = progress_bar(loader, desc="embed", unit="batch")
    transform = eval_transform(config.data.dataset, size)
    encoder.to(device)
    memory_format = input_memory_format(encoder)
    rows: list[Tensor] = []
    with frozen(encoder) as model:
        for images, _ in loader:
            batch = transform(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
            rows.append(model(batch).float().cpu())
    labels, classes = subfolder_labels(scan.root, scan.files)
    return Embeddings(
        names=scan.names,
        embeddings=torch.cat(rows).numpy(),
        unreadable=unreadable,
        ignored_files=scan.ignored_files,
        image_size=size,
        labels=np.asarray(labels, dtype=np.int64),
        classes=classes,
    )


def check_output(path: str | Path) -> str:
    """The format of ``path`` (``npz`` or ``parquet``), checked before any work: the suffix, and pyarrow for parquet."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise ValueError(f"--output {path}: the file must end in .npz or .parquet")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                f"--output {path}: .parquet needs pyarrow (pip install 'hallucinator[parquet]'); or write .npz"
            ) from None
    return suffix[1:]


def save_embeddings(path: str | Path, names: list[str], embeddings: np.ndarray) -> Path:
    """Writes ``paths`` and ``embeddings`` to ``.npz`` (numpy) or ``.parquet`` (needs ``pip install hallucinator[parquet]``).

    Both are written under a temporary name and renamed, so a file at ``path`` is always complete.
    """
    path = Path(path)
    fmt = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{fmt}")
    try:
        if fmt == "npz":
            np.savez(tmp, paths=np.asarray(names, dtype=str), embeddings=embeddings.astype(np.float32))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            vectors = pa.FixedSizeListArray.from_arrays(
                pa.array(embeddings.astype(np.float32).reshape(-1)), embeddings.shape[1]
            )
            pq.write_table(pa.table({"path": pa.array(names, pa.string()), "embedding": vectors}), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
