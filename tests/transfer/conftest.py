"""The small detection set, made once per session from the real CIFAR-10 (skipped without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hallucinator.data import build_dataset
from hallucinator.transfer import DetectionSet, make_detection_set


@pytest.fixture(scope="session")
def small_set(cifar10_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> DetectionSet:
    """12 training and 6 test canvases of 96 x 96."""
    root = tmp_path_factory.mktemp("detection") / "set"
    return make_detection_set(cifar10_archive, root, images_per_split={"train": 12, "test": 6}, canvas=(96, 96))


@pytest.fixture(scope="session")
def cifar10_test_images(cifar10_archive: Path):
    """The CIFAR-10 test split's uint8 images (N, 3, 32, 32): what the objects were cut from."""
    return build_dataset("cifar10", cifar10_archive, "test").images
