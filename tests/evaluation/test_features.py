"""Feature extraction runs in the backbone's memory format and gives the same features in either."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from hallucinator import backbones
from hallucinator.evaluation.features import extract_features, input_memory_format
from tests.evaluation.conftest import fabricate_checkpoint


def test_input_memory_format_follows_the_conv_kernels() -> None:
    backbone = backbones.build("resnet18", cifar_stem=True, width=16)
    assert input_memory_format(backbone) == torch.contiguous_format
    assert input_memory_format(backbone.to(memory_format=torch.channels_last)) == torch.channels_last
    assert input_memory_format(nn.Sequential(nn.Flatten(), nn.Linear(12, 4))) == torch.contiguous_format


def test_channels_last_features_equal_contiguous_ones() -> None:
    torch.manual_seed(0)
    backbone = backbones.build("resnet18", cifar_stem=True, width=16)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    contiguous = extract_features(backbone, images, batch_size=8)
    channels_last = extract_features(backbone.to(memory_format=torch.channels_last), images, batch_size=8)
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-4)


def test_evaluation_commands_load_backbones_channels_last_where_safe(tmp_path) -> None:
    from hallucinator.cli.evaluate import Loaded

    for width, expected in ((16, torch.channels_last), (8, torch.contiguous_format)):
        checkpoint = fabricate_checkpoint(tmp_path / f"width{width}", width=width)
        args = argparse.Namespace(
            checkpoint=str(checkpoint), dataset=None, data_dir="unused", cache_dir=None, device="cpu", precision="32",
            batch_size=8, train_limit=None, test_limit=None, no_save=True, no_progress=True, threads=None,
        )
        loaded = Loaded(args, splits=())  # no data: only the backbone is read here
        assert input_memory_format(loaded.backbone) == expected
