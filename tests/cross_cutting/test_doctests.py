"""The usage examples in the docstrings run: the evaluation functions' and the batch sampler's."""

from __future__ import annotations

import doctest

import pytest
import torch

from hallucinator import backbones
from hallucinator.data import sampler
from hallucinator.evaluation import features, metrics


@pytest.mark.parametrize("module", [features, metrics, sampler], ids=lambda module: module.__name__)
def test_docstring_examples_run(module) -> None:
    torch.manual_seed(0)
    globs = {  # what the examples name without building: a narrow CIFAR ResNet and a few uint8 images
        "backbone": backbones.build("resnet18", cifar_stem=True, width=8),
        "images": torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8),
    }
    result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0
