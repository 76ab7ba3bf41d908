"""A larger real CIFAR-10 split for the accuracy sanity checks (decoded here, independently of hallucinator.data)."""

from __future__ import annotations

import io
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

TRAIN_PER_CLASS, TEST_PER_CLASS = 1000, 200


def _decode_first(archive_path: Path, quota: dict[str, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The first ``quota[split]`` images of every class of each split, in archive order."""
    found: dict[str, dict[str, list[np.ndarray]]] = {split: defaultdict(list) for split in quota}
    with tarfile.open(archive_path) as archive:
        for member in archive:
            *_, split, label, _name = ("", "", "") + Path(member.name).parts
            if member.isfile() and split in quota and len(found[split][label]) < quota[split]:
                found[split][label].append(np.asarray(Image.open(io.BytesIO(archive.extractfile(member).read()))))
    result = {}
    for split, by_class in found.items():
        names = sorted(by_class)
        pixels = np.stack([image for name in names for image in by_class[name]])
        labels = torch.arange(len(names)).repeat_interleave(torch.tensor([len(by_class[n]) for n in names]))
        result[split] = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels
    return result


@pytest.fixture(scope="session")
def cifar10_sanity_split(cifar10_archive: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """1,000 train and 200 test images per class: the shared README's sanity-figure split."""
    return _decode_first(cifar10_archive, {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS})


def raw_pixel_features(images: torch.Tensor) -> torch.Tensor:
    """The README's raw-pixel features: each image's pixels, mean-centred and L2-normalised."""
    pixels = images.flatten(1).double() / 255
    return F.normalize(pixels - pixels.mean(dim=1, keepdim=True), dim=1).float()
