"""Shared fixtures: the real CIFAR-10 archive from ``../shared`` (skipped, with the reason, when absent)."""

from __future__ import annotations

import io
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# HALLUCINATOR_TEST_CIFAR10: the archive elsewhere (a GPU machine without ../shared; experiments/device_check.sh)
CIFAR10_ARCHIVE = Path(
    os.environ.get("HALLUCINATOR_TEST_CIFAR10", PROJECT_ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz")
)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Runs with ``--trainer.cpu_threads`` or ``--threads`` set torch's thread count: give it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test's process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, out_dir: Path, world: int) -> list[dict]:
    """``worker(rank, port, out_dir)`` in ``world`` spawned processes (a gloo group), then each ``rank{r}.pt`` it saved."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this PyTorch build")
    mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    if not CIFAR10_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10_ARCHIVE} (../shared is absent on this machine)")
    return CIFAR10_ARCHIVE


@pytest.fixture(scope="session")
def cifar10_subset(cifar10_archive: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 200 training images of each class, decoded independently of ``hallucinator.data``.

    Returns uint8 images ``(2000, 3, 32, 32)`` and int64 labels ``(2000,)``.
    """
    per_class = 200
    images: dict[str, list[np.ndarray]] = {}
    with tarfile.open(cifar10_archive) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] != "train":
                continue
            bucket = images.setdefault(parts[-2], [])
            if len(bucket) < per_class:
                data = archive.extractfile(member).read()
                bucket.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    classes = sorted(images)
    pixels = np.stack([image for name in classes for image in images[name]])
    labels = np.repeat(np.arange(len(classes)), per_class)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
